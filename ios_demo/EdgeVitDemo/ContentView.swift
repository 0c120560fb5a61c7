import EdgeVitCore
import PhotosUI
import SwiftUI

/// One screen: engine and compute-unit pickers, camera toggle, photo picker, top-5 and median latency.
struct ContentView: View {
  @EnvironmentObject private var model: ClassifierViewModel
  @State private var photo: PhotosPickerItem?

  var body: some View {
    NavigationStack {
      Form {
        Section("Engine") {
          Picker("Model", selection: $model.selected) {
            ForEach(model.choices) { choice in
              Text(title(of: choice)).tag(Optional(choice))
            }
          }
          Picker("Core ML compute units", selection: $model.units) {
            ForEach(ComputeUnits.allCases) { Text($0.rawValue).tag($0) }
          }
          .pickerStyle(.segmented)
          LabeledContent("Running", value: model.engineName)
        }
        Section("Input") {
          Toggle("Camera", isOn: $model.cameraOn)
          PhotosPicker(selection: $photo, matching: .images) {
            Label("Pick a photo", systemImage: "photo")
          }
        }
        Section("Top 5") {
          ForEach(model.rows) { row in
            HStack {
              Text(row.label)
              Spacer()
              Text(row.probability, format: .percent.precision(.fractionLength(1)))
                .monospacedDigit()
            }
          }
          if let ms = model.medianMilliseconds {
            LabeledContent("Median latency (last 30)", value: String(format: "%.2f ms", ms))
          }
        }
        if let error = model.error {
          Section("Error") { Text(error).foregroundStyle(.red) }
        }
      }
      .navigationTitle("edgevit")
    }
    .onChange(of: photo) { _, item in
      guard let item else { return }
      model.cameraOn = false
      Task {
        if let data = try? await item.loadTransferable(type: Data.self) { model.classify(photo: data) }
      }
    }
  }

  private func title(of choice: EngineChoice) -> String {
    switch choice {
    case .coreML(let key, _): return "Core ML · \(key)"
    case .executorch(let key): return "ExecuTorch · \(key)"
    }
  }
}
