import Foundation
import Libvirt
import Synchronization

/// One libvirt host of a lab, as the runner sees it. `LabHost` hides how host-side actions
/// happen (built-in lab: local processes and namespaces; hardware node: libvirt or ssh).
public final class LabHost: Sendable {
    /// The name scenarios use ("a", "b").
    public let name: String
    /// URI the runner uses to control this host.
    public let controlURI: String
    /// URI another host's daemon uses to reach this one in a peer-to-peer migration.
    public let peerURI: String
    /// Address the migration stream is sent to, e.g. 10.77.0.2 (tcp://ADDRESS:PORT).
    public let migrationAddress: String?
    /// The URI the migration stream goes to (`tcp://ADDRESS`), when the runner must name it:
    /// a lab file's hosts name a migration network, which libvirt would not pick by itself
    /// (it uses the destination's host name). nil: the host's libvirt picks (the built-in lab
    /// sets `migration_host` in each daemon's qemu.conf).
    public let migrationURI: String?
    /// Where this host's libvirtd and QEMU logs are, when the runner can read them.
    public let logDirectory: String?
    /// Host-side fault actions, where the lab can do them.
    public let actions: HostActions?
    /// How guests run here: TCG on the built-in lab, KVM on hardware nodes.
    public let accelerator: DomainDefinition.Accelerator
    /// The QEMU binary (`<emulator>`); nil lets the host's libvirt pick its default.
    public let emulator: String?
    /// Where the guest image goes on this host: nil when the runner's own image files are
    /// readable there (same machine); else a folder for a libvirt storage pool that the
    /// runner uploads the kernel and initramfs into.
    public let imagePoolDirectory: String?
    private let current: Mutex<any HypervisorHost>

    /// `connection` is the libvirt connection, or a twin of it (`LabTwin`).
    public init(name: String, controlURI: String, peerURI: String, migrationAddress: String?,
                logDirectory: String?, connection: any HypervisorHost, actions: HostActions? = nil,
                accelerator: DomainDefinition.Accelerator = .tcg, emulator: String? = nil,
                imagePoolDirectory: String? = nil, migrationURI: String? = nil) {
        self.name = name
        self.migrationURI = migrationURI
        self.controlURI = controlURI
        self.peerURI = peerURI
        self.migrationAddress = migrationAddress
        self.logDirectory = logDirectory
        self.current = Mutex(connection)
        self.actions = actions
        self.accelerator = accelerator
        self.emulator = emulator
        self.imagePoolDirectory = imagePoolDirectory
    }

    /// The host's hypervisor as the runner uses it: guests, their migrations, events (a new
    /// connection after `reconnect`).
    public var hypervisor: any HypervisorHost { current.withLock { $0 } }

    /// The libvirt connection, for what only libvirt has (storage pools, node devices, mdevs);
    /// nil on a twin.
    public var connection: Connection? { hypervisor as? Connection }

