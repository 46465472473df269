import Foundation
import Journal
import Lab
import Libvirt
import Logging
import Scenario
import Synchronization

/// Runs one scenario's steps against a lab and journals everything that happens.
///
/// Every wait is for something (a libvirt event, a job-statistics condition, an agent reply)
/// and ends at the step's deadline.
/// The result of a step's task, once it is there.
final class StepOutcome<T: Sendable>: Sendable {
    private let result = Mutex<Result<T, any Error>?>(nil)
    func set(_ r: Result<T, any Error>) { result.withLock { $0 = r } }
    var value: Result<T, any Error>? { result.withLock { $0 } }
}

final class ScenarioExecution: @unchecked Sendable {
    let scenario: Scenario
    let lab: LabEnvironment
    let image: GuestImage
    let journal: Journal
    let config: RunConfiguration
    let logger: Logger
    let progress: ProgressLine

    let domainName: String
    /// The console log the runner reads: in the shared scratch folder (the host's QEMU writes
    /// it), or in the scenario's artifacts (the runner copies the console there through libvirt).
    let consoleLog: String
    /// The console log the hosts' QEMU writes (the domain XML's `<log file>`).
    let hostConsoleLog: String
    /// Copies the console through libvirt on labs without a shared folder; re-opened on the
    /// destination after each migration.
    var consoleCapture: (any ConsoleReader)?
    /// The devices, locks and host-side changes of a hardware lab's passthrough devices.
    var passthrough: PassthroughSession?
    /// Hosts told to pass guest device resets on to the devices; told back in tear-down.
    var resetsPassedOn: [String] = []
    /// The guest image as each host reads it (uploaded to hosts that do not share files).
    var images: [String: GuestImage] = [:]
    /// What `tearDown` could not restore; a scenario with any is an error, whatever it checked.
    var passthroughRestoreProblems: [String] = []
    /// Where the guest runs now (host name), nil before boot.
    var location: String?
    /// Migrations that ended (journaled), and the last one held to its expectation.
    var migrationsEnded = 0
    var migrationsJudged = 0
    var lastJudgement: MigrationJudgement?
    /// The first line of a host's kernel trouble the runner saw during the scenario.
    var hostCrash: String?
    /// For each completed migration, the VFIO bytes libvirt reported sent while the source still
    /// ran (its last pre-copy sample); nil where libvirt reports none.
    var precopyVFIOBytes: [UInt64?] = []
    /// The last migration's hosts, for `expect.guest.on`.
    var lastMigration: (from: String, to: String)?
    /// The guest's devices (emulated and passed through) and how the guest tool finds them;
    /// set when the guest is defined.
    var deviceRefs: [GuestDeviceRef] = []
    /// Device identities seen after boot, by device name.
    var deviceBaseline: [String: DeviceInfo] = [:]
    /// The guest's RAM and where the workload's pages lie, read at the first memory check after
    /// a boot (see `readWorkloadPages`).
    var guestMemoryMap: GuestMemoryMap?
    struct GuestMemoryMap {
        var ram: [(start: UInt64, length: UInt64)]
        var frames: WorkloadFrames?
        /// Why the frames were not used, when they were not.
        var refused: String
    }
    /// Device state snapshots taken on the source right before the last migration.
    var devicesBeforeMigration: [String: DeviceSnapshot] = [:]
    /// How many times serial devices' scratch registers were given fresh values (one per
    /// snapshot before a migration), so each migration carries values it has not seen before.
    var scratchGeneration = 0
    /// Each guest device's PCI address in the guest by its selector, from its latest snapshot
    /// (a fault during a migration uses it: the guest is too slow then for a lookup first).
    var guestAddresses: [String: String] = [:]
    /// Whether any step verifies devices (only then are snapshots taken).
    lazy var checksDevices: Bool = scenario.flattenedSteps.contains { $0.action(as: Step.Verify.self)?.runs(DeviceCheck.self) == true }
    var stepIndex = 0

    init(scenario: Scenario, lab: LabEnvironment, image: GuestImage, journal: Journal, config: RunConfiguration,
         logger: Logger, progress: ProgressLine) {
        self.scenario = scenario
        self.lab = lab
        self.image = image
        self.journal = journal
        self.config = config
        self.logger = logger
        self.progress = progress
        let safe = scenario.name.map { $0.isLetter || $0.isNumber || $0 == "-" ? $0 : "-" }
        domainName = "miglab-" + String(safe.prefix(40))
        if let shared = lab.sharedScratchDirectory {
            consoleLog = "\(shared)/\(domainName).console.log"
            hostConsoleLog = consoleLog
        } else {
            consoleLog = "\(config.scenarioArtifacts(scenario.name))/console.log"
            hostConsoleLog = "\(HardwareLab.consoleLogDirectory)/\(domainName).console.log"
        }
    }

