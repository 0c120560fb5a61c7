import EdgeVitCore
import Foundation
import XCTest

/// The app pipeline on small buffers whose expected tensors are worked out by hand from docs/reference/bundle.md.
/// The planted app bugs each fail a test here by name: swapping R and B (testBGRAFrameReadsRedFromByteTwo),
/// skipping the rotation (testRotation90IsClockwise, ...), NCHW for an NHWC model (testNHWCModelGetsInterleavedPixels)
/// and dropping the int8 zero point (testInt8InputAddsZeroPoint).
final class PreprocessTests: XCTestCase {
  /// Geometry that leaves pixels untouched: resize_shorter equal to the shorter side, crop equal to the image.
  private func identity(height: Int, width: Int, colorOrder: ColorOrder = .rgb) -> Preprocessor {
    Preprocessor(
      spec: makePreprocess(resizeShorter: min(height, width), crop: [height, width], colorOrder: colorOrder))
  }

  private func run(
    _ pre: Preprocessor, _ buffer: (bytes: [UInt8], stride: Int), width: Int, height: Int, format: PixelFormat,
    rotation: Int = 0, input: InputSpec
  ) throws -> InputTensor {
    let layout = PixelLayout(width: width, height: height, rowStride: buffer.stride, format: format, rotation: rotation)
    return try pre.tensor(buffer.bytes, layout: layout, input: input)
  }

  // MARK: channel order

  func testRGBAFrameReadsRedFromByteZero() throws {
    let buf = makeBuffer(width: 2, height: 1, format: .rgba8888) { _, col in col == 0 ? (200, 10, 30) : (1, 2, 3) }
    let t = try run(
      identity(height: 1, width: 2), buf, width: 2, height: 1, format: .rgba8888,
      input: floatInput(.nhwc, height: 1, width: 2))
    XCTAssertEqual(t.doubles, [200, 10, 30, 1, 2, 3])
  }

  func testBGRAFrameReadsRedFromByteTwo() throws {
    // iOS camera frames are BGRA: byte 0 is blue. Reading them as RGBA swaps red and blue.
    let buf = makeBuffer(width: 2, height: 1, format: .bgra8888) { _, col in col == 0 ? (200, 10, 30) : (1, 2, 3) }
    XCTAssertEqual(Array(buf.bytes[0..<4]), [30, 10, 200, 0x7F])
    let t = try run(
      identity(height: 1, width: 2), buf, width: 2, height: 1, format: .bgra8888,
      input: floatInput(.nhwc, height: 1, width: 2))
    XCTAssertEqual(t.doubles, [200, 10, 30, 1, 2, 3])
  }

  func testBGRColorOrderFeedsBlueFirst() throws {
    let buf = makeBuffer(width: 1, height: 1, format: .rgba8888) { _, _ in (200, 10, 30) }
    let t = try run(
      identity(height: 1, width: 1, colorOrder: .bgr), buf, width: 1, height: 1, format: .rgba8888,
      input: floatInput(.nchw, height: 1, width: 1))
    XCTAssertEqual(t.doubles, [30, 10, 200])
  }

  // MARK: rotation (upright (r, c) = buffer (H-1-c, r) for 90)

  /// A 3-wide, 2-high buffer whose red channel numbers the pixels 1...6 row by row:
  ///   1 2 3
  ///   4 5 6
  private func numbered(_ format: PixelFormat = .rgba8888) -> (bytes: [UInt8], stride: Int) {
    makeBuffer(width: 3, height: 2, format: format, padding: 4) { row, col in (UInt8(row * 3 + col + 1), 0, 0) }
  }

  private func reds(rotation: Int) throws -> [Double] {
    let upright = rotation == 90 || rotation == 270 ? (3, 2) : (2, 3)
    let t = try run(
      identity(height: upright.0, width: upright.1), numbered(), width: 3, height: 2,
      format: .rgba8888, rotation: rotation, input: floatInput(.nchw, height: upright.0, width: upright.1))
    return Array(t.doubles.prefix(upright.0 * upright.1))  // the red plane, row-major
  }

  func testRotation0KeepsTheBuffer() throws {
    XCTAssertEqual(try reds(rotation: 0), [1, 2, 3, 4, 5, 6])
  }

  func testRotation90IsClockwise() throws {
    // Turning the buffer a quarter clockwise: the bottom-left pixel (4) becomes the top-left.
    //   4 1
    //   5 2
    //   6 3
    XCTAssertEqual(try reds(rotation: 90), [4, 1, 5, 2, 6, 3])
  }

