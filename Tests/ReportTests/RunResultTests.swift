import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
import Runner
@testable import Report

struct RunResultTests {
    func ev(_ kind: JournalEvent.Kind, _ t: Double, _ f: (inout JournalEvent) -> Void = { _ in }) -> JournalEvent {
        var e = JournalEvent(kind: kind, scenario: "smoke")
        e.t = t
        f(&e)
        return e
    }

    func migration(_ from: String, _ to: String, ms: UInt64) -> MigrationRecord {
        var s = MigrationStats()
        s.timeElapsedMs = ms
        s.downtimeMs = 50
        s.dataTotalBytes = 1 << 28
        s.memoryIterations = 3
        return MigrationRecord(from: from, to: to, outcome: "completed", stats: s, wallSeconds: Double(ms) / 1000 + 0.2)
    }

    var passedRun: [JournalEvent] {
        [
            JournalEvent(kind: .runStarted),
            ev(.scenarioStarted, 0) { $0.file = "scenarios/smoke.yaml" },
            ev(.phase, 1) { $0.phase = "lab_setup"; $0.durationSeconds = 1 },
            ev(.stepFinished, 7) { $0.phase = "boot"; $0.durationSeconds = 6 },
            ev(.migrationFinished, 8) { $0.migration = migration("a", "b", ms: 800) },
            ev(.verification, 9) {
                var v = VerificationRecord(kind: "memory", verdict: "pass")
                v.pagesChecked = 16384
                v.badPages = 0
                $0.verification = v
            },
            ev(.stepFinished, 9) { $0.phase = "verification"; $0.durationSeconds = 0.5 },
            ev(.scenarioFinished, 10) {
                $0.outcome = "passed"
                $0.durationSeconds = 10
                $0.expectations = [ExpectationRecord(what: "memory", expected: "intact", observed: "intact")]
            },
            ev(.runFinished, 10) { $0.outcome = "passed"; $0.scenario = nil },
        ]
    }

    @Test func resultFromJournal() throws {
        let r = RunResult(journal: passedRun)
        #expect(r.outcome == "passed")
        #expect(r.scenarios.count == 1)
        let s = r.scenarios[0]
        #expect(s.outcome == "passed")
        #expect(s.migrations.count == 1)
        #expect(s.migrations[0].stats.timeElapsedMs == 800)
        #expect(s.verifications.first?.pagesChecked == 16384)
        #expect(s.timing.labSetupSeconds == 1)
        #expect(s.timing.bootSeconds == 6)
        #expect(s.timing.migrationSeconds == 0.8)
        #expect(s.timing.verificationSeconds == 0.5)
        #expect(abs(s.timing.overheadSeconds - 1.7) < 0.001)
        // The JSON has the documented keys.
        let json = try JSONSerialization.jsonObject(with: r.json()) as! [String: Any]
        let sc = (json["scenarios"] as! [[String: Any]])[0]
        #expect(sc["duration_s"] as? Double == 10)
        let m = (sc["migrations"] as! [[String: Any]])[0]
        let stats = m["stats"] as! [String: Any]
        #expect(Set(stats.keys).isSuperset(of: ["time_elapsed_ms", "downtime_ms", "data_total_bytes", "memory_iterations"]))
        let v = (sc["verifications"] as! [[String: Any]])[0]
        #expect(v["kind"] as? String == "memory")
        #expect(v["verdict"] as? String == "pass")
        #expect(v["bad_pages"] as? Int == 0)
    }

    @Test func killedRunIsNeverAPass() {
        // The runner died after the first migration: no scenario_finished, no run_finished.
        let events = Array(passedRun.prefix(5))
        let r = RunResult(journal: events)
        #expect(r.outcome == "incomplete")
        #expect(r.scenarios[0].outcome == "error")
        #expect(r.scenarios[0].migrations.count == 1)
        #expect(r.scenarios[0].durationSeconds == 8)
        #expect(r.junit().contains("<error"))
    }

    @Test func failedExpectationShowsInJUnit() {
        var events = passedRun
        events[7].outcome = "failed"
        events[7].expectations = [ExpectationRecord(what: "memory", expected: "intact", observed: "corrupted")]
        events[8].outcome = "failed"
        let r = RunResult(journal: events)
        #expect(r.outcome == "failed")
        let x = r.junit()
        #expect(x.contains("<failure message=\"memory: expected intact, observed corrupted\""))
        #expect(x.contains("tests=\"1\" failures=\"1\" errors=\"0\""))
    }

    @Test func junitEscapesGuestText() throws {
        var events = passedRun
        events[7].outcome = "error"
        events[7].message = "console <said> \"hi\" & \u{1}bye"
        let x = RunResult(journal: events).junit()
        #expect(x.contains("console &lt;said&gt; &quot;hi&quot; &amp; ?bye"))
        // Well-formed XML.
        _ = try XMLParserCheck.parse(x)
    }

    @Test func emptyJournalIsNotAPass() {
        #expect(RunResult(journal: []).outcome == "incomplete")
    }
}

enum XMLParserCheck {
    struct Bad: Error {}
    static func parse(_ s: String) throws -> Bool {
        final class D: NSObject, XMLParserDelegate {}
        let p = XMLParser(data: Data(s.utf8))
        let d = D()
        p.delegate = d
        guard p.parse() else { throw Bad() }
        return true
    }
}
