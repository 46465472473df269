import Foundation
import Journal
import Runner
import Scenario

/// The results of a run, computed from its journal alone (`RunResult(journal:)`), so the same
/// report comes out of a live run and of `miglab report DIR` on a killed run's journal.
public struct RunResult: Codable, Sendable, Equatable {
    /// passed | failed | interrupted | incomplete (the journal has no run_finished).
    public var outcome: ScenarioVerdict.Outcome
    /// Set when the journal's `run_finished` claims another outcome than its scenarios show
    /// (the claim is reported, not believed).
    public var message: String?
    public var startedAt: String?
    public var durationSeconds: Double
    public var scenarios: [ScenarioResult]
    /// What the hosts ran (QEMU, libvirt, kernel), each distinct record once.
    public var environment: [HostEnvironment] = []
    /// Per scenario over its runs (one run each, or `--repeat N`): counts, the failure rate
    /// with its 95% Wilson interval, and distributions of the migration figures.
    public var summary: [ScenarioSummary] = []
    /// `--repeat N` of the run (nil: each scenario ran once).
    public var repeatCount: Int?
    /// The shard this run was (`--shard K/N`), or the shards merged into it.
    public var shards: [String] = []

    enum CodingKeys: String, CodingKey {
        case outcome, message, scenarios, environment, summary, shards
        case startedAt = "started_at"
        case durationSeconds = "duration_s"
        case repeatCount = "repeat"
    }

    public init(outcome: ScenarioVerdict.Outcome, message: String? = nil, startedAt: String? = nil, durationSeconds: Double,
                scenarios: [ScenarioResult], environment: [HostEnvironment] = [], repeatCount: Int? = nil, shards: [String] = []) {
        self.outcome = outcome
        self.message = message
        self.startedAt = startedAt
        self.durationSeconds = durationSeconds
        self.scenarios = scenarios
        self.environment = environment
        self.repeatCount = repeatCount
        self.shards = shards
        self.summary = ScenarioSummary.of(scenarios)
    }

    /// Reads a results.json; older ones without the newer fields read too.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        outcome = try c.decode(ScenarioVerdict.Outcome.self, forKey: .outcome)
        message = try c.decodeIfPresent(String.self, forKey: .message)
        startedAt = try c.decodeIfPresent(String.self, forKey: .startedAt)
        durationSeconds = try c.decode(Double.self, forKey: .durationSeconds)
        scenarios = try c.decode([ScenarioResult].self, forKey: .scenarios)
        environment = try c.decodeIfPresent([HostEnvironment].self, forKey: .environment) ?? []
        repeatCount = try c.decodeIfPresent(Int.self, forKey: .repeatCount)
        shards = try c.decodeIfPresent([String].self, forKey: .shards) ?? []
        summary = ScenarioSummary.of(scenarios)
    }
}

public struct ScenarioResult: Codable, Sendable, Equatable {
    public var name: String
    /// Which run of a repeated scenario this is (from 1); nil when it ran once.
    public var attempt: Int?
    public var file: String?
    public var outcome: ScenarioVerdict.Outcome
    public var message: String?
    public var durationSeconds: Double
    public var migrations: [MigrationResult]
    public var verifications: [VerificationRecord]
    /// Faults as they fired: kind, trigger, when (ms after the migration started), job statistics.
    public var faults: [FaultRecord] = []
    public var expectations: [ExpectationRecord]
    public var timing: Timing

    enum CodingKeys: String, CodingKey {
        case name, attempt, file, outcome, message, migrations, verifications, faults, expectations, timing
        case durationSeconds = "duration_s"
    }
}

public struct MigrationResult: Codable, Sendable, Equatable {
    public var from: String
    public var to: String
    public var outcome: Expectations.MigrationOutcome
    public var stats: MigrationStats
    public var wallSeconds: Double
    public var error: MigrationError?
    /// Where the time and the bytes went, RAM and device apart (from the progress samples).
    public var phases: [PhaseFigures] = []
    /// The journal's progress samples of this migration and the faults that fired during it,
    /// for the HTML report's timeline. Not in results.json (the journal has them).
    public var samples: [MigrationStats] = []
    public var faults: [FaultRecord] = []

