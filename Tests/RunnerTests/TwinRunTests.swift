import Foundation
import Journal
import LabTwin
import Report
import Scenario
import Testing
@testable import Runner

/// The runner on the twin lab: whole scenarios (boot, migrations with faults, checks after a
/// failed migration, memory verification with the real oracle, expectations) run in memory,
/// without root. What the twin does to a migration is scripted; what the runner makes of it is
/// what these tests hold it to.
struct TwinRun {
    let passed: Bool
    let result: RunResult
    let lab: TwinLab
    let events: [JournalEvent]
    /// The artifacts folder's entries (recursive), read before it is removed.
    let artifacts: [String]

    var scenario: ScenarioResult { result.scenarios[0] }
    func expectation(_ what: String) -> ExpectationRecord? { scenario.expectations.first { $0.what == what } }

    static func run(_ yaml: String, script: TwinScript = TwinScript(), repetition: Repetition = .once) async throws -> TwinRun {
        let lab = TwinLab(script: script)
        let dir = NSTemporaryDirectory() + "miglab-twin-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let controller = try RunController(config: RunConfiguration(artifactsDirectory: dir, repetition: repetition),
                                           provider: TwinLabProvider(lab: lab), imageBuilder: TwinGuestImage())
        let scenarios = try ScenarioParser().scenarios(yaml, file: "twin.yaml")
        let passed = await controller.run(scenarios)
        let events = try Journal.read(path: controller.journal.path)
        let artifacts = (FileManager.default.enumerator(atPath: dir)?.allObjects as? [String] ?? []).sorted()
        return TwinRun(passed: passed, result: RunResult(journal: events), lab: lab, events: events, artifacts: artifacts)
    }
}

@Suite struct TwinRunTests {
    static let guest = "guest: {workload_mib: 1, devices: []}"

    @Test func aCleanMigrationPassesWithTheMemoryOracleOnTheTwinsPages() async throws {
        let r = try await TwinRun.run("""
        name: twin-smoke
        \(Self.guest)
        steps:
          - boot: a
          - migrate: {from: a, to: b}
          - verify: [memory, console]
        """)
        #expect(r.passed, "\(r.scenario)")
        #expect(r.scenario.migrations.map(\.outcome) == [.completed])
        let memory = try #require(r.scenario.verifications.first { $0.kind == "memory" })
        #expect(memory.verdict == .pass && memory.pagesChecked == 256, "\(memory)")
        #expect(memory.host == "b")
    }

    /// The memory check reads only the frames the workload reports, not all of guest RAM; a
    /// frames file one frame off (a guest that points the check elsewhere) fails the check; no
    /// frames file makes the check read all of guest RAM.
    @Test func theMemoryCheckReadsOnlyTheWorkloadsFramesAndALyingListFails() async throws {
        let scenario = """
        name: twin-frames
        \(Self.guest)
        steps:
          - boot: a
          - migrate: {from: a, to: b}
          - verify: memory
        """
        let truthful = try await TwinRun.run(scenario)
        let m = try #require(truthful.scenario.verifications.first { $0.kind == "memory" })
        #expect(m.verdict == .pass && m.pagesChecked == 256, "\(m)")
        #expect(m.readMethod == "frames" && m.bytesRead == 256 * 4096, "\(m)")
        #expect(m.detail?.contains("the workload's 256 frames") == true, "\(m)")

        var script = TwinScript()
        script.framesReport = .shifted
        let shifted = try await TwinRun.run(scenario, script: script)
        let s = try #require(shifted.scenario.verifications.first { $0.kind == "memory" })
        #expect(s.verdict == .fail && (s.badPages ?? 0) >= 1, "\(s)")
        #expect(shifted.scenario.outcome == .failed)

        script.framesReport = .missing
        let missing = try await TwinRun.run(scenario, script: script)
        let all = try #require(missing.scenario.verifications.first { $0.kind == "memory" })
        #expect(all.verdict == .pass && all.readMethod == "ram", "\(all)")
        #expect((all.bytesRead ?? 0) > 256 * 4096)
        #expect(all.detail?.contains("frames file is unusable") == true, "\(all)")
    }

