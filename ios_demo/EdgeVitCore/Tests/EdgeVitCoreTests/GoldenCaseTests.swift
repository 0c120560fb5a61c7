import EdgeVitCore
import Foundation
import XCTest

/// The bundle's golden cases (written by `edgevit bundle` from the NumPy reference and the Python runtimes):
/// this core's input tensor for every case and model equals the `.bin` (float32 within 1e-6, int8/uint8
/// exactly), and top-k of the expected logits matches. The bundle directory comes from `EDGEVIT_BUNDLE`
/// (ios_demo/check.sh sets it); without it these tests fail rather than skip.
final class GoldenCaseTests: XCTestCase {
  static let floatTolerance = 1e-6

  private func goldenBundle() throws -> (BundleSpec, GoldenCases) {
    guard let path = ProcessInfo.processInfo.environment["EDGEVIT_BUNDLE"], !path.isEmpty else {
      // A thrown error (not XCTSkip) fails the test: golden checks never skip silently.
      throw PreprocessError(
        "EDGEVIT_BUNDLE is not set: point it at a bundle written by `edgevit bundle` (ios_demo/check.sh does)")
    }
    let dir = URL(fileURLWithPath: path)
    let bundle = try BundleSpec.load(directory: dir)
    let casesDir =
      ProcessInfo.processInfo.environment["EDGEVIT_CASES"].map { URL(fileURLWithPath: $0) }
      ?? dir.appendingPathComponent("golden")
    let cases = try GoldenCases.load(directory: casesDir)
    XCTAssertFalse(cases.cases.isEmpty, "\(casesDir.path)/cases.json has no cases")
    return (bundle, cases)
  }

  /// Index and values of the first element where two tensors differ beyond tolerance, if any.
  static func firstMismatch(_ got: InputTensor, _ want: InputTensor) -> String? {
    if got.shape != want.shape { return "shape \(got.shape) != \(want.shape)" }
    switch (got, want) {
    case (.float32(let a, _), .float32(let b, _)):
      for i in a.indices where !(abs(Double(a[i]) - Double(b[i])) <= floatTolerance) {
        return "element \(i): \(a[i]) != \(b[i]) (|diff| \(abs(Double(a[i]) - Double(b[i]))) > \(floatTolerance))"
      }
    case (.int8(let a, _), .int8(let b, _)):
      if let i = a.indices.first(where: { a[$0] != b[$0] }) { return "element \(i): \(a[i]) != \(b[i]) (int8)" }
    case (.uint8(let a, _), .uint8(let b, _)):
      if let i = a.indices.first(where: { a[$0] != b[$0] }) { return "element \(i): \(a[i]) != \(b[i]) (uint8)" }
    default:
      return "dtype differs"
    }
    return nil
  }

  func testInputsMatchGoldenTensors() throws {
    let (bundle, cases) = try goldenBundle()
    let preprocessor = Preprocessor(spec: bundle.preprocess)
    var compared = 0
    var failed: [String] = []
    for goldenCase in cases.cases {
      let pixels = try cases.pixels(of: goldenCase)
      for model in bundle.models {
        guard let want = try cases.expectedInput(of: goldenCase, model: model) else { continue }
        let got = try preprocessor.tensor(pixels, layout: goldenCase.layout, input: model.input)
        compared += 1
        if let mismatch = Self.firstMismatch(got, want) {
          failed.append(
            "\(goldenCase.id) \(model.key) (\(goldenCase.pixelFormat.rawValue), rotation \(goldenCase.rotation), "
              + "\(model.input.layout.rawValue) \(model.input.dtype.rawValue)): \(mismatch)")
        }
      }
    }
    XCTAssertGreaterThan(compared, 0, "the golden cases give no expected input tensor")
    XCTAssertTrue(
      failed.isEmpty,
      "\(failed.count) of \(compared) golden inputs differ:\n" + failed.prefix(10).joined(separator: "\n"))
  }

  func testEveryModelHasGoldenInputs() throws {
    let (bundle, cases) = try goldenBundle()
    for model in bundle.models {
      let covered = cases.cases.filter { $0.expected?[model.key]?.input != nil }.count
      XCTAssertGreaterThan(covered, 0, "no golden case gives an input tensor for model \(model.key)")
    }
  }

  func testTopKOfExpectedLogitsMatchesGolden() throws {
    let (bundle, cases) = try goldenBundle()
    var compared = 0
    for goldenCase in cases.cases {
      for model in bundle.models {
        guard let want = goldenCase.expected?[model.key]?.topK,
          let logits = try cases.expectedLogits(of: goldenCase, model: model)
        else { continue }
        compared += 1
        XCTAssertEqual(logits.count, bundle.classes.count, "\(goldenCase.id) \(model.key): logits length")
        let got = Postprocess.classify(logits, k: cases.topK)
        XCTAssertEqual(got.map(\.index), want.map(\.index), "\(goldenCase.id) \(model.key): top-k classes")
        for (g, w) in zip(got, want) {
          XCTAssertEqual(g.probability, w.probability, accuracy: 1e-6, "\(goldenCase.id) \(model.key) class \(w.index)")
        }
      }
    }
    XCTAssertGreaterThan(compared, 0, "the golden cases give no expected top-k")
  }

  func testGoldenRunnerWritesTheSameTensors() throws {
    let (bundle, cases) = try goldenBundle()
    let bundleDir = URL(fileURLWithPath: ProcessInfo.processInfo.environment["EDGEVIT_BUNDLE"]!)
    let outDir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("golden-run-\(UUID())")
    defer { try? FileManager.default.removeItem(at: outDir) }
    let out = outDir.appendingPathComponent("result.json")
    let results = try GoldenRunner.run(bundleDir: bundleDir, casesDir: cases.directory, out: out)
    XCTAssertEqual(results.count, cases.cases.count * bundle.models.count)
    XCTAssertTrue(results.allSatisfy { $0.error == nil }, "\(results.compactMap(\.error).prefix(3))")
    let json = try JSONSerialization.jsonObject(with: Data(contentsOf: out)) as? [String: Any]
    XCTAssertEqual(json?["runner"] as? String, GoldenRunner.name)
    XCTAssertEqual((json?["results"] as? [Any])?.count, results.count)
    for result in results {
      let goldenCase = cases.cases.first { $0.id == result.id }!
      let model = try bundle.model(result.model)
      guard let want = try cases.expectedInput(of: goldenCase, model: model) else { continue }
      let data = try Data(contentsOf: outDir.appendingPathComponent(result.inputFile!))
      let got = try InputTensor.fromLittleEndian(data, dtype: model.input.dtype, shape: model.input.shape)
      XCTAssertNil(Self.firstMismatch(got, want), "\(result.id) \(result.model)")
      if let expectedTopK = goldenCase.expected?[model.key]?.topK {
        XCTAssertEqual(result.topK.map(\.index), expectedTopK.map(\.index), "\(result.id) \(result.model)")
      }
    }
  }
}
