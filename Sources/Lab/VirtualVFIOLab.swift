import Foundation
import Libvirt
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Virtual VFIO hosts: a VM (L1) under TCG with `-cpu max`, whose kernel carries VFIO, mdev and
/// KVM and the kernel's migratable sample device `mtty`, running one libvirt daemon per lab host.
/// L1's own KVM runs the test guest (L2) (TCG offers SVM and nested paging to L1), so a real VFIO
/// device (an mtty mdev) migrates between real QEMUs through real libvirt, with no hardware.
///
/// The runner reaches the hosts only as it reaches hardware nodes: through their libvirt URIs
/// (TCP ports QEMU's user-mode network forwards from 127.0.0.1) and the lab file this lab writes
/// (`lab.yaml` in its folder), with mdev pools of the mtty types.
///
/// One L1 holds both hosts (each daemon in its own mount namespace, its own host UUID, ports and
/// state), because two TCG machines on this 2-core machine would each need most of a core while
/// the guest runs. L1's root is the runner machine's own / read-only over virtio-9p under a
/// tmpfs overlay, so L1 runs this machine's QEMU; its libvirt is bookworm-backports' 11.3
/// (`VirtualHostLibvirt`, copied over the overlay) unless the lab is told to keep the machine's,
/// and miglab (the host supervisor) runs from a copy in the lab folder (`stageMiglab`). The lab
/// folder is shared read-write, so the daemons' and QEMU's logs land there.
public struct VirtualVFIOLab: Sendable {
    public struct HostSpec: Sendable {
        public let name: String
        /// libvirtd's TCP port, the same inside L1 and on the runner machine's 127.0.0.1.
        public let port: Int
        public let uuid: String
        /// Incoming migration streams (both daemons share L1's network).
        public let migrationPorts: ClosedRange<Int>
    }

    public static let hostSpecs: [HostSpec] = [
        HostSpec(name: "a", port: 16611, uuid: "6d4a1c2e-3b4d-4e5f-8a6b-7c8d9e0f1b01", migrationPorts: 49152...49183),
        HostSpec(name: "b", port: 16612, uuid: "6d4a1c2e-3b4d-4e5f-8a6b-7c8d9e0f1b02", migrationPorts: 49184...49215),
    ]
    /// Modules L1 loads: its NIC, VFIO with the type-1 IOMMU backend (Debian's 6.12 has no
    /// iommufd), the mdev bus, and KVM for AMD (QEMU's TCG emulates SVM, not VMX).
    static let modules = ["virtio_net", "vfio", "vfio_iommu_type1", "mdev", "kvm_amd"]
    /// The mtty types and how many of each a run may create per host (mtty offers 24 ports in
    /// all: mtty-1 has one port per device, mtty-2 two).
    public static let mdevPools: [(type: String, instances: Int)] = [("mtty-2", 2), ("mtty-1", 2)]
    /// libvirt's node-device name of mtty's parent device (/sys/devices/virtual/mtty/mtty).
    public static let mttyParent = "mtty_mtty"
    /// What QEMU needs to migrate mtty: its DMA-logging report fails (EOPNOTSUPP on 6.12), so
    /// QEMU must not use device dirty tracking, and must then be told to migrate anyway.
    public static let mttyQEMUProperties = [QEMUDeviceProperty(name: "x-device-dirty-page-tracking", value: "off"),
                                            QEMUDeviceProperty(name: "enable-migration", value: "on")]

    public let root: String
    public let qemuBinary: String
    public let memoryMiB: Int
    /// TCG's threading for L1 (`single` or `multi`), MIGLAB_VFIO_TCG_THREADS.
    var tcgThreads: String { ProcessInfo.processInfo.environment["MIGLAB_VFIO_TCG_THREADS"] ?? "multi" }
    /// L1's vCPUs, MIGLAB_VFIO_SMP.
    var vcpus: String { ProcessInfo.processInfo.environment["MIGLAB_VFIO_SMP"] ?? "1" }
    let logger: Logger

