import CoreML
import EdgeVitCore
import Foundation

/// Which runtime runs a bundled model, and (for Core ML) on which compute units.
enum EngineChoice: Hashable, Identifiable {
  case coreML(modelKey: String, units: ComputeUnits)
  case executorch(modelKey: String)

  var id: String {
    switch self {
    case .coreML(let key, let units): return "coreml:\(key):\(units.rawValue)"
    case .executorch(let key): return "executorch:\(key)"
    }
  }

  var modelKey: String {
    switch self {
    case .coreML(let key, _), .executorch(let key): return key
    }
  }
}

/// MLComputeUnits as a pickable value.
enum ComputeUnits: String, CaseIterable, Identifiable {
  case all = "All"
  case cpuAndNeuralEngine = "CPU+NE"
  case cpuAndGPU = "CPU+GPU"
  case cpuOnly = "CPU"

  var id: String { rawValue }

  var mlComputeUnits: MLComputeUnits {
    switch self {
    case .all: return .all
    case .cpuAndNeuralEngine: return .cpuAndNeuralEngine
    case .cpuAndGPU: return .cpuAndGPU
    case .cpuOnly: return .cpuOnly
    }
  }
}

enum EngineFactory {
  /// Every engine the bundle offers: its Core ML models (one entry per model; units chosen separately) and its
  /// ExecuTorch models.
  static func choices(for bundle: BundleSpec, units: ComputeUnits) -> [EngineChoice] {
    bundle.models.compactMap { model in
      switch model.backend {
      case .coreml: return .coreML(modelKey: model.key, units: units)
      case .executorch: return .executorch(modelKey: model.key)
      case .tflite: return nil  // Android only
      }
    }
  }

  /// Loads the engine for `choice` from the bundle at `directory`.
  /// - Throws: `BundleError` for an unknown key, or the runtime's error loading the model.
  static func make(_ choice: EngineChoice, bundle: BundleSpec, directory: URL) async throws -> Engine {
    let model = try bundle.model(choice.modelKey)
    switch choice {
    case .coreML(_, let units):
      return try await CoreMLEngine.load(bundleDirectory: directory, model: model, computeUnits: units)
    case .executorch:
      return try ExecuTorchEngine(bundleDirectory: directory, model: model)
    }
  }
}
