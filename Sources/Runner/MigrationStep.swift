import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Journal
import Lab
import Libvirt
import Scenario
import Synchronization

/// The migrate step: one live migration through libvirt, with the faults the scenario fires
/// while it is in flight, and the checks after a failed one.
extension ScenarioExecution {
    /// Port of the destination QEMU when a stream proxy sits in front of it (outside the
    /// 49152-49215 range libvirt picks from).
    static let proxiedMigrationPort: UInt16 = 49300
    /// How often the job statistics are read while a migration runs: a fault lands within
    /// this (plus one libvirt call) of its trigger condition.
    static let pollInterval: Duration = .milliseconds(25)

    /// A fault with its firing state. The polling loop alone reads and writes the trigger
    /// state; the effects come from the tasks that fire it, hence their lock.
    final class ArmedFault: @unchecked Sendable {
        let fault: Fault
        var fired = 0
        var nextFireMs: Double?
        var conditionSeenMs: Double?
        private let done = Mutex<(effects: [FaultEffect], errors: [String], firstResult: String?)>(([], [], nil))
        init(_ f: Fault) { fault = f }

        /// What each firing did, and the firings whose action failed.
        var effects: [FaultEffect] { done.withLock { $0.effects } }
        var errors: [String] { done.withLock { $0.errors } }
        func add(_ effect: FaultEffect) { done.withLock { $0.effects.append(effect); $0.firstResult = $0.firstResult ?? effect.result } }
        func failed(_ error: String) { done.withLock { $0.errors.append(error) } }

        /// Whether it happened: it fired, and at least one firing acted. A fault that never
        /// fired, or whose every firing failed, is a claim nothing made true.
        func record(migration: String, step: Int) -> ExpectationRecord {
            let (effects, errors, first) = done.withLock { ($0.effects, $0.errors, $0.firstResult) }
            let trigger = fault.trigger.description + (fault.everyMs.map { ", every \($0) ms" } ?? "")
            let observed: String
            if fired == 0 {
                observed = "never fired: its condition (\(trigger)) did not hold before the migration ended"
            } else if effects.isEmpty {
                observed = "fired \(fired)x, never acted: \(errors.first ?? "no result")"
            } else {
                observed = "fired \(fired)x (\(trigger)): \(first ?? "")" + (errors.isEmpty ? "" : "; \(errors.count) firing(s) failed: \(errors[0])")
            }
            return ExpectationRecord(what: "\(migration): fault `\(fault.kind)` happened", expected: "fired and acted",
                                     observed: observed, pass: fired > 0 && !effects.isEmpty, step: step)
        }
        /// It cancelled the migration (an abort whose virDomainAbortJob succeeded).
        var cancelledMigration: Bool { effects.contains(where: \.cancelledMigration) }
    }

