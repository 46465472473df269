import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Journal
import Scenario
import Testing
@testable import Report

/// `--repeat N`, `miglab merge`, `miglab compare` and report.html, from journals made here.
struct RepeatedRunTests {
    /// One run of scenario `name`: a migration a->b with progress samples and an abort fault
    /// fired during it, then a memory check that passes or fails.
    func scenarioRun(_ name: String, attempt: Int?, passes: Bool, ms: UInt64 = 800, from t0: Double = 0) -> [JournalEvent] {
        func ev(_ kind: JournalEvent.Kind, _ t: Double, _ f: (inout JournalEvent) -> Void = { _ in }) -> JournalEvent {
            var e = JournalEvent(kind: kind, scenario: name)
            e.t = t0 + t
            f(&e)
            return e
        }
        var final = MigrationStats()
        final.timeElapsedMs = ms
        final.downtimeMs = ms / 10
        final.dataTotalBytes = 1 << 28
        final.dataProcessedBytes = 1 << 28
        final.memoryIterations = 3
        var events = [
            ev(.scenarioStarted, 0) { $0.file = "scenarios/\(name).yaml"; $0.attempt = attempt; $0.expect = nil },
            ev(.stepStarted, 1) { $0.stepKind = "migrate"; $0.step = 1 },
        ]
        for k in 1...5 {
            var p = MigrationStats()
            p.timeElapsedMs = UInt64(k) * ms / 6
            p.dataRemainingBytes = UInt64(6 - k) << 25
            p.dataProcessedBytes = UInt64(k) << 25
            p.memoryIterations = UInt64(1 + k / 2)
            p.memoryDirtyRatePagesPerSecond = 5000
            p.memoryBytesPerSecond = 100 << 20
            events.append(ev(.migrationProgress, 1 + Double(k) / 10) { $0.progress = p })
        }
        var fault = FaultRecord(kind: "set-max-downtime", trigger: "at iteration 2", firedAtMs: Double(ms) / 2)
        fault.host = "a"
        fault.result = "ok"
        events.append(ev(.fault, 1.5) { $0.fault = fault })
        events.append(ev(.migrationFinished, 2) {
            $0.migration = MigrationRecord(from: "a", to: "b", outcome: .completed, stats: final, wallSeconds: Double(ms) / 1000)
        })
        events.append(ev(.verification, 3) {
            var v = VerificationRecord(kind: "memory", verdict: passes ? .pass : .fail)
            v.pagesChecked = 16384
            v.badPages = passes ? 0 : 2
            if !passes { v.firstBadPages = ["page 17: stale counter 41 (expected 42)", "page 18: <lost> & gone"] }
            $0.verification = v
        })
        events.append(ev(.scenarioFinished, 4) {
            $0.outcome = passes ? .passed : .failed
            $0.expectations = [ExpectationRecord(what: "memory", expected: "intact", observed: passes ? "intact" : "corrupted")]
        })
        return events
    }

    func run(_ scenarios: [[JournalEvent]], repeatCount: Int? = nil, shard: String? = nil, qemu: String = "10.0.2") -> [JournalEvent] {
        var start = JournalEvent(kind: .runStarted)
        start.details = [:]
        if let repeatCount { start.details?["repeat"] = "\(repeatCount)" }
        if let shard { start.details?["shard"] = shard }
        var env = JournalEvent(kind: .environment)
        env.environment = [HostEnvironment(host: "a", qemu: qemu, libvirt: "9.0.0", kernel: "6.1.0"),
                           HostEnvironment(host: "b", qemu: qemu, libvirt: "9.0.0", kernel: "6.1.0")]
        let body = scenarios.flatMap { $0 }
        let allPassed = scenarios.allSatisfy { $0.last?.outcome == .passed }
        var end = JournalEvent(kind: .runFinished)
        end.outcome = allPassed ? .passed : .failed
        end.t = (body.last?.t ?? 0) + 1
        return [start, env] + body + [end]
    }

