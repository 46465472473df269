import Foundation
import Lab
import Libvirt
import Runner
import Synchronization

/// A lab in memory: hypervisor hosts (`HypervisorHost`), their guests (`GuestDomain`) and the
/// hosts' fault actions (`HostActions`), behind the interfaces the runner uses for the real
/// libvirt daemons, as `ReferenceDevice` twins `VFIODevice`. The runner's logic (triggers,
/// fault effects, per-step expectations, checks after a failed migration, matrices) runs
/// against it in unit tests, without root, daemons or QEMU; the real lab stays tested by the
/// integration tests.
///
/// What it models, in the shape libvirt reports it: a guest that boots at once and answers its
/// agent (ping, files, guest-exec), a memory workload whose pages are laid out as miglab's
/// memtest writes them (so the real memory oracle checks them), migration jobs whose
/// statistics advance with time (iterations, data remaining), and the effects of faults on
/// them: an aborted job, a killed QEMU or daemon, a cut link. `TwinScript` sets what the
/// guest and the migrations do.
public final class TwinLab: Sendable {
    public let hosts: [String: TwinHost]
    let state: Mutex<State>

    struct State {
        var script: TwinScript
        var jobs: [TwinJob] = []
        /// Every agent command and host action, in order, for tests to look at.
        var log: [String] = []
    }

    public init(hosts names: [String] = ["a", "b"], script: TwinScript = TwinScript()) {
        state = Mutex(State(script: script))
        var hosts: [String: TwinHost] = [:]
        for n in names { hosts[n] = TwinHost(name: n) }
        self.hosts = hosts
        for h in hosts.values { h.lab.withLock { $0 = self } }
    }

    public var script: TwinScript {
        get { state.withLock { $0.script } }
        set { state.withLock { $0.script = newValue } }
    }

    /// What happened, in order ("a: kill qemu miglab-x", "agent guest-exec ...").
    public var log: [String] { state.withLock { $0.log } }
    func note(_ s: String) { state.withLock { $0.log.append(s) } }

    func host(peerURI: String) -> TwinHost? { hosts.values.first { $0.peerURI == peerURI } }

    /// The lab as the runner sees it.
    public func environment() -> TwinLabEnvironment {
        var labHosts: [String: LabHost] = [:]
        for (name, h) in hosts {
            labHosts[name] = LabHost(name: name, controlURI: h.uri, peerURI: h.peerURI, migrationAddress: nil, logDirectory: nil,
                                     connection: h, actions: TwinHostActions(lab: self, host: h))
        }
        return TwinLabEnvironment(hosts: labHosts)
    }

    /// Jobs a fault on `host` ends, with libvirt's error.
    func failJobs(touching host: TwinHost, code: Int32, message: String) {
        let jobs = state.withLock { $0.jobs }
        for j in jobs where j.source.host === host || j.destination === host { j.fail(code: code, message: message) }
    }
}

/// What the twin's guest and migrations do.
public struct TwinScript: Sendable {
    /// How long a migration takes when nothing stops it.
    public var migrationMs = 400
    /// One memory iteration every this many ms (the bulk pass is iteration 1).
    public var iterationMs = 40
    /// Guest RAM the job reports (bytes to send).
    public var guestMemoryMiB = 256
    /// The workload's buffer (must match the scenario's `guest.workload_mib`).
    public var workloadMiB = 64
    /// A migration never converges: it runs until aborted or its deadline.
    public var neverConverges = false
    /// After a failed migration libvirt left the guest defined on the destination.
    public var leavesGuestOnDestinationAfterFailure = false
    /// A completed migration delivers this many workload pages damaged.
    public var damagedPagesPerMigration = 0
    /// After the link is cut, the migration fails this much later (libvirt's keepalive).
    public var linkCutFailureMs = 100
    /// A killed libvirt daemon answers again this much later.
    public var daemonRestartMs = 100
    /// miglab-guestctl's report of an FLR or reset loop.
    public var guestctlReport = "MIGLAB-GUESTCTL resets=3 failures=0 driver=virtio-pci"
    /// While a migration runs, `virDomainGetState` on its source answers this much later (0:
    /// at once). libvirt 9.0 on the built-in lab answered after 5 s about once per migration.
    public var stateCallDuringMigrationMs = 0
    /// After a failure or an abort the job stays active this long with its figures gone back
    /// to zero, as QEMU's do while it cancels (seen with libvirt 9.0 and QEMU 10 at a step's
    /// deadline: one sample with 8077 ms elapsed and nothing sent).
    public var cancellingMs = 0
    /// What the workload's frames file says. `truthful`: where its pages are; `shifted`: one
    /// frame off (a guest that lies about where to look must fail, never pass); `missing`: no
    /// file (the check then reads all of guest RAM).
    public var framesReport: FramesReport = .truthful
    public enum FramesReport: Sendable { case truthful, shifted, missing }

