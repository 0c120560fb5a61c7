import CoreVideo
import EdgeVitCore
import XCTest

@testable import EdgeVitDemo

/// The bundle's golden cases through the app's real code paths on a device or simulator: the camera path
/// (CVPixelBuffer with its own bytes-per-row) gives the golden input tensors, and the real Core ML and ExecuTorch
/// engines give the golden logits (within a per-precision tolerance) and the same top-1. The bundle is the one
/// the "Copy edgevit bundle" build phase put in the app (EDGEVIT_BUNDLE at build time); without one they fail.
final class GoldenEngineTests: XCTestCase {
  private func golden() throws -> (URL, BundleSpec, GoldenCases) {
    let (dir, bundle) = try AppBundle.load()
    let cases = try GoldenCases.load(directory: dir.appendingPathComponent("golden"))
    XCTAssertFalse(cases.cases.isEmpty, "the bundle has no golden cases: write it with `edgevit bundle --cases N`")
    return (dir, bundle, cases)
  }

  /// A CVPixelBuffer holding a golden BGRA case, copied row by row (its bytes-per-row is CoreVideo's choice).
  private func pixelBuffer(_ bytes: Data, _ c: GoldenCase) throws -> CVPixelBuffer {
    var made: CVPixelBuffer?
    let status = CVPixelBufferCreate(nil, c.width, c.height, kCVPixelFormatType_32BGRA, nil, &made)
    guard status == kCVReturnSuccess, let buffer = made else { throw PreprocessError("CVPixelBufferCreate \(status)") }
    CVPixelBufferLockBaseAddress(buffer, [])
    defer { CVPixelBufferUnlockBaseAddress(buffer, []) }
    let base = CVPixelBufferGetBaseAddress(buffer)!
    let stride = CVPixelBufferGetBytesPerRow(buffer)
    bytes.withUnsafeBytes { src in
      for row in 0..<c.height {
        (base + row * stride).copyMemory(from: src.baseAddress! + row * c.rowStride, byteCount: 4 * c.width)
      }
    }
    return buffer
  }

  func testCameraPathGivesGoldenInputs() throws {
    let (_, bundle, cases) = try golden()
    let preprocessor = Preprocessor(spec: bundle.preprocess)
    var compared = 0
    for c in cases.cases where c.pixelFormat == .bgra8888 {
      let buffer = try pixelBuffer(try cases.pixels(of: c), c)
      for model in bundle.models {
        guard let want = try cases.expectedInput(of: c, model: model) else { continue }
        let got = try PixelFrame.withBGRA(buffer, rotation: c.rotation) {
          try preprocessor.tensor(bytes: $0, layout: $1, input: model.input)
        }
        XCTAssertEqual(got.shape, want.shape)
        XCTAssertEqual(
          maxDifference(got, want), 0, accuracy: model.input.dtype == .float32 ? 1e-6 : 0, "\(c.id) \(model.key)")
        compared += 1
      }
    }
    XCTAssertGreaterThan(compared, 0, "no BGRA golden case with an expected input")
  }

  func testCoreMLEnginesGiveGoldenLogits() async throws {
    let (dir, bundle, cases) = try golden()
    let models = bundle.models.filter { $0.backend == .coreml }
    XCTAssertFalse(models.isEmpty, "the iOS bundle ships no Core ML model")
    for model in models {
      // CPU only: the golden logits come from a float64/float32 reference; the Neural Engine computes in fp16.
      let engine = try await CoreMLEngine.load(bundleDirectory: dir, model: model, computeUnits: .cpuOnly)
      try check(engine, cases: cases)
    }
  }

  func testExecuTorchEnginesGiveGoldenLogits() throws {
    let (dir, bundle, cases) = try golden()
    let models = bundle.models.filter { $0.backend == .executorch }
    XCTAssertFalse(models.isEmpty, "the iOS bundle ships no ExecuTorch model")
    for model in models {
      try check(ExecuTorchEngine(bundleDirectory: dir, model: model), cases: cases)
    }
  }

  /// Runs every case's golden input through `engine`; logits within tolerance and the same top-1 (unless the
  /// expected top-2 are closer than the tolerance).
  private func check(_ engine: Engine, cases: GoldenCases) throws {
    let model = engine.model
    var compared = 0
    for c in cases.cases {
      guard let input = try cases.expectedInput(of: c, model: model),
        let want = try cases.expectedLogits(of: c, model: model)
      else { continue }
      let got = try Postprocess.logits(try engine.run(input), spec: model.output)
      let scale = max(1, want.map(abs).max() ?? 1)
      let tolerance = Self.relativeTolerance[model.precision]! * scale
      let worst = zip(got, want).map { abs($0 - $1) }.max() ?? 0
      XCTAssertLessThanOrEqual(worst, tolerance, "\(engine.displayName) \(c.id): max |logit diff| \(worst)")
      let ranked = Postprocess.classify(want, k: 2)
      if ranked.count < 2 || want[ranked[0].index] - want[ranked[1].index] > 2 * tolerance {
        XCTAssertEqual(Postprocess.classify(got, k: 1).first?.index, ranked[0].index, "\(engine.displayName) \(c.id)")
      }
      compared += 1
    }
    XCTAssertGreaterThan(compared, 0, "no golden case has an input and logits for \(model.key)")
  }

  /// Max |logit difference| / max(1, max |logit|) allowed per precision (device kernels vs the Python runtime).
  static let relativeTolerance: [Precision: Double] = [.fp32: 1e-3, .fp16: 2e-2, .int8: 5e-2]
}

private func maxDifference(_ a: InputTensor, _ b: InputTensor) -> Double {
  func doubles(_ t: InputTensor) -> [Double] {
    switch t {
    case .float32(let v, _): return v.map { Double($0) }
    case .int8(let v, _): return v.map { Double($0) }
    case .uint8(let v, _): return v.map { Double($0) }
    }
  }
  return zip(doubles(a), doubles(b)).map { abs($0 - $1) }.max() ?? .infinity
}
