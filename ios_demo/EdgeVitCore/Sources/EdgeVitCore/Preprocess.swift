import Foundation

/// Byte order of a 4-byte pixel. Alpha is never read.
public enum PixelFormat: String, JSONEnum, Sendable {
  /// Bytes R, G, B, A (Android `RGBA_8888`, a `CGContext` with `noneSkipLast`).
  case rgba8888 = "RGBA_8888"
  /// Bytes B, G, R, A (iOS `kCVPixelFormatType_32BGRA` camera frames).
  case bgra8888 = "BGRA_8888"

  /// Byte offsets of red, green and blue inside a pixel.
  var rgbOffsets: (Int, Int, Int) {
    switch self {
    case .rgba8888: return (0, 1, 2)
    case .bgra8888: return (2, 1, 0)
    }
  }
}

/// A problem with a pixel buffer or with the preprocessing it asks for.
public struct PreprocessError: Error, Equatable, CustomStringConvertible, LocalizedError {
  public let message: String
  public init(_ message: String) { self.message = message }
  public var description: String { message }
  public var errorDescription: String? { message }
}

/// Geometry of a raw 8-bit, 4-channel pixel buffer and the clockwise rotation that makes it upright.
public struct PixelLayout: Equatable, Sendable {
  public let width: Int
  public let height: Int
  /// Bytes from the start of one row to the next (>= 4 * width; camera buffers pad rows).
  public let rowStride: Int
  public let format: PixelFormat
  /// Clockwise rotation in degrees (0, 90, 180 or 270) that makes the buffer upright.
  public let rotation: Int

  public init(width: Int, height: Int, rowStride: Int, format: PixelFormat, rotation: Int) {
    self.width = width
    self.height = height
    self.rowStride = rowStride
    self.format = format
    self.rotation = rotation
  }

  /// The fewest bytes a buffer of this geometry holds (the last row need not be padded).
  public var minimumByteCount: Int { height > 0 ? rowStride * (height - 1) + 4 * width : 0 }

  /// Size of the upright image.
  public var uprightSize: (height: Int, width: Int) {
    rotation == 90 || rotation == 270 ? (width, height) : (height, width)
  }

  func validate(byteCount: Int) throws {
    guard width > 0, height > 0 else { throw PreprocessError("pixel buffer is \(width)x\(height): must not be empty") }
    guard rowStride >= 4 * width else {
      throw PreprocessError("row stride \(rowStride) is smaller than 4 * width (\(4 * width))")
    }
    guard [0, 90, 180, 270].contains(rotation) else {
      throw PreprocessError("rotation \(rotation) is not one of 0, 90, 180, 270")
    }
    guard byteCount >= minimumByteCount else {
      throw PreprocessError(
        "pixel buffer has \(byteCount) bytes, \(width)x\(height) with row stride \(rowStride) needs \(minimumByteCount)"
      )
    }
  }
}

/// A model input tensor, in the model's layout, with its shape.
public enum InputTensor: Equatable, Sendable {
  case float32([Float], shape: [Int])
  case int8([Int8], shape: [Int])
  case uint8([UInt8], shape: [Int])

  public var shape: [Int] {
    switch self {
    case .float32(_, let shape), .int8(_, let shape), .uint8(_, let shape): return shape
    }
  }

  public var count: Int {
    switch self {
    case .float32(let v, _): return v.count
    case .int8(let v, _): return v.count
    case .uint8(let v, _): return v.count
    }
  }

  /// The tensor's bytes, little-endian (the golden `.bin` format).
  public var littleEndianBytes: Data {
    switch self {
    case .float32(let values, _):
      var data = Data(capacity: values.count * 4)
      for value in values {
        withUnsafeBytes(of: value.bitPattern.littleEndian) { data.append(contentsOf: $0) }
      }
      return data
    case .int8(let values, _): return Data(values.map { UInt8(bitPattern: $0) })
    case .uint8(let values, _): return Data(values)
    }
  }

  /// Reads a little-endian tensor of `dtype` and `shape` (the golden `.bin` format).
  /// - Throws: `PreprocessError` when the byte count does not match the shape.
  public static func fromLittleEndian(_ data: Data, dtype: DType, shape: [Int]) throws -> InputTensor {
    let count = shape.reduce(1, *)
    let width = dtype == .float32 ? 4 : 1
    guard data.count == count * width else {
      throw PreprocessError("tensor file has \(data.count) bytes; \(dtype.rawValue) \(shape) needs \(count * width)")
    }
    let bytes = [UInt8](data)
    switch dtype {
    case .float32:
      var values = [Float](repeating: 0, count: count)
      for i in 0..<count {
        let bits =
          UInt32(bytes[4 * i]) | UInt32(bytes[4 * i + 1]) << 8 | UInt32(bytes[4 * i + 2]) << 16
          | UInt32(bytes[4 * i + 3]) << 24
        values[i] = Float(bitPattern: bits)
      }
      return .float32(values, shape: shape)
    case .int8: return .int8(bytes.map { Int8(bitPattern: $0) }, shape: shape)
    case .uint8: return .uint8(bytes, shape: shape)
    }
  }
}

