import CoreGraphics
import EdgeVitCore
import Foundation
import ImageIO

/// A picked photo decoded to RGBA bytes as stored, plus the EXIF rotation that makes it upright (so photos go
/// through the same rotation code as camera frames). Mirrored orientations are drawn upright instead.
struct PhotoFrame {
  let bytes: [UInt8]
  let layout: PixelLayout

  /// Decodes image file data (JPEG, HEIC, PNG, ...).
  /// - Throws: `PreprocessError` when ImageIO cannot decode it.
  init(data: Data) throws {
    guard let source = CGImageSourceCreateWithData(data as CFData, nil),
      let image = CGImageSourceCreateImageAtIndex(source, 0, nil)
    else { throw PreprocessError("the photo could not be decoded") }
    let properties = CGImageSourceCopyPropertiesAtIndex(source, 0, nil) as? [CFString: Any]
    let exif = (properties?[kCGImagePropertyOrientation] as? NSNumber)?.intValue ?? 1
    if let rotation = Orientation.rotation(exifOrientation: exif) {
      try self.init(image: image, rotation: rotation)
    } else {
      // Mirrored: let ImageIO produce an upright thumbnail at full size, then no rotation is left to do.
      let options: [CFString: Any] = [
        kCGImageSourceCreateThumbnailFromImageAlways: true, kCGImageSourceCreateThumbnailWithTransform: true,
        kCGImageSourceThumbnailMaxPixelSize: max(image.width, image.height),
      ]
      guard let upright = CGImageSourceCreateThumbnailAtIndex(source, 0, options as CFDictionary) else {
        throw PreprocessError("the photo's orientation \(exif) could not be applied")
      }
      try self.init(image: upright, rotation: 0)
    }
  }

  /// Draws `image` (as stored) into an sRGB RGBX buffer: bytes R, G, B, unused.
  init(image: CGImage, rotation: Int) throws {
    let width = image.width
    let height = image.height
    let rowStride = 4 * width
    var bytes = [UInt8](repeating: 0, count: rowStride * height)
    let drawn = bytes.withUnsafeMutableBytes { raw -> Bool in
      guard let space = CGColorSpace(name: CGColorSpace.sRGB),
        let context = CGContext(
          data: raw.baseAddress, width: width, height: height, bitsPerComponent: 8, bytesPerRow: rowStride,
          space: space, bitmapInfo: CGImageAlphaInfo.noneSkipLast.rawValue)
      else { return false }
      context.draw(image, in: CGRect(x: 0, y: 0, width: width, height: height))
      return true
    }
    guard drawn else { throw PreprocessError("could not draw the photo into an RGBA buffer") }
    self.bytes = bytes
    self.layout = PixelLayout(width: width, height: height, rowStride: rowStride, format: .rgba8888, rotation: rotation)
  }
}
