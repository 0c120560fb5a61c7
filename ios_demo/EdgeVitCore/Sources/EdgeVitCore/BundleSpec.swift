import Foundation

/// Channel order of the model's three input channels.
public enum ColorOrder: String, JSONEnum, Sendable {
  case rgb = "RGB"
  case bgr = "BGR"
}

/// The separable resize filter of the evaluation transform.
public enum Interpolation: String, JSONEnum, Sendable {
  case bilinear
  case bicubic

  /// Half-width of the filter at scale 1 (PIL's `support`).
  public var support: Double {
    switch self {
    case .bilinear: return 1
    case .bicubic: return 2
    }
  }
}

/// Memory layout of a 4-D image tensor.
public enum Layout: String, JSONEnum, Sendable {
  case nchw = "NCHW"
  case nhwc = "NHWC"
}

/// Element type of a model's input or output tensor.
public enum DType: String, JSONEnum, Sendable {
  case float32
  case int8
  case uint8

  /// The representable range of a quantized type (nil for float32).
  public var quantizedRange: ClosedRange<Int>? {
    switch self {
    case .float32: return nil
    case .int8: return -128...127
    case .uint8: return 0...255
    }
  }
}

/// The runtime an artifact is for.
public enum Backend: String, JSONEnum, Sendable {
  case executorch
  case tflite
  case coreml
}

/// Numeric precision an artifact was exported at.
public enum Precision: String, JSONEnum, Sendable {
  case fp32
  case fp16
  case int8
}

/// Affine quantization parameters: `real = (q - zeroPoint) * scale`.
public struct Quant: Decodable, Equatable, Sendable {
  public let scale: Double
  public let zeroPoint: Int

  public init(scale: Double, zeroPoint: Int) {
    self.scale = scale
    self.zeroPoint = zeroPoint
  }

  enum CodingKeys: String, CodingKey {
    case scale
    case zeroPoint = "zero_point"
  }
}

/// The evaluation transform, as recorded by the Python code that builds it (bundle.md, `preprocess`).
public struct PreprocessSpec: Decodable, Equatable, Sendable {
  public let colorOrder: ColorOrder
  public let valueScale: Double
  public let mean: [Double]
  public let std: [Double]
  public let resizeShorter: Int
  public let interpolation: Interpolation
  public let antialias: Bool
  /// Centre crop `[height, width]`.
  public let crop: [Int]

  public init(
    colorOrder: ColorOrder, valueScale: Double, mean: [Double], std: [Double], resizeShorter: Int,
    interpolation: Interpolation, antialias: Bool, crop: [Int]
  ) {
    self.colorOrder = colorOrder
    self.valueScale = valueScale
    self.mean = mean
    self.std = std
    self.resizeShorter = resizeShorter
    self.interpolation = interpolation
    self.antialias = antialias
    self.crop = crop
  }

  enum CodingKeys: String, CodingKey {
    case colorOrder = "color_order"
    case valueScale = "value_scale"
    case mean, std
    case resizeShorter = "resize_shorter"
    case interpolation, antialias, crop
  }

  public var cropHeight: Int { crop[0] }
  public var cropWidth: Int { crop[1] }
}

/// A model's input tensor: dtype, layout, shape and (for int8/uint8) quantization.
public struct InputSpec: Decodable, Equatable, Sendable {
  /// Feature name (Core ML's input name, e.g. `image`); informative for other backends.
  public let name: String?
  public let dtype: DType
  public let layout: Layout
  public let shape: [Int]
  public let quant: Quant?

  public init(name: String? = nil, dtype: DType, layout: Layout, shape: [Int], quant: Quant?) {
    self.name = name
    self.dtype = dtype
    self.layout = layout
    self.shape = shape
    self.quant = quant
  }
}

/// A model's output (logits) tensor.
public struct OutputSpec: Decodable, Equatable, Sendable {
  /// Feature name (Core ML's output name, e.g. `logits`); informative for other backends.
  public let name: String?
  public let dtype: DType
  public let shape: [Int]
  public let quant: Quant?

  public init(name: String? = nil, dtype: DType, shape: [Int], quant: Quant?) {
    self.name = name
    self.dtype = dtype
    self.shape = shape
    self.quant = quant
  }
}

/// One shipped artifact of the bundle.
public struct ModelSpec: Decodable, Equatable, Sendable {
  public let key: String
  /// Path relative to the bundle directory, e.g. `models/coreml_fp32.mlpackage`.
  public let file: String
  public let backend: Backend
  public let precision: Precision
  public let sha256: String?
  public let input: InputSpec
  public let output: OutputSpec

  public init(
    key: String, file: String, backend: Backend, precision: Precision, sha256: String?, input: InputSpec,
    output: OutputSpec
  ) {
    self.key = key
    self.file = file
    self.backend = backend
    self.precision = precision
    self.sha256 = sha256
    self.input = input
    self.output = output
  }
}

/// A parsed and validated `bundle.json` (format `edgevit-bundle`, version 1; see docs/reference/bundle.md).
public struct BundleSpec: Decodable, Equatable, Sendable {
  public static let format = "edgevit-bundle"
  public static let supportedVersions: Set<Int> = [1]

  public let format: String
  public let version: Int
  public let platform: String
  public let modelName: String
  public let classes: [String]
  public let preprocess: PreprocessSpec
  public let models: [ModelSpec]

  enum CodingKeys: String, CodingKey {
    case format, version, platform
    case modelName = "model_name"
    case classes, preprocess, models
  }

  /// The model whose `key` is `key`.
  /// - Throws: `BundleError` naming `models` when there is none.
  public func model(_ key: String) throws -> ModelSpec {
    guard let model = models.first(where: { $0.key == key }) else {
      let known = models.map(\.key).joined(separator: ", ")
      throw BundleError(file: "bundle.json", keyPath: "models", message: "no model with key \"\(key)\" (has \(known))")
    }
    return model
  }

