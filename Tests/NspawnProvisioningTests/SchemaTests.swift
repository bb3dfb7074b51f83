import Foundation
import NspawnKit
@testable import NspawnProvisioning
import Testing

/// The JSON Schema shipped for editors and CI is held against the parser: the same keys at
/// every level, nothing else accepted, and the shipped examples parse.
@Suite("Manifest schema")
struct SchemaTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func schema() throws -> [String: Any] {
        let data = try Data(contentsOf: repository.appendingPathComponent("units/manifest.schema.json"))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    static func object(_ value: Any?) throws -> [String: Any] { try #require(value as? [String: Any]) }

    @Test func theSchemaHasTheParsersKeysAndNoOthers() throws {
        let schema = try Self.schema()
        let definitions = try Self.object(schema["$defs"])
        let layer = try Self.object(definitions["layer"])
        let machine = try Self.object(definitions["machine"])
        #expect(Set(try Self.object(schema["properties"]).keys) == ["name", "defaults", "profiles", "machines"])
        #expect(Set(try Self.object(layer["properties"]).keys) == Set(ManifestParser.layerKeys))
        #expect(Set(try Self.object(machine["properties"]).keys) == Set(ManifestParser.machineKeys))
        for object in [schema, layer, machine] { #expect(object["additionalProperties"] as? Bool == false) }
        let settings = try Self.object(try Self.object(layer["properties"])["settings"])
        let names = try #require(try Self.object(settings["propertyNames"])["enum"] as? [String])
        #expect(Set(names) == Set(SettingKey.all.flatMap { [$0.name, $0.id] }))
    }

    @Test func theShippedExamplesParse() throws {
        let directory = Self.repository.appendingPathComponent("examples")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".yaml") }
        #expect(!files.isEmpty)
        for file in files {
            let path = directory.appendingPathComponent(file).path
            let manifest = try ManifestParser(file: path, flavorDirectories: ManifestTests.flavors).parse(String(contentsOfFile: path, encoding: .utf8))
            #expect(try !manifest.resolved().isEmpty)
        }
    }
}
