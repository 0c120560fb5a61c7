import EdgeVitCore
import ExecuTorch
import Foundation

/// Runs a bundled `.pte` with ExecuTorch's Swift `Module` (package branch `swiftpm-<executorch version>`; the
/// XNNPACK backend and kernels are linked into the app target with `-all_load` so they register at start-up).
final class ExecuTorchEngine: Engine {
  let model: ModelSpec
  let displayName: String
  private let module: Module

  init(bundleDirectory: URL, model: ModelSpec) throws {
    guard model.backend == .executorch else { throw PreprocessError("\(model.key) is not an ExecuTorch model") }
    self.model = model
    self.displayName = "ExecuTorch \(model.precision.rawValue)"
    module = Module(filePath: bundleDirectory.appendingPathComponent(model.file).path)
    try module.load("forward")
  }

  func run(_ input: InputTensor) throws -> OutputTensor {
    let value: Value
    switch input {
    case .float32(let values, let shape): value = Value(Tensor<Float>(values, shape: shape))
    case .int8(let values, let shape): value = Value(Tensor<Int8>(values, shape: shape))
    case .uint8(let values, let shape): value = Value(Tensor<UInt8>(values, shape: shape))
    }
    let outputs: [Value] = try module.forward([value])
    guard let tensor = outputs.first?.anyTensor else {
      throw PreprocessError("\(model.file): forward returned no tensor")
    }
    if let floats: Tensor<Float> = tensor.asTensor() {
      return .float32(floats.withUnsafeBytes { Array($0) })
    }
    if let ints: Tensor<Int8> = tensor.asTensor() {
      return .int8(ints.withUnsafeBytes { Array($0) })
    }
    if let bytes: Tensor<UInt8> = tensor.asTensor() {
      return .uint8(bytes.withUnsafeBytes { Array($0) })
    }
    throw PreprocessError("\(model.file): output dtype \(tensor.dataType) is not float32, int8 or uint8")
  }
}