    /// Migrates the guest; returns false when the outcome differs from the scenario's expectation.
    func migrate(_ m: Step.Migrate, deadline: ContinuousClock.Instant) async throws -> Bool {
        let src = try host(m.from), dst = try host(m.to)
        guard location == m.from else {
            throw RunnerError.step("cannot migrate from \(m.from): the guest is on \(location ?? "no host")")
        }
        guard let dom = try src.hypervisor.guest(named: domainName), dom.isActive else {
            throw RunnerError.step("guest \(domainName) is not running on \(m.from)")
        }
        lastMigration = (m.from, m.to)
        if checksDevices { devicesBeforeMigration = await snapshotDevices(GuestAgent(domain: dom)) }
        if let ms = m.maxDowntimeMs { try dom.setMaxDowntime(milliseconds: UInt64(ms)) }
        var flags: MigrationFlags = [.live, .peerToPeer, .persistDestination, .undefineSource]
        if m.suspend { flags.insert(.suspend) }
        var params = MigrationParameters(bandwidthMiBps: m.bandwidthMiBps.map(UInt64.init))

        // The destination's own passthrough functions and image paths, and a destination whose
        // definition differs from the source's on purpose.
        let migratable = { try dom.xml(migratable: true) }
        var destinationXML = try destinationDefinition(migratable, destination: m.to)
        if let change = m.destinationChange {
            destinationXML = try changedDefinition(try destinationXML ?? migratable(), change)
        }
        params.destinationXML = destinationXML
        // A proxy that damages the stream. On hosts with a second address it takes the
        // destination's migration address and the destination QEMU listens on the second one:
        // the runner runs it in the destination's network namespace when it can enter it
        // (built-in lab), or the lab runs it on the host (virtual VFIO hosts: inside L1). On a
        // lab file's hosts the runner runs it itself, at the lab file's `stream_proxy` address,
        // forwarding to the destination's migration address.
        var proxy: StreamProxyHandle?
        if let mode = m.corruptStream {
            let port = Self.proxiedMigrationPort
            let corruptor = StreamCorruptor(mode: mode, everyMiB: m.corruptEveryMiB)
            let listen: String, target: String
            if let actions = dst.actions, let second = actions.secondaryAddress, let address = dst.migrationAddress,
               actions.networkNamespacePath != nil || actions.runsMiglab {
                (listen, target) = (address, second)
                if let ns = actions.networkNamespacePath {
                    let p = StreamProxy(namespacePath: ns, listen: (address, port), target: (second, port), corruptor: corruptor)
                    try p.start()
                    proxy = .inRunner(p)
                } else {
                    proxy = .onHost(try actions.startMiglab(["stream-proxy", "--listen", "\(address):\(port)", "--target", "\(second):\(port)",
                                                             "--corrupt", mode.rawValue, "--every-mib", "\(m.corruptEveryMiB)"]))
                    // It listens once its process runs; the source connects after libvirt's prepare
                    // phase on the destination (seconds), so no handshake is needed here.
                }
            } else if let runner = lab.runnerProxyAddress, let address = dst.migrationAddress {
                (listen, target) = (runner, address)
                let p = StreamProxy(namespacePath: nil, listen: (runner, port), target: (address, port), corruptor: corruptor)
                try p.start()
                proxy = .inRunner(p)
            } else {
                throw RunnerError.step("corrupt_stream needs a proxy between the hosts: the built-in lab and the virtual VFIO hosts run one, a lab file needs `stream_proxy: {listen: ADDRESS}` and the destination's `migration_address`")
            }
            params.migrationURI = "tcp://" + (listen.contains(":") ? "[\(listen)]" : listen) + ":\(port)"
            params.listenAddress = target
        }

        // The host says where the stream goes when libvirt would not pick it (a lab file's
        // migration network).
        if proxy == nil, let uri = dst.migrationURI { params.migrationURI = uri }

        // The source's completed-job event carries the final figures the destination's copy of
        // the statistics lacks (libvirt 11.3: the VFIO bytes, the RAM sent).
        let sourceEvents = try? src.hypervisor.domainEvents()
        let faults = m.faults.map(ArmedFault.init)
        let target = LabFaultTarget(execution: self, source: src, destination: dst, domain: dom)
        let label = "[\(scenario.name)] migrate \(m.from) -> \(m.to)"
        progress.show(label)
        let t0 = ContinuousClock.now
        let done = DoneFlag()
        let job = Task {
            defer { done.set() }
            try await dom.migrate(to: dst.peerURI, parameters: params, flags: flags)
        }
        var firing: [Task<Task<Void, Never>?, Never>] = []
        var timedOut = false
        var firstFaultMs: Double?
        var lastJournaled = -1000.0
        var lastPreCopyVFIO: UInt64?
        // Poll the job: live line, journal (every 100 ms), triggers (every poll), deadline.
        // (Awaiting the job inside a task group would not do: a task group waits for all its
        // children, and awaiting another task's result ignores cancellation.)
        var abortedForCancel = false
        var lastHealthCheck = ContinuousClock.now
        // The last statistics of the running job: a failed or aborted job's own are often
        // gone (libvirt keeps none for it), and its convergence picture must not be.
        var lastActiveStats: JobStats?
        var crashed = false
        // The job's statistics and the source's state are read on a thread of their own: a
        // slow libvirt call must not hold up the triggers, the deadline or Ctrl-C.
        let sampler = JobSampler(domain: dom, interval: Self.pollInterval)
        defer { sampler.stop() }
        var lastSampleJournaled = 0
        while !done.isSet {
            // A host whose kernel broke answers no libvirt call: look before asking (once a
            // second; the lab reads the host's console), and stop waiting for the job.
            if ContinuousClock.now - lastHealthCheck >= .seconds(1) {
                lastHealthCheck = .now
                if (try? checkHostHealth()) == nil { crashed = true; break }
            }
            // Ctrl-C or SIGTERM: abort the job, then keep waiting for libvirt to end it.
            if Task.isCancelled && !abortedForCancel {
                abortedForCancel = true
                try? dom.abortJob()
            }
            await sleepIgnoringCancellation(Self.pollInterval)
            if done.isSet { break }
            let nowMs = (ContinuousClock.now - t0).seconds * 1000
            let stats = sampler.stats
            if let s = stats, s.isActive {
                // QEMU's figures only grow while a migration runs; a sample where they went
                // back (to nothing, while QEMU cancels at an abort) must not replace the last
                // real picture of the job.
                if (s.memoryIterations ?? 0) >= (lastActiveStats?.memoryIterations ?? 0),
                   (s.dataProcessedBytes ?? 0) >= (lastActiveStats?.dataProcessedBytes ?? 0) {
                    lastActiveStats = s
                }
                progress.show(label + "  " + ProgressLine.describe(s))
            }
            if let sample = sampler.sample, sample.number > lastSampleJournaled, nowMs - lastJournaled >= 100 {
                let s = sample.stats
                var e = event(.migrationProgress)
                e.progress = MigrationStats(s)
                e.progress?.phase = MigrationPhase.of(sourceRunning: sample.sourceRunning == true, stats: s)
                if e.progress?.phase == .preCopy { lastPreCopyVFIO = s.vfioDataTransferredBytes }
                journal.record(e)
                lastJournaled = nowMs
                lastSampleJournaled = sample.number
            }
            for f in faults where shouldFire(f, stats: stats, nowMs: nowMs) {
                let firedMs = (ContinuousClock.now - t0).seconds * 1000
                firstFaultMs = firstFaultMs ?? firedMs
                var rec = FaultRecord(kind: f.fault.kind, trigger: f.fault.trigger.description + (f.fault.everyMs.map { ", every \($0) ms" } ?? ""),
                                      firedAtMs: (firedMs * 10).rounded() / 10)
                rec.conditionSeenAtMs = f.conditionSeenMs.map { ($0 * 10).rounded() / 10 }
                rec.stats = stats.map(MigrationStats.init)
                // The action runs on its own, so a slow one (a guest-agent call) never delays
                // the polling, the next trigger or the deadline.
                let record = rec
                firing.append(Task {
                    var r = record
                    let restore = await self.fire(f, target: target, record: &r)
                    var e = self.event(.fault)
                    e.fault = r
                    self.journal.record(e)
                    return restore
                })
            }
            if ContinuousClock.now >= deadline && !timedOut {
                timedOut = true
                try? dom.abortJob()
            }
        }
        sampler.stop()
        if crashed {
            progress.clear()
            var record = MigrationRecord(from: m.from, to: m.to, outcome: .failed, stats: MigrationStats(),
                                         wallSeconds: (ContinuousClock.now - t0).seconds)
            record.errorMessage = "the host's kernel crashed during the migration: \(hostCrash ?? "")"
            // Journaled, but not held to `expect.migrations`: the host-kernel expectation judges it.
            migrationsEnded += 1
            var e = event(.migrationFinished)
            e.migration = record
            e.outcome = JournalEvent.Outcome(record.outcome)
            journal.record(e)
            throw RunnerError.hostCrashed(hostCrash ?? "")
        }
        let result = await job.result
        let endMs = (ContinuousClock.now - t0).seconds * 1000
        let wall = endMs / 1000
        progress.clear()
        for a in firing { await a.value?.value }   // actions done, links back, before anything else happens
        let proxySummary = proxy?.stop()

        var record: MigrationRecord
        var detectionMs: Double?
        switch result {
        case .success:
            // The destination keeps the completed job's statistics (downtime, iterations).
            let stats = (try? dst.hypervisor.guest(named: domainName)?.jobStats(completed: true)).flatMap { $0 }
            record = MigrationRecord(from: m.from, to: m.to, outcome: .completed,
                                     stats: stats.map(MigrationStats.init) ?? MigrationStats(), wallSeconds: wall)
            // The destination's copy lacks the device bytes (libvirt 11.3 keeps them on the
            // source, whose domain is gone now): they come from the source's
            // VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, sent as the job ends. Without that event the
            // figure stays absent: the last progress sample can be a lower bound (libvirt's job
            // stays active 0.6-0.8 s after QEMU completed, and its samples may stop before).
            precopyVFIOBytes.append(lastPreCopyVFIO)
            if let events = sourceEvents {
                let name = domainName
                let completed = try? await firstEvent(events, deadline: .now + .seconds(3)) { e -> [String: TypedValue]? in
                    guard e.domain == name, case let .jobCompleted(fields) = e.kind else { return nil }
                    return fields
                }
                if let fields = completed.flatMap({ $0 }) {
                    let final = JobStats(type: JobStats.typeCompleted, fields: fields)
                    record.stats.vfioDataBytes = record.stats.vfioDataBytes ?? final.vfioDataTransferredBytes
                    record.stats.memoryProcessedBytes = record.stats.memoryProcessedBytes ?? final.memoryProcessedBytes
                }
            }
            location = m.to
            // The console moved with the guest: read it on the destination from now on.
            if consoleCapture != nil, let moved = try? dst.hypervisor.guest(named: domainName) {
                do { try captureConsole(of: moved) } catch {
                    var e = event(.note)
                    e.message = "cannot read the console on \(m.to) after the migration: \(error)"
                    journal.record(e)
                }
            }
        case let .failure(error):
            let lv = error as? LibvirtError
            // Aborted: libvirt says the job was cancelled, or a scenario's abort cancelled it. In
            // the second case libvirt may report the destination's error first (its QEMU reads a
            // stream cut off mid-section: "load of migration failed", code 1) rather than the
            // source's "canceled by client" (78); the record keeps whichever libvirt reported.
            let cancelled = lv?.code == LibvirtError.operationAborted || faults.contains { $0.cancelledMigration }
            let outcome: Expectations.MigrationOutcome = cancelled && !timedOut ? .aborted : .failed
            let completedStats = (try? src.hypervisor.guest(named: domainName)?.jobStats(completed: true)).flatMap { $0 }
            let kept = completedStats.map(MigrationStats.init).flatMap { ($0.timeElapsedMs ?? 0) > 0 ? $0 : nil }
            record = MigrationRecord(from: m.from, to: m.to, outcome: outcome, stats: kept ?? lastActiveStats.map(MigrationStats.init) ?? MigrationStats(),
                                     wallSeconds: wall, errorCode: lv?.code, errorDomain: lv?.domain,
                                     errorMessage: timedOut ? "step deadline reached, migration aborted: \(error)" : (lv?.message ?? "\(error)"))
            if let f = firstFaultMs { detectionMs = endMs - f }
        }
        migrationsEnded += 1
        var e = event(.migrationFinished)
        e.migration = record
        e.outcome = JournalEvent.Outcome(record.outcome)
        if let p = proxySummary {
            e.details = ["proxy_bytes": "\(p.bytes)", "proxy_flips": "\(p.flips)", "proxy_pages_hit": "\(p.pagesHit)"]
            if let err = p.error { e.details?["proxy_error"] = err }
        }
        journal.record(e)
        // A damaged stream that was not damaged: whatever the migration did, the fault did not
        // happen, and the step is not what the scenario asked for.
        let streamUndamaged = proxySummary.map { $0.flips == 0 } ?? false
        if let p = proxySummary, streamUndamaged {
            var n = event(.note)
            n.message = "corrupt_stream (\(m.corruptStream?.rawValue ?? "")) changed no byte of the \(p.bytes) bytes it forwarded\(p.error.map { ": \($0)" } ?? ""): the fault never happened"
            journal.record(n)
        }

        let guestFaultsHappened = try await afterMigration(m, faults: faults, outcome: record.outcome, source: src, destination: dst)
        // Every fault and damaged stream the step asked for must have happened: each is an
        // expectation of its own, so one that did not fails the scenario, whatever the
        // migration did.
        migrationsJudged += 1
        let what = "migration #\(migrationsJudged) (\(m.from) -> \(m.to))"
        var faultChecks = faults.map { $0.record(migration: what, step: stepIndex) }
        if !guestFaultsHappened {
            faultChecks.append(ExpectationRecord(what: "\(what): guest-side faults happened", expected: "reported by the guest",
                                                 observed: "a guest-side fault did not happen (see its fault record)", pass: false, step: stepIndex))
        }
        if let p = proxySummary {
            faultChecks.append(ExpectationRecord(what: "\(what): corrupt_stream damaged the stream", expected: "at least one byte changed",
                                                 observed: "\(p.flips) flips in \(p.bytes) bytes" + (p.error.map { " (\($0))" } ?? ""),
                                                 pass: p.flips > 0, step: stepIndex))
        }
        let expected = scenario.expectation(for: m)
        var judgement = MigrationJudgement(step: stepIndex, expectation: expected, record: record, detectionMs: detectionMs)
        if expected.guestOn != nil || expected.guestState != nil { judgement.guestAfter = locateGuest() }
        lastJudgement = judgement
        // A migration that did not finish within its step's deadline (one that never converges)
        // is the system under test misbehaving: a failed expectation, not a lab error.
        if timedOut {
            let s = record.stats
            let picture = "aborted at the step's deadline after \(s.memoryIterations.map(String.init) ?? "?") iterations, "
                + "\(s.dataRemainingBytes.map { "\($0 / 1_048_576) MiB" } ?? "?") still to send, "
                + "dirty rate \(s.memoryDirtyRatePagesPerSecond.map { "\($0 * 4096 / 1_048_576) MiB/s" } ?? "?") against \(s.memoryBytesPerSecond.map { "\($0 / 1_048_576) MiB/s" } ?? "?") sent"
            faultChecks.append(ExpectationRecord(what: "\(what): finished within its deadline", expected: "within the step's deadline",
                                                 observed: picture, pass: false, step: stepIndex))
        }
        judge(judgement.records(number: migrationsJudged) + faultChecks)
        return !timedOut && !streamUndamaged && guestFaultsHappened && record.outcome == expected.outcome
    }