    public struct MigrationError: Codable, Sendable, Equatable {
        public var code: Int32?
        public var domain: Int32?
        public var message: String
    }

    enum CodingKeys: String, CodingKey {
        case from, to, outcome, stats, error, phases
        case wallSeconds = "wall_s"
    }
}

/// One phase of a migration: how long it took and what it sent, RAM and VFIO device state apart.
/// A figure libvirt did not report (a failed migration's stop-copy, VFIO bytes before libvirt
/// 10.6) is absent, never 0.
public struct PhaseFigures: Codable, Sendable, Equatable {
    public var phase: MigrationPhase
    public var milliseconds: UInt64?
    public var ramBytes: UInt64?
    public var vfioBytes: UInt64?

    enum CodingKeys: String, CodingKey {
        case phase
        case milliseconds = "ms"
        case ramBytes = "ram_bytes"
        case vfioBytes = "vfio_bytes"
    }

    /// The phases of one migration from its progress samples (sorted by time) and its final
    /// statistics. Set-up runs from the job's start (libvirt preparing the destination, QEMU's
    /// own set-up) to the first sample with bytes sent; pre-copy ends at the last sample taken
    /// while the source ran, and what was sent after it counts as stop-copy, so stop-copy may
    /// hold up to one sampling interval of pre-copy traffic, never the other way round.
    /// Stop-copy's time is the downtime.
    public static func of(samples: [MigrationStats], final: MigrationStats, completed: Bool) -> [PhaseFigures] {
        var phases: [PhaseFigures] = []
        let firstSent = samples.first { $0.phase == .preCopy || $0.phase == .stopCopy }
        if let ms = firstSent?.timeElapsedMs ?? final.setupTimeMs {
            phases.append(PhaseFigures(phase: .setup, milliseconds: ms))
        }
        let running = samples.last { $0.phase == .preCopy }
        if let p = running {
            let ms = p.timeElapsedMs.map { e in e - min(e, firstSent?.timeElapsedMs ?? e) }
            phases.append(PhaseFigures(phase: .preCopy, milliseconds: ms, ramBytes: p.memoryProcessedBytes, vfioBytes: p.vfioDataBytes))
        }
        guard completed else { return phases }
        func rest(_ total: UInt64?, _ before: UInt64?) -> UInt64? {
            guard let total else { return nil }
            return total - min(total, before ?? 0)
        }
        phases.append(PhaseFigures(phase: .stopCopy, milliseconds: final.downtimeMs,
                                   ramBytes: rest(final.memoryProcessedBytes, running?.memoryProcessedBytes),
                                   vfioBytes: rest(final.vfioDataBytes, running?.vfioDataBytes)))
        return phases
    }
}

/// Where a scenario's wall time went. `overhead_s` is the rest: runner work and libvirt's
/// own time around the migrations (prepare, source clean-up) that the job statistics omit.
public struct Timing: Codable, Sendable, Equatable {
    public var labSetupSeconds: Double = 0
    public var bootSeconds: Double = 0
    public var migrationSeconds: Double = 0
    public var verificationSeconds: Double = 0
    /// Guest device actions run as steps (FLR, device reset).
    public var faultSeconds: Double = 0
    public var overheadSeconds: Double = 0
    public var overheadFraction: Double = 0

    enum CodingKeys: String, CodingKey {
        case labSetupSeconds = "lab_setup_s"
        case bootSeconds = "boot_s"
        case migrationSeconds = "migration_s"
        case verificationSeconds = "verification_s"
        case faultSeconds = "faults_s"
        case overheadSeconds = "overhead_s"
        case overheadFraction = "overhead_fraction"
    }
}