    /// A migration that never converges is aborted at its step's deadline and the scenario
    /// fails (the system under test misbehaved; not a lab error), with the job's last
    /// statistics and the convergence picture kept: also when the job, being cancelled,
    /// reports its figures gone back to zero for a while (QEMU does).
    @Test func aMigrationThatNeverConvergesFailsWithItsStatistics() async throws {
        var script = TwinScript()
        script.neverConverges = true
        script.cancellingMs = 300
        let r = try await TwinRun.run("""
        name: twin-never-converges
        \(Self.guest)
        steps:
          - boot: a
          - migrate: {from: a, to: b, timeout_s: 1}
          - verify: memory
        """, script: script)
        #expect(r.scenario.outcome == .failed, "\(r.scenario)")
        let m = try #require(r.scenario.migrations.first)
        #expect(m.outcome == .failed)
        #expect((m.stats.memoryIterations ?? 0) > 1 && (m.stats.timeElapsedMs ?? 0) > 0 && (m.stats.dataRemainingBytes ?? 0) > 0, "\(m.stats)")
        let deadline = try #require(r.expectation("migration #1 (a -> b): finished within its deadline"))
        #expect(deadline.verdict == .fail && deadline.observed.contains("iterations") && deadline.observed.contains("still to send"), "\(deadline)")
        // The steps after it are skipped: they would start from the wrong place.
        #expect(r.scenario.verifications.allSatisfy { ($0.detail ?? "").contains("after the failed migration") }, "\(r.scenario.verifications)")
    }

    /// The memory check is not a formality: pages the migration damaged fail it, and the
    /// scenario with them.
    @Test func damagedPagesFailTheScenario() async throws {
        var script = TwinScript()
        script.damagedPagesPerMigration = 3
        let r = try await TwinRun.run("""
        name: twin-damage
        \(Self.guest)
        steps:
          - boot: a
          - migrate: {from: a, to: b}
          - verify: memory
        """, script: script)
        #expect(!r.passed)
        #expect(r.scenario.outcome == .failed)
        let memory = try #require(r.scenario.verifications.first { $0.kind == "memory" })
        #expect(memory.verdict == .fail && memory.badPages == 3, "\(memory)")
        #expect(r.expectation("memory")?.verdict == .fail)
    }

