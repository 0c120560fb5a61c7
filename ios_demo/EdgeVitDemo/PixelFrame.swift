import CoreVideo
import EdgeVitCore
import Foundation

/// Raw 4-byte pixels an engine can be fed from: a camera `CVPixelBuffer` (BGRA, rows padded) or a decoded photo
/// (RGBA), with the clockwise rotation that makes it upright. The bytes are read in place, never converted.
enum PixelFrame {
  /// Calls `body` with the locked bytes and geometry of a `kCVPixelFormatType_32BGRA` camera buffer.
  /// - Throws: `PreprocessError` for any other pixel format, or `body`'s error.
  static func withBGRA<R>(
    _ buffer: CVPixelBuffer, rotation: Int, _ body: (UnsafeRawBufferPointer, PixelLayout) throws -> R
  ) throws -> R {
    guard CVPixelBufferGetPixelFormatType(buffer) == kCVPixelFormatType_32BGRA else {
      throw PreprocessError("camera frame is not 32BGRA (set the video output's pixel format)")
    }
    CVPixelBufferLockBaseAddress(buffer, .readOnly)
    defer { CVPixelBufferUnlockBaseAddress(buffer, .readOnly) }
    guard let base = CVPixelBufferGetBaseAddress(buffer) else { throw PreprocessError("camera frame has no pixels") }
    let layout = PixelLayout(
      width: CVPixelBufferGetWidth(buffer), height: CVPixelBufferGetHeight(buffer),
      rowStride: CVPixelBufferGetBytesPerRow(buffer), format: .bgra8888, rotation: rotation)
    let bytes = UnsafeRawBufferPointer(start: base, count: CVPixelBufferGetDataSize(buffer))
    return try body(bytes, layout)
  }
}
