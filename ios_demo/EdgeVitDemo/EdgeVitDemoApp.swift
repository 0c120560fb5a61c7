import SwiftUI

/// The edgevit iOS demo: classifies camera frames or a picked photo with the bundled Core ML and ExecuTorch models,
/// preprocessing exactly as the Python evaluation transform (EdgeVitCore, checked against golden cases).
@main
struct EdgeVitDemoApp: App {
  @StateObject private var model = ClassifierViewModel()

  var body: some Scene {
    WindowGroup {
      ContentView()
        .environmentObject(model)
        .task { await model.start() }
    }
  }
}
