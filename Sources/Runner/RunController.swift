import Foundation
import Journal
import Lab
import Libvirt
import Logging
import Scenario
#if canImport(Glibc)
import Glibc
#endif

public struct RunConfiguration: Sendable {
    public var artifactsDirectory: String
    public var liveProgress: Bool
    /// Off only to prove that the suite depends on it: with the page comparison skipped, the
    /// corrupted-stream negative control must fail.
    public var memoryOracleEnabled: Bool
    /// How often each scenario runs, and whether the run stops at the first that does not pass.
    public var repetition: Repetition
    /// `--shard K/N` ("K/N"), for the journal: `miglab merge` names the shards it joined.
    public var shard: String?
    /// Which run of a repeated scenario this is (from 1); nil when each runs once.
    var attempt: Int?

    public init(artifactsDirectory: String, liveProgress: Bool = false,
                memoryOracleEnabled: Bool = true, repetition: Repetition = .once, shard: String? = nil) {
        self.artifactsDirectory = artifactsDirectory
        self.liveProgress = liveProgress
        self.memoryOracleEnabled = memoryOracleEnabled
        self.repetition = repetition
        self.shard = shard
    }

    /// A scenario's folder; each run of a repeated scenario has its own (`NAME/run-K`).
    func scenarioArtifacts(_ name: String) -> String {
        let dir = "\(artifactsDirectory)/\(name)" + (attempt.map { "/run-\($0)" } ?? "")
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }
}

/// `--repeat N` and `--until-fail`: migration bugs are probabilistic, so a nightly suite runs
/// each scenario several times and reports a rate.
public struct Repetition: Sendable, Equatable {
    /// Runs of each scenario (rounds over the selection, so drift of the machine during the
    /// run spreads over every scenario rather than landing on one).
    public var times: Int
    /// Stop at the first run that does not pass (its artifacts are kept, as every run's).
    public var untilFail: Bool

    public init(times: Int, untilFail: Bool = false) {
        self.times = times
        self.untilFail = untilFail
    }

    public static let once = Repetition(times: 1)
    /// `--until-fail` without `--repeat`: a bound, so a scenario that never fails still ends.
    public static let untilFailBound = 100
}

/// Where the hosts come from: the built-in lab (brought up when needed, taken down after the
/// run when the run brought it up) or, later, a hardware lab file.
public protocol LabProvider: Sendable {
    /// Makes the lab ready and connects to it.
    func prepare() async throws -> LabEnvironment
    /// Undoes what `prepare` started. Called once, also after a failure or an interrupt.
    func finish() async
    /// What went wrong in the lab itself during the run (a host's kernel that crashed): such a
    /// run is not a pass, whatever its scenarios saw. Asked before `finish`.
    func problems() async -> [String]
    /// Why this lab may not run a scenario that crashes a host on purpose (nil: it may; asked
    /// after `prepare`).
    func refusesHostCrash() async -> String?
    /// After a host crashed: keep its logs and throw the hosts away; the next scenario gets new
    /// ones from `prepare`.
    func discardCrashedHosts() async
    var description: String { get }
}

extension LabProvider {
    public func problems() async -> [String] { [] }
    public func refusesHostCrash() async -> String? {
        "only virtual VFIO hosts the run brings up itself (`miglab run --vfio`) may crash on purpose: a hardware node or this machine's built-in lab is not thrown away"
    }
    public func discardCrashedHosts() async { await finish() }
}

public final class BuiltinLabProvider: LabProvider, @unchecked Sendable {
    let lab: BuiltinLab
    let allowOldQEMU: Bool
    let keepUp: Bool
    private var broughtUp = false
    private var runLock: FileLock?

    public init(lab: BuiltinLab = BuiltinLab(), allowOldQEMU: Bool = false, keepUp: Bool = false) {
        self.lab = lab
        self.allowOldQEMU = allowOldQEMU
        self.keepUp = keepUp
    }

    public var description: String { "built-in lab (\(lab.root))" }

    public func prepare() async throws -> LabEnvironment {
        let status = await lab.status()
        let wasUp = status.isUp
        try await lab.up(allowOldQEMU: allowOldQEMU)
        broughtUp = !wasUp
        // One run at a time drives the built-in lab; a crashed run's lock goes with its process.
        try FileManager.default.createDirectory(atPath: lab.root, withIntermediateDirectories: true)
        guard let lock = try FileLock(path: "\(lab.root)/run.lock", wait: false) else {
            throw RunnerError.io("another miglab run is using the built-in lab (\(lab.root)/run.lock is held); wait for it to finish")
        }
        runLock = lock
        return try await lab.environment()
    }