    /// A pause that also works in a cancelled task (Task.sleep would return at once there).
    func sleepIgnoringCancellation(_ d: Duration) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().asyncAfter(deadline: .now() + d.seconds) { c.resume() }
        }
    }

    /// Whether `f` fires now; records when its condition was first seen.
    func shouldFire(_ f: ArmedFault, stats: JobStats?, nowMs: Double) -> Bool {
        if f.fired > 0 {
            guard let every = f.fault.everyMs, let next = f.nextFireMs, nowMs >= next else { return false }
            f.nextFireMs = next + Double(every)
            f.fired += 1
            return true
        }
        let holds = Self.triggerHolds(f.fault.trigger, stats: stats, nowMs: nowMs)
        guard holds else { return false }
        f.conditionSeenMs = f.conditionSeenMs ?? nowMs
        f.fired = 1
        if let every = f.fault.everyMs { f.nextFireMs = nowMs + Double(every) }
        return true
    }

    /// Whether a trigger's condition holds, from the job statistics and the time since the
    /// migration started. Size conditions only count once the bulk pass has begun (before it,
    /// libvirt reports nothing remaining).
    static func triggerHolds(_ trigger: Trigger, stats: JobStats?, nowMs: Double) -> Bool {
        switch trigger {
        case let .afterMs(ms):
            return nowMs >= Double(ms)
        case let .iteration(n):
            return (stats?.memoryIterations ?? 0) >= UInt64(n)
        case let .remainingBelowMiB(mib):
            guard let s = stats, (s.memoryIterations ?? 0) >= 1, let rem = s.dataRemainingBytes else { return false }
            return Double(rem) < mib * 1_048_576
        case let .remainingBelowFraction(fr):
            guard let s = stats, (s.memoryIterations ?? 0) >= 1, let total = s.dataTotalBytes, total > 0,
                  let rem = s.dataRemainingBytes else { return false }
            return Double(rem) / Double(total) < fr
        }
    }

    /// Performs a fault; returns a task that undoes it later (network partitions).
    func fire(_ f: ArmedFault, target: LabFaultTarget, record rec: inout FaultRecord) async -> Task<Void, Never>? {
        rec.host = target.hostName(f.fault.action.actsOn)
        do {
            let effect = try await f.fault.action.fire(target)
            rec.result = effect.result
            f.add(effect)
            if let undo = effect.undo {
                return Task {
                    try? await Task.sleep(for: undo.after)
                    try? await undo.action()
                }
            }
        } catch {
            rec.error = "\(error)"
            f.failed("\(error)")
        }
        return nil
    }

    /// The last line of a guest program's output: its report.
    /// (miglab-guestctl's `MIGLAB-GUESTCTL` line when there is one: stderr, merged in, may follow it).
    static func report(_ output: String) -> String? {
        let lines = output.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return lines.last { $0.hasPrefix("MIGLAB-GUESTCTL") } ?? lines.last
    }

    /// After the migration: stop guest-side loops and collect their counts; after a failure,
    /// bring back a killed daemon and check that the destination holds nothing and the guest
    /// still runs on the source with its memory intact. Returns false when a guest-side fault
    /// did not happen (its report is missing or says the guest could not do it).
    @discardableResult
    func afterMigration(_ m: Step.Migrate, faults: [ArmedFault], outcome: Expectations.MigrationOutcome, source: LabHost, destination: LabHost) async throws -> Bool {
        var guestFaultsHappened = true
        for f in faults {
            for effect in f.effects {
                guard let after = effect.afterMigration else { continue }
                var e = event(.note)
                e.message = try await after()
                journal.record(e)
            }
        }
        for (f, process) in faults.flatMap({ f in f.effects.compactMap(\.guestProcess).map { (f, $0) } }) {
            // The guest is where the migration left it; qemu-ga's exec table moved with it.
            guard let here = location, let dom = try? host(here).hypervisor.guest(named: domainName), dom.isActive else { continue }
            let agent = GuestAgent(domain: dom)
            // Another loop that ended may have taken the stop file away before this one saw it:
            // it is touched again before each look.
            let status = try? await agent.waitForExit(process.pid, what: "guest device loop", until: .now + .seconds(30), every: .milliseconds(250)) {
                _ = try? await agent.run("/bin/touch", ["/run/miglab-stop"], until: .now + .seconds(10))
            }
            var rec = FaultRecord(kind: f.fault.kind, trigger: "end of migration", firedAtMs: 0)
            rec.host = here
            let report = status.map { $0.output.trimmingCharacters(in: .whitespacesAndNewlines) }
            rec.result = report ?? "the guest loop did not report"
            var e = event(.fault)
            e.fault = rec
            e.message = "guest-side loop collected"
            if !process.happened(report.flatMap(Self.report)) {
                guestFaultsHappened = false
                e.message = "the guest-side fault did not happen: \(rec.result ?? "")"
                e.outcome = .failed
            }
            journal.record(e)
        }
        guard outcome != .completed else { return guestFaultsHappened }
        // Nothing may be left on the destination. libvirt cleans up asynchronously on some
        // paths (a restarted daemon recovering the incoming job), so wait for it, with a deadline.
        let gone = try? await retry(until: .now + .seconds(10), what: "destination clean-up", every: .milliseconds(100)) {
            guard try destination.hypervisor.guest(named: domainName) == nil else { throw RunnerError.step("still there") }
            return true
        }
        var leftover = "clean"
        if gone == nil, let d = try? destination.hypervisor.guest(named: domainName) {
            let st = (try? d.state().state.description) ?? "?"
            leftover = "guest left behind (\(st))"
            var e = event(.note)
            e.message = "after the failed migration libvirt left the guest on \(destination.name) (\(st)); the lab removes it"
            journal.record(e)
            try? await d.remove()
        }
        // A destination mdev that took part of a refused or cut-off resume is never handed to
        // another user: mtty (and a vendor driver may do the same) keeps it in RESUMING after
        // the close, and the next user that moves it crashes the host kernel (background.md
        // section 7). Removing and recreating it gives the device fresh state.
        if passthrough != nil && m.reuseMdevsAfterFailure {
            var e = event(.note)
            e.message = "on purpose (reuse_mdevs_after_failure), the destination's mdevs on \(destination.name) are not recreated after the failed migration: the next user gets what the failed resume left"
            journal.record(e)
        } else if let session = passthrough {
            do {
                let recreated = try await session.recreateMdevs(on: destination.name)
                if !recreated.isEmpty {
                    var e = event(.note)
                    e.message = "after the failed migration the lab removed and recreated \(recreated.joined(separator: ", ")) on \(destination.name) (a device left in a half-done resume is never reused)"
                    journal.record(e)
                }
            } catch {
                throw RunnerError.step("cannot recreate the mdevs on \(destination.name) after the failed migration: \(error)")
            }
        }
        let tolerated = scenario.expect.destinationAfterFailure == .any
        judge([ExpectationRecord(what: "destination after failed migration #\(migrationsEnded)",
                                 expected: tolerated ? "any (reported)" : "clean", observed: leftover,
                                 pass: tolerated || leftover == "clean", step: stepIndex)])
        // The guest stays on the source; when it still runs there, its memory must be intact.
        location = m.from
        if let d = try? source.hypervisor.guest(named: domainName), d.isActive {
            let t0 = ContinuousClock.now
            let r = try await verifyMemory(on: source, deadline: .now + .seconds(120))
            var ph = event(.phase)
            ph.phase = .verification
            ph.durationSeconds = (ContinuousClock.now - t0).seconds
            ph.message = "memory check on the source after the failed migration"
            journal.record(ph)
            var rec = r
            rec.detail = "after the failed migration, on the source: " + (r.detail ?? "")
            record(verification: rec)
        } else {
            location = nil
            var e = event(.note)
            e.message = "the guest is gone from the source after the failed migration"
            journal.record(e)
        }
        return guestFaultsHappened
    }

    /// The source's migratable definition with one device changed or removed.
    func changedDefinition(_ xml: String, _ change: DestinationChange) throws -> String {
        let doc = try XMLDocument(xmlString: xml)
        let interfaces = try doc.nodes(forXPath: "/domain/devices/interface").compactMap { $0 as? XMLElement }
        func element(for device: String) throws -> XMLElement {
            let mac = try mac(of: device)
            guard let e = interfaces.first(where: { ($0.elements(forName: "mac").first?.attribute(forName: "address")?.stringValue)?.lowercased() == mac }) else {
                throw RunnerError.step("device \(device) (\(mac)) is not in the guest's definition")
            }
            return e
        }
        switch change {
        case let .changeModel(device, model):
            let e = try element(for: device)
            e.elements(forName: "model").first?.attribute(forName: "type")?.stringValue = model.libvirtModel
        case let .removeDevice(device):
            let e = try element(for: device)
            e.detach()
        case .mdevType:
            break   // the device plan gave the destination the other type; DEST_XML names that mdev
        }
        return doc.xmlString
    }
}

/// The stream proxy of one migration, wherever it runs.
enum StreamProxyHandle {
    /// In this process, its sockets in the destination's network namespace.
    case inRunner(StreamProxy)
    /// `miglab stream-proxy` on the destination host, started by the lab.
    case onHost(any HostProcess)

    /// Ends the proxy and returns what it did.
    func stop() -> StreamProxy.Summary {
        switch self {
        case let .inRunner(p):
            return p.stop()
        case let .onHost(process):
            let output = process.stop(grace: .seconds(10))
            let last = output.split(separator: "\n").last.map(String.init) ?? ""
            if let s = try? JSONDecoder().decode(StreamProxy.Summary.self, from: Data(last.utf8)) { return s }
            return StreamProxy.Summary(bytes: 0, flips: 0, pagesHit: 0,
                                       error: "the proxy on the host printed no summary: \(output.suffix(300))")
        }
    }
}

/// Set once by one thread or task, read by a polling loop (a migration's job; the stream
/// proxy command's SIGTERM).
public final class DoneFlag: Sendable {
    private let value = Mutex(false)
    public init() {}
    public func set() { value.withLock { $0 = true } }
    public var isSet: Bool { value.withLock { $0 } }
}