  func testRotation180() throws {
    XCTAssertEqual(try reds(rotation: 180), [6, 5, 4, 3, 2, 1])
  }

  func testRotation270IsCounterClockwise90() throws {
    //   3 6
    //   2 5
    //   1 4
    XCTAssertEqual(try reds(rotation: 270), [3, 6, 2, 5, 1, 4])
  }

  // MARK: layout

  func testNHWCModelGetsInterleavedPixels() throws {
    let buf = makeBuffer(width: 2, height: 1, format: .rgba8888) { _, col in col == 0 ? (1, 2, 3) : (4, 5, 6) }
    let t = try run(
      identity(height: 1, width: 2), buf, width: 2, height: 1, format: .rgba8888,
      input: floatInput(.nhwc, height: 1, width: 2))
    XCTAssertEqual(t.shape, [1, 1, 2, 3])
    XCTAssertEqual(t.doubles, [1, 2, 3, 4, 5, 6])
  }

  func testNCHWModelGetsChannelPlanes() throws {
    let buf = makeBuffer(width: 2, height: 1, format: .rgba8888) { _, col in col == 0 ? (1, 2, 3) : (4, 5, 6) }
    let t = try run(
      identity(height: 1, width: 2), buf, width: 2, height: 1, format: .rgba8888,
      input: floatInput(.nchw, height: 1, width: 2))
    XCTAssertEqual(t.shape, [1, 3, 1, 2])
    XCTAssertEqual(t.doubles, [1, 4, 2, 5, 3, 6])
  }

  // MARK: normalisation and dtype

  func testNormalisesPerChannelInModelOrder() throws {
    let pre = Preprocessor(
      spec: makePreprocess(
        resizeShorter: 1, crop: [1, 1], valueScale: 255, mean: [0.5, 0.25, 0], std: [0.5, 0.25, 2]))
    let buf = makeBuffer(width: 1, height: 1, format: .bgra8888) { _, _ in (255, 51, 0) }
    let t = try run(pre, buf, width: 1, height: 1, format: .bgra8888, input: floatInput(.nchw, height: 1, width: 1))
    // (255/255 - 0.5)/0.5 = 1; (51/255 - 0.25)/0.25 = -0.2; (0 - 0)/2 = 0
    XCTAssertEqual(t.doubles[0], 1, accuracy: 1e-7)
    XCTAssertEqual(t.doubles[1], -0.2, accuracy: 1e-7)
    XCTAssertEqual(t.doubles[2], 0, accuracy: 1e-7)
  }

  func testInt8InputAddsZeroPoint() throws {
    // x = pixel / 1 with scale 1/2: q = round(2x) + zero_point.
    let input = InputSpec(dtype: .int8, layout: .nhwc, shape: [1, 1, 1, 3], quant: Quant(scale: 0.5, zeroPoint: -20))
    let buf = makeBuffer(width: 1, height: 1, format: .rgba8888) { _, _ in (10, 0, 40) }
    let t = try run(identity(height: 1, width: 1), buf, width: 1, height: 1, format: .rgba8888, input: input)
    XCTAssertEqual(t, .int8([0, -20, 60], shape: [1, 1, 1, 3]))
  }

  func testUInt8InputAddsZeroPointAndClamps() throws {
    let input = InputSpec(dtype: .uint8, layout: .nchw, shape: [1, 3, 1, 1], quant: Quant(scale: 1, zeroPoint: 128))
    let buf = makeBuffer(width: 1, height: 1, format: .rgba8888) { _, _ in (10, 127, 200) }
    let t = try run(identity(height: 1, width: 1), buf, width: 1, height: 1, format: .rgba8888, input: input)
    XCTAssertEqual(t, .uint8([138, 255, 255], shape: [1, 3, 1, 1]))
  }

  func testQuantizeRoundsHalfAwayFromZeroAndClamps() {
    let q = Preprocessor.quantize([0.5, -0.5, 1.5, -1.5, 2.4999, 1000, -1000], Quant(scale: 1, zeroPoint: 0), .int8)
    XCTAssertEqual(q, [1, -1, 2, -2, 2, 127, -128])
    // bundle.md's rule is sign(t) * floor(|t| + 0.5): for the largest double below 0.5 the sum rounds up to 1.0,
    // so it gives 1 where t.rounded() gives 0. The NumPy reference and the Kotlin core do the former.
    let justBelowHalf = 0.5.nextDown
    XCTAssertEqual(
      Preprocessor.quantize([justBelowHalf, -justBelowHalf], Quant(scale: 1, zeroPoint: 0), .int8), [1, -1])
  }

