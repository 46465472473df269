import Foundation
import Testing
@testable import Scenario

/// The format registry is what the parser reads with and what the schema is made of.
@Suite struct ScenarioFormatTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    @Test func theCommittedSchemaIsTheOneTheRegistryGenerates() throws {
        let committed = try String(contentsOfFile: Self.root + "/scenarios/schema.json", encoding: .utf8)
        #expect(committed == ScenarioFormat.jsonSchema(), "scenarios/schema.json is stale: run `miglab schema > scenarios/schema.json`")
    }

    /// Every kind in the registry has a reader (no kind falls through to another).
    @Test(arguments: ScenarioFormat.steps.names.map { ("step", $0) } + ScenarioFormat.faults.names.map { ("fault", $0) })
    func everyKindHasAReader(_ what: String, _ kind: String) {
        let step = what == "step" ? "  - \(kind): {}" : "  - migrate: {from: a, to: b, faults: [{\(kind): {}}]}"
        let text = "version: 1\nname: k\nsteps:\n  - boot: a\n\(step)\n"
        do {
            _ = try ScenarioParser().parse(text, file: "k.yaml")
        } catch {
            #expect(!error.diagnostics.contains { $0.message.contains("has no reader") }, "\(error)")
            #expect(!error.diagnostics.contains { $0.message.contains("unknown") && $0.message.contains(kind) }, "\(error)")
        }
    }

    @Test func theParserTakesItsKeysFromTheRegistry() {
        // A key the registry lists for `migrate` is known to the parser, one it does not list is not.
        #expect { try ScenarioParser().parse("version: 1\nname: k\nsteps:\n  - boot: a\n  - migrate: {from: a, to: b, bandwith_mib_s: 5}\n", file: "k.yaml") }
            throws: { "\($0)".contains("unknown key `bandwith_mib_s` in `migrate` (did you mean `bandwidth_mib_s`?)") }
        #expect(ScenarioFormat.migrate.allowed.contains("expect") && ScenarioFormat.migrate.required == ["from", "to"])
        #expect(ScenarioFormat.steps.object("repeat").required == ["times", "steps"])
        #expect(ScenarioFormat.faults.object("set-max-downtime").allowed == ["at", "every_ms", "max_downtime_ms"])
    }
}
