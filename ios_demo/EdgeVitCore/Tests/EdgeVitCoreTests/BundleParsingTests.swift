import EdgeVitCore
import Foundation
import XCTest

/// bundle.json and cases.json readers: the spec's example parses, and every malformed file fails naming the key.
final class BundleParsingTests: XCTestCase {
  private func parseError(_ tree: [String: Any], file: StaticString = #filePath, line: UInt = #line) -> BundleError? {
    do {
      _ = try BundleSpec.parse(jsonData(tree))
      XCTFail("a malformed bundle.json was accepted", file: file, line: line)
      return nil
    } catch let error as BundleError {
      return error
    } catch {
      XCTFail("expected a BundleError, got \(error)", file: file, line: line)
      return nil
    }
  }

  func testExampleBundleParses() throws {
    let bundle = try BundleSpec.parse(jsonData(exampleBundleJSON()))
    XCTAssertEqual(bundle.classes.count, 10)
    XCTAssertEqual(bundle.preprocess.crop, [32, 32])
    XCTAssertEqual(bundle.preprocess.interpolation, .bilinear)
    XCTAssertEqual(bundle.models.map(\.key), ["executorch_fp32", "coreml_int8"])
    let int8 = try bundle.model("coreml_int8")
    XCTAssertEqual(int8.input.layout, .nhwc)
    XCTAssertEqual(int8.input.quant, Quant(scale: 0.0078125, zeroPoint: -3))
    XCTAssertEqual(int8.output.quant, Quant(scale: 0.1, zeroPoint: 2))
    XCTAssertNil(try bundle.model("executorch_fp32").input.quant)
  }

  func testMissingKeyIsNamedByItsPath() {
    let error = parseError(setting(exampleBundleJSON(), "models[1].input.layout", to: nil))
    XCTAssertEqual(error?.keyPath, "models[1].input.layout")
    XCTAssertEqual(error?.description, "bundle.json: models[1].input.layout: missing")
  }

  func testMissingPreprocessKeyIsNamed() {
    XCTAssertEqual(parseError(setting(exampleBundleJSON(), "preprocess.crop", to: nil))?.keyPath, "preprocess.crop")
    XCTAssertEqual(parseError(setting(exampleBundleJSON(), "classes", to: nil))?.keyPath, "classes")
  }

  func testUnknownVersionIsRejectedBeforeAnythingElse() {
    // A newer writer may have renamed keys: the reader must say "version", not some missing key.
    var tree = setting(exampleBundleJSON(), "version", to: 2)
    tree = setting(tree, "preprocess", to: nil)
    let error = parseError(tree)
    XCTAssertEqual(error?.keyPath, "version")
    XCTAssertTrue(error?.message.contains("unknown version 2") ?? false, "\(String(describing: error))")
  }

  func testMissingVersionAndUnknownFormatAreNamed() {
    XCTAssertEqual(parseError(setting(exampleBundleJSON(), "version", to: nil))?.keyPath, "version")
    XCTAssertEqual(parseError(setting(exampleBundleJSON(), "format", to: "other"))?.keyPath, "format")
  }

  func testClassCountMismatchNamesTheOutputShape() {
    let error = parseError(setting(exampleBundleJSON(), "models[1].output.shape", to: [1, 12]))
    XCTAssertEqual(error?.keyPath, "models[1].output.shape")
    XCTAssertTrue(error?.message.contains("the 10 labels of \"classes\"") ?? false, "\(String(describing: error))")
    let fewer = setting(exampleBundleJSON(), "classes", to: ["a", "b"])
    XCTAssertEqual(parseError(fewer)?.keyPath, "models[0].output.shape")
  }

  func testUnknownEnumValueIsNamed() {
    let error = parseError(setting(exampleBundleJSON(), "models[0].input.layout", to: "NCWH"))
    XCTAssertEqual(error?.keyPath, "models[0].input.layout")
    XCTAssertTrue(error?.message.contains("\"NCWH\"") ?? false)
    XCTAssertEqual(
      parseError(setting(exampleBundleJSON(), "preprocess.interpolation", to: "lanczos"))?.keyPath,
      "preprocess.interpolation")
  }

  func testWrongTypeIsNamed() {
    XCTAssertEqual(parseError(setting(exampleBundleJSON(), "classes", to: "0123456789"))?.keyPath, "classes")
    XCTAssertEqual(
      parseError(setting(exampleBundleJSON(), "preprocess.mean[1]", to: "half"))?.keyPath, "preprocess.mean[1]")
  }

  func testInt8WithoutQuantIsNamed() {
    XCTAssertEqual(
      parseError(setting(exampleBundleJSON(), "models[1].input.quant", to: NSNull()))?.keyPath,
      "models[1].input.quant")
    XCTAssertEqual(
      parseError(setting(exampleBundleJSON(), "models[1].output.quant.zero_point", to: 300))?.keyPath,
      "models[1].output.quant.zero_point")
  }

