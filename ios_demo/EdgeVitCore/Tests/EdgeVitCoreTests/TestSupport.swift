import EdgeVitCore
import Foundation
import XCTest

/// A valid bundle.json as a mutable JSON tree (two models: float NCHW and int8 NHWC), the spec's example.
func exampleBundleJSON(classes: Int = 10) -> [String: Any] {
  [
    "format": "edgevit-bundle",
    "version": 1,
    "platform": "ios",
    "model_name": "vit_tiny_patch16",
    "classes": (0..<classes).map { String($0) },
    "preprocess": [
      "color_order": "RGB", "value_scale": 255.0, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
      "resize_shorter": 36, "interpolation": "bilinear", "antialias": true, "crop": [32, 32],
    ] as [String: Any],
    "models": [
      [
        "key": "executorch_fp32", "file": "models/executorch_fp32.pte", "backend": "executorch",
        "precision": "fp32", "sha256": "00",
        "input": ["dtype": "float32", "layout": "NCHW", "shape": [1, 3, 32, 32], "quant": NSNull()] as [String: Any],
        "output": ["dtype": "float32", "shape": [1, classes], "quant": NSNull()] as [String: Any],
      ] as [String: Any],
      [
        "key": "coreml_int8", "file": "models/coreml_int8.mlpackage", "backend": "coreml", "precision": "int8",
        "sha256": "01",
        "input": [
          "dtype": "int8", "layout": "NHWC", "shape": [1, 32, 32, 3],
          "quant": ["scale": 0.0078125, "zero_point": -3] as [String: Any],
        ] as [String: Any],
        "output": [
          "dtype": "int8", "shape": [1, classes], "quant": ["scale": 0.1, "zero_point": 2] as [String: Any],
        ] as [String: Any],
      ] as [String: Any],
    ],
  ]
}

func jsonData(_ tree: Any) -> Data {
  // swiftlint-free: the trees above are valid JSON objects by construction.
  try! JSONSerialization.data(withJSONObject: tree, options: [.sortedKeys])
}

/// Sets (or, with `nil`, removes) the value at a key path like `models[1].input.layout` in a JSON tree.
func setting(_ tree: [String: Any], _ path: String, to value: Any?) -> [String: Any] {
  enum Step {
    case key(String)
    case index(Int)
  }
  var steps: [Step] = []
  for part in path.split(separator: ".") {
    var name = Substring(part)
    var indices: [Int] = []
    while let open = name.lastIndex(of: "[") {
      indices.insert(Int(name[name.index(after: open)..<name.index(before: name.endIndex)])!, at: 0)
      name = name[..<open]
    }
    steps.append(.key(String(name)))
    steps += indices.map { .index($0) }
  }
  func apply(_ node: Any, _ rest: ArraySlice<Step>) -> Any? {
    guard let step = rest.first else { return value }
    switch step {
    case .key(let key):
      var dict = node as! [String: Any]
      dict[key] = rest.count == 1 ? value : apply(dict[key]!, rest.dropFirst())
      return dict
    case .index(let index):
      var array = node as! [Any]
      if rest.count == 1, value == nil {
        array.remove(at: index)
      } else {
        array[index] = apply(array[index], rest.dropFirst())!
      }
      return array
    }
  }
  return apply(tree, steps[...]) as! [String: Any]
}

func makePreprocess(
  resizeShorter: Int, crop: [Int], interpolation: Interpolation = .bilinear, antialias: Bool = true,
  colorOrder: ColorOrder = .rgb, valueScale: Double = 1, mean: [Double] = [0, 0, 0], std: [Double] = [1, 1, 1]
) -> PreprocessSpec {
  PreprocessSpec(
    colorOrder: colorOrder, valueScale: valueScale, mean: mean, std: std, resizeShorter: resizeShorter,
    interpolation: interpolation, antialias: antialias, crop: crop)
}

func floatInput(_ layout: Layout, height: Int, width: Int) -> InputSpec {
  InputSpec(
    dtype: .float32, layout: layout,
    shape: layout == .nchw ? [1, 3, height, width] : [1, height, width, 3], quant: nil)
}

/// A 4-byte-per-pixel buffer from per-pixel (r, g, b), written in `format` with `padding` garbage bytes per row.
func makeBuffer(
  width: Int, height: Int, format: PixelFormat, padding: Int = 0, pixel: (Int, Int) -> (UInt8, UInt8, UInt8)
) -> (bytes: [UInt8], stride: Int) {
  let stride = 4 * width + padding
  var bytes = [UInt8](repeating: 0xEE, count: stride * height)  // garbage in the row padding
  for row in 0..<height {
    for col in 0..<width {
      let (r, g, b) = pixel(row, col)
      let p = row * stride + 4 * col
      switch format {
      case .rgba8888: (bytes[p], bytes[p + 1], bytes[p + 2], bytes[p + 3]) = (r, g, b, 0x7F)
      case .bgra8888: (bytes[p], bytes[p + 1], bytes[p + 2], bytes[p + 3]) = (b, g, r, 0x7F)
      }
    }
  }
  return (bytes, stride)
}

extension InputTensor {
  /// Float64 view of any tensor (for comparisons).
  var doubles: [Double] {
    switch self {
    case .float32(let v, _): return v.map { Double($0) }
    case .int8(let v, _): return v.map { Double($0) }
    case .uint8(let v, _): return v.map { Double($0) }
    }
  }
}
