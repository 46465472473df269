import Foundation
import Libvirt
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// The lab miglab brings up on the local machine when no lab file is given: two hosts,
/// `a` and `b`, each a network namespace with its own libvirt daemon (own config, state,
/// run, log and cache folders, own host_uuid), linked by a veth pair.
///
/// Each daemon runs in the foreground under miglab's own host supervisor (`HostSupervisor`),
/// which holds PR_SET_CHILD_SUBREAPER: this machine's PID 1 reaps orphans only every 1.5-2 s,
/// and libvirt waits for every QEMU it kills to vanish (background.md section 6).
public struct BuiltinLab: Sendable {
    public struct HostSpec: Sendable {
        public let name: String
        public let namespace: String
        public let interface: String
        public let address: String
        /// Where the destination QEMU listens when the stream proxy holds `address`.
        public let secondaryAddress: String
        public let uuid: String
    }

    public static let hostSpecs: [HostSpec] = [
        HostSpec(name: "a", namespace: "miglab-a", interface: "miglab-a", address: "10.77.0.1",
                 secondaryAddress: "10.77.0.3", uuid: "6d4a1c2e-3b4d-4e5f-8a6b-7c8d9e0f1a01"),
        HostSpec(name: "b", namespace: "miglab-b", interface: "miglab-b", address: "10.77.0.2",
                 secondaryAddress: "10.77.0.4", uuid: "6d4a1c2e-3b4d-4e5f-8a6b-7c8d9e0f1a02"),
    ]
    static let prefixLength = 24
    /// The oldest QEMU the built-in lab accepts: 7.2 loses guest memory under TCG.
    public static let minimumQEMUMajor = 10

    public let root: String
    public let qemuBinary: String
    /// The libvirt daemon both hosts run (`--libvirtd`: a developer's own build).
    public let libvirtdBinary: String
    public static let systemLibvirtd = "/usr/sbin/libvirtd"
    let logger: Logger

    public init(root: String = BuiltinLab.defaultRoot, qemuBinary: String = "/usr/bin/qemu-system-x86_64",
                libvirtdBinary: String = BuiltinLab.systemLibvirtd, logger: Logger = Logger(label: "miglab.lab")) {
        self.root = root
        self.qemuBinary = qemuBinary
        self.libvirtdBinary = libvirtdBinary
        self.logger = logger
    }

    /// Where a host's supervisor finds the daemon binary it runs (`HostSupervisor`).
    static func libvirtdBinaryFile(hostDirectory: String) -> String { "\(hostDirectory)/libvirtd.binary" }