/// The app pipeline of docs/reference/bundle.md: raw RGBA/BGRA buffer with row stride and rotation -> upright
/// RGB -> separable resize of the shorter side -> centre crop -> normalise -> layout -> dtype.
/// All arithmetic is Float64 in the order the spec writes it; only the final tensor is cast.
public struct Preprocessor: Sendable {
  public let spec: PreprocessSpec

  public init(spec: PreprocessSpec) { self.spec = spec }

  /// The model input for one buffer.
  /// - Parameters:
  ///   - bytes: the buffer (at least `layout.minimumByteCount` bytes).
  ///   - layout: its geometry, pixel format and rotation.
  ///   - input: the model's input spec (dtype, layout, quant).
  /// - Returns: the tensor in the model's layout and dtype.
  /// - Throws: `PreprocessError` for a buffer too small, a bad stride/rotation, or a crop larger than the
  ///   resized image.
  public func tensor(bytes: UnsafeRawBufferPointer, layout: PixelLayout, input: InputSpec) throws -> InputTensor {
    let normalized = try normalizedCrop(bytes: bytes, layout: layout)
    return Preprocessor.pack(normalized, height: spec.cropHeight, width: spec.cropWidth, input: input)
  }

  /// Convenience for `tensor(bytes:layout:input:)` over `Data` / `[UInt8]`.
  public func tensor<Bytes: ContiguousBytes>(_ bytes: Bytes, layout: PixelLayout, input: InputSpec) throws
    -> InputTensor
  {
    try bytes.withUnsafeBytes { try tensor(bytes: $0, layout: layout, input: input) }
  }

  /// Steps 1-4: the cropped, normalised image as `[h][w][c]` Float64 values, channels in the model's
  /// `color_order`.
  public func normalizedCrop(bytes: UnsafeRawBufferPointer, layout: PixelLayout) throws -> [Double] {
    try layout.validate(byteCount: bytes.count)
    let (uprightH, uprightW) = layout.uprightSize
    let (outH, outW) = Preprocessor.resizedSize(height: uprightH, width: uprightW, shorter: spec.resizeShorter)
    let cropH = spec.cropHeight
    let cropW = spec.cropWidth
    guard cropH <= outH, cropW <= outW else {
      throw PreprocessError(
        "crop \(cropH)x\(cropW) is larger than the resized image \(outH)x\(outW) (upright \(uprightH)x\(uprightW))")
    }
    // Step 3's offsets; only the cropped outputs are computed (each output is independent of the others).
    let top = Preprocessor.halfEven(outH - cropH)
    let left = Preprocessor.halfEven(outW - cropW)

    // Step 1: upright RGB, read through the rotation: upright (r, c) -> buffer (row, col).
    let (offR, offG, offB) = layout.format.rgbOffsets
    let stride = layout.rowStride
    let h = layout.height
    let w = layout.width
    let rotation = layout.rotation
    @inline(__always) func byteIndex(_ r: Int, _ c: Int) -> Int {
      switch rotation {
      case 90: return (h - 1 - c) * stride + 4 * r
      case 180: return (h - 1 - r) * stride + 4 * (w - 1 - c)
      case 270: return c * stride + 4 * (w - 1 - r)
      default: return r * stride + 4 * c
      }
    }

    // Step 2a: horizontal pass, every upright row, the cropped output columns; [uprightH][cropW][3] in RGB.
    let hWeights = Preprocessor.weights(
      inSize: uprightW, outSize: outW, range: left..<(left + cropW), spec: spec)
    var rows = [Double](repeating: 0, count: uprightH * cropW * 3)
    for r in 0..<uprightH {
      for (x, taps) in hWeights.enumerated() {
        var red = 0.0
        var green = 0.0
        var blue = 0.0
        for (j, weight) in taps {
          let p = byteIndex(r, j)
          red += weight * Double(bytes[p + offR])
          green += weight * Double(bytes[p + offG])
          blue += weight * Double(bytes[p + offB])
        }
        let o = (r * cropW + x) * 3
        rows[o] = red
        rows[o + 1] = green
        rows[o + 2] = blue
      }
    }

    // Step 2b: vertical pass over the cropped output rows; step 4: normalise into the model's channel order.
    let vWeights = Preprocessor.weights(inSize: uprightH, outSize: outH, range: top..<(top + cropH), spec: spec)
    let order = spec.colorOrder == .rgb ? [0, 1, 2] : [2, 1, 0]
    var out = [Double](repeating: 0, count: cropH * cropW * 3)
    for (y, taps) in vWeights.enumerated() {
      for x in 0..<cropW {
        var rgb = (0.0, 0.0, 0.0)
        for (j, weight) in taps {
          let p = (j * cropW + x) * 3
          rgb.0 += weight * rows[p]
          rgb.1 += weight * rows[p + 1]
          rgb.2 += weight * rows[p + 2]
        }
        let values = [rgb.0, rgb.1, rgb.2]
        let o = (y * cropW + x) * 3
        for k in 0..<3 {
          out[o + k] = (values[order[k]] / spec.valueScale - spec.mean[k]) / spec.std[k]
        }
      }
    }
    return out
  }

