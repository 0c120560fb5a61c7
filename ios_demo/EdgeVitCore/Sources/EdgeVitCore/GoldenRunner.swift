import Foundation

/// The golden runner of docs/reference/bundle.md: computes every case's input tensor for every bundled model
/// with this core, writes them next to the output JSON, and ranks the case's expected logits when given.
public enum GoldenRunner {
  public static let name = "swift-core 0.1.0"

  /// One `results[]` entry of the runner's output.
  public struct Result: Encodable, Equatable {
    public let id: String
    public let model: String
    /// File name, next to the output JSON, of the computed input tensor (nil when it could not be computed).
    public let inputFile: String?
    /// Top-k of the case's expected raw output (dequantised) or logits; empty when cases.json gives neither.
    public let topK: [RankedPair]
    /// Why this case could not be run through the core; nil on success.
    public let error: String?

    enum CodingKeys: String, CodingKey {
      case id, model
      case inputFile = "input_file"
      case topK = "top_k"
      case error
    }

    public func encode(to encoder: Encoder) throws {
      var container = encoder.container(keyedBy: CodingKeys.self)
      try container.encode(id, forKey: .id)
      try container.encode(model, forKey: .model)
      try container.encode(inputFile, forKey: .inputFile)  // explicit null when it could not be computed
      try container.encode(topK, forKey: .topK)
      try container.encodeIfPresent(error, forKey: .error)
    }
  }

  struct Output: Encodable {
    let runner: String
    let results: [Result]
  }

  /// Runs every case through every model of the bundle.
  /// - Parameters:
  ///   - bundleDir: directory holding `bundle.json`.
  ///   - casesDir: directory holding `cases.json` and the buffers it names.
  ///   - out: the JSON file to write; tensors go next to it as `<case>__<model>.out.bin`.
  /// - Returns: the results (also written to `out`); a case that fails carries its `error`.
  /// - Throws: `BundleError` for an unreadable/invalid bundle.json or cases.json, or a file system error.
  @discardableResult
  public static func run(bundleDir: URL, casesDir: URL, out: URL) throws -> [Result] {
    let bundle = try BundleSpec.load(directory: bundleDir)
    let cases = try GoldenCases.load(directory: casesDir)
    let preprocessor = Preprocessor(spec: bundle.preprocess)
    let outDir = out.deletingLastPathComponent()
    try FileManager.default.createDirectory(at: outDir, withIntermediateDirectories: true)
    var results: [Result] = []
    for goldenCase in cases.cases {
      let pixels: Data
      do {
        pixels = try cases.pixels(of: goldenCase)
      } catch {
        results += bundle.models.map {
          Result(id: goldenCase.id, model: $0.key, inputFile: nil, topK: [], error: "\(error)")
        }
        continue
      }
      for model in bundle.models {
        var topK: [RankedPair] = []
        do {
          if let logits = try cases.expectedLogits(of: goldenCase, model: model) {
            topK = Postprocess.classify(logits, k: cases.topK).map {
              RankedPair(index: $0.index, probability: $0.probability)
            }
          }
          let tensor = try preprocessor.tensor(pixels, layout: goldenCase.layout, input: model.input)
          let name = "\(goldenCase.id)__\(model.key).out.bin"
          try tensor.littleEndianBytes.write(to: outDir.appendingPathComponent(name), options: .atomic)
          results.append(Result(id: goldenCase.id, model: model.key, inputFile: name, topK: topK, error: nil))
        } catch {
          results.append(Result(id: goldenCase.id, model: model.key, inputFile: nil, topK: topK, error: "\(error)"))
        }
      }
    }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try encoder.encode(Output(runner: name, results: results)).write(to: out, options: .atomic)
    return results
  }
}