    /// Opens a new connection once the daemon answers again (after a daemon restart), waiting
    /// until `deadline`.
    public func reconnect(until deadline: ContinuousClock.Instant) async throws {
        var last: Error?
        while ContinuousClock.now < deadline {
            do {
                let c = try await hypervisor.reopened()
                current.withLock { $0 = c }
                return
            } catch {
                last = error
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        throw last ?? LibvirtError(code: -1, domain: 0, message: "daemon did not come back", operation: "virConnectOpen(\(controlURI))")
    }

    /// Path of the QEMU log of `domain` on this host, when readable here.
    public func qemuLogPath(domain: String) -> String? {
        logDirectory.map { "\($0)/qemu/\(domain).log" }
    }
}

/// What a lab can do to a host from outside libvirt, for fault injection. The built-in lab
/// acts on local processes and namespaces; a hardware lab would do it over ssh.
public protocol HostActions: Sendable {
    /// SIGKILL to the QEMU process of `domain`; returns its pid.
    func killQEMU(domain: String) throws -> Int32
    /// SIGKILL to the libvirt daemon; the lab restarts it. Returns the killed pid.
    func killLibvirtd() throws -> Int32
    /// Whether `cutLink` works here.
    var offersLinkControl: Bool { get }
    /// Cuts (or restores) this host's link to the other hosts.
    func cutLink(lossOnly: Bool) throws
    func restoreLink(lossOnly: Bool) throws
    /// The network namespace file to open for a socket on this host's network (stream proxy).
    var networkNamespacePath: String? { get }
    /// A second address of this host: the destination QEMU listens there when a proxy takes
    /// the migration address.
    var secondaryAddress: String? { get }
    /// Whether `startMiglab` works here: the lab can run this miglab on the host, in its network
    /// (for hosts whose network namespace the runner cannot enter).
    var runsMiglab: Bool { get }
    /// Starts this miglab on the host with `arguments` (a hidden subcommand such as
    /// `stream-proxy`); the returned process is stopped by the runner.
    func startMiglab(_ arguments: [String]) throws -> any HostProcess
    /// Makes the guests started from now on pass their device resets on to the host drivers
    /// (`on`), or restores the host's normal behaviour. A device that reports its reset (FLR,
    /// VFIO_DEVICE_FLAGS_RESET) needs nothing, so by default this does nothing; the virtual
    /// hosts' mtty implements a reset it does not report, and miglab's build of it has a switch.
    func passGuestResetsToDevices(_ on: Bool) throws
}

extension HostActions {
    public var offersLinkControl: Bool { true }
    public var runsMiglab: Bool { false }
    public func startMiglab(_ arguments: [String]) throws -> any HostProcess {
        throw CommandError(command: ["miglab"] + arguments, status: -1, stderr: "this lab cannot run miglab on its hosts")
    }
    public func passGuestResetsToDevices(_ on: Bool) throws {}
}

/// A process a lab started on one of its hosts for the runner.
public protocol HostProcess: Sendable {
    /// Ends it (SIGTERM, then SIGKILL after `grace`) and returns what it printed.
    func stop(grace: Duration) -> String
}

/// A set of hosts the runner can use: the built-in lab or a hardware lab from a lab file.
public protocol LabEnvironment: Sendable {
    /// Hosts by scenario name.
    var hosts: [String: LabHost] { get }
    /// Short description for logs and results ("built-in lab, QEMU 10.0.2").
    var summary: String { get }
    /// A folder both the runner and every host's QEMU can write and read (memory dumps, the
    /// console log); nil when the hosts are other machines. Then the runner reads guest memory
    /// through `virDomainMemoryPeek` and the console through `virDomainOpenConsole`.
    var sharedScratchDirectory: String? { get }
    /// The lab file of a hardware lab (device pools, locks); nil for the built-in lab.
    var labFile: LabFile? { get }
    /// Where the hosts' QEMUs reach the runner, for a stream proxy the runner runs itself
    /// between hosts whose network it cannot enter (a lab file's `stream_proxy`); nil: none.
    var runnerProxyAddress: String? { get }
    /// Signs that a host's kernel broke since the run began (an oops on a virtual host's
    /// console); empty when healthy or when the lab cannot see its hosts' kernels. Cheap: the
    /// runner asks while it waits for libvirt.
    func hostTrouble() -> [String]
    /// The version of the QEMU binary `host`'s guests use, when it is not libvirt's default
    /// emulator (whose version `virConnectGetVersion` gives); nil: libvirt's answer stands.
    func emulatorVersion(of host: LabHost) -> String?
    /// `uname -r` of `host`, when the lab can see it (libvirt does not report it).
    func kernelRelease(of host: LabHost) -> String?
    /// The libvirt daemon binary the lab runs, when it is not the system's.
    var libvirtdBinary: String? { get }
}

extension LabEnvironment {
    public func hostTrouble() -> [String] { [] }
    public func emulatorVersion(of host: LabHost) -> String? { nil }
    public func kernelRelease(of host: LabHost) -> String? { nil }
    public var libvirtdBinary: String? { nil }
    public var runnerProxyAddress: String? { labFile?.streamProxyAddress }
}
