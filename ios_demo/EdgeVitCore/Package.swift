// swift-tools-version:5.9
// EdgeVitCore: the iOS demo's platform-free core (bundle parsing, the app preprocessing spec, softmax/top-k, the
// Engine protocol) and its golden-case runner. Foundation only, so it builds and is tested on Linux too.
import PackageDescription

let package = Package(
  name: "EdgeVitCore",
  platforms: [.iOS(.v17), .macOS(.v14)],
  products: [
    .library(name: "EdgeVitCore", targets: ["EdgeVitCore"]),
    .executable(name: "edgevit-golden", targets: ["edgevit-golden"]),
  ],
  targets: [
    .target(name: "EdgeVitCore"),
    .executableTarget(name: "edgevit-golden", dependencies: ["EdgeVitCore"]),
    .testTarget(name: "EdgeVitCoreTests", dependencies: ["EdgeVitCore"]),
  ]
)