  // MARK: resize and crop

  func testResizedSizeFloorsTheLongerSide() {
    XCTAssertEqual(Preprocessor.resizedSize(height: 29, width: 37, shorter: 36).height, 36)
    XCTAssertEqual(Preprocessor.resizedSize(height: 29, width: 37, shorter: 36).width, 45)  // floor(45.93)
    XCTAssertEqual(Preprocessor.resizedSize(height: 640, width: 480, shorter: 36).height, 48)
    XCTAssertEqual(Preprocessor.resizedSize(height: 5, width: 5, shorter: 3).width, 3)
  }

  /// One row of 4 grey levels, resized to 2 wide (upright 1x4 -> shorter side 1 stays, width 4 -> ... ) is not
  /// reachable through Resize(int) alone, so the 1-D filter is checked on a 4x4 -> 2x2 downscale.
  func testBilinearAntialiasedDownscale() throws {
    // s = 2, filter scale 2, support 2. Output 0: centre 1, taps j = 0, 1, 2 with triangle((j - 0.5) / 2)
    // = 0.75, 0.75, 0.25 -> /1.75 = 3/7, 3/7, 1/7. Output 1: centre 3, taps j = 1, 2, 3 -> 1/7, 3/7, 3/7.
    // Columns 0, 70, 140, 210 give (0 + 210 + 140) / 7 = 50 and (70 + 420 + 630) / 7 = 160.
    let pre = Preprocessor(spec: makePreprocess(resizeShorter: 2, crop: [2, 2]))
    let buf = makeBuffer(width: 4, height: 4, format: .rgba8888) { _, col in (UInt8(col * 70), 0, 0) }
    let t = try run(pre, buf, width: 4, height: 4, format: .rgba8888, input: floatInput(.nchw, height: 2, width: 2))
    let red = Array(t.doubles.prefix(4))
    for (got, want) in zip(red, [50.0, 160, 50, 160]) { XCTAssertEqual(got, want, accuracy: 1e-4) }
  }

  func testBilinearWithoutAntialiasUsesTwoTaps() throws {
    // Without antialias the filter keeps support 1: output 0 (centre 1) -> taps j = 0..2 with triangle(j - 0.5)
    // = 0.5, 0.5, 0 -> (0 + 70) / 2 = 35; output 1 (centre 3) -> (140 + 210) / 2 = 175.
    let pre = Preprocessor(spec: makePreprocess(resizeShorter: 2, crop: [2, 2], antialias: false))
    let buf = makeBuffer(width: 4, height: 4, format: .rgba8888) { _, col in (UInt8(col * 70), 0, 0) }
    let t = try run(pre, buf, width: 4, height: 4, format: .rgba8888, input: floatInput(.nchw, height: 2, width: 2))
    for (got, want) in zip(t.doubles.prefix(4), [35.0, 175, 35, 175]) { XCTAssertEqual(got, want, accuracy: 1e-4) }
  }

  func testBilinearUpscaleMatchesHalfPixelCentres() throws {
    // 2 -> 4: s = 0.5; output 0 (centre 0.25) reads only j = 0; output 1 (centre 0.75) weighs j = 0, 1 as
    // 0.75, 0.25; output 2 = 0.25, 0.75; output 3 reads only j = 1. Columns 0, 100 -> 0, 25, 75, 100.
    let pre = Preprocessor(spec: makePreprocess(resizeShorter: 4, crop: [4, 4]))
    let buf = makeBuffer(width: 2, height: 2, format: .rgba8888) { _, col in (UInt8(col * 100), 0, 0) }
    let t = try run(pre, buf, width: 2, height: 2, format: .rgba8888, input: floatInput(.nchw, height: 4, width: 4))
    for (got, want) in zip(t.doubles.prefix(4), [0.0, 25, 75, 100]) { XCTAssertEqual(got, want, accuracy: 1e-4) }
  }

