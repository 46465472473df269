import Testing
@testable import Scenario

@Suite struct ScenarioMatrixTests {
    func scenarios(_ text: String) throws -> [Scenario] { try ScenarioParser().scenarios(text, file: "m.yaml") }

    static let matrix = """
        version: 2
        name: bm
        description: "${model} at ${bandwidth}"
        matrix:
          bandwidth: [20, 100]
          model: [virtio-net, e1000e]
        exclude:
          - {bandwidth: 20, model: e1000e}
        guest:
          devices:
            - name: nic0
              model: ${model}
        steps:
          - boot: a
          - migrate:
              from: a
              to: b
              bandwidth_mib_s: ${bandwidth}
        """

    @Test func everyCombinationNotExcludedIsAScenarioWithItsValues() throws {
        let s = try scenarios(Self.matrix)
        #expect(s.map(\.name) == ["bm[bandwidth=20,model=virtio-net]", "bm[bandwidth=100,model=virtio-net]", "bm[bandwidth=100,model=e1000e]"])
        #expect(s.map { $0.guest.devices.first?.model } == [.virtioNet, .virtioNet, .e1000e])
        // A number stays a number where it is used.
        let bandwidths: [Int?] = s.map { if let m = $0.steps[1].action(as: Step.Migrate.self) { m.bandwidthMiBps } else { nil } }
        #expect(bandwidths == [20, 100, 100])
        #expect(s[2].description == "e1000e at 100")
        // A file with a matrix is not one scenario.
        #expect { try ScenarioParser().parse(Self.matrix, file: "m.yaml") } throws: { "\($0)".contains("matrix of 3 combinations") }
    }

    @Test func anErrorNamesTheCombinationAndWhereTheValueIsUsed() {
        let bad = Self.matrix.replacingOccurrences(of: "model: [virtio-net, e1000e]", with: "model: [virtio-net, rtl8139]")
            .replacingOccurrences(of: "  - {bandwidth: 20, model: e1000e}", with: "  - {bandwidth: 20, model: rtl8139}")
        #expect { try scenarios(bad) } throws: { error in
            let text = "\(error)"
            // Line 12 is `model: ${model}`; only the combinations with rtl8139 are wrong.
            return text.contains("m.yaml:12:") && text.contains("in combination [bandwidth=100,model=rtl8139]") && text.contains("rtl8139")
                && !text.contains("model=virtio-net]")
        }
        let unknown = Self.matrix.replacingOccurrences(of: "bandwidth_mib_s: ${bandwidth}", with: "bandwidth_mib_s: ${bandwith}")
        #expect { try scenarios(unknown) } throws: { "\($0)".contains("m.yaml:18:") && "\($0)".contains("`${bandwith}` is not an axis") }
    }

    @Test func badMatricesAreRefused() {
        let cases: [(String, String)] = [
            ("matrix: [20, 100]", "must be a mapping of axes"),
            ("matrix: {bandwidth: []}", "non-empty list"),
            ("matrix: {Bandwidth: [1]}", "lower-case"),
            ("matrix: {bandwidth: [1, 1]}", "lists `1` twice"),
            ("matrix: {bandwidth: [[1]]}", "single value"),
        ]
        for (matrix, message) in cases {
            let text = "version: 2\nname: x\n\(matrix)\nsteps:\n  - boot: a\n"
            #expect(throws: ScenarioErrors.self, "\(matrix)") { try scenarios(text) }
            #expect { try scenarios(text) } throws: { "\($0)".contains(message) }
        }
        #expect { try scenarios("version: 2\nname: x\nexclude: [{a: 1}]\nsteps:\n  - boot: a\n") } throws: { "\($0)".contains("has none") }
        #expect { try scenarios("version: 2\nname: x\nmatrix: {a: [1]}\nexclude: [{a: 1}]\nsteps:\n  - boot: a\n") } throws: { "\($0)".contains("removes every combination") }
        #expect { try scenarios("version: 2\nname: x\nmatrix: {a: [1]}\nexclude: [{b: 1}]\nsteps:\n  - boot: a\n") } throws: { "\($0)".contains("not an axis") }
    }

    /// Hostile sizes are refused by counting, before anything is expanded or unrolled.
    @Test func hugeMatricesAndRepeatsAreRefusedWithoutExpanding() {
        let axis = "[" + (1...40).map(String.init).joined(separator: ", ") + "]"
        let wide = "version: 2\nname: x\nmatrix: {a: \(axis), b: \(axis), c: \(axis), d: \(axis), e: \(axis), f: \(axis), g: \(axis), h: \(axis), i: \(axis), j: \(axis), k: \(axis), l: \(axis)}\nsteps:\n  - boot: a\n"
        #expect { try scenarios(wide) } throws: { "\($0)".contains("combinations; at most 256") }
        let nested = """
            version: 2
            name: x
            steps:
              - boot: a
              - repeat:
                  times: 10000
                  steps:
                    - repeat:
                        times: 10000
                        steps:
                          - repeat: {times: 10000, steps: [{verify: [console]}]}
            """
        #expect { try scenarios(nested) } throws: { "\($0)".contains("unroll to 1000000000001 steps") && "\($0)".contains("at most 10000") }
        let perFile = """
            version: 2
            name: x
            matrix: {a: \("[" + (1...200).map(String.init).joined(separator: ", ") + "]")}
            steps:
              - boot: a
              - repeat: {times: 200, steps: [{verify: [console]}]}
            """
        #expect { try scenarios(perFile) } throws: { "\($0)".contains("40200 steps in all") }
    }
}

/// Format v2 reads every v1 file; a file that says v1 and uses what v2 added is told where.
struct FormatVersionTests {
    @Test func version1FilesLoadAndVersion2FeaturesNeedVersion2() throws {
        let v1 = try ScenarioParser().parse("version: 1\nname: old\nsteps:\n  - boot: a\n  - migrate: {from: a, to: b}\n", file: "old.yaml")
        #expect(v1.name == "old")
        let body = """
        name: new
        steps:
          - boot: a
          - migrate: {from: a, to: b, expect: {outcome: completed}, faults: [{set-bandwidth: {bandwidth_mib_s: 10}}]}
        """
        #expect(try ScenarioParser().parse("version: 2\n" + body, file: "new.yaml").name == "new")
        #expect(try ScenarioParser().parse(body, file: "new.yaml").name == "new")   // no version: the current one
        do {
            _ = try ScenarioParser().parse("version: 1\n" + body, file: "new.yaml")
            Issue.record("v2 features in a v1 file were accepted")
        } catch {
            let d = error.diagnostics.map(\.description)
            #expect(d.contains { $0.hasPrefix("new.yaml:5:") && $0.contains("own `expect` is format v2: write `version: 2` at new.yaml:1:") }, "\(d)")
            #expect(d.contains { $0.contains("`set-bandwidth` is format v2") }, "\(d)")
        }
        do {
            _ = try ScenarioParser().scenarios("version: 1\nname: m\nmatrix: {x: [1, 2]}\nsteps:\n  - boot: a\n", file: "m.yaml")
            Issue.record("a matrix in a v1 file was accepted")
        } catch {
            #expect(error.diagnostics.contains { $0.description.hasPrefix("m.yaml:3:") && $0.message.contains("`matrix` is format v2") })
        }
        do {
            _ = try ScenarioParser().parse("version: 3\nname: f\nsteps:\n  - boot: a\n", file: "f.yaml")
            Issue.record("version 3 was accepted")
        } catch {
            #expect(error.diagnostics.contains { $0.message.contains("reads scenario format versions 1 to 2; the file says 3") })
        }
    }
}