    public init() {}
}

/// The twin lab as a `LabEnvironment`: no folder shared with the hosts (memory is read with
/// `readPhysicalMemory`, the console through `captureConsole`), no lab file.
public struct TwinLabEnvironment: LabEnvironment {
    public let hosts: [String: LabHost]
    public var summary: String { "the twin lab" }
    public var sharedScratchDirectory: String? { nil }
    public var labFile: LabFile? { nil }
}

/// A `LabProvider` for `RunController`: the twin lab, nothing to bring up.
public final class TwinLabProvider: LabProvider {
    public let lab: TwinLab
    public init(lab: TwinLab) { self.lab = lab }
    public var description: String { "twin lab" }
    public func prepare() async throws -> LabEnvironment { lab.environment() }
    public func finish() async {}
    public func problems() async -> [String] { [] }
    public func refusesHostCrash() async -> String? { "the twin lab has no kernel to crash" }
    public func discardCrashedHosts() async {}
}

/// The guest image of the twin: the twin boots nothing, so the files are never read.
public struct TwinGuestImage: GuestImageSource {
    public init() {}
    public func build() throws -> GuestImage {
        GuestImage(kernel: "/dev/null", initrd: "/dev/null", hash: "twin", kernelVersion: "twin")
    }
}

/// Process and link control of a twin host: a killed QEMU crashes its guest and ends the
/// migrations it takes part in; a killed daemon ends them too and answers again after
/// `TwinScript.daemonRestartMs`; a cut link ends them after `linkCutFailureMs`.
public struct TwinHostActions: HostActions {
    let lab: TwinLab
    let host: TwinHost

    public func killQEMU(domain: String) throws -> Int32 {
        guard let d = host.domain(domain), d.isActive else {
            throw TwinError("no running QEMU for \(domain) on host \(host.name)")
        }
        lab.note("\(host.name): kill qemu \(domain)")
        d.crash()
        lab.failJobs(touching: host, code: LibvirtError.operationFailed,
                     message: "operation failed: job 'migration' failed: QEMU unexpectedly closed the monitor on \(host.name)")
        return d.pid
    }

    public func killLibvirtd() throws -> Int32 {
        lab.note("\(host.name): kill libvirtd")
        host.goDown(for: .milliseconds(lab.script.daemonRestartMs))
        lab.failJobs(touching: host, code: LibvirtError.systemError,
                     message: "Cannot recv data: Connection reset by peer (libvirtd of \(host.name))")
        return 4000 + Int32(host.name.unicodeScalars.first?.value ?? 0)
    }

    public func cutLink(lossOnly: Bool) throws {
        lab.note("\(host.name): cut link\(lossOnly ? " (loss)" : "")")
        host.linkCut.withLock { $0 = true }
        let lab = lab, host = host
        let after = lab.script.linkCutFailureMs
        Task {
            try? await Task.sleep(for: .milliseconds(after))
            if host.linkCut.withLock({ $0 }) {
                lab.failJobs(touching: host, code: LibvirtError.operationFailed,
                             message: "operation failed: migration out job: unexpectedly failed (keepalive timeout)")
            }
        }
    }

    public func restoreLink(lossOnly: Bool) throws {
        lab.note("\(host.name): restore link")
        host.linkCut.withLock { $0 = false }
    }

    public var networkNamespacePath: String? { nil }
    public var secondaryAddress: String? { nil }
}

public struct TwinError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ d: String) { description = d }
}
