import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing

extension BuiltinLabTests {
/// Each outcome, from real runs on the built-in lab, in the three places a CI reads it: the
/// JSON, the JUnit and the exit status. (passed: `smokePassesWithTwoMigrationsAndIntactMemory`.)
@Suite struct OutcomeTests {
    typealias Smoke = SmokeOnBuiltinLabTests

    func json(_ path: String) throws -> [String: Any] {
        let data = try #require(FileManager.default.contents(atPath: path))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// The JUnit file read by a real XML parser: (tests, failures, errors) of its suite and the
    /// kinds of the testcases' verdicts.
    func junit(_ path: String) throws -> (tests: Int, failures: Int, errors: Int, verdicts: [String]) {
        let doc = try XMLDocument(contentsOf: URL(fileURLWithPath: path), options: [])
        let suite = try #require(try doc.nodes(forXPath: "/testsuites/testsuite").first as? XMLElement)
        func n(_ a: String) -> Int { Int(suite.attribute(forName: a)?.stringValue ?? "") ?? -1 }
        let verdicts = try doc.nodes(forXPath: "/testsuites/testsuite/testcase/*").compactMap { $0.name }.filter { $0 != "system-out" }
        return (n("tests"), n("failures"), n("errors"), verdicts)
    }

    /// A migration that never converges (1 MiB/s against a guest dirtying 64 MiB) is failed:
    /// aborted at its step's deadline, with its statistics and convergence picture; exit 1,
    /// a JUnit failure. Its journal cut short is incomplete: exit 3, a JUnit error.
    @Test func aMigrationThatNeverConvergesIsFailedAndItsCutJournalIncomplete() throws {
        let dir = NSTemporaryDirectory() + "miglab-outcome-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let file = "\(dir)/never-converges.yaml"
        try """
        name: never-converges
        steps:
          - boot: a
          - migrate: {from: a, to: b, bandwidth_mib_s: 1, timeout_s: 8}
          - verify: memory
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let r = try Smoke.run(["run", file, "--artifacts", "\(dir)/run", "--json", "\(dir)/results.json"])
        #expect(r.status == 1, "\(r.out)\n\(r.err)")
        let result = try json("\(dir)/results.json")
        #expect(result["outcome"] as? String == "failed")
        let s = try #require((result["scenarios"] as? [[String: Any]])?.first)
        #expect(s["outcome"] as? String == "failed")
        let m = try #require((s["migrations"] as? [[String: Any]])?.first)
        #expect(m["outcome"] as? String == "failed")
        let stats = try #require(m["stats"] as? [String: Any])
        #expect((stats["memory_iterations"] as? Int ?? 0) >= 1 && (stats["time_elapsed_ms"] as? Int ?? 0) > 0, "\(stats)")
        #expect((stats["data_remaining_bytes"] as? Int ?? 0) > 0, "\(stats)")
        let deadline = try #require((s["expectations"] as? [[String: Any]])?.first { ($0["what"] as? String ?? "").hasSuffix("finished within its deadline") })
        #expect(deadline["verdict"] as? String == "fail" && (deadline["observed"] as? String ?? "").contains("still to send"), "\(deadline)")
        let j = try junit("\(dir)/run/junit.xml")
        #expect(j.tests == 1 && j.failures == 1 && j.errors == 0 && j.verdicts == ["failure"], "\(j)")

        // The same journal cut after the migration: incomplete.
        let journal = try String(contentsOfFile: "\(dir)/run/journal.jsonl", encoding: .utf8)
        let lines = journal.split(separator: "\n")
        let cut = try #require(lines.firstIndex { $0.contains("\"kind\":\"migration_finished\"") })
        try FileManager.default.createDirectory(atPath: "\(dir)/cut", withIntermediateDirectories: true)
        try (lines[...cut].joined(separator: "\n") + "\n").write(toFile: "\(dir)/cut/journal.jsonl", atomically: true, encoding: .utf8)
        let report = try Smoke.run(["report", "\(dir)/cut"])
        #expect(report.status == 3, "\(report.out)\n\(report.err)")
        #expect(try json("\(dir)/cut/results.json")["outcome"] as? String == "incomplete")
        let c = try junit("\(dir)/cut/junit.xml")
        #expect(c.errors == 2 && c.verdicts == ["error", "error"], "\(c)")   // the run, and the scenario it never finished
    }

    /// A lab that cannot do its job (hosts nobody answers for) is an error: exit 4, a JUnit
    /// error, `error` in the JSON.
    @Test func aLabThatCannotConnectIsAnError() throws {
        let dir = NSTemporaryDirectory() + "miglab-outcome-error-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "hosts:\n  a: {uri: 'qemu:///system?socket=\(dir)/none-a'}\n  b: {uri: 'qemu:///system?socket=\(dir)/none-b'}\n"
            .write(toFile: "\(dir)/gone.yaml", atomically: true, encoding: .utf8)
        let r = try Smoke.run(["run", "--lab", "\(dir)/gone.yaml", "scenarios/smoke.yaml", "--artifacts", "\(dir)/run", "--json", "\(dir)/results.json"])
        #expect(r.status == 4, "\(r.out)\n\(r.err)")
        let s = try #require((try json("\(dir)/results.json")["scenarios"] as? [[String: Any]])?.first)
        #expect(s["outcome"] as? String == "error")
        let j = try junit("\(dir)/run/junit.xml")
        #expect(j.errors >= 1 && j.failures == 0 && j.verdicts.contains("error"), "\(j)")
    }
}
}