extension RunResult {
    public init(journal events: [JournalEvent]) {
        var scenarios: [ScenarioResult] = []
        var open: [String: Int] = [:]   // scenario name -> index of its latest start
        var starts: [Int: Double] = [:]
        var end: JournalEvent?
        var samples: [Int: [MigrationStats]] = [:]   // scenario index -> its running migration's
        var firstEvent: [Int: Int] = [:]              // scenario index -> index of its scenario_started
        var finishedSays: [Int: JournalEvent.Outcome?] = [:]        // what its scenario_finished claims
        var migrating: [Int: [FaultRecord]] = [:]     // scenario index -> faults of its migrate step so far
        var environment: [HostEnvironment] = []
        var repeatCount: Int?
        var shards: [String] = []
        for (index, e) in events.enumerated() {
            switch e.kind {
            case .runStarted:
                repeatCount = e.details?["repeat"].flatMap { Int($0) }
                if let s = e.details?["shard"] { shards = [s] }
            case .environment:
                for h in e.environment ?? [] where !environment.contains(h) { environment.append(h) }
            case .stepStarted:
                guard let i = e.scenario.flatMap({ open[$0] }), e.stepKind == "migrate" else { continue }
                migrating[i] = []
            case .scenarioStarted:
                let name = e.scenario ?? "?"
                scenarios.append(ScenarioResult(name: name, attempt: e.attempt, file: e.file, outcome: .incomplete,
                                                message: "the journal ends before this scenario finished (the run died or was killed)",
                                                durationSeconds: 0, migrations: [], verifications: [], expectations: [],
                                                timing: Timing()))
                open[name] = scenarios.count - 1
                starts[scenarios.count - 1] = e.t
                firstEvent[scenarios.count - 1] = index
            case .phase:
                guard let i = e.scenario.flatMap({ open[$0] }) else { continue }
                switch e.phase {
                case .labSetup: scenarios[i].timing.labSetupSeconds += e.durationSeconds ?? 0
                case .verification: scenarios[i].timing.verificationSeconds += e.durationSeconds ?? 0
                default: break
                }
            case .stepFinished:
                guard let i = e.scenario.flatMap({ open[$0] }) else { continue }
                switch e.phase {
                case .boot: scenarios[i].timing.bootSeconds += e.durationSeconds ?? 0
                case .verification: scenarios[i].timing.verificationSeconds += e.durationSeconds ?? 0
                case .faults: scenarios[i].timing.faultSeconds += e.durationSeconds ?? 0
                default: break
                }
            case .fault:
                guard let i = e.scenario.flatMap({ open[$0] }), let f = e.fault else { continue }
                scenarios[i].faults.append(f)
                migrating[i]?.append(f)
            case .migrationProgress:
                guard let i = e.scenario.flatMap({ open[$0] }), let p = e.progress else { continue }
                samples[i, default: []].append(p)
            case .migrationFinished:
                guard let i = e.scenario.flatMap({ open[$0] }), let m = e.migration else { continue }
                scenarios[i].migrations.append(MigrationResult(
                    from: m.from, to: m.to, outcome: m.outcome, stats: m.stats, wallSeconds: m.wallSeconds,
                    error: m.errorMessage.map { .init(code: m.errorCode, domain: m.errorDomain, message: $0) },
                    phases: PhaseFigures.of(samples: samples[i] ?? [], final: m.stats, completed: m.outcome == .completed),
                    samples: samples[i] ?? [], faults: migrating[i] ?? []))
                samples[i] = nil
                migrating[i] = nil
                // libvirt's elapsed time; a failed migration has none, so its wall time counts.
                scenarios[i].timing.migrationSeconds += m.stats.timeElapsedMs.map { Double($0) / 1000 } ?? m.wallSeconds
            case .verification:
                guard let i = e.scenario.flatMap({ open[$0] }), let v = e.verification else { continue }
                scenarios[i].verifications.append(v)
            case .scenarioFinished:
                guard let i = e.scenario.flatMap({ open[$0] }) else { continue }
                finishedSays[i] = e.outcome
                scenarios[i].durationSeconds = e.durationSeconds ?? (e.t - (starts[i] ?? e.t))
                open[e.scenario!] = nil
            case .runFinished:
                end = e
            default:
                break
            }
        }
        // Each scenario's outcome and expectations from its events (ScenarioVerdict, as the
        // runner made them); a scenario_finished that claims otherwise is flagged, not believed.
        for i in scenarios.indices {
            guard let from = firstEvent[i] else { continue }
            let to = firstEvent[i + 1] ?? events.count
            let verdict = ScenarioVerdict.of(Array(events[from..<to]))
            scenarios[i].outcome = verdict.outcome
            scenarios[i].expectations = verdict.expectations
            scenarios[i].message = verdict.message
            if let claimed = finishedSays[i] ?? nil, claimed != JournalEvent.Outcome(verdict.outcome) {
                scenarios[i].message = "the journal's scenario_finished says \(claimed.rawValue), its events say \(verdict.outcome.rawValue)"
                    + (verdict.message.map { ": \($0)" } ?? "")
            }
        }
        // A scenario the run never finished: its duration is what the journal saw of it.
        let lastT = events.last?.t ?? 0
        for (name, i) in open {
            _ = name
            scenarios[i].durationSeconds = lastT - (starts[i] ?? lastT)
        }
        for i in scenarios.indices {
            var t = scenarios[i].timing
            let wall = scenarios[i].durationSeconds
            t.overheadSeconds = max(0, wall - t.labSetupSeconds - t.bootSeconds - t.migrationSeconds - t.verificationSeconds - t.faultSeconds)
            t.overheadFraction = wall > 0 ? t.overheadSeconds / wall : 0
            func r(_ v: Double) -> Double { (v * 1000).rounded() / 1000 }
            t.labSetupSeconds = r(t.labSetupSeconds); t.bootSeconds = r(t.bootSeconds)
            t.migrationSeconds = r(t.migrationSeconds); t.verificationSeconds = r(t.verificationSeconds); t.faultSeconds = r(t.faultSeconds)
            t.overheadSeconds = r(t.overheadSeconds); t.overheadFraction = (t.overheadFraction * 10000).rounded() / 10000
            scenarios[i].timing = t
            scenarios[i].durationSeconds = r(wall)
        }
        let finished = end != nil
        let allPassed = !scenarios.isEmpty && scenarios.allSatisfy { $0.outcome == .passed }
        outcome = !finished ? .incomplete : (end?.outcome == .interrupted ? .interrupted : (allPassed ? .passed : .failed))
        if let claimed = end?.outcome, claimed != JournalEvent.Outcome(outcome) {
            message = "the journal's run_finished says \(claimed.rawValue), its scenarios say \(outcome.rawValue)"
        }
        startedAt = events.first?.wallclock
        durationSeconds = (lastT * 1000).rounded() / 1000
        self.scenarios = scenarios
        self.environment = environment
        self.repeatCount = repeatCount
        self.shards = shards
        summary = ScenarioSummary.of(scenarios)
    }