  /// Steps 5-6: `[h][w][c]` values into the model's layout and dtype.
  public static func pack(_ hwc: [Double], height: Int, width: Int, input: InputSpec) -> InputTensor {
    let count = height * width * 3
    var ordered = [Double](repeating: 0, count: count)
    switch input.layout {
    case .nhwc:
      ordered = hwc
    case .nchw:
      for y in 0..<height {
        for x in 0..<width {
          for c in 0..<3 {
            ordered[(c * height + y) * width + x] = hwc[(y * width + x) * 3 + c]
          }
        }
      }
    }
    switch input.dtype {
    case .float32:
      return .float32(ordered.map { Float($0) }, shape: input.shape)
    case .int8:
      return .int8(quantize(ordered, input.quant!, .int8).map { Int8($0) }, shape: input.shape)
    case .uint8:
      return .uint8(quantize(ordered, input.quant!, .uint8).map { UInt8($0) }, shape: input.shape)
    }
  }

  /// TFLite's quantize: `clamp(round_half_away_from_zero(x / scale) + zero_point, min, max)`.
  public static func quantize(_ values: [Double], _ quant: Quant, _ dtype: DType) -> [Int] {
    let range = dtype.quantizedRange!
    return values.map { x in
      // sign(t) * floor(|t| + 0.5), not t.rounded(): the two differ when |t| + 0.5 rounds up to an integer.
      let t = x / quant.scale
      let magnitude = (abs(t) + 0.5).rounded(.down)
      let q = Int(t < 0 ? -magnitude : magnitude) + quant.zeroPoint
      return min(max(q, range.lowerBound), range.upperBound)
    }
  }

  /// torchvision `Resize(int)`: the shorter side becomes `shorter`, the longer `floor(shorter * longer / shorter)`.
  public static func resizedSize(height: Int, width: Int, shorter: Int) -> (height: Int, width: Int) {
    if width <= height {
      return (shorter * height / width, shorter)
    }
    return (shorter, shorter * width / height)
  }

  /// `round(d / 2)` with ties to even, in integers (torchvision `CenterCrop`).
  static func halfEven(_ d: Int) -> Int {
    let q = d / 2
    return d % 2 != 0 && q % 2 != 0 ? q + 1 : q
  }

  /// Normalised filter taps `(input index, weight)` for the output indices in `range` (PIL's precompute_coeffs,
  /// as bundle.md writes it). An axis whose size does not change is copied unchanged (one tap of weight 1).
  static func weights(inSize: Int, outSize: Int, range: Range<Int>, spec: PreprocessSpec) -> [[(Int, Double)]] {
    if inSize == outSize { return range.map { [($0, 1.0)] } }
    let scale = Double(inSize) / Double(outSize)
    let filterScale = spec.antialias && scale > 1 ? scale : 1.0
    let invFilterScale = 1.0 / filterScale  // PIL multiplies by 1 / fs; dividing by fs differs in the last bit
    let support = spec.interpolation.support * filterScale
    let filter: (Double) -> Double = spec.interpolation == .bilinear ? triangle : keysCubic
    return range.map { i in
      let center = (Double(i) + 0.5) * scale
      let lo = max(Int((center - support + 0.5).rounded(.towardZero)), 0)
      let hi = min(Int((center + support + 0.5).rounded(.towardZero)), inSize)
      var taps: [(Int, Double)] = []
      var total = 0.0
      for j in lo..<max(hi, lo) {
        let weight = filter(((Double(j) - center) + 0.5) * invFilterScale)
        taps.append((j, weight))
        total += weight
      }
      return taps.map { ($0.0, total != 0 ? $0.1 / total : 0) }
    }
  }

  static func triangle(_ x: Double) -> Double {
    let x = abs(x)
    return x < 1 ? 1 - x : 0
  }

  /// Keys' cubic convolution with a = -0.5 (PIL's bicubic filter).
  static func keysCubic(_ x: Double) -> Double {
    let a = -0.5
    let x = abs(x)
    if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
    if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
    return 0
  }
}