    @Test func repeatedRunsGiveARateAnIntervalAndDistributions() throws {
        let journal = run([scenarioRun("memory", attempt: 1, passes: true, ms: 800),
                           scenarioRun("memory", attempt: 2, passes: false, ms: 1000, from: 10),
                           scenarioRun("memory", attempt: 3, passes: true, ms: 1200, from: 20),
                           scenarioRun("memory", attempt: 4, passes: false, ms: 1400, from: 30)], repeatCount: 4)
        let r = RunResult(journal: journal)
        #expect(r.outcome == .failed)
        #expect(r.repeatCount == 4)
        #expect(r.scenarios.map(\.attempt) == [1, 2, 3, 4])
        let s = try #require(r.summary.first)
        #expect(r.summary.count == 1)
        #expect(s.runs == 4 && s.passed == 2 && s.failed == 2 && s.flaky)
        #expect(s.failureRate == 0.5)
        let ci = try #require(s.failureRateInterval)
        #expect(abs(ci[0] - 0.1500) < 0.001 && abs(ci[1] - 0.8500) < 0.001, "\(ci)")
        #expect(s.migrationTimeMs?.median == 1100 && s.migrationTimeMs?.max == 1400)
        #expect(s.downtimeMs?.median == 110)
        // results.json: the summary and the environment, by the documented keys.
        let json = try #require(try JSONSerialization.jsonObject(with: r.json()) as? [String: Any])
        let summary = try #require((json["summary"] as? [[String: Any]])?.first)
        #expect(summary["failure_rate"] as? Double == 0.5)
        #expect((summary["failure_rate_ci95"] as? [Double])?.count == 2)
        #expect(summary["flaky"] as? Bool == true)
        #expect(((summary["migration_time_ms"] as? [String: Any])?["p90"] as? Double).map { abs($0 - 1340) < 1e-6 } == true)
        #expect((json["environment"] as? [[String: Any]])?.first?["qemu"] as? String == "10.0.2")
        #expect(json["repeat"] as? Int == 4)
        // JUnit: one testcase for the scenario, failed, its rate in the message.
        let x = r.junit()
        _ = try XMLParserCheck.parse(x)
        #expect(x.components(separatedBy: "<testcase ").count == 2, "\(x)")
        #expect(x.contains("tests=\"1\" failures=\"1\" errors=\"0\""))
        #expect(x.contains("did not pass 2 of 4 runs (failure rate 50%, 95% CI 15-85%), flaky; run 2: memory: expected intact, observed corrupted"), "\(x)")
        #expect(r.text().contains("memory: did not pass 2 of 4 runs"))
        // A results.json reads back with its summary.
        let back = try JSONDecoder().decode(RunResult.self, from: r.json())
        #expect(back.summary == r.summary && back.environment == r.environment)
    }

    @Test func allRepeatsPassingIsOnePassingTestcase() throws {
        let r = RunResult(journal: run([scenarioRun("memory", attempt: 1, passes: true), scenarioRun("memory", attempt: 2, passes: true, from: 10)], repeatCount: 2))
        #expect(r.outcome == .passed)
        #expect(r.summary.first?.flaky == false && r.summary.first?.failureRate == 0)
        let x = r.junit()
        #expect(x.contains("tests=\"1\" failures=\"0\" errors=\"0\""))
        #expect(x.contains("passed 2 of 2 runs (failure rate 0%, 95% CI 0-66%)"), "\(x)")
    }

    @Test func shardsMergedEqualTheUnshardedRun() throws {
        let names = ["abort-source", "kill-qemu-source", "network-partition", "convergence", "smoke"]
        let runs = names.enumerated().map { i, n in scenarioRun(n, attempt: nil, passes: n != "convergence", from: Double(i) * 10) }
        let whole = RunResult(journal: run(runs))
        let shards = try (1...2).map { k -> RunResult in
            let shard = try Shard("\(k)/2")
            return RunResult(journal: run(runs.filter { shard.takes(name: $0[0].scenario!) }, shard: "\(k)/2"))
        }
        let merged = RunResult.merged([("shard-1", shards[0]), ("shard-2", shards[1])])
        func outcomes(_ r: RunResult) -> [String: ScenarioVerdict.Outcome] {
            Dictionary(uniqueKeysWithValues: r.scenarios.map { ($0.name, $0.outcome) })
        }
        #expect(outcomes(merged) == outcomes(whole))
        #expect(merged.outcome == whole.outcome)
        #expect(Set(merged.shards) == ["1/2", "2/2"])
        #expect(merged.environment.count == 2)
        // A shard given twice is named, not silently double-counted.
        let twice = RunResult.merged([("x", shards[0]), ("y", shards[0])])
        #expect(twice.message?.contains("is in both x and y") == true)
        // A shard that died makes the merged run incomplete.
        let died = RunResult(journal: Array(run(runs).dropLast()))
        #expect(RunResult.merged([("ok", shards[0]), ("died", died)]).outcome == .incomplete)
    }