    public func json() throws -> Data {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        // A journal's figures can add up to infinity (hostile or damaged timestamps): written
        // as strings, never a crash.
        enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return try enc.encode(self)
    }

    /// JUnit XML: one testsuite, one testcase per scenario.
    public func junit() -> String {
        // Guest, device and journal text: XML 1.0 characters only (U+FFFE from a guest's
        // console would make the file not XML), and bounded.
        func esc(_ s: String) -> String {
            var o = ""
            for ch in s.unicodeScalars.prefix(20_000) {
                switch ch {
                case "&": o += "&amp;"
                case "<": o += "&lt;"
                case ">": o += "&gt;"
                case "\"": o += "&quot;"
                case "'": o += "&apos;"
                default:
                    if SafeText.isXMLCharacter(ch) { o.unicodeScalars.append(ch) } else { o += "\\u{\(String(ch.value, radix: 16))}" }
                }
            }
            return o
        }
        // One testcase per scenario: a repeated scenario's runs make one, its rate in the
        // message, failed when any run failed (a flaky scenario is not green).
        struct Case { var name, file: String; var time: Double; var outcome: ScenarioVerdict.Outcome; var message, body: String }
        let cases: [Case] = summary.map { sum in
            let runs = scenarios.filter { $0.name == sum.name }
            let worst = runs.first { $0.outcome == .failed } ?? runs.first { $0.outcome != .passed } ?? runs.last!
            let why = worst.expectations.filter { $0.verdict == .fail }.map { "\($0.what): expected \($0.expected), observed \($0.observed)" }
            var message = worst.outcome == .failed && !why.isEmpty ? why.joined(separator: "; ") : (worst.message ?? worst.outcome.rawValue)
            var body = summaryLines(worst).joined(separator: "\n")
            if runs.count > 1 || worst.attempt != nil {
                message = sum.rateText + (worst.outcome == .passed ? "" : "; run \(worst.attempt ?? 0): \(message)")
                body = sum.rateText + "\n" + body
            }
            return Case(name: sum.name, file: worst.file ?? "", time: runs.map(\.durationSeconds).reduce(0, +),
                        outcome: worst.outcome, message: message, body: body)
        }
        let failures = cases.filter { $0.outcome == .failed }.count
        // A run that did not pass and has no scenario in failure or error to show it (it died:
        // no run_finished; it was interrupted; it ran no scenario) is a testcase in error of its
        // own, so a CI reading junit.xml never sees an all-green or empty suite for it.
        let runProblem: String? = switch outcome {
        case .passed: nil
        case .incomplete: "the journal ends before the run finished: the run died or was killed (\(scenarios.count) scenario(s) started)"
        case .interrupted: "the run was interrupted (Ctrl-C or SIGTERM) after \(scenarios.count) scenario(s)"
        case .failed, .error: scenarios.isEmpty ? "the run has no scenario: nothing was checked" : (message ?? "the run did not pass")
        }
        let runTestcase = runProblem != nil && (outcome == .incomplete || cases.allSatisfy { $0.outcome == .passed })
        let errors = cases.filter { $0.outcome != .passed && $0.outcome != .failed }.count + (runTestcase ? 1 : 0)
        let tests = cases.count + (runTestcase ? 1 : 0)
        var x = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        x += "<testsuites name=\"miglab\" tests=\"\(tests)\" failures=\"\(failures)\" errors=\"\(errors)\" time=\"\(durationSeconds)\">\n"
        x += "  <testsuite name=\"miglab\" tests=\"\(tests)\" failures=\"\(failures)\" errors=\"\(errors)\" time=\"\(durationSeconds)\">\n"
        if runTestcase {
            x += "    <testcase classname=\"miglab\" name=\"miglab run\" time=\"\(durationSeconds)\">\n"
            x += "      <error message=\"\(esc(runProblem ?? ""))\"/>\n"
            x += "    </testcase>\n"
        }
        for c in cases {
            x += "    <testcase classname=\"miglab\" name=\"\(esc(c.name))\" file=\"\(esc(c.file))\" time=\"\((c.time * 1000).rounded() / 1000)\""
            switch c.outcome {
            case .passed:
                x += ">\n      <system-out>\(esc(c.body))</system-out>\n    </testcase>\n"
            case .failed:
                x += ">\n      <failure message=\"\(esc(c.message))\">\(esc(c.body))</failure>\n    </testcase>\n"
            case .error, .interrupted, .incomplete:
                x += ">\n      <error message=\"\(esc(c.message))\">\(esc(c.body))</error>\n    </testcase>\n"
            }
        }
        x += "  </testsuite>\n</testsuites>\n"
        return x
    }