    public func finish() async {
        runLock?.unlock()
        runLock = nil
        if broughtUp && !keepUp { try? await lab.down() }
    }
}

/// A hardware lab from a lab file: connects to its hosts; nothing to bring up or take down
/// (each scenario takes and gives back its own devices).
public final class HardwareLabProvider: LabProvider {
    let lab: HardwareLab
    public init(file: LabFile) { lab = HardwareLab(file: file) }
    public var description: String { "lab file \(lab.file.file)" }
    /// Hosts with an ssh target get the ssh driver's process and link control.
    public func prepare() async throws -> LabEnvironment {
        var actions: [String: any HostActions] = [:]
        for h in lab.file.hosts { actions[h.name] = SSHHostActions(host: h) }
        return try await lab.environment(actions: actions)
    }
    public func finish() async {}
}

/// The virtual VFIO hosts (`VirtualVFIOLab`): brought up when needed and reached through the lab
/// file they write, exactly as a hardware lab; taken down after the run when the run brought
/// them up.
public final class VirtualVFIOLabProvider: LabProvider, @unchecked Sendable {
    let lab: VirtualVFIOLab
    let kernelPackageVersion: String
    let libvirtPackageVersion: String
    let keepUp: Bool
    /// Where L1's console and its daemons' logs are copied when the run ends.
    let artifactsDirectory: String?
    private var broughtUp = false
    /// Where this run's part of L1's console starts.
    private var consoleOffset: UInt64 = 0

    public init(lab: VirtualVFIOLab = VirtualVFIOLab(), kernelPackageVersion: String = VirtualHostKernelBuilder.defaultPackageVersion,
                libvirtPackageVersion: String = VirtualHostLibvirtBuilder.defaultPackageVersion,
                keepUp: Bool = false, artifactsDirectory: String? = nil) {
        self.lab = lab
        self.kernelPackageVersion = kernelPackageVersion
        self.libvirtPackageVersion = libvirtPackageVersion
        self.keepUp = keepUp
        self.artifactsDirectory = artifactsDirectory
    }

    public var description: String { "virtual VFIO hosts (\(lab.root))" }

    public func prepare() async throws -> LabEnvironment {
        broughtUp = !(await lab.isUp())
        let path = try await lab.up(kernel: kernelPackageVersion, libvirt: libvirtPackageVersion)
        consoleOffset = lab.consoleSize()
        let lab = self.lab, offset = consoleOffset
        return try await HardwareLab(file: try LabFile.load(path: path))
            .environment(actions: lab.hostActions(), trouble: { lab.kernelTrouble(after: offset) },
                         kernel: { _ in lab.kernelRelease() })
    }

    public func problems() async -> [String] {
        lab.kernelTrouble(after: consoleOffset).map {
            "the virtual VFIO host's kernel reported `\($0)` during the run: its results cannot be trusted (L1 console: \(lab.consoleLog))"
        }
    }

    public func finish() async {
        if let artifactsDirectory { lab.copyLogs(to: "\(artifactsDirectory)/vfio-lab") }
        if broughtUp && !keepUp { try? await lab.down() }
    }

    public func refusesHostCrash() async -> String? {
        if !broughtUp { return "the virtual VFIO hosts were up before this run, and a scenario that crashes them needs hosts the run brings up and throws away: run `miglab lab down` first" }
        if keepUp { return "--keep-lab keeps the hosts, but a scenario that crashes them throws them away: drop --keep-lab" }
        return nil
    }

    public func discardCrashedHosts() async {
        crashes += 1
        if let artifactsDirectory { lab.copyLogs(to: "\(artifactsDirectory)/vfio-lab-crashed-\(crashes)") }
        try? await lab.down()
        broughtUp = false
    }
    private var crashes = 0
}

/// Runs scenarios one after the other and journals the run; the results are built from the
/// journal by the Report layer.
public final class RunController: @unchecked Sendable {
    public let journal: Journal
    let config: RunConfiguration
    let provider: LabProvider
    let imageBuilder: any GuestImageSource
    let logger: Logger
    let progress: ProgressLine

