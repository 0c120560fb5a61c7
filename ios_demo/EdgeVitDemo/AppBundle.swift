import EdgeVitCore
import Foundation

/// The edgevit bundle copied into the app by the "Copy edgevit bundle" build phase (folder `EdgeVitBundle`).
enum AppBundle {
  static let folderName = "EdgeVitBundle"

  /// The bundle directory inside `bundle` (the app, or a test bundle).
  /// - Throws: `BundleError` when the build phase did not copy one (build with EDGEVIT_BUNDLE set).
  static func directory(in bundle: Bundle = .main) throws -> URL {
    guard let url = bundle.url(forResource: folderName, withExtension: nil),
      FileManager.default.fileExists(atPath: url.appendingPathComponent("bundle.json").path)
    else {
      throw BundleError(
        file: "bundle.json", keyPath: "",
        message: "no \(folderName) in the app: set EDGEVIT_BUNDLE to a folder written by `edgevit bundle "
          + "RUN --platform ios` (or link it at ios_demo/bundle) and rebuild")
    }
    return url
  }

  /// The parsed bundle.json of the app's bundle.
  static func load(in bundle: Bundle = .main) throws -> (URL, BundleSpec) {
    let dir = try directory(in: bundle)
    return (dir, try BundleSpec.load(directory: dir))
  }
}