  func testShapeThatContradictsLayoutAndCropIsNamed() {
    // NCHW shape under an NHWC layout: the app would feed planes to a model that reads interleaved pixels.
    let error = parseError(setting(exampleBundleJSON(), "models[1].input.shape", to: [1, 3, 32, 32]))
    XCTAssertEqual(error?.keyPath, "models[1].input.shape")
    XCTAssertEqual(
      parseError(setting(exampleBundleJSON(), "preprocess.crop", to: [32, 30]))?.keyPath, "models[0].input.shape")
  }

  func testBadPreprocessValuesAreNamed() {
    XCTAssertEqual(
      parseError(setting(exampleBundleJSON(), "preprocess.std", to: [0.5, 0, 0.5]))?.keyPath,
      "preprocess.std[1]")
    XCTAssertEqual(parseError(setting(exampleBundleJSON(), "preprocess.mean", to: [0.5]))?.keyPath, "preprocess.mean")
    XCTAssertEqual(
      parseError(setting(exampleBundleJSON(), "models[1].key", to: "executorch_fp32"))?.keyPath, "models[1].key")
  }

  func testReaderChecksOfBundleMdAreNamed() {
    let tree = exampleBundleJSON()
    XCTAssertEqual(parseError(setting(tree, "models[0].key", to: "fp32 model"))?.keyPath, "models[0].key")
    XCTAssertEqual(parseError(setting(tree, "models[0].file", to: "../../etc/passwd"))?.keyPath, "models[0].file")
    XCTAssertEqual(parseError(setting(tree, "models[0].file", to: "/abs/model.pte"))?.keyPath, "models[0].file")
    XCTAssertEqual(
      parseError(setting(tree, "models[0].input.quant", to: ["scale": 0.1, "zero_point": 0]))?.keyPath,
      "models[0].input.quant")  // quant on a float tensor
    XCTAssertEqual(parseError(setting(tree, "preprocess.crop", to: [40, 32]))?.keyPath, "preprocess.crop")
    XCTAssertEqual(parseError(setting(tree, "models[1].precision", to: "int4"))?.keyPath, "models[1].precision")
    XCTAssertEqual(parseError(setting(tree, "models[0].output.shape", to: [10]))?.keyPath, "models[0].output.shape")
  }

  func testUnknownOptionalKeysAreIgnored() throws {
    var tree = setting(exampleBundleJSON(), "created_by", to: ["edgevit": "0.1.0"])
    tree = setting(tree, "preprocess.source", to: "timm")
    XCTAssertEqual(try BundleSpec.parse(jsonData(tree)).models.count, 2)
  }

  func testNotJSONFailsWithOneLine() {
    XCTAssertThrowsError(try BundleSpec.parse(Data("{not json".utf8))) { error in
      XCTAssertTrue("\(error)".hasPrefix("bundle.json: not valid JSON"), "\(error)")
    }
  }

  func testMissingBundleFileNamesThePath() {
    let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("no-such-bundle-\(UUID())")
    XCTAssertThrowsError(try BundleSpec.load(directory: dir)) { error in
      XCTAssertTrue("\(error)".contains(dir.path), "\(error)")
    }
  }

  // MARK: cases.json

  private func casesError(_ tree: [String: Any]) throws -> BundleError? {
    let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("cases-\(UUID())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    try jsonData(tree).write(to: dir.appendingPathComponent("cases.json"))
    do {
      _ = try GoldenCases.load(directory: dir)
      return nil
    } catch let error as BundleError {
      return error
    }
  }

  private var exampleCases: [String: Any] {
    [
      "version": 1, "top_k": 5,
      "cases": [
        [
          "id": "case_000", "buffer": "case_000.raw", "width": 37, "height": 29, "row_stride": 160,
          "pixel_format": "RGBA_8888", "rotation": 90, "source": "hand",
          "expected": [
            "executorch_fp32": ["input": "case_000__executorch_fp32.bin", "logits": [0.0, 1.0], "top_k": [[1, 0.73]]]
          ],
        ] as [String: Any]
      ],
    ]
  }

  func testCasesParseAndMalformedCasesAreNamed() throws {
    XCTAssertNil(try casesError(exampleCases))
    XCTAssertEqual(try casesError(setting(exampleCases, "cases[0].rotation", to: 45))?.keyPath, "cases[0].rotation")
    XCTAssertEqual(
      try casesError(setting(exampleCases, "cases[0].row_stride", to: 100))?.keyPath, "cases[0].row_stride")
    XCTAssertEqual(
      try casesError(setting(exampleCases, "cases[0].pixel_format", to: "ARGB_8888"))?.keyPath, "cases[0].pixel_format")
    XCTAssertEqual(try casesError(setting(exampleCases, "cases[0].width", to: nil))?.keyPath, "cases[0].width")
    XCTAssertEqual(try casesError(setting(exampleCases, "version", to: 7))?.keyPath, "version")
    XCTAssertEqual(
      try casesError(setting(exampleCases, "cases[0].expected.executorch_fp32.top_k[0]", to: [1]))?.keyPath,
      "cases[0].expected.executorch_fp32.top_k[0][1]")  // the missing probability
  }
}