    func mac(of device: String) throws -> String {
        guard let i = scenario.guest.devices.firstIndex(where: { $0.name == device }) else {
            throw RunnerError.step("the guest has no device `\(device)`")
        }
        return guestMAC(i)
    }

    /// How the guest tool finds the device named `device` (an emulated device or `vf[0]`).
    func selector(of device: String) throws -> String {
        guard let ref = deviceRefs.first(where: { $0.name == device }) else {
            throw RunnerError.step("the guest has no device `\(device)`")
        }
        return ref.selector
    }

    func event(_ kind: JournalEvent.Kind) -> JournalEvent {
        var e = JournalEvent(kind: kind, scenario: scenario.name)
        e.step = stepIndex
        return e
    }

    func record(verification r: VerificationRecord) {
        var e = event(.verification)
        e.verification = r
        e.outcome = r.verdict == .pass ? .passed : .failed
        journal.record(e)
    }

    func host(_ name: String) throws -> LabHost {
        guard let h = lab.hosts[name] else {
            throw RunnerError.step("the scenario names host `\(name)`, but the lab has \(lab.hosts.keys.sorted().joined(separator: ", "))")
        }
        return h
    }

    // MARK: set-up and tear-down

    /// Removes what an earlier run of this scenario may have left, takes the scenario's
    /// passthrough devices (hardware labs: plan, locks, driver binding, mdevs), puts the guest
    /// image on the hosts, and defines the guest on the host of the first boot step.
    func setUp() async throws {
        if !scenario.guest.passthrough.isEmpty && lab.labFile == nil {
            throw RunnerError.step("scenario \(scenario.name) asks for passthrough devices (\(scenario.guest.passthrough.map(\.name).joined(separator: ", "))); the built-in lab has none: run it with --lab FILE on hardware nodes")
        }
        try checkHostActions()
        if scenario.resetsDevicesFromTheGuest {
            for (name, h) in lab.hosts.sorted(by: { $0.key < $1.key }) {
                try h.actions?.passGuestResetsToDevices(true)
                resetsPassedOn.append(name)
            }
        }
        for (_, h) in lab.hosts {
            if let d = try h.hypervisor.guest(named: domainName) {
                try await d.remove()
            }
        }
        try? FileManager.default.removeItem(atPath: consoleLog)
        guard let b = scenario.flattenedSteps.lazy.compactMap({ $0.action(as: Step.Boot.self) }).first else { return }
        let visited = DevicePlanner.visitedHosts(scenario)
        if let labFile = lab.labFile, !scenario.guest.passthrough.isEmpty {
            passthrough = try await preparePassthrough(labFile, hosts: visited)
        }
        for name in visited {
            progress.show("[\(scenario.name)] guest image on \(name)")
            images[name] = try await GuestImageStaging.stage(image, on: try host(name), logger: logger)
        }
        let bootHost = try host(b.host)
        let def = scenarioDomain(name: domainName, scenario: scenario, plan: passthrough?.plan, host: b.host,
                                 image: images[b.host] ?? image, emulator: bootHost.emulator,
                                 accelerator: bootHost.accelerator, consoleLog: hostConsoleLog)
        let xml = def.xml()
        try xml.write(toFile: "\(config.scenarioArtifacts(scenario.name))/domain.xml", atomically: true, encoding: .utf8)
        let defined = try bootHost.hypervisor.defineGuest(xml: xml)
        // libvirt has placed every device now; where each one sits is how the guest finds it.
        deviceRefs = try locateDevices(definedXML: try defined.xml(), bootHost: b.host)
    }

    /// Refuses, before anything starts, a fault this lab cannot inject (killing processes and
    /// cutting links need a lab that controls the hosts' processes and network): each fault
    /// kind says what it needs, the hosts' actions say what they offer, and the check is the one
    /// `miglab validate --lab` makes from a lab file.
    func checkHostActions() throws {
        let problems = scenario.unmetNeeds(lab: lab.summary) { name, capability in
            guard let h = lab.hosts[name] else { return nil }
            // The runner's own stream proxy serves hosts it can reach by their migration address.
            if capability == .streamProxy, lab.runnerProxyAddress != nil, h.migrationAddress != nil { return true }
            guard let a = h.actions else { return capability == .guestResetsReachDevices }
            return Self.offers(a, capability)
        }
        if !problems.isEmpty { throw RunnerError.step(problems.map(\.description).joined(separator: "\n")) }
    }

    static func offers(_ a: any HostActions, _ capability: HostCapability) -> Bool {
        switch capability {
        case .processControl: true
        case .linkControl: a.offersLinkControl
        case .streamProxy: a.secondaryAddress != nil && (a.networkNamespacePath != nil || a.runsMiglab)
        // Hosts whose devices take the guest's resets directly need nothing (the default).
        case .guestResetsReachDevices: true
        }
    }

