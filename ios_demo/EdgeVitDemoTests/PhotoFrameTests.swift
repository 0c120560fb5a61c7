import CoreGraphics
import EdgeVitCore
import XCTest

@testable import EdgeVitDemo

/// The photo path: a CGImage drawn into RGBA keeps its pixels and the EXIF rotation reaches the core.
final class PhotoFrameTests: XCTestCase {
  func testDrawnPhotoKeepsPixelsAndRotation() throws {
    // A 3x2 image whose pixels are distinct colours, as stored (before its orientation is applied).
    let width = 3
    let height = 2
    var rgba = [UInt8](repeating: 255, count: 4 * width * height)
    for i in 0..<(width * height) { (rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2]) = (UInt8(40 * i), 7, 200) }
    let provider = CGDataProvider(data: Data(rgba) as CFData)!
    let image = CGImage(
      width: width, height: height, bitsPerComponent: 8, bitsPerPixel: 32, bytesPerRow: 4 * width,
      space: CGColorSpace(name: CGColorSpace.sRGB)!,
      bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.noneSkipLast.rawValue),
      provider: provider, decode: nil, shouldInterpolate: false, intent: .defaultIntent)!
    let frame = try PhotoFrame(image: image, rotation: 90)
    XCTAssertEqual(frame.layout, PixelLayout(width: 3, height: 2, rowStride: 12, format: .rgba8888, rotation: 90))
    for i in 0..<(width * height) {
      XCTAssertEqual(Array(frame.bytes[(4 * i)..<(4 * i + 3)]), [UInt8(40 * i), 7, 200], "pixel \(i)")
    }
  }
}
