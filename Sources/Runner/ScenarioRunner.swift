import Foundation
import Lab
import Libvirt
import Logging
import Scenario

/// Runs one scenario's steps against a lab and journals everything that happens.
///
/// Every wait is for something (a libvirt event, a job-statistics condition, an agent reply)
/// and ends at the step's deadline.
final class ScenarioExecution: @unchecked Sendable {
    let scenario: Scenario
    let lab: LabEnvironment
    let image: GuestImage
    let journal: Journal
    let config: RunConfiguration
    let logger: Logger
    let progress: ProgressLine

    let domainName: String
    let consoleLog: String
    /// Where the guest runs now (host name), nil before boot.
    var location: String?
    var migrationOutcomes: [String] = []
    var memoryVerdicts: [Bool] = []
    var consoleVerdicts: [Bool] = []
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
        consoleLog = "\(lab.sharedScratchDirectory)/\(domainName).console.log"
    }

    func event(_ kind: JournalEvent.Kind) -> JournalEvent {
        var e = JournalEvent(kind: kind, scenario: scenario.name)
        e.step = stepIndex
        return e
    }

    func host(_ name: String) throws -> LabHost {
        guard let h = lab.hosts[name] else {
            throw RunnerError.step("the scenario names host `\(name)`, but the lab has \(lab.hosts.keys.sorted().joined(separator: ", "))")
        }
        return h
    }

    // MARK: set-up and tear-down

    /// Removes what an earlier run of this scenario may have left, and defines the guest on the
    /// host of the first boot step.
    func setUp() async throws {
        for (_, h) in lab.hosts {
            if let d = try h.connection.domain(named: domainName) {
                if d.isActive { try await d.destroy() }
                try d.undefine()
            }
        }
        try? FileManager.default.removeItem(atPath: consoleLog)
        guard case let .boot(b)? = scenario.flattenedSteps.first(where: { if case .boot = $0.action { true } else { false } })?.action else {
            return
        }
        var args = ["console=ttyS0", "panic=-1", "quiet"]
        if scenario.guest.workloadMiB > 0 { args.append("miglab.memtest=\(scenario.guest.workloadMiB)") }
        let def = DomainDefinition(name: domainName, memoryMiB: scenario.guest.memoryMiB, vcpus: scenario.guest.vcpus,
                                   image: image, kernelArguments: args, emulator: config.qemuBinary,
                                   consoleLog: consoleLog,
                                   nics: [.init(model: "virtio", mac: "52:54:00:6d:6c:01")])
        let xml = def.xml()
        try xml.write(toFile: "\(config.scenarioArtifacts(scenario.name))/domain.xml", atomically: true, encoding: .utf8)
        _ = try host(b.host).connection.defineDomain(xml: xml)
    }

    /// Destroys and undefines the guest everywhere, and keeps its logs as artifacts.
    /// Runs also after a failure or an interrupt, so it never gives up early.
    func tearDown() async {
        let dir = config.scenarioArtifacts(scenario.name)
        for (name, h) in lab.hosts.sorted(by: { $0.key < $1.key }) {
            if let d = try? h.connection.domain(named: domainName) {
                if d.isActive { try? await d.destroy() }
                try? d.undefine()
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
        if FileManager.default.fileExists(atPath: consoleLog) {
            try? FileManager.default.removeItem(atPath: "\(dir)/console.log")
            try? FileManager.default.copyItem(atPath: consoleLog, toPath: "\(dir)/console.log")
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
            start.message = describe(step)
            journal.record(start)
            let t0 = ContinuousClock.now
            let deadline = t0 + .milliseconds(Int64(step.effectiveTimeoutSeconds * 1000))
            var finish = event(.stepFinished)
            finish.stepKind = step.kind
            do {
                let keepGoing: Bool
                switch step.action {
                case let .boot(b):
                    finish.phase = "boot"
                    try await boot(b, deadline: deadline)
                    keepGoing = true
                case let .migrate(m):
                    finish.phase = "migration"
                    keepGoing = try await migrate(m, deadline: deadline)
                case let .verify(v):
                    finish.phase = "verification"
                    try await verify(v, deadline: deadline)
                    keepGoing = true
                case .repeat:
                    keepGoing = true
                }
                finish.outcome = "passed"
                finish.durationSeconds = (ContinuousClock.now - t0).seconds
                journal.record(finish)
                if !keepGoing {
                    var note = event(.note)
                    note.message = "the migration ended \(migrationOutcomes.last ?? "?"), not \(scenario.expect.migrations.rawValue) as expected; the remaining steps are skipped"
                    journal.record(note)
                    return
                }
            } catch {
                finish.outcome = "error"
                finish.message = "\(error)"
                finish.durationSeconds = (ContinuousClock.now - t0).seconds
                journal.record(finish)
                throw error
            }
        }
    }

    func describe(_ step: Step) -> String {
        switch step.action {
        case let .boot(b): return "boot on \(b.host)"
        case let .migrate(m):
            var s = "migrate \(m.from) -> \(m.to)"
            if let b = m.bandwidthMiBps { s += ", \(b) MiB/s" }
            if let d = m.maxDowntimeMs { s += ", max downtime \(d) ms" }
            if m.suspend { s += ", suspend" }
            return s
        case let .verify(v): return "verify " + [v.memory ? "memory" : nil, v.console ? "console" : nil].compactMap { $0 }.joined(separator: ", ")
        case let .repeat(r): return "repeat \(r.times)x"
        }
    }

    func boot(_ b: Step.Boot, deadline: ContinuousClock.Instant) async throws {
        let h = try host(b.host)
        guard let dom = try h.connection.domain(named: domainName) else {
            throw RunnerError.step("guest \(domainName) is not defined on host \(b.host)")
        }
        let events = try h.connection.events()
        progress.show("[\(scenario.name)] boot on \(b.host)")
        try await dom.start()
        location = b.host
        // The guest agent connects once the guest has booted: wait for libvirt's event; a guest
        // that stops or crashes first ends the wait at once.
        let name = domainName
        let connected = try await firstEvent(events, deadline: deadline) { (e: DomainEvent) -> Bool? in
            guard e.domain == name else { return nil }
            switch e.kind {
            case let .agentLifecycle(state, _) where state == DomainEvent.agentConnected: return true
            case let .lifecycle(ev, _) where ev == DomainEvent.stopped || ev == DomainEvent.crashed: return false
            default: return nil
            }
        }
        guard connected == true else {
            throw RunnerError.step("the guest stopped while booting on \(b.host); console: \(consoleTail())")
        }
        let agent = GuestAgent(domain: dom)
        try await retry(until: deadline, what: "guest agent ping on \(b.host)") { try await agent.ping() }
        if scenario.guest.workloadMiB > 0 {
            _ = try await retry(until: deadline, what: "memory workload start on \(b.host)") {
                try await self.workloadStatus(agent)
            }
        }
        progress.clear()
    }

    /// Migrates the guest; returns false when the outcome differs from the scenario's expectation.
    func migrate(_ m: Step.Migrate, deadline: ContinuousClock.Instant) async throws -> Bool {
        let src = try host(m.from), dst = try host(m.to)
        guard location == m.from else {
            throw RunnerError.step("cannot migrate from \(m.from): the guest is on \(location ?? "no host")")
        }
        guard let dom = try src.connection.domain(named: domainName), dom.isActive else {
            throw RunnerError.step("guest \(domainName) is not running on \(m.from)")
        }
        if let ms = m.maxDowntimeMs { try dom.setMaxDowntime(milliseconds: UInt64(ms)) }
        var flags: MigrationFlags = [.live, .peerToPeer, .persistDestination, .undefineSource]
        if m.suspend { flags.insert(.suspend) }
        let params = MigrationParameters(bandwidthMiBps: m.bandwidthMiBps.map(UInt64.init))
        let t0 = ContinuousClock.now
        let label = "[\(scenario.name)] migrate \(m.from) -> \(m.to)"
        progress.show(label)
        let job = Task { try await dom.migrate(to: dst.peerURI, parameters: params, flags: flags) }
        // Sample the job every 100 ms while it runs: live line, journal, deadline.
        var timedOut = false
        let poller = Task {
            while !Task.isCancelled {
                if let s = try? dom.jobStats(), s.isActive {
                    var e = self.event(.migrationProgress)
                    e.progress = MigrationStats(s)
                    self.journal.record(e)
                    self.progress.show(label + "  " + ProgressLine.describe(s))
                }
                if ContinuousClock.now >= deadline {
                    try? dom.abortJob()
                    return true
                }
                try? await Task.sleep(for: .milliseconds(100))
            }
            return false
        }
        let result = await job.result
        poller.cancel()
        timedOut = await poller.value
        let wall = (ContinuousClock.now - t0).seconds
        progress.clear()

        var record: MigrationRecord
        switch result {
        case .success:
            // The destination keeps the completed job's statistics (downtime, iterations).
            let stats = (try? dst.connection.domain(named: domainName)?.jobStats(completed: true)).flatMap { $0 }
            record = MigrationRecord(from: m.from, to: m.to, outcome: "completed",
                                     stats: stats.map(MigrationStats.init) ?? MigrationStats(), wallSeconds: wall)
            location = m.to
        case let .failure(error):
            let lv = error as? LibvirtError
            let outcome = lv?.code == LibvirtError.operationAborted && !timedOut ? "aborted" : "failed"
            let stats = (try? dom.jobStats(completed: true)).map(MigrationStats.init) ?? MigrationStats()
            record = MigrationRecord(from: m.from, to: m.to, outcome: outcome, stats: stats, wallSeconds: wall,
                                     errorCode: lv?.code, errorDomain: lv?.domain,
                                     errorMessage: timedOut ? "step deadline reached, migration aborted: \(error)" : (lv?.message ?? "\(error)"))
        }
        migrationOutcomes.append(record.outcome)
        var e = event(.migrationFinished)
        e.migration = record
        e.outcome = record.outcome
        journal.record(e)
        if timedOut { throw RunnerError.timeout("migration \(m.from) -> \(m.to) did not finish within \(Int(scenario.flattenedSteps[stepIndex].effectiveTimeoutSeconds)) s") }
        return record.outcome == scenario.expect.migrations.rawValue
    }

    func verify(_ v: Step.Verify, deadline: ContinuousClock.Instant) async throws {
        guard let here = location else { throw RunnerError.step("verify: the guest runs nowhere") }
        let h = try host(here)
        if v.memory {
            progress.show("[\(scenario.name)] verify memory on \(here)")
            let r = try await verifyMemory(on: h, deadline: deadline)
            memoryVerdicts.append(r.verdict == "pass")
            var e = event(.verification)
            e.verification = r
            e.outcome = r.verdict
            journal.record(e)
        }
        if v.console {
            var r = VerificationRecord(kind: "console", verdict: "pass")
            let text = (try? String(contentsOfFile: consoleLog, encoding: .utf8))
                ?? String(decoding: FileManager.default.contents(atPath: consoleLog) ?? Data(), as: UTF8.self)
            let findings = ConsoleScanner.scan(text)
            r.verdict = findings.isEmpty ? "pass" : "fail"
            r.host = here
            r.findings = findings.prefix(20).map(\.description)
            r.detail = "\(ConsoleScanner.consoleLines(text).count) console lines scanned"
            consoleVerdicts.append(findings.isEmpty)
            var e = event(.verification)
            e.verification = r
            e.outcome = r.verdict
            journal.record(e)
        }
        progress.clear()
    }

    /// Live check (the workload's counter advances), then pause, dump guest RAM, check every
    /// page, resume.
    func verifyMemory(on h: LabHost, deadline: ContinuousClock.Instant) async throws -> VerificationRecord {
        guard let dom = try h.connection.domain(named: domainName), dom.isActive else {
            throw RunnerError.step("verify memory: guest \(domainName) is not running on \(h.name)")
        }
        var r = VerificationRecord(kind: "memory", verdict: "fail")
        r.host = h.name
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

        guard lab.sharesFilesystemWithRunner else {
            throw RunnerError.step("verify memory: the full check needs a dump folder shared by the runner and host \(h.name)")
        }
        let dump = "\(lab.sharedScratchDirectory)/\(domainName).\(h.name).core"
        try? FileManager.default.removeItem(atPath: dump)
        try dom.suspend()
        defer { try? FileManager.default.removeItem(atPath: dump) }
        do {
            try await dom.dumpMemory(to: dump)
        } catch {
            try? dom.resume()
            throw error
        }
        try dom.resume()
        let pages = try MemoryImage.workloadPages(elfCoreAt: dump)
        let verdict = MemoryOracle.check(pages: pages, expectedPages: scenario.guest.workloadMiB * 1024 * 1024 / MemoryOracle.pageSize)
        r.pagesChecked = verdict.pagesChecked
        r.badPages = verdict.badPages
        r.firstBadPages = verdict.firstBad.map(\.description)
        var problems: [String] = []
        if !verdict.passed { problems.append("\(verdict.badPages) bad pages") }
        if advanced == nil { problems.append("the guest did not run: the workload's counter did not advance") }
        if r.guestReportedErrors ?? 0 > 0 { problems.append("the workload found \(r.guestReportedErrors!) bad pages itself") }
        r.verdict = problems.isEmpty ? "pass" : "fail"
        r.detail = problems.isEmpty
            ? "\(verdict.pagesChecked) pages intact, counter \(verdict.counter.map(String.init) ?? "?") boundary at page \(verdict.boundary ?? 0)"
            : problems.joined(separator: "; ")
        return r
    }

    func workloadStatus(_ agent: GuestAgent) async throws -> WorkloadStatus {
        let data = try await agent.readFile(WorkloadStatus.path, maxBytes: 256)
        guard let s = WorkloadStatus.parse(String(decoding: data, as: UTF8.self)) else {
            throw RunnerError.step("the workload's status file is not (yet) readable: \(String(decoding: data.prefix(80), as: UTF8.self))")
        }
        return s
    }

    func consoleTail() -> String {
        let text = (try? String(contentsOfFile: consoleLog, encoding: .utf8)) ?? ""
        return ConsoleScanner.consoleLines(text).suffix(5).joined(separator: " | ")
    }

    // MARK: expectations

    func expectations() -> [ExpectationRecord] {
        var out: [ExpectationRecord] = []
        if !migrationOutcomes.isEmpty {
            let wanted = scenario.expect.migrations.rawValue
            let observed = migrationOutcomes.allSatisfy { $0 == wanted } ? wanted
                : migrationOutcomes.enumerated().map { "#\($0.offset + 1) \($0.element)" }.joined(separator: ", ")
            out.append(ExpectationRecord(what: "migrations", expected: wanted, observed: observed))
        }
        if !memoryVerdicts.isEmpty {
            out.append(ExpectationRecord(what: "memory", expected: scenario.expect.memory.rawValue,
                                         observed: memoryVerdicts.allSatisfy { $0 } ? "intact" : "corrupted"))
        }
        if !consoleVerdicts.isEmpty {
            out.append(ExpectationRecord(what: "console", expected: scenario.expect.console.rawValue,
                                         observed: consoleVerdicts.allSatisfy { $0 } ? "clean" : "errors"))
        }
        return out
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