    /// Destroys and undefines the guest everywhere, and keeps its logs as artifacts.
    /// Runs also after a failure or an interrupt, so it never gives up early.
    func tearDown() async {
        let dir = config.scenarioArtifacts(scenario.name)
        consoleCapture?.stop()
        for (name, h) in lab.hosts.sorted(by: { $0.key < $1.key }) {
            if let d = try? h.hypervisor.guest(named: domainName) {
                try? await d.remove()
            }
            if let log = h.qemuLogPath(domain: domainName), FileManager.default.fileExists(atPath: log) {
                try? FileManager.default.removeItem(atPath: "\(dir)/qemu-\(name).log")
                try? FileManager.default.copyItem(atPath: log, toPath: "\(dir)/qemu-\(name).log")
            }
            if let logDir = h.logDirectory, FileManager.default.fileExists(atPath: "\(logDir)/libvirtd.log") {
                try? FileManager.default.removeItem(atPath: "\(dir)/libvirtd-\(name).log")
                try? FileManager.default.copyItem(atPath: "\(logDir)/libvirtd.log", toPath: "\(dir)/libvirtd-\(name).log")
            }
        }
        if consoleLog != "\(dir)/console.log", FileManager.default.fileExists(atPath: consoleLog) {
            try? FileManager.default.removeItem(atPath: "\(dir)/console.log")
            try? FileManager.default.copyItem(atPath: consoleLog, toPath: "\(dir)/console.log")
        }
        for name in resetsPassedOn {
            do { try lab.hosts[name]?.actions?.passGuestResetsToDevices(false) } catch {
                var e = event(.note)
                e.message = "host \(name) still passes guest device resets on: \(error)"
                journal.record(e)
            }
        }
        resetsPassedOn = []
        // The devices go back to their drivers (and the locks are released) only once the
        // guest is gone everywhere.
        if let session = passthrough {
            let problems = await session.finish()
            var e = event(.note)
            e.message = problems.isEmpty ? "passthrough devices restored and unlocked"
                : "passthrough devices NOT fully restored: \(problems.joined(separator: "; "))"
            if !problems.isEmpty { e.outcome = .error }
            journal.record(e)
            passthroughRestoreProblems = problems
        }
    }

    // MARK: steps

    /// Runs the steps; returns normally when they all ran (whatever their verdicts), throws on a
    /// lab error. An unexpected migration outcome stops the scenario (later steps assume it).
    func runSteps() async throws {
        for (i, step) in scenario.flattenedSteps.enumerated() {
            try Task.checkCancellation()
            stepIndex = i
            var start = event(.stepStarted)
            start.stepKind = step.kind
            start.message = step.action.description
            journal.record(start)
            let t0 = ContinuousClock.now
            let deadline = t0 + .milliseconds(Int64(step.effectiveTimeoutSeconds * 1000))
            var finish = event(.stepFinished)
            finish.stepKind = step.kind
            finish.phase = type(of: step.action).phase
            do {
                // The step runs on its own task, watched: a host whose kernel broke answers no
                // libvirt call, and the step would wait for it until its deadline.
                let keepGoing = try await watchingHosts { try await self.perform(step, deadline: deadline) }
                try checkHostHealth()
                finish.outcome = .passed
                finish.durationSeconds = (ContinuousClock.now - t0).seconds
                journal.record(finish)
                if !keepGoing {
                    var note = event(.note)
                    let expected = lastJudgement?.expectation.outcome.rawValue ?? "?"
                    let ended = lastJudgement?.record.outcome.rawValue ?? "?"
                    note.message = (ended == expected ? "the migration ended \(ended) as expected, but a fault it asked for did not happen"
                                                      : "the migration ended \(ended), not \(expected) as expected") + "; the remaining steps are skipped"
                    journal.record(note)
                    return
                }
            } catch {
                finish.outcome = .error
                finish.message = "\(error)"
                finish.durationSeconds = (ContinuousClock.now - t0).seconds
                journal.record(finish)
                // A crash the scenario expects ends it: nothing on that host can run any more.
                if case .hostCrashed = error as? RunnerError, scenario.expect.hostKernel == .crashes {
                    var note = event(.note)
                    note.message = "the host's kernel crashed as the scenario expects; the remaining steps are skipped"
                    journal.record(note)
                    return
                }
                throw error
            }
        }
    }

    /// Runs one step through its kind's body (`RunnableStep`); false when the remaining steps
    /// are to be skipped (a migration did not end as the scenario expects).
    func perform(_ step: Step, deadline: ContinuousClock.Instant) async throws -> Bool {
        guard let body = step.action as? any RunnableStep else {
            throw RunnerError.step("miglab has no body for step kind `\(step.kind)`; please report it")
        }
        return try await body.run(in: self, kind: step.kind, deadline: deadline)
    }