    /// The daemon binary a running host was started with.
    func runningLibvirtd(_ h: HostSpec) -> String {
        (try? String(contentsOfFile: Self.libvirtdBinaryFile(hostDirectory: hostDirectory(h)), encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? Self.systemLibvirtd
    }

    public static var defaultRoot: String {
        ProcessInfo.processInfo.environment["MIGLAB_LAB_DIR"] ?? "/var/lib/miglab/lab"
    }

    func hostDirectory(_ h: HostSpec) -> String { "\(root)/\(h.name)" }
    func socketPath(_ h: HostSpec) -> String { "\(hostDirectory(h))/sock/libvirt-sock" }
    func supervisorPidFile(_ h: HostSpec) -> String { "\(hostDirectory(h))/supervisor.pid" }
    public var scratchDirectory: String { "\(root)/scratch" }

    public func controlURI(_ h: HostSpec) -> String { "qemu:///system?socket=\(socketPath(h))" }
    public func peerURI(_ h: HostSpec) -> String { "qemu+tcp://\(h.address)/system" }

    // MARK: QEMU version gate

    public enum LabError: Error, CustomStringConvertible {
        case qemuTooOld(binary: String, version: String)
        case qemuMissing(binary: String)
        case daemonDidNotStart(host: String, log: String)
        case notRoot
        case libvirtdMissing(binary: String)
        case otherLibvirtd(host: String, running: String, wanted: String)

        public var description: String {
            switch self {
            case let .qemuTooOld(binary, version):
                return "\(binary) is QEMU \(version); the built-in lab needs QEMU >= \(BuiltinLab.minimumQEMUMajor): "
                    + "QEMU 7.2 loses guest memory during migration under TCG. Run ci/setup (it installs QEMU 10 from "
                    + "bookworm-backports), or pass --allow-old-qemu to run anyway (results are not trustworthy)."
            case let .qemuMissing(binary):
                return "\(binary) not found; run ci/setup to install QEMU"
            case let .daemonDidNotStart(host, log):
                return "libvirtd of host \(host) did not come up; see \(log)"
            case .notRoot:
                return "the built-in lab needs root (network namespaces, libvirt daemons)"
            case let .libvirtdMissing(binary):
                return "\(binary) is not an executable file: give --libvirtd the path of a libvirt daemon binary"
            case let .otherLibvirtd(host, running, wanted):
                return "the built-in lab is up with host \(host) running \(running), not \(wanted): run `miglab lab down` first (a lab's daemons are chosen when it comes up)"
            }
        }
    }

    /// The QEMU version of `qemuBinary`, parsed from `--version`.
    public func qemuVersion() throws -> (major: Int, minor: Int, micro: Int, text: String) {
        guard FileManager.default.isExecutableFile(atPath: qemuBinary) else { throw LabError.qemuMissing(binary: qemuBinary) }
        let out = try Command.run([qemuBinary, "--version"]).stdout
        return try Self.parseQEMUVersion(out)
    }

    /// Refuses a QEMU older than `minimumQEMUMajor` unless `allowOld` (a deliberate choice,
    /// e.g. to reproduce the QEMU 7.2 memory loss). Returns the version found.
    @discardableResult
    public func checkQEMU(allowOld: Bool) throws -> String {
        let v = try qemuVersion()
        if v.major < Self.minimumQEMUMajor && !allowOld {
            throw LabError.qemuTooOld(binary: qemuBinary, version: v.text)
        }
        return v.text
    }

    static func parseQEMUVersion(_ text: String) throws -> (major: Int, minor: Int, micro: Int, text: String) {
        // "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)"
        guard let r = text.range(of: #"version (\d+)\.(\d+)(?:\.(\d+))?"#, options: .regularExpression) else {
            throw CommandError(command: ["qemu --version"], status: 0, stderr: "cannot read a version from: \(text)")
        }
        let nums = text[r].dropFirst("version ".count).split(separator: ".").compactMap { Int($0) }
        let v = "\(nums[0]).\(nums.count > 1 ? nums[1] : 0).\(nums.count > 2 ? nums[2] : 0)"
        return (nums[0], nums.count > 1 ? nums[1] : 0, nums.count > 2 ? nums[2] : 0, v)
    }

    // MARK: up / down / status

    /// Brings the lab up; does nothing that is already in place (idempotent). Leftovers of a
    /// crashed run (a dead daemon, stale QEMU processes) are removed first.
    /// Returns true when anything had to be started.
    @discardableResult
    public func up(allowOldQEMU: Bool = false) async throws -> Bool {
        guard getuid() == 0 else { throw LabError.notRoot }
        try checkQEMU(allowOld: allowOldQEMU)
        guard FileManager.default.isExecutableFile(atPath: libvirtdBinary) else { throw LabError.libvirtdMissing(binary: libvirtdBinary) }
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let lock = try FileLock(path: "\(root)/lab.lock")
        defer { lock.unlock() }
        var started = false
        if try ensureNetwork() { started = true }
        try FileManager.default.createDirectory(atPath: scratchDirectory, withIntermediateDirectories: true)
        for h in Self.hostSpecs {
            if let pid = ProcessTable.readPidFile(supervisorPidFile(h)), ProcessTable.isRunning(pid),
               FileManager.default.fileExists(atPath: socketPath(h)) {
                guard runningLibvirtd(h) == libvirtdBinary else {
                    throw LabError.otherLibvirtd(host: h.name, running: runningLibvirtd(h), wanted: libvirtdBinary)
                }
                continue
            }
            await removeLeftoverProcesses(h)
            try writeConfig(h)
            try await startDaemon(h)
            started = true
        }
        try await removeLeftoverGuests()
        return started
    }

    /// Guests a crashed run left on the lab's hosts. Only when no run is using the lab (a live
    /// run holds run.lock; a crashed run's lock went with its process).
    func removeLeftoverGuests() async throws {
        guard let lock = try FileLock(path: "\(root)/run.lock", wait: false) else { return }
        defer { lock.unlock() }
        for h in Self.hostSpecs {
            guard let conn = try? await Connection.open(uri: controlURI(h)) else { continue }
            for d in (try? conn.allDomains()) ?? [] where d.name.hasPrefix("miglab-") {
                logger.info("host \(h.name): removing guest \(d.name) left by an earlier run")
                try? await d.remove()
            }
        }
    }

    /// Removes everything the lab made: guests, daemons, QEMU processes, namespaces, folders.
    /// Works on a half-made lab and on the leftovers of a crashed run.
    public func down() async throws {
        guard getuid() == 0 else { throw LabError.notRoot }
        let lockDir = FileManager.default.fileExists(atPath: root)
        let lock = lockDir ? try FileLock(path: "\(root)/lab.lock") : nil
        defer { lock?.unlock() }
        for h in Self.hostSpecs {
            if FileManager.default.fileExists(atPath: socketPath(h)),
               let conn = try? await Connection.open(uri: controlURI(h)) {
                for d in (try? conn.allDomains()) ?? [] {
                    try? await d.remove()
                }
            }
            if let pid = ProcessTable.readPidFile(supervisorPidFile(h)) {
                await ProcessTable.terminate(pid, grace: .seconds(10))
            }
            await removeLeftoverProcesses(h)
        }
        for h in Self.hostSpecs where namespaceExists(h.namespace) {
            try Command.run(["ip", "netns", "delete", h.namespace])
        }
        if interfaceExists(Self.hostSpecs[0].interface) {
            try Command.run(["ip", "link", "delete", Self.hostSpecs[0].interface])
        }
        if lockDir { try? FileManager.default.removeItem(atPath: root) }
    }

    public struct HostStatus: Sendable, Codable {
        public let name: String
        public let namespace: Bool
        public let supervisorPid: Int32?
        public let daemonRunning: Bool
        public let controlURI: String
        public let qemuProcesses: [Int32]
        public let domains: [String]
    }

    public struct Status: Sendable, Codable {
        public let root: String
        public let qemu: String?
        public let hosts: [HostStatus]
        public var isUp: Bool { hosts.allSatisfy { $0.daemonRunning && $0.namespace } }
        public var isEmpty: Bool {
            hosts.allSatisfy { !$0.namespace && $0.supervisorPid == nil && $0.qemuProcesses.isEmpty }
        }
    }

    /// What runs now, including leftovers of a crashed run.
    public func status() async -> Status {
        var hosts: [HostStatus] = []
        for h in Self.hostSpecs {
            let pid = ProcessTable.readPidFile(supervisorPidFile(h)).flatMap { ProcessTable.isRunning($0) ? $0 : nil }
            var domains: [String] = []
            var running = false
            if pid != nil, let conn = try? await Connection.open(uri: controlURI(h)) {
                running = true
                domains = domainSummaries(conn)
            }
            hosts.append(HostStatus(name: h.name, namespace: namespaceExists(h.namespace), supervisorPid: pid,
                                    daemonRunning: running, controlURI: controlURI(h),
                                    qemuProcesses: qemuPids(h), domains: domains))
        }
        let q = (try? qemuVersion()).map { "\($0.text) (\(qemuBinary))" }
        return Status(root: root, qemu: q, hosts: hosts)
    }

    /// Connects to both hosts.
    public func environment() async throws -> BuiltinLabEnvironment {
        var hosts: [String: LabHost] = [:]
        for h in Self.hostSpecs {
            let conn = try await Connection.open(uri: controlURI(h))
            hosts[h.name] = LabHost(name: h.name, controlURI: controlURI(h), peerURI: peerURI(h),
                                    migrationAddress: h.address, logDirectory: "\(hostDirectory(h))/log",
                                    connection: conn, actions: BuiltinHostActions(spec: h, directory: hostDirectory(h)),
                                    accelerator: .tcg, emulator: qemuBinary)
        }
        let v = (try? qemuVersion().text) ?? "?"
        return BuiltinLabEnvironment(hosts: hosts, summary: "built-in lab (2 hosts, QEMU \(v), TCG)",
                                     sharedScratchDirectory: scratchDirectory, lab: self)
    }

    // MARK: pieces

    func namespaceExists(_ name: String) -> Bool {
        FileManager.default.fileExists(atPath: "/run/netns/\(name)")
    }

    func interfaceExists(_ name: String) -> Bool {
        FileManager.default.fileExists(atPath: "/sys/class/net/\(name)")
    }

    /// Namespaces, veth pair, addresses. Returns true when something was created.
    func ensureNetwork() throws -> Bool {
        let (ha, hb) = (Self.hostSpecs[0], Self.hostSpecs[1])
        let complete = namespaceExists(ha.namespace) && namespaceExists(hb.namespace)
            && ((try? Command.run(["ip", "-n", ha.namespace, "link", "show", ha.interface], check: false).status) == 0)
            && ((try? Command.run(["ip", "-n", hb.namespace, "link", "show", hb.interface], check: false).status) == 0)
        if complete { return false }
        // Half-made: start over.
        for h in Self.hostSpecs where namespaceExists(h.namespace) {
            try Command.run(["ip", "netns", "delete", h.namespace])
        }
        if interfaceExists(ha.interface) { try Command.run(["ip", "link", "delete", ha.interface]) }
        for h in Self.hostSpecs { try Command.run(["ip", "netns", "add", h.namespace]) }
        try Command.run(["ip", "link", "add", ha.interface, "type", "veth", "peer", "name", hb.interface])
        for h in Self.hostSpecs {
            try Command.run(["ip", "link", "set", h.interface, "netns", h.namespace])
            try Command.run(["ip", "-n", h.namespace, "addr", "add", "\(h.address)/\(Self.prefixLength)", "dev", h.interface])
            try Command.run(["ip", "-n", h.namespace, "addr", "add", "\(h.secondaryAddress)/\(Self.prefixLength)", "dev", h.interface])
            try Command.run(["ip", "-n", h.namespace, "link", "set", "lo", "up"])
            try Command.run(["ip", "-n", h.namespace, "link", "set", h.interface, "up"])
        }
        return true
    }

    func writeConfig(_ h: HostSpec) throws {
        try LibvirtDaemonConfig(label: "built-in lab host \(h.name)", directory: hostDirectory(h), listenAddress: h.address,
                                hostUUID: h.uuid, migrationAddress: h.address).write()
    }

    func startDaemon(_ h: HostSpec) async throws {
        let dir = hostDirectory(h)
        try? FileManager.default.removeItem(atPath: socketPath(h))
        // Debian's QEMU driver refuses to load without the libvirt-qemu user, which only
        // libvirt-daemon-system would create.
        try ensureLibvirtQemuUser()
        try "\(libvirtdBinary)\n".write(toFile: Self.libvirtdBinaryFile(hostDirectory: dir), atomically: true, encoding: .utf8)
        let me = try Command.miglabExecutable()
        let pid = try Command.spawnDetached(
            ["ip", "netns", "exec", h.namespace, me, "lab", "host-supervisor", "--host-dir", dir],
            logPath: "\(dir)/log/supervisor.log")
        try "\(pid)\n".write(toFile: supervisorPidFile(h), atomically: true, encoding: .utf8)
        // Wait for the daemon's socket to answer (or the supervisor to die).
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if FileManager.default.fileExists(atPath: socketPath(h)),
               let conn = try? Connection(uri: controlURI(h)), conn.isAlive {
                logger.info("host \(h.name): libvirtd up (supervisor pid \(pid), \(controlURI(h)))")
                return
            }
            guard ProcessTable.isRunning(pid) else { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw LabError.daemonDidNotStart(host: h.name, log: "\(dir)/log/supervisor.log and \(dir)/log/libvirtd.log")
    }

    func ensureLibvirtQemuUser() throws {
        if (try? Command.run(["getent", "group", "libvirt-qemu"], check: false).status) != 0 {
            try Command.run(["groupadd", "-r", "libvirt-qemu"])
        }
        if (try? Command.run(["id", "libvirt-qemu"], check: false).status) != 0 {
            try Command.run(["useradd", "-r", "-g", "libvirt-qemu", "-d", "/var/lib/libvirt", "-s", "/usr/sbin/nologin", "libvirt-qemu"])
        }
    }

    /// QEMU processes started by this host's daemon (their pid files are in the host's run folder).
    func qemuPids(_ h: HostSpec) -> [pid_t] {
        let dir = "\(hostDirectory(h))/run/qemu"
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        var pids = files.filter { $0.hasSuffix(".pid") }.compactMap { ProcessTable.readPidFile("\(dir)/\($0)") }
            .filter { ProcessTable.isRunning($0) && ProcessTable.commandLine($0).contains("qemu") }
        // A QEMU whose pid file is gone still names the host's folders on its command line.
        pids += ProcessTable.pids(commandLineContaining: "\(hostDirectory(h))/lib/qemu")
            .filter { ProcessTable.commandLine($0).contains("qemu-system") }
        return Array(Set(pids)).sorted()
    }

    func removeLeftoverProcesses(_ h: HostSpec) async {
        for pid in qemuPids(h) { await ProcessTable.terminate(pid, grace: .seconds(2)) }
        for pid in ProcessTable.pids(commandLineContaining: "host-supervisor --host-dir \(hostDirectory(h))") {
            await ProcessTable.terminate(pid)
        }
    }

}

/// Each domain of a host as `name (state)`, for `lab status`.
func domainSummaries(_ connection: Connection) -> [String] {
    ((try? connection.allDomains()) ?? []).map { "\($0.name) (\((try? $0.state().state.description) ?? "?"))" }
}

/// Fault actions on a built-in lab host: its processes and its end of the veth pair.
struct BuiltinHostActions: HostActions {
    let spec: BuiltinLab.HostSpec
    let directory: String

    func killQEMU(domain: String) throws -> Int32 {
        let pidFile = "\(directory)/run/qemu/\(domain).pid"
        guard let pid = ProcessTable.readPidFile(pidFile), ProcessTable.isRunning(pid) else {
            throw CommandError(command: ["kill", "qemu"], status: 1, stderr: "no running QEMU for \(domain) on host \(spec.name) (\(pidFile))")
        }
        kill(pid, SIGKILL)
        return pid
    }

    func killLibvirtd() throws -> Int32 {
        let pidFile = "\(directory)/run/libvirtd.pid"
        guard let pid = ProcessTable.readPidFile(pidFile), ProcessTable.isRunning(pid) else {
            throw CommandError(command: ["kill", "libvirtd"], status: 1, stderr: "no running libvirtd on host \(spec.name) (\(pidFile))")
        }
        kill(pid, SIGKILL)
        return pid
    }

    func cutLink(lossOnly: Bool) throws {
        if lossOnly {
            try Command.run(["tc", "-n", spec.namespace, "qdisc", "add", "dev", spec.interface, "root", "netem", "loss", "100%"])
        } else {
            try Command.run(["ip", "-n", spec.namespace, "link", "set", spec.interface, "down"])
        }
    }

    func restoreLink(lossOnly: Bool) throws {
        if lossOnly {
            try Command.run(["tc", "-n", spec.namespace, "qdisc", "del", "dev", spec.interface, "root"])
        } else {
            try Command.run(["ip", "-n", spec.namespace, "link", "set", spec.interface, "up"])
        }
    }

    var networkNamespacePath: String? { "/run/netns/\(spec.namespace)" }
    var secondaryAddress: String? { spec.secondaryAddress }
}

/// The built-in lab, connected.
public struct BuiltinLabEnvironment: LabEnvironment {
    public let hosts: [String: LabHost]
    public let summary: String
    public let sharedScratchDirectory: String?
    public let lab: BuiltinLab
    public var labFile: LabFile? { nil }
    /// The lab's QEMU may be another than libvirt's default (`--qemu`).
    public func emulatorVersion(of host: LabHost) -> String? { try? lab.qemuVersion().text }
    /// Both hosts are this machine.
    public func kernelRelease(of host: LabHost) -> String? { BuiltinLab.localKernelRelease() }
    public var libvirtdBinary: String? { lab.libvirtdBinary }
}

extension BuiltinLab {
    /// `uname(2)`'s release of this machine.
    public static func localKernelRelease() -> String? {
        var u = utsname()
        guard uname(&u) == 0 else { return nil }
        return withUnsafeBytes(of: &u.release) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }
}

/// An exclusive flock(2) on a file, held until `unlock()`, deinit or process exit (so a
/// crashed holder never leaves it taken).
public final class FileLock: @unchecked Sendable {
    private var fd: Int32
    /// Waits for the lock; with `wait: false` returns nil when someone else holds it.
    public init?(path: String, wait: Bool) throws {
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CommandError(command: ["open", path], status: errno, stderr: String(cString: strerror(errno))) }
        guard flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) == 0 else {
            let e = errno
            close(fd)
            if e == EWOULDBLOCK && !wait { return nil }
            throw CommandError(command: ["flock", path], status: e, stderr: String(cString: strerror(e)))
        }
    }
    public convenience init(path: String) throws {
        try self.init(path: path, wait: true)!
    }
    public func unlock() {
        guard fd >= 0 else { return }
        flock(fd, LOCK_UN)
        close(fd)
        fd = -1
    }
    deinit { unlock() }
}
