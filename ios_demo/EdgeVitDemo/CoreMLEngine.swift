import CoreML
import EdgeVitCore
import Foundation

/// Runs a bundled `.mlpackage` with `MLModel` on an `MLMultiArray` input (the exported model takes a tensor,
/// not an image, so Vision's `VNCoreMLRequest` does not apply). The package is compiled once per sha256 and the
/// compiled `.mlmodelc` cached in Application Support.
final class CoreMLEngine: Engine {
  let model: ModelSpec
  let displayName: String
  private let mlModel: MLModel
  private let inputName: String
  private let outputName: String
  private let inputType: MLMultiArrayDataType

  private init(model: ModelSpec, mlModel: MLModel, units: ComputeUnits) throws {
    self.model = model
    self.mlModel = mlModel
    self.displayName = "Core ML \(model.precision.rawValue) (\(units.rawValue))"
    let inputs = mlModel.modelDescription.inputDescriptionsByName
    let outputs = mlModel.modelDescription.outputDescriptionsByName
    guard let inputName = model.input.name.flatMap({ inputs[$0] != nil ? $0 : nil }) ?? inputs.keys.first,
      let outputName = model.output.name.flatMap({ outputs[$0] != nil ? $0 : nil }) ?? outputs.keys.first,
      let constraint = inputs[inputName]?.multiArrayConstraint
    else {
      throw PreprocessError("\(model.file): Core ML model has no multi-array input/output named like bundle.json's")
    }
    self.inputName = inputName
    self.outputName = outputName
    self.inputType = constraint.dataType
    let declared = constraint.shape.map(\.intValue)
    guard declared == model.input.shape else {
      throw PreprocessError(
        "\(model.file): Core ML input \(inputName) is \(declared), bundle.json says \(model.input.shape)")
    }
  }

  /// Compiles (or reuses the cached compilation of) the model and loads it on `computeUnits`.
  static func load(bundleDirectory: URL, model: ModelSpec, computeUnits: ComputeUnits) async throws -> CoreMLEngine {
    guard model.backend == .coreml else { throw PreprocessError("\(model.key) is not a Core ML model") }
    let source = bundleDirectory.appendingPathComponent(model.file)
    let compiled = try await compiledModel(source: source, cacheKey: model.sha256 ?? model.key)
    let config = MLModelConfiguration()
    config.computeUnits = computeUnits.mlComputeUnits
    let mlModel = try await MLModel.load(contentsOf: compiled, configuration: config)
    return try CoreMLEngine(model: model, mlModel: mlModel, units: computeUnits)
  }

  private static func compiledModel(source: URL, cacheKey: String) async throws -> URL {
    let fm = FileManager.default
    let cache = try fm.url(for: .applicationSupportDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
      .appendingPathComponent("compiled-models", isDirectory: true)
    try fm.createDirectory(at: cache, withIntermediateDirectories: true)
    let target = cache.appendingPathComponent("\(cacheKey).mlmodelc")
    if fm.fileExists(atPath: target.path) { return target }
    let temporary = try await MLModel.compileModel(at: source)
    _ = try? fm.removeItem(at: target)
    try fm.moveItem(at: temporary, to: target)
    return target
  }

  func run(_ input: InputTensor) throws -> OutputTensor {
    let array = try MLMultiArray(shape: model.input.shape.map { NSNumber(value: $0) }, dataType: inputType)
    try Self.fill(array, with: input)
    let features = try MLDictionaryFeatureProvider(dictionary: [inputName: MLFeatureValue(multiArray: array)])
    let result = try mlModel.prediction(from: features)
    guard let logits = result.featureValue(for: outputName)?.multiArrayValue else {
      throw PreprocessError("\(model.file): output \(outputName) is not a multi-array")
    }
    return .float32(Self.floats(of: logits))
  }

  /// Copies the tensor into a fresh (contiguous, row-major) multi-array of the model's input type.
  static func fill(_ array: MLMultiArray, with input: InputTensor) throws {
    guard case .float32(let values, _) = input else {
      throw PreprocessError("this app feeds Core ML float32 tensors; bundle.json asks for \(input)")
    }
    guard array.count == values.count else {
      throw PreprocessError("Core ML input holds \(array.count) values, the tensor has \(values.count)")
    }
    switch array.dataType {
    case .float32:
      let pointer = array.dataPointer.bindMemory(to: Float.self, capacity: values.count)
      values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
    case .float16:
      #if arch(arm64)
        let pointer = array.dataPointer.bindMemory(to: Float16.self, capacity: values.count)
        for i in 0..<values.count { pointer[i] = Float16(values[i]) }
      #else  // Float16 is unavailable on x86_64 simulators: let Core ML convert
        for i in 0..<values.count { array[i] = NSNumber(value: values[i]) }
      #endif
    case .double:
      let pointer = array.dataPointer.bindMemory(to: Double.self, capacity: values.count)
      for i in 0..<values.count { pointer[i] = Double(values[i]) }
    default:
      throw PreprocessError("unsupported Core ML input type \(array.dataType.rawValue)")
    }
  }

  /// The multi-array's values as Float, honouring its strides.
  static func floats(of array: MLMultiArray) -> [Float] {
    let count = array.count
    let shape = array.shape.map(\.intValue)
    let strides = array.strides.map(\.intValue)
    var out = [Float](repeating: 0, count: count)
    for flat in 0..<count {
      var rest = flat
      var offset = 0
      for axis in stride(from: shape.count - 1, through: 0, by: -1) {
        offset += (rest % shape[axis]) * strides[axis]
        rest /= shape[axis]
      }
      switch array.dataType {
      case .float16:
        #if arch(arm64)
          out[flat] = Float(array.dataPointer.assumingMemoryBound(to: Float16.self)[offset])
        #else
          out[flat] = array[flat].floatValue
        #endif
      case .double: out[flat] = Float(array.dataPointer.assumingMemoryBound(to: Double.self)[offset])
      case .int32: out[flat] = Float(array.dataPointer.assumingMemoryBound(to: Int32.self)[offset])
      default: out[flat] = array.dataPointer.assumingMemoryBound(to: Float.self)[offset]
      }
    }
    return out
  }
}