    public init(config: RunConfiguration, provider: LabProvider, imageBuilder: any GuestImageSource = GuestImageBuilder(),
                logger: Logger = Logger(label: "miglab.run")) throws {
        try FileManager.default.createDirectory(atPath: config.artifactsDirectory, withIntermediateDirectories: true)
        let journalPath = "\(config.artifactsDirectory)/journal.jsonl"
        // Results are never lost: a run does not write over another run's journal.
        if let attrs = try? FileManager.default.attributesOfItem(atPath: journalPath), (attrs[.size] as? Int ?? 0) > 0 {
            throw RunnerError.io("\(config.artifactsDirectory) already holds a run's journal; give --artifacts a new folder")
        }
        self.journal = try Journal(path: journalPath)
        self.config = config
        self.provider = provider
        self.imageBuilder = imageBuilder
        self.logger = logger
        self.progress = ProgressLine(enabled: config.liveProgress)
    }

    /// Runs every scenario; returns true when all passed. Cancellation (Ctrl-C, SIGTERM) stops
    /// the current scenario, tears it down and ends the run as interrupted.
    public func run(_ scenarios: [Scenario]) async -> Bool {
        var start = JournalEvent(kind: .runStarted)
        start.message = "\(scenarios.count) scenario(s) on the \(provider.description)"
        start.details = ["artifacts": config.artifactsDirectory, "miglab_pid": "\(getpid())"]
        let repetition = config.repetition
        if let shard = config.shard { start.details?["shard"] = shard }
        if repetition != .once {
            start.details?["repeat"] = "\(repetition.times)"
            if repetition.untilFail { start.details?["until_fail"] = "true" }
        }
        journal.record(start)
        var lab: LabEnvironment?
        var image: GuestImage?
        var allPassed = true
        var interrupted = false
        rounds: for round in 1...max(1, repetition.times) {
            for scenario in scenarios {
                if Task.isCancelled { interrupted = true; break rounds }
                var started = JournalEvent(kind: .scenarioStarted, scenario: scenario.name)
                started.file = scenario.file
                started.message = scenario.description
                started.expect = scenario.expect
                if repetition != .once { started.attempt = round }
                let first = journal.record(started).seq
                let outcome = await runOne(scenario, attempt: started.attempt, from: first, lab: &lab, image: &image)
                if outcome != .passed { allPassed = false }
                if Task.isCancelled { interrupted = true; break rounds }
                if repetition.untilFail && outcome != .passed {
                    var e = JournalEvent(kind: .note, scenario: scenario.name)
                    e.message = "--until-fail: stopped at run \(round) of \(scenario.name), which did not pass (\(outcome.rawValue))"
                    journal.record(e)
                    break rounds
                }
            }
        }
        for problem in await provider.problems() {
            var e = JournalEvent(kind: .error)
            e.message = problem
            journal.record(e)
            allPassed = false
        }
        // Tear-down of the lab is part of the run; it runs even when interrupted.
        await provider.finish()
        var end = JournalEvent(kind: .runFinished)
        end.outcome = interrupted ? .interrupted : (allPassed ? .passed : .failed)
        journal.record(end)
        return allPassed && !interrupted
    }

