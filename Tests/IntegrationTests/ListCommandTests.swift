import Foundation
import Testing

/// `miglab list` and the selection options `run` shares, on the scenario library (no lab needed).
@Suite struct ListCommandTests {
    typealias Smoke = BuiltinLabTests.SmokeOnBuiltinLabTests

    /// (name, tags) per line of `miglab list`.
    func listed(_ args: [String]) throws -> [(name: String, tags: [String])] {
        let r = try Smoke.run(["list"] + args)
        #expect(r.status == 0, "\(r.err)")
        return r.out.split(separator: "\n").map { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            return (String(fields[0]), fields[1] == "-" ? [] : fields[1].split(separator: ",").map(String.init))
        }
    }

    @Test func tagsAndNamesSelectWhatTheySay() throws {
        let quickFaults = try listed(["--tags", "faults,!slow", "scenarios/"])
        #expect(quickFaults.contains { $0.name == "abort-source" } && quickFaults.contains { $0.name == "abort-then-retry" })
        #expect(quickFaults.allSatisfy { $0.tags.contains("faults") && !$0.tags.contains("slow") }, "\(quickFaults)")
        #expect(!quickFaults.contains { $0.name == "network-partition" || $0.name.hasPrefix("mtty-") })
        let kills = try listed(["-k", "kill", "scenarios/"])
        #expect(kills.count >= 5 && kills.allSatisfy { $0.name.contains("kill") }, "\(kills)")
        let all = try listed(["scenarios/"])
        #expect(all.count > kills.count + quickFaults.count - 3)
    }

    @Test func aSelectionOfNothingIsAnErrorNotAnEmptyPass() throws {
        let r = try Smoke.run(["run", "--tags", "no-such-tag", "scenarios/"])
        #expect(r.status == 2)
        #expect(r.err.contains("no scenario in scenarios/ matches --tags no-such-tag"), "\(r.err)")
        let bad = try Smoke.run(["list", "--tags", "faults,,slow", "scenarios/"])
        #expect(bad.status != 0 && bad.err.contains("is not a tag"), "\(bad.err)")
    }
}