  /// Reads and validates `DIR/bundle.json`.
  /// - Parameter directory: the bundle directory.
  /// - Returns: the validated bundle.
  /// - Throws: `BundleError` naming the file and key path of the first problem.
  public static func load(directory: URL) throws -> BundleSpec {
    try parse(readFile(directory.appendingPathComponent("bundle.json"), what: "the bundle's bundle.json"))
  }

  /// Parses and validates the bytes of a `bundle.json`.
  /// - Parameter data: the JSON document.
  /// - Returns: the validated bundle.
  /// - Throws: `BundleError` naming the key path: a missing key, an unknown `format`/`version` (checked first,
  ///   so a newer bundle is reported as such), an unknown enum value, or values that contradict each other
  ///   (a `classes` length different from a model's output size, a shape that does not match the layout/crop).
  public static func parse(_ data: Data) throws -> BundleSpec {
    let file = "bundle.json"
    let header = try decodeJSON(Header.self, from: data, file: file)
    guard let format = header.format else { throw BundleError(file: file, keyPath: "format", message: "missing") }
    guard format == Self.format else {
      throw BundleError(
        file: file, keyPath: "format", message: "unknown format \"\(format)\" (expected \"\(Self.format)\")")
    }
    guard let version = header.version else { throw BundleError(file: file, keyPath: "version", message: "missing") }
    guard Self.supportedVersions.contains(version) else {
      throw BundleError(
        file: file, keyPath: "version",
        message: "unknown version \(version) (this reader knows \(Self.supportedVersions.sorted())); update the app")
    }
    let bundle = try decodeJSON(BundleSpec.self, from: data, file: file)
    try bundle.validate()
    return bundle
  }

  private struct Header: Decodable {
    let format: String?
    let version: Int?
  }

  private func validate() throws {
    func fail(_ keyPath: String, _ message: String) -> BundleError {
      BundleError(file: "bundle.json", keyPath: keyPath, message: message)
    }
    if classes.isEmpty { throw fail("classes", "empty: the bundle must name every output class") }
    let pre = preprocess
    if pre.mean.count != 3 { throw fail("preprocess.mean", "has \(pre.mean.count) values, expected 3") }
    if pre.std.count != 3 { throw fail("preprocess.std", "has \(pre.std.count) values, expected 3") }
    if let index = pre.std.firstIndex(where: { !($0 > 0) }) {
      throw fail("preprocess.std[\(index)]", "must be > 0, got \(pre.std[index])")
    }
    if !(pre.valueScale > 0) { throw fail("preprocess.value_scale", "must be > 0, got \(pre.valueScale)") }
    if pre.resizeShorter < 1 { throw fail("preprocess.resize_shorter", "must be >= 1, got \(pre.resizeShorter)") }
    if pre.crop.count != 2 || pre.crop.contains(where: { $0 < 1 || $0 > pre.resizeShorter }) {
      throw fail(
        "preprocess.crop", "must be [height, width], each in 1...resize_shorter (\(pre.resizeShorter)), got \(pre.crop)"
      )
    }
    if models.isEmpty { throw fail("models", "empty: the bundle ships no model") }
    var seen = Set<String>()
    for (i, model) in models.enumerated() {
      let at = "models[\(i)]"
      if model.key.isEmpty || !model.key.unicodeScalars.allSatisfy({ Self.keyCharacters.contains($0) }) {
        throw fail("\(at).key", "\"\(model.key)\" is not [A-Za-z0-9_]+")
      }
      if !seen.insert(model.key).inserted { throw fail("\(at).key", "duplicate key \"\(model.key)\"") }
      let parts = model.file.split(separator: "/", omittingEmptySubsequences: false)
      if model.file.isEmpty || model.file.hasPrefix("/") || parts.contains("..") {
        throw fail("\(at).file", "\"\(model.file)\" must be a relative path inside the bundle (no \"..\")")
      }
      let expected: [Int] =
        model.input.layout == .nchw
        ? [1, 3, pre.cropHeight, pre.cropWidth] : [1, pre.cropHeight, pre.cropWidth, 3]
      if model.input.shape != expected {
        throw fail(
          "\(at).input.shape",
          "\(model.input.shape) does not match layout \(model.input.layout.rawValue) and preprocess.crop "
            + "\(pre.crop) (expected \(expected))")
      }
      try checkQuant(model.input.dtype, model.input.quant, at: "\(at).input", fail: fail)
      try checkQuant(model.output.dtype, model.output.quant, at: "\(at).output", fail: fail)
      if model.output.shape != [1, classes.count] {
        throw fail(
          "\(at).output.shape",
          "\(model.output.shape) does not match the \(classes.count) labels of \"classes\" "
            + "(expected [1, \(classes.count)])")
      }
    }
  }

  static let keyCharacters = CharacterSet(
    charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")

  private func checkQuant(
    _ dtype: DType, _ quant: Quant?, at: String, fail: (String, String) -> BundleError
  ) throws {
    guard let range = dtype.quantizedRange else {
      if quant != nil { throw fail("\(at).quant", "must be null for a \(dtype.rawValue) tensor") }
      return
    }
    guard let quant else { throw fail("\(at).quant", "missing: dtype \(dtype.rawValue) needs scale and zero_point") }
    if !(quant.scale > 0) { throw fail("\(at).quant.scale", "must be > 0, got \(quant.scale)") }
    if !range.contains(quant.zeroPoint) {
      throw fail("\(at).quant.zero_point", "\(quant.zeroPoint) is outside the \(dtype.rawValue) range \(range)")
    }
  }
}