    func summaryLines(_ s: ScenarioResult) -> [String] {
        var lines: [String] = []
        for (i, m) in s.migrations.enumerated() {
            lines.append("migration \(i + 1) \(m.from)->\(m.to): \(m.outcome.rawValue), \(m.stats.timeElapsedMs ?? 0) ms, downtime \(m.stats.downtimeMs ?? 0) ms, \(m.stats.dataTotalBytes ?? 0) bytes, \(m.stats.memoryIterations ?? 0) iterations"
                         + (m.stats.vfioDataBytes.map { ", VFIO device \($0) bytes" } ?? "") + (m.error.map { " (\($0.message))" } ?? ""))
            let phases = m.phases.filter { $0.phase != .setup }.map { p in
                "\(p.phase.rawValue) \(p.milliseconds.map { "\($0) ms" } ?? "? ms"): RAM \(p.ramBytes.map(String.init) ?? "?"), VFIO \(p.vfioBytes.map(String.init) ?? "?") bytes"
            }
            if !phases.isEmpty { lines.append("  " + phases.joined(separator: "; ")) }
        }
        for f in s.faults {
            lines.append("fault \(f.kind) on \(f.host ?? "?") (\(f.trigger)) at \(String(format: "%.0f", f.firedAtMs)) ms: " + (f.error.map { "error: \($0)" } ?? f.result ?? ""))
        }
        for v in s.verifications {
            lines.append("verify \(v.kind) on \(v.host ?? "?"): \(v.verdict)" + (v.detail.map { ", \($0)" } ?? ""))
        }
        return lines
    }