    public init(root: String = VirtualVFIOLab.defaultRoot, qemuBinary: String = "/usr/bin/qemu-system-x86_64",
                memoryMiB: Int = 4096, logger: Logger = Logger(label: "miglab.vfio-lab")) {
        self.root = root
        self.qemuBinary = qemuBinary
        self.memoryMiB = memoryMiB
        self.logger = logger
    }

    public static var defaultRoot: String {
        ProcessInfo.processInfo.environment["MIGLAB_VFIO_LAB_DIR"] ?? "/var/lib/miglab/vfio-lab"
    }

    /// The lab file the runner uses (`miglab run --lab`).
    public var labFilePath: String { "\(root)/lab.yaml" }
    var machineDirectory: String { "\(root)/l1" }
    var pidFile: String { "\(machineDirectory)/qemu.pid" }
    /// L1's serial console: the kernel's messages, the ready marker, oopses.
    public var consoleLog: String { "\(machineDirectory)/console.log" }
    func hostDirectory(_ h: HostSpec) -> String { "\(root)/hosts/\(h.name)" }
    /// L1's address on QEMU's user-mode network; migration streams go there (libvirt refuses a
    /// loopback `migration_host`), from one daemon of L1 to the other.
    static let addressInL1 = "10.0.2.15"
    /// L1's second address, local to L1 only.
    static let secondaryAddressInL1 = "10.0.2.16"
    /// Where a daemon keeps its state inside L1 (L1's memory).
    static let stateDirectoryInL1 = "/run/miglab-hosts"
    public static func controlURI(_ h: HostSpec) -> String { "qemu+tcp://127.0.0.1:\(h.port)/system" }

    public enum LabError: Error, CustomStringConvertible {
        case notRoot
        case machineDied(console: String, tail: String)
        case machineFailed(message: String, console: String)
        case timeout(what: String, console: String)

        public var description: String {
            switch self {
            case .notRoot:
                "the virtual VFIO lab needs root (it boots a VM with the machine's root filesystem)"
            case let .machineDied(console, tail):
                "the virtual VFIO host's QEMU exited while booting; its console (\(console)) ends with:\n\(tail)"
            case let .machineFailed(message, console):
                "the virtual VFIO host could not set up: \(message) (console: \(console))"
            case let .timeout(what, console):
                "the virtual VFIO host did not \(what) in time; see \(console)"
            }
        }
    }

    // MARK: up / down / status

    /// Boots L1 and its daemons and writes the lab file; does nothing when they already answer
    /// (an L1 that is up keeps the kernel it has). An L1 that does not come up is stopped, its
    /// console kept in the lab folder. `libvirt` is a Debian libvirt package version the hosts run
    /// instead of this machine's own (`VirtualHostLibvirtBuilder.machineOwn` keeps the machine's).
    /// Returns the lab file's path.
    @discardableResult
    public func up(kernel packageVersion: String = VirtualHostKernelBuilder.defaultPackageVersion,
                   libvirt libvirtVersion: String = VirtualHostLibvirtBuilder.defaultPackageVersion) async throws -> String {
        guard getuid() == 0 else { throw LabError.notRoot }
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let lock = try FileLock(path: "\(root)/lab.lock")
        defer { lock.unlock() }
        if await isUp() { return labFilePath }
        await stopMachine()
        let kernel = try VirtualHostKernelBuilder(logger: logger).build(packageVersion: packageVersion)
        let libvirt = try VirtualHostLibvirtBuilder(images: GuestImageBuilder(logger: logger)).build(packageVersion: libvirtVersion)
        try prepareFolders(kernel: kernel, libvirt: libvirt)
        let started = ContinuousClock.now
        let pid = try startMachine(kernel: kernel)
        do {
            try await waitUntilReady(pid: pid)
        } catch {
            await stopMachine()
            throw error
        }
        try writeLabFile()
        logger.info("virtual VFIO hosts up in \(started.duration(to: .now)) (L1 pid \(pid), kernel \(kernel.release), libvirt \(libvirt?.packageVersion ?? "of this machine")): \(labFilePath)")
        return labFilePath
    }

