import Foundation

/// A bundle or golden-case file that cannot be used, with the key path at fault
/// (`models[1].input.layout`), so a reader can fix the writer.
public struct BundleError: Error, Equatable, CustomStringConvertible {
  /// The file the error is in, e.g. `bundle.json`.
  public let file: String
  /// The JSON key path at fault, e.g. `models[1].input.layout` (empty for the document as a whole).
  public let keyPath: String
  /// What is wrong there and, where it helps, what was expected.
  public let message: String

  public init(file: String, keyPath: String, message: String) {
    self.file = file
    self.keyPath = keyPath
    self.message = message
  }

  public var description: String {
    keyPath.isEmpty ? "\(file): \(message)" : "\(file): \(keyPath): \(message)"
  }
}

extension BundleError: LocalizedError {
  public var errorDescription: String? { description }
}

/// A string-valued enumeration read from JSON whose unknown values fail naming the accepted ones.
public protocol JSONEnum: RawRepresentable, CaseIterable, Decodable where RawValue == String {}

extension JSONEnum {
  public init(from decoder: Decoder) throws {
    let container = try decoder.singleValueContainer()
    let raw = try container.decode(String.self)
    guard let value = Self(rawValue: raw) else {
      let accepted = Self.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
      throw DecodingError.dataCorruptedError(
        in: container, debugDescription: "unknown value \"\(raw)\" (expected one of \(accepted))")
    }
    self = value
  }
}

/// Renders a Codable path the way bundle.md names keys: `models[1].input.layout`.
func renderKeyPath(_ path: [CodingKey]) -> String {
  var out = ""
  for key in path {
    if let index = key.intValue {
      out += "[\(index)]"
    } else {
      out += out.isEmpty ? key.stringValue : ".\(key.stringValue)"
    }
  }
  return out
}

/// Decodes `T` from `data`, turning every decoding failure into a `BundleError` naming the key path.
func decodeJSON<T: Decodable>(_ type: T.Type, from data: Data, file: String) throws -> T {
  do {
    return try JSONDecoder().decode(type, from: data)
  } catch let error as DecodingError {
    throw bundleError(from: error, file: file)
  }
}

func bundleError(from error: DecodingError, file: String) -> BundleError {
  switch error {
  case .keyNotFound(let key, let context):
    return BundleError(file: file, keyPath: renderKeyPath(context.codingPath + [key]), message: "missing")
  case .valueNotFound(let type, let context):
    return BundleError(
      file: file, keyPath: renderKeyPath(context.codingPath), message: "null where a \(type) is required")
  case .typeMismatch(let type, let context):
    return BundleError(
      file: file, keyPath: renderKeyPath(context.codingPath), message: "expected a value of type \(type)")
  case .dataCorrupted(let context):
    let path = renderKeyPath(context.codingPath)
    let message = path.isEmpty ? "not valid JSON (\(context.debugDescription))" : context.debugDescription
    return BundleError(file: file, keyPath: path, message: message)
  @unknown default:
    return BundleError(file: file, keyPath: "", message: "\(error)")
  }
}

/// Reads a whole file, failing with a one-line error that names it.
func readFile(_ url: URL, what: String) throws -> Data {
  do {
    return try Data(contentsOf: url)
  } catch {
    throw BundleError(file: url.lastPathComponent, keyPath: "", message: "cannot read \(what) at \(url.path)")
  }
}