    /// Runs `body` on a task of its own and waits for it while it looks at the hosts once a
    /// second: when a host's kernel broke, it throws at once and leaves the body behind (its
    /// libvirt call ends when the lab throws the crashed hosts away). Cancellation reaches the body.
    func watchingHosts<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let outcome = StepOutcome<T>()
        let task = Task {
            do { outcome.set(.success(try await body())) } catch { outcome.set(.failure(error)) }
        }
        return try await withTaskCancellationHandler {
            var lastLook = ContinuousClock.now
            while true {
                if let r = outcome.value { return try r.get() }
                if ContinuousClock.now - lastLook >= .seconds(1) {
                    lastLook = .now
                    try checkHostHealth()
                }
                await sleepIgnoringCancellation(.milliseconds(50))
            }
        } onCancel: {
            task.cancel()
        }
    }

    /// `restart`: the guest is destroyed where it runs (definition and all) and defined and
    /// booted on `b.host`, with that host's devices and image, as `setUp` defines it for a boot.
    func restart(_ b: Step.Restart, deadline: ContinuousClock.Instant) async throws {
        consoleCapture?.stop()
        if let here = location, let dom = try host(here).hypervisor.guest(named: domainName) {
            try await dom.remove()
        }
        location = nil
        let h = try host(b.host)
        if let leftover = try h.hypervisor.guest(named: domainName) { try await leftover.remove() }
        let def = scenarioDomain(name: domainName, scenario: scenario, plan: passthrough?.plan, host: b.host,
                                 image: images[b.host] ?? image, emulator: h.emulator,
                                 accelerator: h.accelerator, consoleLog: hostConsoleLog)
        _ = try h.hypervisor.defineGuest(xml: def.xml())
        try await boot(Step.Boot(host: b.host), deadline: deadline)
    }

    func boot(_ b: Step.Boot, deadline: ContinuousClock.Instant) async throws {
        let h = try host(b.host)
        guard let dom = try h.hypervisor.guest(named: domainName) else {
            throw RunnerError.step("guest \(domainName) is not defined on host \(b.host)")
        }
        let events = try h.hypervisor.domainEvents()
        progress.show("[\(scenario.name)] boot on \(b.host)")
        location = b.host
        guestMemoryMap = nil
        // The guest agent connects once the guest has booted: wait for libvirt's event; a guest
        // that stops or crashes first ends the wait at once. A guest whose QEMU dies while it
        // boots (QEMU 10.0 under TCG has aborted on an assertion there, rarely) is started once
        // more: nothing of the scenario has happened yet, and the journal keeps the crash.
        let name = domainName
        // Milestones of the boot, journaled: boot-to-ready is the cost every scenario pays, and
        // ci/bench reads it from here.
        let clock = ContinuousClock()
        var began = clock.now, running = began, connected = began
        for attempt in 1...2 {
            began = clock.now
            if lab.sharedScratchDirectory == nil {
                // The console is read through libvirt: attach before the first line is printed.
                try await dom.start(paused: true)
                try captureConsole(of: dom)
                try dom.resume()
            } else {
                try await dom.start()
            }
            running = clock.now
            let agentUp = try await firstEvent(events, deadline: deadline) { (e: DomainEvent) -> Bool? in
                guard e.domain == name else { return nil }
                switch e.kind {
                case let .agentLifecycle(state, _) where state == DomainEvent.agentConnected: return true
                case let .lifecycle(ev, _) where ev == DomainEvent.stopped || ev == DomainEvent.crashed: return false
                default: return nil
                }
            }
            connected = clock.now
            if agentUp == true { break }
            guard agentUp == false else {
                throw RunnerError.timeout("the guest did not boot on \(b.host) within the step's deadline; console: \(consoleTail())")
            }
            let why = "the guest stopped while booting on \(b.host); QEMU: \(qemuLogTail(h) ?? "?"); console: \(consoleTail())"
            guard attempt == 1, !dom.isActive else { throw RunnerError.step(why) }
            var e = event(.note)
            e.message = why + "; booting it once more"
            journal.record(e)
        }
        let agent = GuestAgent(domain: dom)
        try await retry(until: deadline, what: "guest agent ping on \(b.host)") { try await agent.ping() }
        if scenario.guest.workloadMiB > 0 {
            _ = try await retry(until: deadline, what: "memory workload start on \(b.host)") {
                try await self.workloadStatus(agent)
            }
        }
        let workloadReady = clock.now
        // The devices' identities after boot are what `verify: devices` compares against; a
        // scenario that never verifies devices does not wait for them (a guest-exec each).
        for d in checksDevices ? deviceRefs : [] {
            deviceBaseline[d.name] = try await retry(until: deadline, what: "device \(d.name) in the guest") {
                try await self.deviceInfo(agent, selector: d.selector, until: deadline)
            }
        }
        let ready = clock.now
        func s(_ t: ContinuousClock.Instant) -> String { String(format: "%.2f", (t - began) / .seconds(1)) }
        var e = event(.note)
        e.message = "guest ready on \(b.host) \(s(ready)) s after start (QEMU running \(s(running)) s, agent \(s(connected)) s, workload \(s(workloadReady)) s)"
        e.details = ["boot_ready_s": s(ready), "qemu_running_s": s(running), "agent_connected_s": s(connected),
                     "workload_ready_s": s(workloadReady), "host": b.host]
        journal.record(e)
        progress.clear()
    }

    /// Runs the step's checks in the registry's order, each through its verifier's body.
    func verify(_ v: Step.Verify, deadline: ContinuousClock.Instant) async throws {
        guard let here = location else { throw RunnerError.step("verify: the guest runs nowhere") }
        let h = try host(here)
        for kind in Verifiers.all where v.runs(kind) {
            guard let body = kind as? any RunnableVerifier.Type else {
                throw RunnerError.step("miglab has no body for verifier `\(kind.name)`; please report it")
            }
            progress.show("[\(scenario.name)] verify \(kind.name) on \(here)")
            record(verification: try await body.run(in: self, on: h, deadline: deadline))
        }
        progress.clear()
    }

    /// The console check: the console log scanned for oops, panics, traps and workload errors.
    func verifyConsole(on h: LabHost) -> VerificationRecord {
        var r = VerificationRecord(kind: ConsoleCheck.name, verdict: .pass)
        let text = (try? String(contentsOfFile: consoleLog, encoding: .utf8))
            ?? String(decoding: FileManager.default.contents(atPath: consoleLog) ?? Data(), as: UTF8.self)
        let findings = ConsoleScanner.scan(text)
        r.verdict = findings.isEmpty ? .pass : .fail
        r.host = h.name
        r.findings = findings.prefix(20).map(\.description)
        r.detail = "\(ConsoleScanner.consoleLines(text).count) console lines scanned"
        return r
    }

    /// Live check (the workload's counter advances), then pause, dump guest RAM, check every
    /// page, resume.
    func verifyMemory(on h: LabHost, deadline: ContinuousClock.Instant) async throws -> VerificationRecord {
        var r = VerificationRecord(kind: "memory", verdict: .fail)
        r.host = h.name
        // The guest was placed here and is gone: it crashed or stopped (QEMU 7.2's lost pages
        // panic the destination's kernel). The system under test failed, not the lab; the
        // console check says why.
        guard let dom = try h.hypervisor.guest(named: domainName), dom.isActive else {
            r.guestRunning = false
            r.detail = "the guest is not running on \(h.name): it crashed or stopped (see the console check and the QEMU log)"
            return r
        }
        if try dom.state().state == .paused { try dom.resume() }
        let agent = GuestAgent(domain: dom)
        let first = try await retry(until: deadline, what: "workload status on \(h.name)") { try await self.workloadStatus(agent) }
        let advanced = try? await retry(until: min(deadline, .now + .seconds(15)), what: "workload progress on \(h.name)") {
            let s = try await self.workloadStatus(agent)
            guard s.touched > first.touched else { throw RunnerError.step("the workload's counter has not advanced") }
            return s
        }
        r.guestRunning = advanced != nil
        r.guestReportedErrors = (advanced ?? first).errors

        guard config.memoryOracleEnabled else {
            r.badPages = r.guestReportedErrors.map { Int(clamping: $0) }
            r.verdict = advanced != nil && (r.guestReportedErrors ?? 0) == 0 ? .pass : .fail
            r.detail = "memory oracle disabled: only the guest's liveness and its own error count were checked"
            return r
        }
        let expectedPages = scenario.guest.workloadMiB * 1024 * 1024 / MemoryOracle.pageSize
        let read = try await readWorkloadPages(dom, host: h.name, agent: agent, expectedPages: UInt64(expectedPages))
        let pages = read.pages
        let readThrough = read.note
        r.readMethod = read.method.rawValue
        r.bytesRead = read.bytes
        r.readSeconds = read.seconds
        let verdict = MemoryOracle.check(pages: pages, expectedPages: expectedPages)
        r.pagesChecked = verdict.pagesChecked
        // The real count of bad pages, whoever found them: the oracle here, or the workload
        // itself in the guest (pages it saw damaged and repaired are gone from RAM by now).
        r.badPages = max(verdict.badPages, Int(clamping: r.guestReportedErrors ?? 0))
        r.firstBadPages = verdict.firstBad.map(\.description)
        var problems: [String] = []
        if !verdict.passed { problems.append("\(verdict.badPages) bad pages") }
        if advanced == nil { problems.append("the guest did not run: the workload's counter did not advance") }
        if r.guestReportedErrors ?? 0 > 0 { problems.append("the workload found \(r.guestReportedErrors!) bad pages itself") }
        r.verdict = problems.isEmpty ? .pass : .fail
        r.detail = problems.isEmpty
            ? "\(verdict.pagesChecked) pages intact, counter \(verdict.counter.map(String.init) ?? "?") boundary at page \(verdict.boundary ?? 0)\(readThrough)"
            : problems.joined(separator: "; ") + readThrough
        return r
    }

    enum MemoryReadMethod: String {
        /// A memory-only core dump of all of guest RAM into the folder shared with the host.
        case dump
        /// The workload's frames (its frames file) through `virDomainMemoryPeek`.
        case frames
        /// All of guest RAM through `virDomainMemoryPeek`.
        case ram
    }

    /// Reads the workload's pages with the guest paused, the cheapest honest way:
    /// - only the frames the workload reports (`WorkloadFrames`) through `virDomainMemoryPeek`,
    ///   so a 4 GiB guest with a 256 MiB workload costs 256 MiB of reads, not 4 GiB;
    /// - a core dump of all of RAM where the host shares a folder with the runner and the
    ///   guest is small next to its workload (a dump moves about ten times the bytes per
    ///   second that peeking does, measured on the built-in lab);
    /// - all of RAM through `virDomainMemoryPeek` when the frames file is missing or refused.
    ///
    /// The guest's RAM map and the frames are read once per boot, at the first check: the
    /// workload's pages are locked and never move, and a migration keeps guest physical
    /// addresses.
    func readWorkloadPages(_ dom: any GuestDomain, host: String, agent: GuestAgent, expectedPages: UInt64) async throws
        -> (pages: [MemoryOracle.Page], method: MemoryReadMethod, bytes: UInt64, seconds: Double, note: String) {
        if guestMemoryMap == nil {
            let iomem = try await agent.readFile("/proc/iomem", maxBytes: 1 << 20)
            let ram = try MemoryImage.systemRAM(iomem: String(decoding: iomem, as: UTF8.self))
            var frames: WorkloadFrames?
            var refused = ""
            do {
                let text = try await agent.readFile(WorkloadFrames.path, maxBytes: 16 << 20)
                let f = try WorkloadFrames.parse(String(decoding: text, as: UTF8.self))
                if f.pageCount != expectedPages {
                    refused = "the workload's frames file lists \(f.pageCount) pages, not \(expectedPages)"
                } else if !f.lies(within: ram) {
                    refused = "the workload's frames file points outside the guest's RAM"
                } else {
                    frames = f
                }
            } catch {
                refused = "the workload's frames file is unusable (\(error))"
            }
            guestMemoryMap = GuestMemoryMap(ram: ram, frames: frames, refused: refused)
        }
        guard let map = guestMemoryMap else { throw RunnerError.step("the guest's memory map is unknown") }
        let (ram, frames, refused) = (map.ram, map.frames, map.refused)
        let ramBytes = ram.reduce(0) { $0 + $1.length }
        let regions = frames?.regions(ram: ram) ?? ram
        let regionBytes = regions.reduce(0) { $0 + $1.length }
        let clock = ContinuousClock()
        let started = clock.now
        if let shared = lab.sharedScratchDirectory, regionBytes * 10 > ramBytes {
            let dump = "\(shared)/\(domainName).\(host).core"
            try? FileManager.default.removeItem(atPath: dump)
            defer { try? FileManager.default.removeItem(atPath: dump) }
            try await Self.whilePaused(dom) { try await dom.dumpMemory(to: dump) }
            let pages = try MemoryImage.workloadPages(elfCoreAt: dump)
            return (pages, .dump, ramBytes, (clock.now - started) / .seconds(1), "")
        }
        let pages = try await Self.whilePaused(dom) { try await Self.peekWorkloadPages(dom, regions: regions) }
        let seconds = (clock.now - started) / .seconds(1)
        let mib = regionBytes >> 20
        let note = frames.map { " (the workload's \($0.pageCount) frames, \(mib) MiB in \(regions.count) ranges, read through virDomainMemoryPeek)" }
            ?? " (all \(mib) MiB of guest RAM read through virDomainMemoryPeek: \(refused))"
        return (pages, frames == nil ? .ram : .frames, regionBytes, seconds, note)
    }

    /// Runs `body` with the guest paused (`virDomainSuspend`), so its memory holds still, and
    /// resumes it afterwards, also when `body` throws.
    static func whilePaused<T>(_ dom: any GuestDomain, _ body: () async throws -> T) async throws -> T {
        try dom.suspend()
        let result: T
        do {
            result = try await body()
        } catch {
            try? dom.resume()
            throw error
        }
        try dom.resume()
        return result
    }

    /// The workload pages of the given RAM regions, read with `virDomainMemoryPeek`.
    static func peekWorkloadPages(_ dom: any GuestDomain, regions: [(start: UInt64, length: UInt64)]) async throws -> [MemoryOracle.Page] {
        let found = Mutex<[MemoryOracle.Page]>([])
        for region in regions {
            try await dom.readPhysicalMemory(from: region.start, count: region.length) { at, block in
                var pages: [MemoryOracle.Page] = []
                MemoryImage.scan(block, physicalAddress: at, into: &pages)
                if !pages.isEmpty { found.withLock { $0 += pages } }
            }
        }
        return found.withLock { $0 }
    }

    /// Starts copying the console of `dom` into `consoleLog` (stopping an earlier copy).
    func captureConsole(of dom: any GuestDomain) throws {
        consoleCapture?.stop()
        consoleCapture = try dom.captureConsole(appendingTo: consoleLog)
    }

    func workloadStatus(_ agent: GuestAgent) async throws -> WorkloadStatus {
        let data = try await agent.readFile(WorkloadStatus.path, maxBytes: 256)
        guard let s = WorkloadStatus.parse(String(decoding: data, as: UTF8.self)) else {
            throw RunnerError.step("the workload's status file is not (yet) readable: \(String(decoding: data.prefix(80), as: UTF8.self))")
        }
        return s
    }

    /// The last line QEMU wrote to its log on `h` (an assertion, an error), when readable here.
    func qemuLogTail(_ h: LabHost) -> String? {
        guard let path = h.qemuLogPath(domain: domainName), let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return text.split(whereSeparator: \.isNewline).last { !$0.contains("shutting down") }.map(String.init)
    }

    func consoleTail() -> String {
        let text = (try? String(contentsOfFile: consoleLog, encoding: .utf8)) ?? ""
        return ConsoleScanner.consoleLines(text).suffix(5).joined(separator: " | ")
    }

    // MARK: expectations

    /// Throws when a host's kernel broke since the run began (the lab's console scan).
    func checkHostHealth() throws {
        if hostCrash == nil, let line = lab.hostTrouble().first {
            hostCrash = line
            var e = event(.error)
            e.message = "host kernel trouble: \(line)"
            journal.record(e)
        }
        if let line = hostCrash { throw RunnerError.hostCrashed(line) }
    }

    /// `vfio_precopy: sent`: every completed migration reported VFIO bytes while the source ran;
    /// no completed migration, or one with none reported, fails.
    static func vfioPrecopyExpectation(_ bytes: [UInt64?]) -> ExpectationRecord {
        let seen = bytes.map { $0.map { "\($0) bytes" } ?? "none reported" }
        return ExpectationRecord(what: "VFIO device state in pre-copy", expected: "sent before the source stopped, every migration",
                                 observed: seen.isEmpty ? "no completed migration" : seen.joined(separator: ", "),
                                 pass: !bytes.isEmpty && bytes.allSatisfy { ($0 ?? 0) > 0 })
    }

    /// `host_kernel`: a crash passes only when the scenario expects one, and an expected crash
    /// that never came fails.
    static func hostKernelExpectation(_ expected: Expectations.HostKernelVerdict, crash: String?) -> ExpectationRecord {
        ExpectationRecord(what: "host kernel", expected: expected == .crashes ? "crashes, detected and reported" : "healthy",
                          observed: crash.map { "crashed: \($0)" } ?? "healthy",
                          pass: (expected == .crashes) == (crash != nil))
    }

    /// Journals expectations judged now; the scenario's verdict is made from the journal.
    /// `ofStep: false` for the scenario's own, judged at its end.
    func judge(_ records: [ExpectationRecord], message: String? = nil, ofStep: Bool = true) {
        guard !records.isEmpty else { return }
        var e = event(.expectation)
        if !ofStep { e.step = nil }
        e.expectations = records
        e.message = message
        journal.record(e)
    }

    /// The scenario's own expectations judged at its end (before tear-down): the host
    /// kernels, VFIO pre-copy, where the guest is. Its memory, console and device verdicts are
    /// judged from the verification events (`ScenarioVerdict`).
    func judgeTheEnd() {
        var out: [ExpectationRecord] = []
        let ex = scenario.expect
        if ex.vfioPrecopy == .sent { out.append(Self.vfioPrecopyExpectation(precopyVFIOBytes)) }
        if ex.hostKernel == .crashes || hostCrash != nil { out.append(Self.hostKernelExpectation(ex.hostKernel, crash: hostCrash)) }
        if ex.guestOn != nil || ex.guestState != nil {
            let (host, state) = guestWhereabouts()
            if let on = ex.guestOn, let m = lastMigration {
                let wantHost = on == .source ? m.from : m.to
                out.append(ExpectationRecord(what: "guest runs on", expected: "\(on.rawValue) (\(wantHost))",
                                             observed: host.map { $0 == m.from ? "source (\($0))" : ($0 == m.to ? "destination (\($0))" : $0) } ?? "nowhere"))
            }
            if let st = ex.guestState {
                out.append(ExpectationRecord(what: "guest state", expected: st.rawValue, observed: state))
            }
        }
        judge(out, message: "the scenario's end", ofStep: false)
    }

    /// Where the guest is at the end and its state, from libvirt (computed once).
    lazy var whereabouts: (String?, String) = locateGuest()

    /// Where the guest is now and its state, from libvirt.
    func locateGuest() -> (String?, String) {
        for (name, h) in lab.hosts.sorted(by: { $0.key < $1.key }) {
            if let d = try? h.hypervisor.guest(named: domainName), d.isActive {
                let st = (try? d.state().state) ?? .noState
                return (name, Self.stateName(st))
            }
        }
        // Defined but not running somewhere: shut off or crashed.
        for (name, h) in lab.hosts.sorted(by: { $0.key < $1.key }) {
            if let d = try? h.hypervisor.guest(named: domainName), let st = try? d.state() {
                return (name, Self.stateName(st.state, reason: st.reason))
            }
        }
        return (nil, Expectations.GuestState.gone.rawValue)
    }

    func guestWhereabouts() -> (String?, String) { whereabouts }

    /// The state as scenarios name it; a shut-off domain whose QEMU died is "crashed"
    /// (VIR_DOMAIN_SHUTOFF_CRASHED).
    static func stateName(_ s: DomainState, reason: Int32 = 0) -> String {
        if s == .shutOff && reason == 3 { return Expectations.GuestState.crashed.rawValue }
        switch s {
        case .running, .blocked: return Expectations.GuestState.running.rawValue
        case .paused, .pmSuspended: return Expectations.GuestState.paused.rawValue
        case .crashed: return Expectations.GuestState.crashed.rawValue
        default: return Expectations.GuestState.shutOff.rawValue
        }
    }
}