    /// Stops L1 (and with it every daemon, guest and mdev in it) and removes the lab folder.
    public func down() async throws {
        guard getuid() == 0 else { throw LabError.notRoot }
        guard FileManager.default.fileExists(atPath: root) else { return }
        let lock = try FileLock(path: "\(root)/lab.lock")
        defer { lock.unlock() }
        await stopMachine()
        try? FileManager.default.removeItem(atPath: root)
    }

    public struct Status: Sendable, Codable {
        public let root: String
        public let machinePid: Int32?
        public let hosts: [HostStatus]
        public var isUp: Bool { machinePid != nil && hosts.allSatisfy(\.daemonRunning) }
    }

    public struct HostStatus: Sendable, Codable {
        public let name: String
        public let controlURI: String
        public let daemonRunning: Bool
        public let domains: [String]
    }

    public func status() async -> Status {
        let pid = runningMachinePid()
        var hosts: [HostStatus] = []
        for h in Self.hostSpecs {
            var domains: [String] = []
            var running = false
            if pid != nil, let conn = try? await Connection.open(uri: Self.controlURI(h)) {
                running = true
                domains = domainSummaries(conn)
            }
            hosts.append(HostStatus(name: h.name, controlURI: Self.controlURI(h), daemonRunning: running, domains: domains))
        }
        return Status(root: root, machinePid: pid, hosts: hosts)
    }

    /// L1 runs, its lab file is written and both daemons answer.
    public func isUp() async -> Bool {
        guard runningMachinePid() != nil, FileManager.default.fileExists(atPath: labFilePath) else { return false }
        for h in Self.hostSpecs {
            guard let c = try? await Connection.open(uri: Self.controlURI(h)), c.isAlive else { return false }
        }
        return true
    }

    /// L1's QEMU, if it runs (its pid file, checked against its command line).
    func runningMachinePid() -> pid_t? {
        guard let pid = ProcessTable.readPidFile(pidFile), ProcessTable.isRunning(pid),
              ProcessTable.commandLine(pid).contains(machineDirectory) else { return nil }
        return pid
    }

    func stopMachine() async {
        if let pid = runningMachinePid() {
            logger.info("stopping the virtual VFIO host (L1 pid \(pid))")
            await ProcessTable.terminate(pid, grace: .seconds(10))
        }
        // An L1 whose pid file is gone still names the lab folder on its command line.
        for pid in ProcessTable.pids(commandLineContaining: "miglab.dir=\(root) ") {
            await ProcessTable.terminate(pid, grace: .seconds(5))
        }
    }

    /// Lines of L1's kernel that mean L1 itself is broken (a crash, memory corruption, a CPU
    /// stuck for 20 s): whatever ran on it then is not evidence about the device under test.
    static let kernelTroubleMarkers = ["Kernel panic", "BUG:", "Oops:", "general protection fault", "corrupted stack",
                                       "rcu_preempt detected stalls", "rcu_sched detected stalls", "watchdog: BUG: soft lockup"]

    /// The size of L1's console now, to scan only what comes after.
    public func consoleSize() -> UInt64 {
        ((try? FileManager.default.attributesOfItem(atPath: consoleLog))?[.size] as? NSNumber)?.uint64Value ?? 0
    }

    /// The first line of L1's console after `offset` that says L1's kernel is in trouble.
    public func kernelTrouble(after offset: UInt64 = 0) -> [String] {
        guard let handle = FileHandle(forReadingAtPath: consoleLog) else { return [] }
        defer { try? handle.close() }
        try? handle.seek(toOffset: offset)
        let text = String(decoding: (try? handle.readToEnd()) ?? Data(), as: UTF8.self)
        // The serial console ends lines with CR LF, one Character in Swift: split on either.
        let line = text.split(whereSeparator: \.isNewline).first { l in Self.kernelTroubleMarkers.contains { l.contains($0) } }
        return line.map { [$0.trimmingCharacters(in: .whitespacesAndNewlines)] } ?? []
    }

