import CoreVideo
import EdgeVitCore
import Foundation
import SwiftUI

/// App state: the bundle, the selected engine, the latest top-5 and the median latency of recent inferences.
@MainActor
final class ClassifierViewModel: ObservableObject {
  struct Row: Identifiable {
    let id: Int
    let label: String
    let probability: Double
  }

  @Published private(set) var choices: [EngineChoice] = []
  @Published var units: ComputeUnits = .all {
    didSet { rebuildChoices() }
  }
  @Published var selected: EngineChoice? {
    didSet { if selected != oldValue { Task { await loadEngine() } } }
  }
  @Published private(set) var rows: [Row] = []
  @Published private(set) var medianMilliseconds: Double?
  @Published private(set) var engineName = "loading…"
  @Published private(set) var error: String?
  @Published var cameraOn = false {
    didSet { cameraOn ? camera.start() : camera.stop() }
  }

  let camera = CameraFeed()
  private var bundle: BundleSpec?
  private var directory: URL?
  private let worker = InferenceWorker()
  private var latencies = LatencyWindow(capacity: 30)

  /// Reads the app's bundle, offers its engines and starts the first one.
  func start() async {
    do {
      let (dir, spec) = try AppBundle.load()
      bundle = spec
      directory = dir
      rebuildChoices()
      selected = choices.first
      // Frames are classified on the camera's queue; a late frame is dropped by the output, never queued.
      try await camera.configure { [weak self, worker] pixels, rotation in
        let result = Result {
          try worker.classify { classifier in
            try PixelFrame.withBGRA(pixels, rotation: rotation) { try classifier.classify(bytes: $0, layout: $1) }
          }
        }
        Task { @MainActor in self?.show(result) }
      }
    } catch {
      self.error = "\(error)"
    }
  }

  private func rebuildChoices() {
    guard let bundle else { return }
    choices = EngineFactory.choices(for: bundle, units: units)
    if let current = selected, case .coreML(let key, _) = current { selected = .coreML(modelKey: key, units: units) }
  }

  private func loadEngine() async {
    guard let choice = selected, let bundle, let directory else { return }
    worker.classifier = nil
    engineName = "loading…"
    do {
      let engine = try await EngineFactory.make(choice, bundle: bundle, directory: directory)
      worker.classifier = Classifier(bundle: bundle, engine: engine, topK: 5)
      engineName = engine.displayName
      latencies = LatencyWindow(capacity: 30)
      medianMilliseconds = nil
      error = nil
    } catch {
      self.error = "\(error)"
    }
  }

  /// Classifies a picked photo (image file data) off the main thread.
  func classify(photo data: Data) {
    let worker = worker
    Task.detached(priority: .userInitiated) {
      let result = Result {
        try worker.classify { classifier in
          let frame = try PhotoFrame(data: data)
          return try frame.bytes.withUnsafeBytes { try classifier.classify(bytes: $0, layout: frame.layout) }
        }
      }
      await MainActor.run { self.show(result) }
    }
  }

  private func show(_ result: Result<(Classification, Classifier)?, Error>) {
    switch result {
    case .success(.none):
      return  // no engine yet, or busy with the previous frame
    case .success(.some(let value)):
      let (classification, classifier) = value
      latencies.add(classification.inferenceSeconds)
      medianMilliseconds = latencies.median.map { $0 * 1000 }
      rows = classification.predictions.map {
        Row(id: $0.index, label: classifier.label($0), probability: $0.probability)
      }
      error = nil
    case .failure(let failure):
      error = "\(failure)"
    }
  }
}

/// Holds the current classifier for the camera queue and photo tasks; one inference at a time.
final class InferenceWorker: @unchecked Sendable {
  private let lock = NSLock()
  private var current: Classifier?
  private var running = false

  var classifier: Classifier? {
    get { lock.withLock { current } }
    set { lock.withLock { current = newValue } }
  }

  /// Runs `body` with the classifier; nil when there is none or another inference is running.
  func classify(_ body: (Classifier) throws -> Classification) throws -> (Classification, Classifier)? {
    let claimed: Classifier? = lock.withLock {
      guard !running, let current else { return nil }
      running = true
      return current
    }
    guard let classifier = claimed else { return nil }
    defer { lock.withLock { running = false } }
    return (try body(classifier), classifier)
  }
}