  func testBicubicUpscaleUsesKeysWeights() throws {
    // 4 -> 8 columns, output 3: centre 1.75, taps j = 0..3 at distances 1.25, 0.25, 0.75, 1.75 with Keys (a=-0.5):
    // -0.0703125, 0.8671875, 0.2265625, -0.0234375 (sum 1). Columns 0, 0, 100, 0 -> 22.65625.
    let pre = Preprocessor(spec: makePreprocess(resizeShorter: 8, crop: [8, 8], interpolation: .bicubic))
    let buf = makeBuffer(width: 4, height: 4, format: .rgba8888) { _, col in (col == 2 ? 100 : 0, 0, 0) }
    let t = try run(pre, buf, width: 4, height: 4, format: .rgba8888, input: floatInput(.nchw, height: 8, width: 8))
    XCTAssertEqual(t.doubles[3], 22.65625, accuracy: 1e-4)
  }

  func testCentreCropRoundsHalfToEven() throws {
    // Upright 1 wide x 7 high with resize_shorter 1: nothing resized; crop 2 rows: top = round(2.5) = 2 (even).
    let pre = Preprocessor(spec: makePreprocess(resizeShorter: 1, crop: [2, 1]))
    let buf = makeBuffer(width: 1, height: 7, format: .rgba8888) { row, _ in (UInt8(row), 0, 0) }
    let t = try run(pre, buf, width: 1, height: 7, format: .rgba8888, input: floatInput(.nchw, height: 2, width: 1))
    XCTAssertEqual(Array(t.doubles.prefix(2)), [2, 3])
    // 6 high: top = round(2.0) = 2; 4 high: top = round(1.0) = 1; 5 high: top = round(1.5) = 2.
    let five = makeBuffer(width: 1, height: 5, format: .rgba8888) { row, _ in (UInt8(row), 0, 0) }
    let t5 = try run(pre, five, width: 1, height: 5, format: .rgba8888, input: floatInput(.nchw, height: 2, width: 1))
    XCTAssertEqual(Array(t5.doubles.prefix(2)), [2, 3])
  }

  // MARK: buffer checks

  func testRowStridePaddingIsNeverRead() throws {
    let pre = Preprocessor(spec: makePreprocess(resizeShorter: 2, crop: [2, 2]))
    let tight = makeBuffer(width: 5, height: 3, format: .bgra8888) { r, c in (UInt8(r * 40 + c), UInt8(c * 9), 7) }
    let padded = makeBuffer(width: 5, height: 3, format: .bgra8888, padding: 12) { r, c in
      (UInt8(r * 40 + c), UInt8(c * 9), 7)
    }
    let input = floatInput(.nhwc, height: 2, width: 2)
    XCTAssertEqual(
      try run(pre, tight, width: 5, height: 3, format: .bgra8888, rotation: 90, input: input),
      try run(pre, padded, width: 5, height: 3, format: .bgra8888, rotation: 90, input: input))
  }

  func testBadBuffersFailWithOneLine() {
    let pre = identity(height: 2, width: 3)
    let input = floatInput(.nchw, height: 2, width: 3)
    let bytes = [UInt8](repeating: 0, count: 24)
    func message(_ layout: PixelLayout) -> String {
      do {
        _ = try pre.tensor(bytes, layout: layout, input: input)
        return "accepted"
      } catch { return "\(error)" }
    }
    XCTAssertTrue(
      message(PixelLayout(width: 3, height: 2, rowStride: 12, format: .rgba8888, rotation: 45))
        .contains("rotation 45"))
    XCTAssertTrue(
      message(PixelLayout(width: 3, height: 2, rowStride: 8, format: .rgba8888, rotation: 0))
        .contains("row stride 8"))
    XCTAssertTrue(
      message(PixelLayout(width: 3, height: 3, rowStride: 12, format: .rgba8888, rotation: 0))
        .contains("has 24 bytes"))
    XCTAssertTrue(
      message(PixelLayout(width: 3, height: 2, rowStride: 12, format: .rgba8888, rotation: 90))
        .contains("larger than the resized image"))
  }

  func testLittleEndianRoundTrip() throws {
    let t = InputTensor.float32([1.5, -2, 0.1], shape: [3])
    XCTAssertEqual(Array(t.littleEndianBytes.prefix(4)), [0, 0, 0xC0, 0x3F])
    XCTAssertEqual(try InputTensor.fromLittleEndian(t.littleEndianBytes, dtype: .float32, shape: [3]), t)
    XCTAssertThrowsError(try InputTensor.fromLittleEndian(Data([1, 2]), dtype: .int8, shape: [3]))
  }
}