    /// Copies L1's console, its set-up log and each daemon's logs into `directory`, for a run's
    /// artifacts (the lab folder goes with `down`).
    public func copyLogs(to directory: String) {
        let fm = FileManager.default
        try? fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var files = [(consoleLog, "l1-console.log"), ("\(machineDirectory)/stage2.log", "l1-stage2.log"), ("\(machineDirectory)/qemu.log", "l1-qemu.log")]
        for h in Self.hostSpecs {
            for name in ["libvirtd.log", "supervisor.log"] {
                files.append(("\(hostDirectory(h))/log/\(name)", "\(h.name)-\(name)"))
            }
        }
        for (from, to) in files where fm.fileExists(atPath: from) {
            try? fm.removeItem(atPath: "\(directory)/\(to)")
            try? fm.copyItem(atPath: from, toPath: "\(directory)/\(to)")
        }
    }

    /// Host-side actions on the virtual hosts, by host name (run inside L1 through its request
    /// folder).
    public func hostActions() -> [String: any HostActions] {
        let shell = VirtualHostShell(requests: "\(machineDirectory)/requests")
        return Dictionary(uniqueKeysWithValues: Self.hostSpecs.map {
            ($0.name, VirtualHostActions(host: $0.name, stateDirectory: "\(Self.stateDirectoryInL1)/\($0.name)", shell: shell,
                                         stage: { name in try self.stageMiglab(as: name) }) as any HostActions)
        })
    }

    // MARK: pieces

    func prepareFolders(kernel: VirtualHostKernel, libvirt: VirtualHostLibvirt?) throws {
        let fm = FileManager.default
        for sub in ["l1", "hosts"] {
            try? fm.removeItem(atPath: "\(root)/\(sub)")
            try fm.createDirectory(atPath: "\(root)/\(sub)", withIntermediateDirectories: true)
        }
        try? fm.removeItem(atPath: labFilePath)
        for h in Self.hostSpecs {
            try LibvirtDaemonConfig(label: "virtual VFIO host \(h.name)", directory: "\(Self.stateDirectoryInL1)/\(h.name)",
                                    listenAddress: "0.0.0.0", tcpPort: h.port, hostUUID: h.uuid,
                                    migrationAddress: Self.addressInL1, migrationPorts: h.migrationPorts)
                .write(into: hostDirectory(h))
        }
        try labResource("VirtualHost", "l1-stage2").write(to: URL(fileURLWithPath: "\(machineDirectory)/l1-stage2"))
        let env: [(String, String)] = [
            ("L1_HOSTNAME", "miglab-vfio"),
            ("L1_KERNEL_ROOT", kernel.root),
            ("L1_MODULES", Self.modules.joined(separator: " ")),
            ("L1_MTTY", kernel.mttyModule),
            ("L1_HOSTS", Self.hostSpecs.map(\.name).joined(separator: " ")),
            ("L1_STATE", Self.stateDirectoryInL1),
            ("L1_MIGLAB", try stageMiglab(as: "miglab")),
            ("L1_LIBVIRT_ROOT", libvirt?.root ?? ""),
        ]
        try env.map { "\($0.0)=\(Command.shellQuoted($0.1))" }.joined(separator: "\n").appending("\n")
            .write(toFile: "\(machineDirectory)/l1.env", atomically: true, encoding: .utf8)
    }

    /// A copy of this miglab executable in L1's folder, for L1 to run. L1 sees this machine's
    /// root through a 9p mount with `cache=loose`, which keeps pages of a file that changed
    /// after L1 read it: a miglab rebuilt while L1 runs crashed there (a torn binary). The lab
    /// folder is mounted uncached, and each copy is a new file.
    func stageMiglab(as name: String) throws -> String {
        let copy = "\(machineDirectory)/\(name)"
        try? FileManager.default.removeItem(atPath: copy)
        try FileManager.default.copyItem(atPath: try Command.miglabExecutable(), toPath: copy)
        return copy
    }