    /// The human summary printed at the end of a run.
    public func text() -> String {
        var out: [String] = []
        for s in scenarios {
            let mark = switch s.outcome {
            case .passed: "PASS"
            case .failed: "FAIL"
            case .interrupted: "INTERRUPTED"
            case .incomplete: "INCOMPLETE"
            case .error: "ERROR"
            }
            out.append("\(mark)  \(s.name)\(s.attempt.map { " (run \($0))" } ?? "")  \(String(format: "%.1f", s.durationSeconds)) s" + (s.message.map { "  (\($0))" } ?? ""))
            for l in summaryLines(s) { out.append("      \(l)") }
            for e in s.expectations where e.verdict == .fail {
                out.append("      expected \(e.what) \(e.expected), observed \(e.observed)")
            }
            let t = s.timing
            out.append(String(format: "      time: lab set-up %.1f s, boot %.1f s, migration %.1f s, verification %.1f s, overhead %.1f s (%.1f%%)",
                              t.labSetupSeconds, t.bootSeconds, t.migrationSeconds, t.verificationSeconds, t.overheadSeconds, t.overheadFraction * 100))
        }
        if scenarios.contains(where: { $0.attempt != nil }) {
            out.append("over the runs of each scenario:")
            for sum in summary {
                var line = "  \(sum.name): \(sum.rateText)"
                if let t = sum.migrationTimeMs, let d = sum.downtimeMs {
                    line += String(format: "; migration median %.0f ms (p90 %.0f, max %.0f), downtime median %.0f ms (p90 %.0f, max %.0f)",
                                   t.median, t.p90, t.max, d.median, d.p90, d.max)
                }
                out.append(line)
            }
        }
        for h in environment {
            out.append("host \(h.host): QEMU \(h.qemu ?? "?")\(h.qemuBinary.map { " (\($0))" } ?? ""), libvirt \(h.libvirt ?? "?")\(h.libvirtd.map { " (\($0))" } ?? ""), kernel \(h.kernel ?? "?")")
        }
        let passed = scenarios.filter { $0.outcome == .passed }.count
        out.append("\(passed) of \(scenarios.count) scenarios passed; run \(outcome.rawValue) in \(String(format: "%.1f", durationSeconds)) s"
                   + (message.map { " (\($0))" } ?? ""))
        // The last line is what a CI log shows first; a long run's one failure is named there
        // rather than left somewhere in hundreds of lines above it.
        let notPassed = scenarios.filter { $0.outcome != .passed }
        if !notPassed.isEmpty {
            out.append("not passed: " + notPassed.map { "\($0.name)\($0.attempt.map { " (run \($0))" } ?? "") \($0.outcome.rawValue)" }
                .joined(separator: ", "))
        }
        // For a terminal: no escape sequence of a guest's or a journal's reaches it raw.
        return SafeText.lines(out.joined(separator: "\n"), limit: 1_000_000)
    }
}
