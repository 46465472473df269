import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Journal
import Testing
import Runner
import Libvirt
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
        return MigrationRecord(from: from, to: to, outcome: .completed, stats: s, wallSeconds: Double(ms) / 1000 + 0.2)
    }

    var passedRun: [JournalEvent] {
        [
            JournalEvent(kind: .runStarted),
            ev(.scenarioStarted, 0) { $0.file = "scenarios/smoke.yaml" },
            ev(.phase, 1) { $0.phase = .labSetup; $0.durationSeconds = 1 },
            ev(.stepFinished, 7) { $0.phase = .boot; $0.durationSeconds = 6 },
            ev(.migrationFinished, 8) { $0.migration = migration("a", "b", ms: 800) },
            ev(.verification, 9) {
                var v = VerificationRecord(kind: "memory", verdict: .pass)
                v.pagesChecked = 16384
                v.badPages = 0
                $0.verification = v
            },
            ev(.stepFinished, 9) { $0.phase = .verification; $0.durationSeconds = 0.5 },
            ev(.scenarioFinished, 10) {
                $0.outcome = .passed
                $0.durationSeconds = 10
                $0.expectations = [ExpectationRecord(what: "memory", expected: "intact", observed: "intact")]
            },
            ev(.runFinished, 10) { $0.outcome = .passed; $0.scenario = nil },
        ]
    }

    @Test func resultFromJournal() throws {
        let r = RunResult(journal: passedRun)
        #expect(r.outcome == .passed)
        #expect(r.scenarios.count == 1)
        let s = r.scenarios[0]
        #expect(s.outcome == .passed)
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
        #expect(r.outcome == .incomplete)
        #expect(r.scenarios[0].outcome == .incomplete)
        #expect(r.scenarios[0].migrations.count == 1)
        #expect(r.scenarios[0].durationSeconds == 8)
        #expect(r.junit().contains("<error"))
    }

    @Test func failedExpectationShowsInJUnit() {
        var events = passedRun
        events[5].verification?.verdict = .fail
        events[7].outcome = .failed
        events[8].outcome = .failed
        let r = RunResult(journal: events)
        #expect(r.outcome == .failed)
        let x = r.junit()
        #expect(x.contains("<failure message=\"memory: expected intact, observed corrupted\""))
        #expect(x.contains("tests=\"1\" failures=\"1\" errors=\"0\""))
    }

    @Test func junitEscapesGuestText() throws {
        var events = passedRun
        events.insert(ev(.error, 9.5) { $0.outcome = .error; $0.message = "console <said> \"hi\" & \u{1}bye \u{FFFE}\u{FFFF}\u{1B}[31m" }, at: 7)
        events[8].outcome = .error
        let x = RunResult(journal: events).junit()
        // Characters XML 1.0 forbids are shown as escapes, never written raw.
        #expect(x.contains("console &lt;said&gt; &quot;hi&quot; &amp; \\u{1}bye \\u{fffe}\\u{ffff}\\u{1b}[31m"), "\(x)")
        // On a terminal no escape sequence reaches it raw.
        #expect(!RunResult(journal: events).text().unicodeScalars.contains { $0.value == 0x1B || $0.value == 0xFFFE })
        // Well-formed XML.
        _ = try XMLParserCheck.parse(x)
    }

    /// The report judges the journal's facts, not its claims: a scenario_finished that says
    /// passed over a failed verification, a lab error or no check at all is not a pass.
    @Test func aFinishedEventThatClaimsAPassIsNotBelieved() {
        var failedCheck = passedRun
        failedCheck[5].verification?.verdict = .fail
        let f = RunResult(journal: failedCheck)
        #expect(f.scenarios[0].outcome == .failed && f.outcome == .failed)
        #expect(f.scenarios[0].message?.hasPrefix("the journal's scenario_finished says passed, its events say failed") == true)
        // ... and neither is a run_finished that says passed.
        #expect(f.message == "the journal's run_finished says passed, its scenarios say failed")
        #expect(f.text().contains("(the journal's run_finished says passed, its scenarios say failed)"))
        // The text's last line names what did not pass; a passed run has no such line.
        #expect(f.text().split(separator: "\n").last.map(String.init) == "not passed: \(f.scenarios[0].name) failed")
        #expect(RunResult(journal: passedRun).message == nil)
        #expect(!RunResult(journal: passedRun).text().contains("not passed"))

        var labError = passedRun
        labError.insert(ev(.error, 9.5) { $0.outcome = .error; $0.message = "cannot connect" }, at: 7)
        #expect(RunResult(journal: labError).scenarios[0].outcome == .error)

        var judged = passedRun
        judged.insert(ev(.expectation, 8.5) {
            $0.expectations = [ExpectationRecord(what: "migration #1 (a -> b)", expected: "completed", observed: "failed", step: 1)]
        }, at: 5)
        let j = RunResult(journal: judged)
        #expect(j.scenarios[0].outcome == .failed)
        #expect(j.scenarios[0].expectations.map(\.what) == ["migration #1 (a -> b)", "memory"])

        // Nothing checked: no expectation at all.
        let nothing = passedRun.filter { $0.kind != .verification }
        #expect(RunResult(journal: nothing).scenarios[0].outcome == .failed)
    }

    /// A run that died is an error testcase of its own in JUnit, never an all-zero suite; a
    /// journal event of a kind this miglab does not know is kept, not fatal; figures that add
    /// up to infinity never crash the JSON.
    @Test func aDeadRunIsAnErrorInJUnitAndOddJournalsDoNotCrashTheReport() throws {
        let empty = RunResult(journal: []).junit()
        #expect(empty.contains("tests=\"1\" failures=\"0\" errors=\"1\""), "\(empty)")
        #expect(empty.contains("name=\"miglab run\"") && empty.contains("<error message=\"the journal ends before the run finished"))
        _ = try XMLParserCheck.parse(empty)
        let died = RunResult(journal: Array(passedRun.prefix(5))).junit()
        #expect(died.contains("tests=\"2\" failures=\"0\" errors=\"2\""), "\(died)")

        let line = #"{"kind":"telemetry_v9","seq":3,"t":1,"wallclock":"x"}"#
        let e = try JSONDecoder().decode(JournalEvent.self, from: Data(line.utf8))
        #expect(e.kind == .unknown)

        var huge = passedRun
        huge[8].t = 1.7e308
        huge[8].durationSeconds = nil
        huge[1].t = -1.7e308
        let r = RunResult(journal: huge)
        #expect(throws: Never.self) { _ = try r.json() }
    }

    @Test func emptyJournalIsNotAPass() {
        #expect(RunResult(journal: []).outcome == .incomplete)
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

struct PhaseFiguresTests {
    func sample(_ ms: UInt64, _ phase: MigrationPhase, ram: UInt64, vfio: UInt64?) -> MigrationStats {
        var s = MigrationStats()
        s.timeElapsedMs = ms
        s.phase = phase
        s.memoryProcessedBytes = ram
        s.dataProcessedBytes = ram + (vfio ?? 0)
        s.vfioDataBytes = vfio
        return s
    }

    @Test func phasesSplitRAMAndDeviceBytes() {
        let samples = [sample(100, .setup, ram: 0, vfio: nil), sample(900, .preCopy, ram: 1000, vfio: 24),
                       sample(1500, .preCopy, ram: 5000, vfio: 24), sample(1600, .stopCopy, ram: 5100, vfio: 24)]
        var final = MigrationStats()
        final.setupTimeMs = 30
        final.downtimeMs = 200
        final.memoryProcessedBytes = 6000
        final.vfioDataBytes = 120
        let p = PhaseFigures.of(samples: samples, final: final, completed: true)
        #expect(p.map(\.phase) == [.setup, .preCopy, .stopCopy])
        #expect(p[0].milliseconds == 900)
        #expect(p[1] == PhaseFigures(phase: .preCopy, milliseconds: 600, ramBytes: 5000, vfioBytes: 24))
        #expect(p[2] == PhaseFigures(phase: .stopCopy, milliseconds: 200, ramBytes: 1000, vfioBytes: 96))
    }

    /// A sample whose source no longer runs is stop-copy, also once the source is shut off
    /// after the migration completed (CI saw such a sample labeled pre-copy, with all 96 bytes).
    @Test func aSampleOfASourceThatNoLongerRunsIsStopCopy() {
        let sent = JobStats(type: 2, fields: ["data_processed": .uint(400_000_000)])
        #expect(MigrationPhase.of(sourceRunning: false, stats: sent) == .stopCopy)
        #expect(MigrationPhase.of(sourceRunning: true, stats: sent) == .preCopy)
        #expect(MigrationPhase.of(sourceRunning: true, stats: JobStats(type: 2, fields: [:])) == .setup)
    }

    @Test func failedMigrationHasNoStopCopyAndUnknownVFIOStaysUnknown() {
        let p = PhaseFigures.of(samples: [sample(500, .preCopy, ram: 10, vfio: nil)], final: MigrationStats(), completed: false)
        #expect(p.map(\.phase) == [.setup, .preCopy])
        #expect(p[1].vfioBytes == nil)
        let q = PhaseFigures.of(samples: [], final: MigrationStats(), completed: true)
        #expect(q == [PhaseFigures(phase: .stopCopy)])
    }

    @Test func phasesComeFromTheJournal() {
        var e1 = JournalEvent(kind: .migrationProgress, scenario: "s")
        e1.progress = sample(700, .preCopy, ram: 100, vfio: 24)
        var final = MigrationStats()
        final.memoryProcessedBytes = 300
        final.vfioDataBytes = 96
        var e2 = JournalEvent(kind: .migrationFinished, scenario: "s")
        e2.migration = MigrationRecord(from: "a", to: "b", outcome: .completed, stats: final, wallSeconds: 1)
        let r = RunResult(journal: [JournalEvent(kind: .runStarted), JournalEvent(kind: .scenarioStarted, scenario: "s"), e1, e2])
        let phases = r.scenarios[0].migrations[0].phases
        #expect(phases.last == PhaseFigures(phase: .stopCopy, ramBytes: 200, vfioBytes: 72))
        #expect(r.text().contains("VFIO device 96 bytes"))
        #expect(r.text().contains("stop_copy ? ms: RAM 200, VFIO 72 bytes"))
    }
}

/// Outcomes and phases in the journal are typed: a value miglab does not know is an error
/// that names the line; the `pass`/`fail` of older journals' verification events still reads.
struct TypedJournalValueTests {
    func journal(_ lines: [String]) throws -> String {
        let path = NSTemporaryDirectory() + "miglab-typed-\(UInt32.random(in: 0...UInt32.max)).jsonl"
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func anUnknownOutcomeNamesItsLine() throws {
        let path = try journal([#"{"seq":1,"t":0,"wallclock":"","kind":"run_started"}"#,
                                #"{"seq":2,"t":1,"wallclock":"","kind":"run_finished","outcome":"greenish"}"#])
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect { try Journal.read(path: path) } throws: { "\($0)".contains("\(path):2:") && "\($0)".contains("unknown outcome `greenish`") }
    }

    @Test func anUnknownPhaseIsRefused() throws {
        let path = try journal([#"{"seq":1,"t":0,"wallclock":"","kind":"phase","phase":"coffee"}"#])
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect { try Journal.read(path: path) } throws: { "\($0)".contains("\(path):1:") }
    }

    @Test func olderVerificationOutcomesStillRead() throws {
        let path = try journal([#"{"seq":1,"t":0,"wallclock":"","kind":"verification","outcome":"pass"}"#,
                                #"{"seq":2,"t":0,"wallclock":"","kind":"verification","outcome":"fail"}"#])
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try Journal.read(path: path).map(\.outcome) == [.passed, .failed])
    }
}