    /// Starts L1's QEMU in its own session (a Ctrl-C of the runner must not stop the lab).
    var kernelReleaseFile: String { "\(machineDirectory)/kernel.release" }

    /// `uname -r` of the running L1 (every virtual host runs in it).
    public func kernelRelease() -> String? {
        (try? String(contentsOfFile: kernelReleaseFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func startMachine(kernel: VirtualHostKernel) throws -> pid_t {
        let forwards = Self.hostSpecs.map { "hostfwd=tcp:127.0.0.1:\($0.port)-:\($0.port)" }.joined(separator: ",")
        let argv = [qemuBinary, "-name", "miglab-vfio-l1",
                    // -cpu max offers SVM with nested paging, so L1's KVM runs L2 (threads and vCPUs: see above).
                    "-accel", "tcg,thread=\(tcgThreads)", "-M", "q35", "-cpu", "max", "-smp", vcpus, "-m", "\(memoryMiB)",
                    "-nodefaults", "-display", "none", "-no-reboot",
                    "-kernel", kernel.kernel, "-initrd", kernel.initramfs,
                    "-append", "console=ttyS0 panic=-1 quiet miglab.dir=\(root) ",
                    "-serial", "file:\(consoleLog)",
                    "-fsdev", "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap",
                    "-device", "virtio-9p-pci,fsdev=root,mount_tag=root",
                    "-fsdev", "local,id=miglab,path=\(root),security_model=none,multidevs=remap",
                    "-device", "virtio-9p-pci,fsdev=miglab,mount_tag=miglab",
                    "-netdev", "user,id=net0,\(forwards)", "-device", "virtio-net-pci,netdev=net0",
                    "-pidfile", pidFile]
        _ = FileManager.default.createFile(atPath: consoleLog, contents: nil)
        // For the results: the hosts' kernel (libvirt does not report it), kept while L1 runs.
        try? "\(kernel.release)\n".write(toFile: kernelReleaseFile, atomically: true, encoding: .utf8)
        let pid = try Command.spawnDetached(argv, logPath: "\(machineDirectory)/qemu.log")
        logger.info("virtual VFIO host: L1 booting (pid \(pid), kernel \(kernel.release), \(memoryMiB) MiB)")
        return pid
    }

    /// Waits for L1's ready marker on its console, then for every daemon to answer.
    func waitUntilReady(pid: pid_t, timeout: Duration = .seconds(240)) async throws {
        let deadline = ContinuousClock.now + timeout
        while true {
            let console = (try? String(contentsOfFile: consoleLog, encoding: .utf8)) ?? ""
            if let line = console.split(separator: "\n").first(where: { $0.contains("MIGLAB-L1-ERROR") }) {
                throw LabError.machineFailed(message: String(line.drop { $0 != " " }.dropFirst()), console: consoleLog)
            }
            if console.contains("MIGLAB-L1-READY") { break }
            guard ProcessTable.isRunning(pid) else {
                let log = (try? String(contentsOfFile: "\(machineDirectory)/qemu.log", encoding: .utf8)) ?? ""
                throw LabError.machineDied(console: consoleLog, tail: (console + log).split(separator: "\n").suffix(15).joined(separator: "\n"))
            }
            guard ContinuousClock.now < deadline else { throw LabError.timeout(what: "boot", console: consoleLog) }
            try await Task.sleep(for: .milliseconds(200))
        }
        for h in Self.hostSpecs {
            let log = "\(hostDirectory(h))/log"
            while true {
                if let c = try? await Connection.open(uri: Self.controlURI(h)), c.isAlive, (try? c.allDomains()) != nil { break }
                guard ProcessTable.isRunning(pid) else { throw LabError.machineDied(console: consoleLog, tail: "") }
                // The supervisor restarts a daemon that exits; one that keeps exiting will not come up.
                let supervisor = (try? String(contentsOfFile: "\(log)/supervisor.log", encoding: .utf8)) ?? ""
                if supervisor.contains("restart 2\n") {
                    let errors = ((try? String(contentsOfFile: "\(log)/libvirtd.log", encoding: .utf8)) ?? "")
                        .split(separator: "\n").filter { $0.contains(" error : ") }
                    throw LabError.machineFailed(message: "libvirtd of host \(h.name) keeps exiting: \(errors.last.map(String.init) ?? "see \(log)")",
                                                 console: consoleLog)
                }
                guard ContinuousClock.now < deadline else {
                    throw LabError.timeout(what: "start libvirtd of host \(h.name) (\(log))", console: consoleLog)
                }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    /// The lab file of the virtual hosts, as a hardware lab would have it.
    func writeLabFile() throws {
        var text = """
        # Written by `miglab lab up --vfio`: the virtual VFIO hosts (L1 VM, \(root)).
        # Use it like any lab file: miglab run --lab \(labFilePath) scenarios/vfio/
        version: 1
        locks: \(root)/locks
        hosts:

        """
        for h in Self.hostSpecs {
            let uri = Self.controlURI(h)
            text += """
              \(h.name):
                uri: \(uri)
                peer_uri: \(uri)
                migration_address: \(Self.addressInL1)
                accelerator: kvm
                image_dir: /var/lib/libvirt/images/miglab
                log_dir: \(hostDirectory(h))/log
                mdev_types:

            """
            for pool in Self.mdevPools {
                let props = Self.mttyQEMUProperties.map { "\($0.name): \"\($0.value)\"" }.joined(separator: ", ")
                text += "      - {type: \(pool.type), parent: \(Self.mttyParent), instances: \(pool.instances), qemu_properties: {\(props)}}\n"
            }
        }
        try text.write(toFile: labFilePath, atomically: true, encoding: .utf8)
    }
}

/// Runs a shell script inside L1: written into its request folder (shared over 9p), picked up
/// by l1-stage2 within 0.1 s; waits for its exit status.
struct VirtualHostShell: Sendable {
    let requests: String

    /// `giveUp`, asked about once a second, ends the wait early (L1's kernel crashed).
    func run(_ script: String, timeout: Duration = .seconds(20), giveUp: (() -> String?)? = nil) throws -> CommandResult {
        let name = "\(requests)/\(UUID().uuidString.lowercased())"
        let fm = FileManager.default
        try script.write(toFile: name + ".tmp", atomically: false, encoding: .utf8)
        try fm.moveItem(atPath: name + ".tmp", toPath: name + ".sh")
        defer { for ext in [".sh", ".run", ".out", ".rc"] { try? fm.removeItem(atPath: name + ext) } }
        let deadline = ContinuousClock.now + timeout
        var polls = 0
        while ContinuousClock.now < deadline {
            polls += 1
            if polls % 50 == 0, let why = giveUp?() {
                throw CommandError(command: ["virtual host", script], status: -1, stderr: "given up: \(why)")
            }
            if let rc = try? String(contentsOfFile: name + ".rc", encoding: .utf8) {
                let out = (try? String(contentsOfFile: name + ".out", encoding: .utf8)) ?? ""
                return CommandResult(status: Int32(rc.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1, stdout: out, stderr: out)
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        throw CommandError(command: ["virtual host", script], status: -1, stderr: "L1 did not run it within \(timeout) (is it up?)")
    }
}

/// Fault actions on a virtual VFIO host: its processes inside L1, by the pid files its daemon
/// keeps in its own state folder. The two hosts share L1's network, so there is no link to cut.
struct VirtualHostActions: HostActions {
    let host: String
    /// The daemon's folder inside L1 (its /run/libvirt is `run/` there).
    let stateDirectory: String
    let shell: VirtualHostShell
    /// Copies this miglab into the lab folder under a name; returns its path (the same in L1).
    let stage: @Sendable (String) throws -> String

    func kill(pidFile: String, what: String) throws -> Int32 {
        let script = "p=$(cat \(Command.shellQuoted(pidFile)) 2>/dev/null) && [ -n \"$p\" ] && kill -0 \"$p\" || { echo 'no running \(what) on host \(host)'; exit 3; }; kill -9 \"$p\" && echo \"$p\""
        let r = try shell.run(script)
        guard r.status == 0, let pid = Int32(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw CommandError(command: ["kill", what], status: r.status, stderr: r.stdout)
        }
        return pid
    }

    func killQEMU(domain: String) throws -> Int32 {
        try kill(pidFile: "\(stateDirectory)/run/qemu/\(domain).pid", what: "QEMU for \(domain)")
    }

    func killLibvirtd() throws -> Int32 {
        try kill(pidFile: "\(stateDirectory)/run/libvirtd.pid", what: "libvirtd")
    }

    var offersLinkControl: Bool { false }

    func cutLink(lossOnly: Bool) throws {
        throw CommandError(command: ["cut link"], status: -1, stderr: "the virtual VFIO hosts share one network inside L1: there is no link to cut")
    }

    func restoreLink(lossOnly: Bool) throws {
        try cutLink(lossOnly: lossOnly)
    }

    var networkNamespacePath: String? { nil }
    /// L1's second address (l1-stage2 adds it): a destination QEMU listens there when a stream
    /// proxy in L1 takes the migration address.
    var secondaryAddress: String? { VirtualVFIOLab.secondaryAddressInL1 }

    var runsMiglab: Bool { true }

    /// mtty's `report_reset` switch (VirtualHostKernelBuilder.mttyResetSwitch), read when QEMU
    /// opens the device. One kernel holds both hosts, so the switch is L1's.
    func passGuestResetsToDevices(_ on: Bool) throws {
        let r = try shell.run("echo \(on ? "Y" : "N") > /sys/module/mtty/parameters/report_reset && cat /sys/module/mtty/parameters/report_reset")
        guard r.status == 0, r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == (on ? "Y" : "N") else {
            throw CommandError(command: ["mtty report_reset", on ? "Y" : "N"], status: r.status,
                               stderr: "host \(host): mtty has no reset switch (an L1 brought up by an older miglab? `miglab lab down` then up): \(r.stdout)")
        }
    }

    /// Runs a staged copy of this miglab in L1, in the background, its output in the lab folder.
    func startMiglab(_ arguments: [String]) throws -> any HostProcess {
        let name = "miglab-\(arguments.first ?? "tool")-\(UUID().uuidString.prefix(8).lowercased())"
        let executable = try stage(name)
        let output = executable + ".out"
        let command = ([executable] + arguments).map(Command.shellQuoted).joined(separator: " ")
        let r = try shell.run("setsid \(command) > \(Command.shellQuoted(output)) 2>&1 < /dev/null & echo $!")
        guard r.status == 0, let pid = Int32(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            try? FileManager.default.removeItem(atPath: executable)
            throw CommandError(command: ["miglab"] + arguments, status: r.status, stderr: "could not start it in L1: \(r.stdout)")
        }
        return VirtualHostProcess(pid: pid, executable: executable, output: output, shell: shell)
    }
}

/// A miglab process inside L1, by its pid there.
struct VirtualHostProcess: HostProcess {
    let pid: Int32
    let executable: String
    let output: String
    let shell: VirtualHostShell

    func stop(grace: Duration) -> String {
        let tenths = max(1, Int(grace.components.seconds * 10))
        _ = try? shell.run("""
            kill -TERM \(pid) 2>/dev/null || exit 0
            for i in $(seq \(tenths)); do kill -0 \(pid) 2>/dev/null || exit 0; sleep 0.1; done
            kill -KILL \(pid)
            """, timeout: grace + .seconds(20))
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        for f in [executable, output] { try? FileManager.default.removeItem(atPath: f) }
        return text
    }
}
