// edgevit-golden --bundle DIR --cases DIR --out FILE.json
// The Swift core's golden runner (docs/reference/bundle.md): computes each case's model input with EdgeVitCore,
// writes the tensors next to FILE.json, and ranks the cases' expected logits. Exit 0 when every case ran,
// 1 when some case failed (its error is in FILE.json and on stderr), 2 for bad arguments or an unusable bundle.
import EdgeVitCore
import Foundation

func fail(_ message: String, status: Int32) -> Never {
  FileHandle.standardError.write(Data("edgevit-golden: \(message)\n".utf8))
  exit(status)
}

let usage = "usage: edgevit-golden --bundle DIR --cases DIR --out FILE.json"
var options: [String: String] = [:]
var args = CommandLine.arguments.dropFirst()
while let flag = args.popFirst() {
  guard ["--bundle", "--cases", "--out"].contains(flag) else {
    if flag == "--help" || flag == "-h" {
      print(usage)
      exit(0)
    }
    fail("unknown argument \(flag); \(usage)", status: 2)
  }
  guard let value = args.popFirst() else { fail("\(flag) needs a value; \(usage)", status: 2) }
  options[flag] = value
}
guard let bundle = options["--bundle"], let cases = options["--cases"], let out = options["--out"] else {
  fail(
    "missing \(["--bundle", "--cases", "--out"].filter { options[$0] == nil }.joined(separator: ", ")); \(usage)",
    status: 2)
}

do {
  let results = try GoldenRunner.run(
    bundleDir: URL(fileURLWithPath: bundle), casesDir: URL(fileURLWithPath: cases), out: URL(fileURLWithPath: out))
  let failed = results.filter { $0.error != nil }
  for result in failed {
    FileHandle.standardError.write(Data("edgevit-golden: \(result.id) \(result.model): \(result.error!)\n".utf8))
  }
  print("edgevit-golden: \(results.count - failed.count) inputs written, \(failed.count) failed -> \(out)")
  exit(failed.isEmpty ? 0 : 1)
} catch {
  fail("\(error)", status: 2)
}
