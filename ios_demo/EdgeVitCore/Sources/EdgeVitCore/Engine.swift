import Foundation

/// A runtime that executes one bundled model: the app's Core ML and ExecuTorch engines implement it.
public protocol Engine: AnyObject {
  /// The bundle entry this engine runs.
  var model: ModelSpec { get }
  /// A short name for the UI, e.g. "Core ML (CPU+NE)".
  var displayName: String { get }
  /// Runs the model on one input tensor (already in the model's layout and dtype).
  /// - Throws: the runtime's error, or `PreprocessError` for an input the model cannot take.
  func run(_ input: InputTensor) throws -> OutputTensor
}

/// One classified frame: ranked classes and how long the engine took.
public struct Classification: Sendable {
  public let predictions: [Prediction]
  /// Seconds spent in `Engine.run` alone (preprocessing excluded).
  public let inferenceSeconds: Double
}

/// The whole app path for one engine: pixels -> tensor -> engine -> top-k.
public final class Classifier {
  public let bundle: BundleSpec
  public let engine: Engine
  public let preprocessor: Preprocessor
  public let topK: Int

  public init(bundle: BundleSpec, engine: Engine, topK: Int = 5) {
    self.bundle = bundle
    self.engine = engine
    self.preprocessor = Preprocessor(spec: bundle.preprocess)
    self.topK = topK
  }

  /// Classifies one raw buffer.
  /// - Throws: `PreprocessError` for a bad buffer, or the engine's error.
  public func classify(bytes: UnsafeRawBufferPointer, layout: PixelLayout) throws -> Classification {
    let input = try preprocessor.tensor(bytes: bytes, layout: layout, input: engine.model.input)
    let start = DispatchTime.now().uptimeNanoseconds
    let output = try engine.run(input)
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    let logits = try Postprocess.logits(output, spec: engine.model.output)
    return Classification(predictions: Postprocess.classify(logits, k: topK), inferenceSeconds: seconds)
  }

  /// The label of a prediction.
  public func label(_ prediction: Prediction) -> String { bundle.classes[prediction.index] }
}

/// The median of the most recent `capacity` latencies (what the app shows).
public struct LatencyWindow: Sendable {
  public let capacity: Int
  private var samples: [Double] = []

  public init(capacity: Int = 30) {
    precondition(capacity > 0, "capacity must be positive")
    self.capacity = capacity
  }

  /// Adds one sample, dropping the oldest beyond `capacity`.
  public mutating func add(_ seconds: Double) {
    samples.append(seconds)
    if samples.count > capacity { samples.removeFirst(samples.count - capacity) }
  }

  public var count: Int { samples.count }

  /// The median of the window (mean of the middle two for an even count); nil when empty.
  public var median: Double? {
    guard !samples.isEmpty else { return nil }
    let sorted = samples.sorted()
    let mid = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
  }
}
