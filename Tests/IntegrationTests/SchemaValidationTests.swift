import Foundation
import Testing

/// scenarios/schema.json with a real JSON Schema validator (python3-jsonschema, draft 2020-12,
/// through ci/check-schema.py): every scenario of the library passes, and files the parser
/// refuses for a key or a type are refused by the schema too. No lab needed.
@Suite struct SchemaValidationTests {
    typealias Smoke = BuiltinLabTests.SmokeOnBuiltinLabTests

    func check(_ files: [String]) throws -> (status: Int32, out: String, err: String) {
        try Smoke.spawn(["/usr/bin/python3", "ci/check-schema.py", "scenarios/schema.json"] + files)
    }

    @Test func everyLibraryScenarioIsValidAgainstTheSchema() throws {
        let root = Smoke.root
        let files = (FileManager.default.enumerator(atPath: root + "/scenarios")?.allObjects as? [String] ?? [])
            .filter { $0.hasSuffix(".yaml") }.map { "scenarios/" + $0 }.sorted()
        #expect(files.count >= 30)
        let r = try check(files)
        #expect(r.status == 0, "\(r.out)\(r.err)")
        #expect(r.out.split(separator: "\n").filter { $0.hasSuffix(": ok") }.count == files.count, "\(r.out)")
    }

    /// Each bad file: the parser refuses it (`miglab validate`, exit 2) and so does the schema.
    @Test(arguments: [
        ("unknown-key", "  - migrate: {from: a, to: b, bandwith_mib_s: 20}"),
        ("wrong-type", "  - migrate: {from: a, to: b, bandwidth_mib_s: fast}"),
        ("out-of-range", "  - migrate: {from: a, to: b, max_downtime_ms: 0}"),
        ("unknown-step", "  - migrat: {from: a, to: b}"),
        ("unknown-fault", "  - migrate: {from: a, to: b, faults: [{kill-qemuu: {side: source}}]}"),
        ("missing-key", "  - migrate: {from: a}"),
        ("bad-choice", "  - migrate: {from: a, to: b, expect: {outcome: fine}}"),
        ("two-kinds-in-a-step", "  - {verify: [memory], boot: b}"),
        ("bad-trigger", "  - migrate: {from: a, to: b, faults: [{abort: {at: {after_ms: 1, iteration: 2}}}]}"),
    ])
    func aFileTheParserRefusesTheSchemaRefusesToo(_ name: String, _ step: String) throws {
        let dir = NSTemporaryDirectory() + "miglab-schema-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = "\(dir)/\(name).yaml"
        try "version: 1\nname: \(name)\nsteps:\n  - boot: a\n\(step)\n".write(toFile: file, atomically: true, encoding: .utf8)
        let parser = try Smoke.run(["validate", file])
        #expect(parser.status == 2, "the parser took \(name): \(parser.out)")
        let schema = try check([file])
        #expect(schema.status == 1 && schema.out.contains("error:"), "the schema took \(name): \(schema.out)\(schema.err)")
    }
}