/// Retries `body` until it succeeds or the deadline passes (then the last error is thrown).
/// For waits on an answer that comes when the guest is ready (agent replies, status files).
func retry<T: Sendable>(until deadline: ContinuousClock.Instant, what: String, every: Duration = .milliseconds(50),
                        _ body: @Sendable () async throws -> T) async throws -> T {
    var last: Error?
    repeat {
        try Task.checkCancellation()
        do { return try await body() } catch is CancellationError { throw CancellationError() } catch { last = error }
        try await Task.sleep(for: every)
    } while ContinuousClock.now < deadline
    throw RunnerError.timeout("\(what): \(last.map { "\($0)" } ?? "no answer")")
}

/// The first event for which `match` returns a value, or nil at the deadline.
func firstEvent<T: Sendable>(_ stream: AsyncStream<DomainEvent>, deadline: ContinuousClock.Instant,
                             _ match: @escaping @Sendable (DomainEvent) -> T?) async throws -> T? {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask {
            for await e in stream { if let v = match(e) { return v } }
            return nil
        }
        group.addTask {
            try await Task.sleep(until: deadline)
            return nil
        }
        let v = try await group.next() ?? nil
        group.cancelAll()
        return v
    }
}

/// One migration held to its expectation (the step's own, or the scenario's defaults).
struct MigrationJudgement {
    var step: Int
    var expectation: MigrationExpectation
    var record: MigrationRecord
    /// Milliseconds from the first fault to the end of the migration, when it failed after one.
    var detectionMs: Double?
    /// Host and state of the guest right after the migration (when the expectation asks).
    var guestAfter: (host: String?, state: String)?

