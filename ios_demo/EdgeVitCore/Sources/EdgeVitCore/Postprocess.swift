import Foundation

/// A model's raw output tensor (logits), as an engine returns it.
public enum OutputTensor: Equatable, Sendable {
  case float32([Float])
  case int8([Int8])
  case uint8([UInt8])

  public var count: Int {
    switch self {
    case .float32(let v): return v.count
    case .int8(let v): return v.count
    case .uint8(let v): return v.count
    }
  }
}

/// One ranked class: its index into `classes` and its softmax probability.
public struct Prediction: Equatable, Sendable {
  public let index: Int
  public let probability: Double

  public init(index: Int, probability: Double) {
    self.index = index
    self.probability = probability
  }
}

/// Logits -> probabilities -> ranked classes, exactly as docs/reference/bundle.md writes it.
public enum Postprocess {
  /// Real-valued logits: float32 widened, int8/uint8 dequantized as `(q - zero_point) * scale`.
  /// - Throws: `PreprocessError` when the output has the wrong element count or lacks its quantization.
  public static func logits(_ output: OutputTensor, spec: OutputSpec) throws -> [Double] {
    let expected = spec.shape.reduce(1, *)
    guard output.count == expected else {
      throw PreprocessError("model returned \(output.count) values, bundle.json says output shape \(spec.shape)")
    }
    switch output {
    case .float32(let values):
      return values.map { Double($0) }
    case .int8(let values):
      guard let quant = spec.quant else { throw PreprocessError("int8 output without output.quant") }
      return values.map { Double(Int($0) - quant.zeroPoint) * quant.scale }
    case .uint8(let values):
      guard let quant = spec.quant else { throw PreprocessError("uint8 output without output.quant") }
      return values.map { Double(Int($0) - quant.zeroPoint) * quant.scale }
    }
  }

  /// Softmax in Float64: subtract the max, exponentiate, divide by the sum accumulated in index order.
  public static func softmax(_ logits: [Double]) -> [Double] {
    guard let peak = logits.max() else { return [] }
    let exps = logits.map { exp($0 - peak) }
    var total = 0.0
    for value in exps { total += value }
    return exps.map { $0 / total }
  }

  /// The `k` highest-scoring classes, by descending score, ties by lower index first (stable).
  /// - Parameters:
  ///   - scores: the ranking key (bundle.md ranks by logit: `exp` differs between libms, a logit does not).
  ///   - probabilities: what each prediction reports (defaults to `scores`).
  public static func topK(_ scores: [Double], probabilities: [Double]? = nil, k: Int) -> [Prediction] {
    let order = scores.indices.sorted { a, b in scores[a] != scores[b] ? scores[a] > scores[b] : a < b }
    let p = probabilities ?? scores
    return order.prefix(max(k, 0)).map { Prediction(index: $0, probability: p[$0]) }
  }

  /// Top-k of `logits`: ranked by logit, each with its softmax probability.
  public static func classify(_ logits: [Double], k: Int) -> [Prediction] {
    topK(logits, probabilities: softmax(logits), k: k)
  }
}