    /// `--repeat 3`: three runs, each journaled with its number and given its own folder, and
    /// one summary with the rate; the environment the lab reports is journaled.
    @Test func repeatedRunsAreNumberedAndSummarized() async throws {
        let r = try await TwinRun.run("""
        name: twin-repeat
        \(Self.guest)
        steps:
          - boot: a
          - migrate: {from: a, to: b}
          - verify: memory
        """, repetition: Repetition(times: 3))
        #expect(r.passed)
        #expect(r.result.scenarios.map(\.attempt) == [1, 2, 3])
        #expect(r.result.repeatCount == 3)
        let summary = try #require(r.result.summary.first)
        #expect(summary.runs == 3 && summary.passed == 3 && summary.failureRate == 0 && !summary.flaky)
        #expect(summary.migrationTimeMs?.count == 3)
        for k in 1...3 { #expect(r.artifacts.contains("twin-repeat/run-\(k)/domain.xml"), "\(r.artifacts)") }
        #expect(r.result.environment.map(\.host) == ["a", "b"])
        #expect(r.result.environment.first?.qemu == "twin")
    }

    /// `--until-fail`: the first run that does not pass ends the run, and says so.
    @Test func untilFailStopsAtTheFirstFailure() async throws {
        var script = TwinScript()
        script.damagedPagesPerMigration = 3
        let r = try await TwinRun.run("""
        name: twin-until-fail
        \(Self.guest)
        steps:
          - boot: a
          - migrate: {from: a, to: b}
          - verify: memory
        """, script: script, repetition: Repetition(times: 5, untilFail: true))
        #expect(!r.passed)
        #expect(r.result.scenarios.count == 1 && r.result.scenarios[0].outcome == .failed)
        #expect(r.events.contains { $0.kind == .note && ($0.message ?? "").contains("--until-fail: stopped at run 1") })
        #expect(r.result.summary.first?.failureRate == 1)
    }

    /// A trigger on the job's statistics fires when they say so, and the fault's record
    /// carries the statistics it fired on.
    @Test func anAbortFiresAtItsIterationAndTheRetryIsJudgedByItsOwnStep() async throws {
        var script = TwinScript()
        script.migrationMs = 2000
        script.iterationMs = 50
        let r = try await TwinRun.run("""
        name: twin-abort-retry
        \(Self.guest)
        steps:
          - boot: a
          - migrate:
              from: a
              to: b
              faults: [{abort: {at: {iteration: 4}}}]
              expect: {outcome: aborted, error: {code: 78}, guest: {on: source, state: running}}
          - verify: memory
          - migrate: {from: a, to: b, expect: {outcome: completed}}
        """, script: script)
        // The retry must not wait for the aborted one's 2 s: the script is the same.
        #expect(r.passed, "\(r.scenario.expectations)")
        let fault = try #require(r.scenario.faults.first { $0.kind == "abort" })
        #expect((fault.stats?.memoryIterations ?? 0) >= 4)
        #expect(fault.result == "ok")
        #expect(r.scenario.migrations.map(\.outcome) == [.aborted, .completed])
        #expect(r.scenario.migrations[0].error?.code == 78)
        let judged = r.scenario.expectations.filter { $0.what.hasPrefix("migration #") }
        #expect(judged.contains { $0.what == "migration #1 (a -> b)" && $0.expected == "aborted" && $0.step == 1 && $0.verdict == .pass })
        #expect(judged.contains { $0.what == "migration #2 (a -> b)" && $0.expected == "completed" && $0.step == 3 && $0.verdict == .pass })
        #expect(judged.contains { $0.what == "migration #1 (a -> b): guest runs on" && $0.verdict == .pass })
        // After the failure: the destination was left clean, and the memory on the source was checked.
        #expect(r.expectation("destination after failed migration #1")?.verdict == .pass)
        #expect(r.scenario.verifications.contains { $0.kind == "memory" && $0.host == "a" && ($0.detail ?? "").contains("after the failed migration") })
    }

    /// A libvirt call that answers late never delays a fault: the source's state is read
    /// (for the journal's phase) by the job sampler, not by the loop that fires the faults.
    /// Here it answers only after the whole migration; an abort due 200 ms in still ends it.
    @Test func aSlowLibvirtCallDoesNotHoldUpAFault() async throws {
        var script = TwinScript()
        script.migrationMs = 1500
        script.stateCallDuringMigrationMs = 4000
        let r = try await TwinRun.run("""
        name: twin-slow-state
        \(Self.guest)
        steps:
          - boot: a
          - migrate:
              from: a
              to: b
              faults: [{abort: {at: {after_ms: 200}}}]
              expect: {outcome: aborted, guest: {on: source, state: running}}
        """, script: script)
        #expect(r.passed, "\(r.scenario.expectations)")
        #expect(r.scenario.migrations.map(\.outcome) == [.aborted])
        let fault = try #require(r.scenario.faults.first { $0.kind == "abort" })
        #expect(fault.result == "ok")
    }

    /// An outcome other than the step's expectation fails the scenario and skips what follows.
    @Test func anUnexpectedOutcomeFailsAndSkipsTheRest() async throws {
        var script = TwinScript()
        script.migrationMs = 2000
        let r = try await TwinRun.run("""
        name: twin-unexpected
        \(Self.guest)
        steps:
          - boot: a
          - migrate: {from: a, to: b, faults: [{network-partition: {at: {after_ms: 100}}}]}
          - migrate: {from: b, to: a}
        """, script: script)
        #expect(!r.passed)
        #expect(r.scenario.migrations.count == 1)
        #expect(r.expectation("migration #1 (a -> b)")?.verdict == .fail)
        #expect(r.events.contains { $0.kind == .note && ($0.message ?? "").contains("remaining steps are skipped") })
    }

    /// The check after a failed migration fails when libvirt left the guest on the
    /// destination, unless the scenario tolerates it.
    @Test func aGuestLeftOnTheDestinationIsCaughtUnlessTolerated() async throws {
        var script = TwinScript()
        script.migrationMs = 2000
        script.leavesGuestOnDestinationAfterFailure = true
        let yaml = """
        name: twin-leftover
        \(Self.guest)
        steps:
          - boot: a
          - migrate: {from: a, to: b, faults: [{abort: }]}
        expect: {migrations: aborted%@}
        """
        let strict = try await TwinRun.run(yaml.replacingOccurrences(of: "%@", with: ""), script: script)
        #expect(!strict.passed)
        let leftover = try #require(strict.expectation("destination after failed migration #1"))
        #expect(leftover.verdict == .fail && leftover.observed.hasPrefix("guest left behind"), "\(leftover)")
        let tolerant = try await TwinRun.run(yaml.replacingOccurrences(of: "%@", with: ", destination_after_failure: any"), script: script)
        #expect(tolerant.passed, "\(tolerant.scenario.expectations)")
    }

    /// Process faults act through the lab's host actions; a killed daemon is reconnected to
    /// once the migration has ended.
    @Test func killedProcessesFailTheMigrationAndTheDaemonIsReconnected() async throws {
        var script = TwinScript()
        script.migrationMs = 3000
        let qemu = try await TwinRun.run("""
        name: twin-kill-qemu
        \(Self.guest)
        steps:
          - boot: a
          - migrate: {from: a, to: b, faults: [{kill-qemu: {at: {iteration: 2}}}]}
          - verify: memory
        expect: {migrations: failed, error: {code: [1, 9], message: "QEMU unexpectedly closed"}, guest: {on: source, state: running}}
        """, script: script)
        #expect(qemu.passed, "\(qemu.scenario.expectations) \(qemu.scenario.message ?? "")")
        #expect(qemu.lab.log.contains("b: kill qemu miglab-twin-kill-qemu"))
        #expect(qemu.scenario.faults.first?.result?.hasPrefix("killed QEMU pid") == true)

        let daemon = try await TwinRun.run("""
        name: twin-kill-libvirtd
        \(Self.guest)
        steps:
          - boot: a
          - migrate: {from: a, to: b, faults: [{kill-libvirtd: {at: {after_ms: 100}}}]}
        expect: {migrations: failed}
        """, script: script)
        #expect(daemon.passed, "\(daemon.scenario.expectations) \(daemon.scenario.message ?? "")")
        #expect(daemon.events.contains { $0.kind == .note && ($0.message ?? "").contains("libvirtd of host b is back") })
    }

    /// A cut link is restored after its duration, whatever the migration did.
    @Test func aLinkFaultWaitsForItsDurationAndIsUndone() async throws {
        var script = TwinScript()
        script.migrationMs = 3000
        let r = try await TwinRun.run("""
        name: twin-partition
        \(Self.guest)
        steps:
          - boot: a
          - migrate: {from: a, to: b, faults: [{network-partition: {duration_ms: 300, at: {after_ms: 50}}}]}
        expect: {migrations: failed, failure_detected_within_s: 2}
        """, script: script)
        #expect(r.passed, "\(r.scenario.expectations) \(r.scenario.message ?? "")")
        #expect(r.lab.log.contains("b: cut link") && r.lab.log.contains("b: restore link"), "\(r.lab.log)")
        #expect(r.lab.log.firstIndex(of: "b: cut link")! < r.lab.log.firstIndex(of: "b: restore link")!)
    }

    /// A guest-side loop is collected when the migration ends, and a report that says it did
    /// not happen fails the step.
    @Test func aGuestLoopThatDidNotHappenFailsTheScenario() async throws {
        var script = TwinScript()
        script.guestctlReport = "MIGLAB-GUESTCTL resets=0 failures=0 driver=virtio-pci"
        let r = try await TwinRun.run("""
        name: twin-guest-loop
        guest: {workload_mib: 1}
        steps:
          - boot: a
          - migrate: {from: a, to: b, faults: [{guest-device-reset: {device: nic0, loop: true}}]}
        """, script: script)
        #expect(!r.passed)
        #expect(r.events.contains { $0.kind == .fault && ($0.message ?? "").hasPrefix("the guest-side fault did not happen") })
        #expect(r.expectation("migration #1 (a -> b): guest-side faults happened")?.verdict == .fail)
        #expect(r.lab.log.contains { $0.contains("guest-exec /bin/miglab-guestctl reset") && $0.hasSuffix(" 0 rebind") }, "\(r.lab.log)")
    }

    /// A fault that never fired, or that fired and could not act, is an expectation that
    /// failed: the migration's own outcome cannot make such a scenario pass.
    @Test func aFaultThatNeverFiredOrNeverActedFailsTheScenario() async throws {
        let never = try await TwinRun.run("""
        name: twin-never
        \(Self.guest)
        steps:
          - boot: a
          - migrate: {from: a, to: b, faults: [{network-partition: {at: {iteration: 1000}}}]}
        """)
        #expect(!never.passed)
        let record = try #require(never.expectation("migration #1 (a -> b): fault `network-partition` happened"))
        #expect(record.verdict == .fail && record.observed.hasPrefix("never fired"), "\(record)")
        #expect(never.expectation("migration #1 (a -> b)")?.verdict == .pass)   // the migration itself completed

        // The destination's twin has no job to abort: the abort fires and fails.
        var script = TwinScript()
        script.migrationMs = 1000
        let failed = try await TwinRun.run("""
        name: twin-abort-fails
        \(Self.guest)
        steps:
          - boot: a
          - migrate: {from: a, to: b, faults: [{abort: {side: destination}}], expect: {outcome: aborted}}
        """, script: script)
        #expect(!failed.passed)
        let abort = try #require(failed.expectation("migration #1 (a -> b): fault `abort` happened"))
        #expect(abort.verdict == .fail && abort.observed.contains("never acted") && abort.observed.contains("no job is active"), "\(abort)")

        // ... and one that happened says what it did.
        let ok = try await TwinRun.run("""
        name: twin-ok
        \(Self.guest)
        steps:
          - boot: a
          - migrate: {from: a, to: b, faults: [{set-bandwidth: {bandwidth_mib_s: 50, at: {iteration: 2}}}]}
        """)
        #expect(ok.passed)
        let bw = try #require(ok.expectation("migration #1 (a -> b): fault `set-bandwidth` happened"))
        #expect(bw.verdict == .pass && bw.observed.contains("bandwidth 50 MiB/s"), "\(bw)")
        #expect(ok.lab.log.contains("a: max speed 50"))
    }

    /// Each combination of a matrix runs as a scenario of its own.
    @Test func everyMatrixCombinationRuns() async throws {
        let r = try await TwinRun.run("""
        name: twin-matrix
        matrix: {bandwidth: [100, 1000], downtime: [300, 2000]}
        exclude: [{bandwidth: 100, downtime: 2000}]
        \(Self.guest)
        steps:
          - boot: a
          - migrate: {from: a, to: b, bandwidth_mib_s: "${bandwidth}", max_downtime_ms: "${downtime}"}
        """)
        #expect(r.passed)
        #expect(r.result.scenarios.map(\.name) == ["twin-matrix[bandwidth=100,downtime=300]", "twin-matrix[bandwidth=1000,downtime=300]",
                                                    "twin-matrix[bandwidth=1000,downtime=2000]"])
        #expect(r.lab.log.filter { $0.hasPrefix("a: max downtime") } == ["a: max downtime 300", "a: max downtime 300", "a: max downtime 2000"])
    }
}