    /// The expectation records of migration number `number` (1-based), each naming its step.
    func records(number: Int) -> [ExpectationRecord] {
        let ex = expectation
        let what = "migration #\(number) (\(record.from) -> \(record.to))"
        var out = [ExpectationRecord(what: what, expected: ex.outcome.rawValue, observed: record.outcome.rawValue, step: step)]
        let failed = record.outcome != .completed
        if let codes = ex.errorCodes {
            out.append(ExpectationRecord(what: "\(what): libvirt error code", expected: codes.map(String.init).joined(separator: " or "),
                                         observed: !failed ? "it did not fail" : record.errorCode.map(String.init) ?? "none",
                                         pass: failed && record.errorCode.map { codes.contains($0) } == true, step: step))
        }
        if let pattern = ex.errorMessage {
            let message = failed ? record.errorMessage ?? "" : ""
            let matches = (try? Regex(pattern)).map { message.contains($0) } ?? false
            out.append(ExpectationRecord(what: "\(what): libvirt error message", expected: "matches /\(pattern)/",
                                         observed: message.isEmpty ? "no error" : message, pass: matches, step: step))
        }
        if let within = ex.failureDetectedWithinSeconds {
            out.append(ExpectationRecord(what: "\(what): failure noticed within", expected: "\(within) s",
                                         observed: detectionMs.map { String(format: "%.1f s", $0 / 1000) } ?? "no failure after a fault",
                                         pass: detectionMs.map { $0 <= within * 1000 } ?? false, step: step))
        }
        if let on = ex.guestOn {
            let want = on == .source ? record.from : record.to
            let host = guestAfter?.host
            out.append(ExpectationRecord(what: "\(what): guest runs on", expected: "\(on.rawValue) (\(want))",
                                         observed: host.map { $0 == record.from ? "source (\($0))" : ($0 == record.to ? "destination (\($0))" : $0) } ?? "nowhere",
                                         step: step))
        }
        if let st = ex.guestState {
            out.append(ExpectationRecord(what: "\(what): guest state", expected: st.rawValue, observed: guestAfter?.state ?? "unknown", step: step))
        }
        return out
    }
}
