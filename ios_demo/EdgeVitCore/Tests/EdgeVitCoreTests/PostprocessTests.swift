import EdgeVitCore
import Foundation
import XCTest

/// Logits -> probabilities -> top-k, the latency window, and the Classifier path through a real (tiny) engine.
final class PostprocessTests: XCTestCase {
  func testSoftmaxKnownValues() {
    let p = Postprocess.softmax([0, log(3)])
    XCTAssertEqual(p[0], 0.25, accuracy: 1e-12)
    XCTAssertEqual(p[1], 0.75, accuracy: 1e-12)
  }

  func testSoftmaxDoesNotOverflowOnLargeLogits() {
    let p = Postprocess.softmax([1000, 1000 + log(3)])
    XCTAssertEqual(p[1], 0.75, accuracy: 1e-12)
  }

  func testTopKIsStableOnTies() {
    let top = Postprocess.topK([0.1, 0.3, 0.3, 0.0, 0.3], k: 4)
    XCTAssertEqual(top.map(\.index), [1, 2, 4, 0])
    XCTAssertEqual(Postprocess.topK([0.5, 0.5], k: 5).map(\.index), [0, 1])
  }

  func testInt8LogitsAreDequantizedWithZeroPoint() throws {
    let spec = OutputSpec(dtype: .int8, shape: [1, 3], quant: Quant(scale: 0.5, zeroPoint: -10))
    XCTAssertEqual(try Postprocess.logits(.int8([-10, 0, 10]), spec: spec), [0, 5, 10])
    XCTAssertThrowsError(try Postprocess.logits(.int8([1, 2]), spec: spec))
  }

  func testLatencyWindowMedian() {
    var window = LatencyWindow(capacity: 3)
    XCTAssertNil(window.median)
    window.add(5)
    window.add(1)
    XCTAssertEqual(window.median, 3)
    window.add(2)
    XCTAssertEqual(window.median, 2)
    window.add(100)  // drops the 5: window is 1, 2, 100
    XCTAssertEqual(window.count, 3)
    XCTAssertEqual(window.median, 2)
  }

  /// A real engine small enough to reason about: logit c is the mean of input channel c (NCHW float input).
  private final class ChannelMeanEngine: Engine {
    let model: ModelSpec
    var displayName: String { "channel-mean" }
    init(model: ModelSpec) { self.model = model }
    func run(_ input: InputTensor) throws -> OutputTensor {
      guard case .float32(let values, let shape) = input, shape == model.input.shape else {
        throw PreprocessError("channel-mean engine takes \(model.input.shape) float32")
      }
      let plane = values.count / 3
      let means = (0..<3).map { c in values[(c * plane)..<((c + 1) * plane)].reduce(0, +) / Float(plane) }
      return .float32(means)
    }
  }

  func testClassifierRunsPixelsThroughTheEngine() throws {
    let tree = setting(exampleBundleJSON(classes: 3), "models[1]", to: nil)  // keep the float NCHW model
    let bundle = try BundleSpec.parse(jsonData(tree))
    let classifier = Classifier(bundle: bundle, engine: ChannelMeanEngine(model: bundle.models[0]), topK: 2)
    // A blue frame: after (x/255 - 0.5)/0.5 the channel means are -1, -1, 1 -> class 2 ranks first.
    let buf = makeBuffer(width: 40, height: 50, format: .bgra8888) { _, _ in (0, 0, 255) }
    let layout = PixelLayout(width: 40, height: 50, rowStride: buf.stride, format: .bgra8888, rotation: 90)
    let result = try buf.bytes.withUnsafeBytes { try classifier.classify(bytes: $0, layout: layout) }
    XCTAssertEqual(result.predictions.map(\.index), [2, 0])
    let e2 = exp(2.0)
    XCTAssertEqual(result.predictions[0].probability, e2 / (e2 + 2), accuracy: 1e-6)
    XCTAssertGreaterThanOrEqual(result.inferenceSeconds, 0)
    XCTAssertEqual(classifier.label(result.predictions[0]), "2")
  }
}

/// What the app derives a buffer's rotation from: photo EXIF orientation and the camera's rotation angle.
final class OrientationTests: XCTestCase {
  func testEXIFOrientationToClockwiseRotation() {
    XCTAssertEqual(Orientation.rotation(exifOrientation: 1), 0)
    XCTAssertEqual(Orientation.rotation(exifOrientation: 6), 90)  // a portrait iPhone photo: stored landscape
    XCTAssertEqual(Orientation.rotation(exifOrientation: 3), 180)
    XCTAssertEqual(Orientation.rotation(exifOrientation: 8), 270)
    XCTAssertNil(Orientation.rotation(exifOrientation: 5))  // mirrored: drawn upright by the app instead
  }

  func testCameraAngleSnapsToQuarterTurns() {
    XCTAssertEqual(Orientation.rotation(degrees: 90), 90)  // back camera, phone held upright
    XCTAssertEqual(Orientation.rotation(degrees: 0), 0)
    XCTAssertEqual(Orientation.rotation(degrees: 269.6), 270)
    XCTAssertEqual(Orientation.rotation(degrees: 360), 0)
    XCTAssertEqual(Orientation.rotation(degrees: -90), 270)
  }
}
