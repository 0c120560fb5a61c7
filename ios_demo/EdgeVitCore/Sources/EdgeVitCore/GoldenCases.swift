import Foundation

/// `[class index, probability]` as cases.json and the runner's output write it.
public struct RankedPair: Codable, Equatable, Sendable {
  public let index: Int
  public let probability: Double

  public init(index: Int, probability: Double) {
    self.index = index
    self.probability = probability
  }

  public init(from decoder: Decoder) throws {
    var container = try decoder.unkeyedContainer()
    index = try container.decode(Int.self)
    probability = try container.decode(Double.self)
    if !container.isAtEnd {
      throw DecodingError.dataCorruptedError(
        in: container, debugDescription: "expected [class index, probability], got more than two values")
    }
  }

  public func encode(to encoder: Encoder) throws {
    var container = encoder.unkeyedContainer()
    try container.encode(index)
    try container.encode(probability)
  }
}

/// What the Python side computed for one case and one model.
public struct GoldenExpectation: Decodable, Equatable, Sendable {
  /// File name (in the cases directory) of the expected input tensor.
  public let input: String?
  /// The artifact's logits in its Python runtime (for an integer output: its dequantised `rawOutput`).
  public let logits: [Double]?
  /// Only for a model with an int8/uint8 output: the runtime's raw output.
  public let rawOutput: [Int]?
  public let topK: [RankedPair]?

  enum CodingKeys: String, CodingKey {
    case input, logits
    case rawOutput = "raw_output"
    case topK = "top_k"
  }
}

/// One golden case: a raw buffer and, per model key, what to expect.
public struct GoldenCase: Decodable, Equatable, Sendable {
  public let id: String
  public let buffer: String
  public let width: Int
  public let height: Int
  public let rowStride: Int
  public let pixelFormat: PixelFormat
  public let rotation: Int
  public let source: String?
  public let expected: [String: GoldenExpectation]?

  enum CodingKeys: String, CodingKey {
    case id, buffer, width, height
    case rowStride = "row_stride"
    case pixelFormat = "pixel_format"
    case rotation, source, expected
  }

  public var layout: PixelLayout {
    PixelLayout(width: width, height: height, rowStride: rowStride, format: pixelFormat, rotation: rotation)
  }
}

/// A parsed `golden/cases.json` and the directory its files live in.
public struct GoldenCases: Sendable {
  public static let supportedVersions: Set<Int> = [1]

  public let directory: URL
  public let version: Int
  public let topK: Int
  public let cases: [GoldenCase]

  private struct Document: Decodable {
    let version: Int
    let topK: Int
    let cases: [GoldenCase]

    enum CodingKeys: String, CodingKey {
      case version
      case topK = "top_k"
      case cases
    }
  }

  private struct Header: Decodable { let version: Int? }

  /// Reads and validates `DIR/cases.json`.
  /// - Throws: `BundleError` naming `cases.json` and the key path (missing key, unknown version, a rotation not
  ///   in 0/90/180/270, a row stride below 4 * width, a duplicate id).
  public static func load(directory: URL) throws -> GoldenCases {
    let file = "cases.json"
    let data = try readFile(directory.appendingPathComponent(file), what: "the golden cases")
    guard let version = try decodeJSON(Header.self, from: data, file: file).version else {
      throw BundleError(file: file, keyPath: "version", message: "missing")
    }
    guard supportedVersions.contains(version) else {
      throw BundleError(
        file: file, keyPath: "version",
        message: "unknown version \(version) (this reader knows \(supportedVersions.sorted()))")
    }
    let doc = try decodeJSON(Document.self, from: data, file: file)
    var ids = Set<String>()
    for (i, c) in doc.cases.enumerated() {
      func fail(_ key: String, _ message: String) -> BundleError {
        BundleError(file: file, keyPath: "cases[\(i)].\(key)", message: message)
      }
      if !ids.insert(c.id).inserted { throw fail("id", "duplicate id \"\(c.id)\"") }
      if ![0, 90, 180, 270].contains(c.rotation) { throw fail("rotation", "\(c.rotation) is not 0, 90, 180 or 270") }
      if c.width < 1 || c.height < 1 { throw fail("width", "\(c.width)x\(c.height) is empty") }
      if c.rowStride < 4 * c.width { throw fail("row_stride", "\(c.rowStride) < 4 * width (\(4 * c.width))") }
    }
    if doc.topK < 1 { throw BundleError(file: file, keyPath: "top_k", message: "must be >= 1, got \(doc.topK)") }
    return GoldenCases(directory: directory, version: doc.version, topK: doc.topK, cases: doc.cases)
  }

  /// The raw pixel bytes of a case.
  /// - Throws: `BundleError` when the file is missing or shorter than its geometry needs.
  public func pixels(of goldenCase: GoldenCase) throws -> Data {
    let data = try readFile(directory.appendingPathComponent(goldenCase.buffer), what: "case \(goldenCase.id)'s buffer")
    let needed = goldenCase.rowStride * goldenCase.height
    if data.count != needed {
      throw BundleError(
        file: goldenCase.buffer, keyPath: "",
        message: "\(data.count) bytes, but case \(goldenCase.id) (\(goldenCase.height) rows of "
          + "\(goldenCase.rowStride) bytes) is exactly \(needed)")
    }
    return data
  }

  /// The logits the Python runtime produced for a case and model: `raw_output` dequantised when given, else
  /// `logits`; nil when cases.json gives neither.
  /// - Throws: `PreprocessError` when `raw_output` has the wrong length or the output has no quantization.
  public func expectedLogits(of goldenCase: GoldenCase, model: ModelSpec) throws -> [Double]? {
    guard let expected = goldenCase.expected?[model.key] else { return nil }
    if let raw = expected.rawOutput {
      let tensor: OutputTensor
      switch model.output.dtype {
      case .int8: tensor = .int8(raw.map { Int8(clamping: $0) })
      case .uint8: tensor = .uint8(raw.map { UInt8(clamping: $0) })
      case .float32: throw PreprocessError("case \(goldenCase.id): raw_output given for float output of \(model.key)")
      }
      return try Postprocess.logits(tensor, spec: model.output)
    }
    return expected.logits
  }

  /// The expected input tensor of a case for a model, or nil when cases.json gives none.
  /// - Throws: `BundleError` when the file is missing, or `PreprocessError` when its size does not match the model.
  public func expectedInput(of goldenCase: GoldenCase, model: ModelSpec) throws -> InputTensor? {
    guard let name = goldenCase.expected?[model.key]?.input else { return nil }
    let data = try readFile(directory.appendingPathComponent(name), what: "case \(goldenCase.id)'s expected input")
    return try InputTensor.fromLittleEndian(data, dtype: model.input.dtype, shape: model.input.shape)
  }
}
