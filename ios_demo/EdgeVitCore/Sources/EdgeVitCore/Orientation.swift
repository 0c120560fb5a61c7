import Foundation

/// The `rotation` bundle.md asks for (clockwise degrees that make a buffer upright), from what iOS reports.
public enum Orientation {
  /// The clockwise rotation that makes an image stored with EXIF / `CGImagePropertyOrientation` value
  /// `exifOrientation` upright: 1 -> 0, 6 -> 90, 3 -> 180, 8 -> 270. Nil for the mirrored values (2, 4, 5, 7) and
  /// unknown ones: the app draws those upright itself and passes rotation 0.
  public static func rotation(exifOrientation: Int) -> Int? {
    switch exifOrientation {
    case 1: return 0
    case 6: return 90
    case 3: return 180
    case 8: return 270
    default: return nil
    }
  }

  /// An AVFoundation rotation angle in degrees clockwise (`AVCaptureDevice.RotationCoordinator
  /// .videoRotationAngleForHorizonLevelCapture`, with the connection itself left unrotated) snapped to the
  /// nearest of 0, 90, 180, 270.
  public static func rotation(degrees: Double) -> Int {
    let quarter = Int((degrees / 90).rounded())
    return ((quarter % 4) + 4) % 4 * 90
  }
}