    @Test func compareSaysWorseWithFishersPValue() throws {
        let a = RunResult(journal: run((1...4).map { scenarioRun("memory", attempt: $0, passes: true, ms: 800, from: Double($0) * 10) }, repeatCount: 4))
        let b = RunResult(journal: run((1...4).map { scenarioRun("memory", attempt: $0, passes: false, ms: 1600, from: Double($0) * 10) }, repeatCount: 4, qemu: "7.2.22"))
        let c = Comparison(a: a, named: "A", b: b, named: "B")
        let row = try #require(c.rows.first)
        #expect(row.verdict == .worse)
        #expect(abs((row.pValue ?? 1) - 1.0 / 70) < 1e-9)
        #expect(row.migrationTimeChange == 1.0)
        #expect(c.bIsWorse)
        #expect(c.environment.contains { $0.host == "a" && $0.what == "QEMU" && $0.a == "10.0.2" && $0.b == "7.2.22" })
        #expect(c.text().contains("worse (p=0.0143)"), "\(c.text())")
        #expect(c.html().contains("7.2.22"))
        // The other way round it is better; against itself there is no evidence.
        #expect(Comparison(a: b, named: "B", b: a, named: "A").rows.first?.verdict == .better)
        #expect(Comparison(a: a, named: "A", b: a, named: "A").rows.first?.verdict == .noEvidence)
        #expect(!Comparison(a: a, named: "A", b: a, named: "A").bIsWorse)
        // One failure in four is no evidence.
        let one = RunResult(journal: run((1...4).map { scenarioRun("memory", attempt: $0, passes: $0 != 2, from: Double($0) * 10) }, repeatCount: 4))
        #expect(Comparison(a: a, named: "A", b: one, named: "B").rows.first?.verdict == .noEvidence)
        // Scenarios in one run only are named as such.
        let other = RunResult(journal: run([scenarioRun("smoke", attempt: nil, passes: true)]))
        #expect(Comparison(a: a, named: "A", b: other, named: "B").rows.map(\.verdict) == [.onlyInA, .onlyInB])
    }

    @Test func htmlReportShowsTheTimelineWithItsFaultAndDowntime() throws {
        let r = RunResult(journal: run([scenarioRun("abort", attempt: nil, passes: false, ms: 2000)]))
        let m = try #require(r.scenarios.first?.migrations.first)
        #expect(m.samples.count == 5)
        #expect(m.faults.map(\.kind) == ["set-max-downtime"])
        let html = HTMLReport(result: r, artifactsDirectory: nil).render()
        #expect(html.hasPrefix("<!DOCTYPE html>"))
        #expect(html.contains("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\""))
        #expect(html.contains("class=\"fault-marker\""))
        #expect(html.contains("set-max-downtime at 1000 ms"))
        #expect(html.contains("class=\"downtime\""))
        #expect(html.contains("class=\"series\""))
        // Guest text is escaped, never markup.
        #expect(html.contains("page 18: &lt;lost&gt; &amp; gone"))
        #expect(!html.contains("<lost>"))
        // Nothing from elsewhere: no script, no external reference.
        #expect(!html.contains("<script") && !html.contains("http://example") && !html.contains("https://"))
        // The SVG alone is well-formed XML.
        let svg = TimelinePlot(migration: m).svg()
        _ = try XMLParserCheck.parse(svg)
    }
}