    /// Runs one scenario whose `scenario_started` is journal event `first`; its outcome is the
    /// verdict of its journal events (`ScenarioVerdict`), as `miglab report` makes it.
    func runOne(_ scenario: Scenario, attempt: Int? = nil, from first: Int, lab: inout LabEnvironment?,
                image: inout GuestImage?) async -> ScenarioVerdict.Outcome {
        let t0 = ContinuousClock.now
        var config = self.config
        config.attempt = attempt
        var exec: ScenarioExecution?
        /// A lab error or an interruption ends the scenario: journaled as such.
        func stopped(_ outcome: ScenarioVerdict.Outcome, _ message: String) {
            var e = JournalEvent(kind: .error, scenario: scenario.name)
            e.outcome = JournalEvent.Outcome(outcome)
            e.message = message
            journal.record(e)
        }
        do {
            if lab == nil {
                progress.show("[\(scenario.name)] preparing the \(provider.description)")
                lab = try await provider.prepare()
                recordEnvironment(lab!)
            }
            if image == nil {
                progress.show("[\(scenario.name)] guest image")
                image = try imageBuilder.build()
            }
            _ = config.scenarioArtifacts(scenario.name)
            if scenario.expect.hostKernel == .crashes, let why = await provider.refusesHostCrash() {
                throw RunnerError.step("scenario \(scenario.name) crashes its host on purpose (expect host_kernel: crashes): \(why)")
            }
            let e = ScenarioExecution(scenario: scenario, lab: lab!, image: image!, journal: journal, config: config,
                                      logger: logger, progress: progress)
            exec = e
            try await e.setUp()
            phase(.labSetup, scenario, since: t0, message: "lab ready, guest defined")
            do {
                try await e.runSteps()
                e.judgeTheEnd()
            } catch is CancellationError {
                stopped(.interrupted, "interrupted")
            } catch {
                stopped(.error, "\(error)")
            }
        } catch is CancellationError {
            stopped(.interrupted, "interrupted")
        } catch {
            stopped(.error, "\(error)")
        }
        if let exec {
            // Crashed hosts are thrown away first (their logs kept): their daemons answer no
            // call, and stopping them ends every call the tear-down makes at once. The next
            // scenario gets new hosts.
            let discarded = exec.hostCrash != nil
            if discarded {
                await provider.discardCrashedHosts()
                lab = nil
            }
            let td = ContinuousClock.now
            progress.show("[\(scenario.name)] tear-down")
            await exec.tearDown()
            phase(.labSetup, scenario, since: td, message: "guest removed, logs kept")
            // Devices left bound to the wrong driver on a shared node are a failure of the run;
            // the mdevs of hosts thrown away went with them (they could not be removed first).
            if discarded && !exec.passthroughRestoreProblems.isEmpty {
                var e = JournalEvent(kind: .note, scenario: scenario.name)
                e.message = "the crashed hosts were thrown away with their devices: " + exec.passthroughRestoreProblems.joined(separator: "; ")
                journal.record(e)
            } else if !exec.passthroughRestoreProblems.isEmpty {
                stopped(.error, "passthrough devices not restored: " + exec.passthroughRestoreProblems.joined(separator: "; "))
            }
        }
        progress.clear()
        let verdict = ScenarioVerdict.of(journal.events(from: first), ended: true)
        let outcome = verdict.outcome
        var fin = JournalEvent(kind: .scenarioFinished, scenario: scenario.name)
        fin.outcome = JournalEvent.Outcome(outcome)
        fin.message = verdict.message
        fin.expectations = verdict.expectations
        fin.durationSeconds = (ContinuousClock.now - t0).seconds
        journal.record(fin)
        return outcome
    }

    /// What the hosts run, journaled each time a lab is prepared (a crashed host's
    /// replacement may run something else).
    func recordEnvironment(_ lab: LabEnvironment) {
        var e = JournalEvent(kind: .environment)
        e.environment = lab.hosts.keys.sorted().map { name in
            let host = lab.hosts[name]!
            let v = host.hypervisor.softwareVersions()
            // libvirt's version is its default emulator's: it stands for the guests' QEMU only
            // when the lab names no other binary (a lab file's `emulator`: version unknown).
            let qemu = lab.emulatorVersion(of: host) ?? (host.emulator == nil ? v.hypervisor : nil)
            return HostEnvironment(host: name, qemu: qemu, qemuBinary: host.emulator,
                                   libvirt: v.libvirt, libvirtd: lab.libvirtdBinary, kernel: lab.kernelRelease(of: host))
        }
        e.message = lab.summary
        journal.record(e)
    }

    func phase(_ name: TimedPhase, _ scenario: Scenario, since t0: ContinuousClock.Instant, message: String) {
        var e = JournalEvent(kind: .phase, scenario: scenario.name)
        e.phase = name
        e.durationSeconds = (ContinuousClock.now - t0).seconds
        e.message = message
        journal.record(e)
    }
}

/// The live line on a terminal: one line, rewritten in place, showing the current step and
/// the migration's progress from the job statistics.
public final class ProgressLine: @unchecked Sendable {
    let enabled: Bool
    private let lock = NSLock()
    private var shown = false

    public init(enabled: Bool) { self.enabled = enabled }

    func show(_ text: String) {
        guard enabled else { return }
        lock.withLock {
            let line = "\r\u{1B}[2K" + String(text.prefix(160))
            FileHandle.standardError.write(Data(line.utf8))
            shown = true
        }
    }

    func clear() {
        guard enabled else { return }
        lock.withLock {
            if shown { FileHandle.standardError.write(Data("\r\u{1B}[2K".utf8)) }
            shown = false
        }
    }

    static func describe(_ s: JobStats) -> String {
        func mib(_ v: UInt64?) -> String { v.map { String(format: "%.1f MiB", Double($0) / 1_048_576) } ?? "?" }
        var parts = ["iteration \(s.memoryIterations ?? 0)",
                     "processed \(mib(s.dataProcessedBytes))",
                     "remaining \(mib(s.dataRemainingBytes))"]
        if let bps = s.memoryBytesPerSecond { parts.append(String(format: "%.0f MiB/s", Double(bps) / 1_048_576)) }
        if let t = s.timeElapsedMs { parts.append(String(format: "%.1f s", Double(t) / 1000)) }
        return parts.joined(separator: "  ")
    }
}
