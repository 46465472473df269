import Foundation
import PCI
import Scenario
import Yams

/// A hardware lab: the libvirt hosts a run may use and, per host, the devices it may hand to
/// guests. Nothing outside a pool is ever touched.
///
/// Format (version 1), YAML:
/// ```yaml
/// version: 1
/// locks: /run/lock/miglab                 # optional: lock directory (default /run/lock/miglab)
/// stream_proxy: {listen: 10.0.0.100}       # optional: an address of this machine the hosts' QEMUs
///                                          # reach; corrupt_stream runs its proxy there
/// hosts:
///   a:                                     # the name scenarios use (boot: a, migrate: {from: a, to: b})
///     uri: qemu+ssh://root@node1/system    # how the runner controls the host
///     peer_uri: qemu+tcp://10.0.0.1/system # how the other host's daemon reaches it (default: uri)
///     migration_address: 10.0.0.1          # where the migration stream goes
///     sysfs_root: /sys                     # optional, local hosts only: read PCI devices from this
///                                          # sysfs (a fake tree in tests) instead of libvirt
///     accelerator: kvm                     # optional: kvm (default) or tcg (QEMU's emulator)
///     emulator: /usr/bin/qemu-system-x86_64  # optional: default, the host libvirt's choice
///     image_dir: /var/lib/libvirt/images/miglab  # optional: the runner uploads the guest image
///                                          # into a libvirt storage pool here (default for
///                                          # remote hosts; local hosts use the runner's files)
///     ssh: root@node1                      # optional: host-side actions over ssh (sysfs FLR, kill-qemu,
///                                          # kill-libvirtd; default: the user and host of a qemu+ssh URI)
///     ssh_config: ./ssh_config             # optional: an ssh_config for these hosts (default: yours)
///     qemu_pid_dir: /run/libvirt/qemu      # optional: where the host's libvirt keeps QEMU pid files
///     daemon_pid_file: /run/libvirtd.pid   # optional: the libvirt daemon's pid file (virtqemud.pid
///                                          # with modular daemons); its service manager restarts it
///     link: {interface: ens1f1, namespace: mig}  # optional: the interface network-partition cuts
///                                          # (never the one ssh uses), in a network namespace
///     log_dir: /mnt/node1-logs             # optional: where the runner reads the host's libvirt
///                                          # logs (libvirtd.log, qemu/), kept with the artifacts
///     pools:                               # devices guests may get; each pool has one selector
///       - {name: nics, addresses: ["0000:3b:00.2", "0000:3b:00.3"]}
///       - {name: vfs, vfs_of: "0000:3b:00.0"}              # the enabled VFs of this PF
///       - {name: mlx, vendor_device: "15b3:101e", driver: mlx5_vfio_pci}
///     mdev_types:                          # mediated devices guests may get
///       - {type: mtty-2, parent: mtty, instances: 2}
///       - {type: mtty-1, parent: mtty, qemu_properties: {enable-migration: "on"}}
///   b: {...}
/// ```
/// A pool's `driver` is the vfio driver its devices are used with (default `vfio-pci`; a variant
/// driver such as `mlx5_vfio_pci` for migratable devices). An mdev type's `parent` is a PCI
/// address or a libvirt node-device name; `instances` (default 1) is how many the lab may create
/// on it at once. `qemu_properties` (pools and mdev types) are properties of QEMU's vfio-pci
/// device that these devices need, set with libvirt's `<qemu:override>` on the hostdev: the
/// kernel's mtty, for one, offers no working dirty-page tracking, so QEMU migrates it only with
/// `x-device-dirty-page-tracking: "off"` and `enable-migration: "on"`. Relative paths (`locks`, `sysfs_root`) are relative to the lab file.
public struct LabFile: Sendable, Equatable {
    public static let formatVersion = 1
    public static let defaultLockDirectory = "/run/lock/miglab"

    /// Sorted by name.
    public var hosts: [Host]
    /// Where the per-device lock files live (see `DeviceLocks`).
    public var lockDirectory: String
    /// The file it was read from, for messages.
    public var file: String
    /// Where the sources' QEMUs reach the machine that runs miglab, for `corrupt_stream`: the
    /// runner's stream proxy listens there and forwards to the destination's
    /// `migration_address`. nil: corrupt_stream is refused on this lab's hosts.
    public var streamProxyAddress: String?

    public init(hosts: [Host], lockDirectory: String = LabFile.defaultLockDirectory, file: String = "<memory>") {
        self.hosts = hosts.sorted { $0.name < $1.name }
        self.lockDirectory = lockDirectory
        self.file = file
    }

    public subscript(host name: String) -> Host? { hosts.first { $0.name == name } }

    /// An IPv4 or IPv6 address in its textual form (`inet_pton`).
    /// The URI schemes of libvirt's QEMU driver, local and remote, and its test driver.
    public static let uriSchemes = ["qemu", "qemu+ssh", "qemu+libssh", "qemu+libssh2", "qemu+tcp", "qemu+tls", "qemu+unix", "qemu+ext", "test"]

    /// A DNS host name (RFC 1123 labels).
    public static func isHostName(_ s: String) -> Bool {
        s.count <= 253 && s.wholeMatch(of: #/([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*/#) != nil
    }

    public static func isIPAddress(_ s: String) -> Bool {
        var v4 = in_addr(), v6 = in6_addr()
        return inet_pton(AF_INET, s, &v4) == 1 || inet_pton(AF_INET6, s, &v6) == 1
    }

    /// What host `name` offers beyond libvirt (nil: the lab has no such host): its own
    /// (`Host.offers`), and the runner's stream proxy when the lab file places it and the host
    /// has a migration address to forward to.
    public func offers(host name: String) -> Set<HostCapability>? {
        guard let h = self[host: name] else { return nil }
        var c = h.offers
        if streamProxyAddress != nil && h.migrationAddress != nil { c.insert(.streamProxy) }
        return c
    }

    /// A host's interface that network-partition cuts (link down, or 100% loss with netem),
    /// optionally inside a network namespace of that host.
    public struct Link: Sendable, Equatable {
        public var interface: String
        public var namespace: String?
        public init(interface: String, namespace: String? = nil) {
            self.interface = interface
            self.namespace = namespace
        }
    }

    public struct Host: Sendable, Equatable {
        public var name: String
        public var uri: String
        public var peerURI: String
        public var migrationAddress: String?
        /// The sysfs mount (`/sys`) to read PCI devices from; nil reads them through libvirt
        /// for remote hosts and from `/sys` for local ones.
        public var sysfsRoot: String?
        public var pools: [Pool]
        public var mdevTypes: [MdevPool]
        /// How guests run: KVM on hardware nodes (VFIO needs it), TCG where KVM cannot run.
        public var accelerator: DomainDefinition.Accelerator
        /// The QEMU binary; nil: the host libvirt's default.
        public var emulator: String?
        /// A folder on the host for the guest image, uploaded through a libvirt storage pool;
        /// nil: the runner's own image files (local hosts only).
        public var imageDirectory: String?
        /// `user@host` for host-side actions libvirt has no API for (sysfs FLR) on a remote host.
        public var sshTarget: String?
        /// An ssh_config file for `sshTarget` (`ssh -F`); nil: the user's own.
        public var sshConfig: String?
        /// Where the host's libvirt keeps its QEMU pid files (`DOMAIN.pid`), and the libvirt
        /// daemon's pid file: how the ssh driver finds the processes it kills.
        public var qemuPidDirectory = "/run/libvirt/qemu"
        public var daemonPidFile = "/run/libvirtd.pid"
        /// The interface `network-partition` cuts on this host.
        public var link: Link?
        /// Where the runner can read this host's libvirt logs (libvirtd.log, qemu/GUEST.log), to
        /// keep them with the run's artifacts; nil: the runner cannot read them.
        public var logDirectory: String?
        public var location: SourceLocation?

        public static let defaultImageDirectory = "/var/lib/libvirt/images/miglab"

        public init(name: String, uri: String, peerURI: String? = nil, migrationAddress: String? = nil, sysfsRoot: String? = nil,
                    pools: [Pool] = [], mdevTypes: [MdevPool] = [], accelerator: DomainDefinition.Accelerator = .kvm,
                    emulator: String? = nil, imageDirectory: String? = nil, sshTarget: String? = nil,
                    logDirectory: String? = nil, location: SourceLocation? = nil) {
            self.logDirectory = logDirectory
            self.name = name
            self.uri = uri
            self.peerURI = peerURI ?? uri
            self.migrationAddress = migrationAddress
            self.sysfsRoot = sysfsRoot
            self.pools = pools
            self.mdevTypes = mdevTypes
            self.accelerator = accelerator
            self.emulator = emulator
            self.location = location
            self.sshTarget = sshTarget
            self.imageDirectory = imageDirectory
            if self.imageDirectory == nil && !isLocal { self.imageDirectory = Self.defaultImageDirectory }
            if self.sshTarget == nil, let c = URLComponents(string: uri), c.scheme?.hasSuffix("+ssh") == true, let h = c.host, !h.isEmpty {
                self.sshTarget = (c.user.map { "\($0)@" } ?? "") + h
            }
        }

        /// The URI names no remote machine (`qemu:///system`, `test:///default`). A loopback
        /// address with a port is a forwarded endpoint (an ssh tunnel, a VM's forwarded port such
        /// as the virtual VFIO lab's), so it is a remote machine: its files are not the runner's.
        public var isLocal: Bool {
            guard let c = URLComponents(string: uri), let host = c.host, !host.isEmpty else { return true }
            return (host == "localhost" || host == "127.0.0.1" || host == "::1") && c.port == nil
        }

        /// Names the machine in lock file names, so that the same PCI address on two machines is
        /// two locks, and the same machine reached through two URIs is one. A forwarded port
        /// counts as a machine of its own (`127.0.0.1:16611`): behind one address, each port may
        /// be another host (the virtual VFIO hosts share one kernel but not their mdev slots).
        public var machineKey: String {
            let c = URLComponents(string: uri)
            var key = isLocal ? "local" : (c?.host ?? uri) + (c?.port.map { ":\($0)" } ?? "")
            // Two fake trees in one test are two machines.
            if let root = sysfsRoot, root != "/sys" { key += "-sysfs\(fnv1a(root))" }
            return key.map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" ? String($0) : "_" }.joined()
        }

        /// The pools `device` belongs to (by address, PF or IDs), in lab-file order.
        public func pools(containing device: PCIDevice) -> [Pool] {
            pools.filter { $0.contains(device) }
        }
    }

    /// A named set of PCI functions of one host that guests may get.
    public struct Pool: Sendable, Equatable {
        public enum Selector: Sendable, Equatable {
            /// Exactly these functions.
            case addresses([PCIAddress])
            /// The virtual functions of this physical function (whatever is enabled at run time).
            case virtualFunctionsOf(PCIAddress)
            /// Every function with these IDs.
            case vendorDevice(PassthroughRequirement.VendorDevice)
        }

        public var name: String
        public var selector: Selector
        /// The vfio driver these devices are used with; nil: `vfio-pci`.
        public var driver: String?
        /// Properties of QEMU's vfio-pci device for these devices (`<qemu:override>`).
        public var qemuProperties: [QEMUDeviceProperty]
        /// What the lab file allows this pool on purpose (`allow: [overlap, pf_with_vfs]`).
        public var allows: Set<Allowance> = []
        public var location: SourceLocation?

        /// Risks a pool takes only when its lab file says so.
        public enum Allowance: String, Sendable, CaseIterable {
            /// Its devices may also be in another pool of the host (that pool must allow it too).
            case overlap
            /// It may hand out a physical function whose VFs are enabled (the VFs go with it).
            case pfWithVFs = "pf_with_vfs"
        }

        public init(name: String, selector: Selector, driver: String? = nil, qemuProperties: [QEMUDeviceProperty] = [],
                    allows: Set<Allowance> = [], location: SourceLocation? = nil) {
            self.name = name
            self.selector = selector
            self.driver = driver
            self.qemuProperties = qemuProperties
            self.allows = allows
            self.location = location
        }

        public func contains(_ device: PCIDevice) -> Bool {
            switch selector {
            case let .addresses(list): list.contains(device.address)
            case let .virtualFunctionsOf(pf): device.physicalFunction == pf
            case let .vendorDevice(ids): device.vendorID.rawValue == ids.vendor && device.deviceID.rawValue == ids.device
            }
        }

        /// What the pool selects, for messages.
        public var selectorDescription: String {
            switch selector {
            case let .addresses(list): "addresses \(list.map(\.description).joined(separator: ", "))"
            case let .virtualFunctionsOf(pf): "VFs of \(pf)"
            case let .vendorDevice(ids): "vendor:device \(ids)"
            }
        }
    }

    /// Mediated devices of one type that guests may get, created on `parent` for a run.
    public struct MdevPool: Sendable, Equatable {
        public var type: String
        /// A PCI address (`0000:3b:00.0`) or a libvirt node-device name (`mtty`, `css_0_0_0014`).
        public var parent: String
        /// How many the lab may create at once.
        public var instances: Int
        /// Properties of QEMU's vfio-pci device for these mdevs (`<qemu:override>`).
        public var qemuProperties: [QEMUDeviceProperty]
        public var location: SourceLocation?

        public init(type: String, parent: String, instances: Int = 1, qemuProperties: [QEMUDeviceProperty] = [],
                    location: SourceLocation? = nil) {
            self.type = type
            self.parent = parent
            self.instances = instances
            self.qemuProperties = qemuProperties
            self.location = location
        }

        /// libvirt's node-device name of the parent.
        public var parentNodeDeviceName: String {
            PCIAddress(parent)?.nodeDeviceName ?? parent
        }
    }
}

/// All problems of one lab file, each at file:line:column.
public struct LabFileErrors: Error, Sendable, CustomStringConvertible {
    public var diagnostics: [Diagnostic]
    public init(diagnostics: [Diagnostic]) { self.diagnostics = diagnostics }
    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}

extension LabFile {
    /// Reads a lab file; every problem is reported with its file:line:column.
    public static func load(path: String) throws(LabFileErrors) -> LabFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw LabFileErrors(diagnostics: [Diagnostic(location: SourceLocation(file: path, line: 0, column: 0),
                                                         message: "cannot read the lab file (does it exist, is it readable?)")])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw LabFileErrors(diagnostics: [Diagnostic(location: SourceLocation(file: path, line: 1, column: 1),
                                                         message: "the lab file is not UTF-8 text")])
        }
        let directory = (path as NSString).deletingLastPathComponent
        return try parse(text, file: path, relativeTo: directory.isEmpty ? "." : directory)
    }

    /// Parses lab-file text; relative paths in it are taken relative to `directory`.
    public static func parse(_ text: String, file: String, relativeTo directory: String? = nil) throws(LabFileErrors) -> LabFile {
        var reader = LabFileReader(file: file, directory: directory)
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw LabFileErrors(diagnostics: [reader.yamlDiagnostic(error, text: text)])
        }
        guard let root else {
            throw LabFileErrors(diagnostics: [Diagnostic(location: SourceLocation(file: file, line: 1, column: 1),
                                                         message: "the lab file is empty; it needs `hosts`")])
        }
        // Aliases of aliases can stand for billions of values; a lab file has a few hundred.
        if expandedNodeCount(root, limit: ScenarioParser.maxNodes) > ScenarioParser.maxNodes {
            throw LabFileErrors(diagnostics: [Diagnostic(location: SourceLocation(file: file, line: 1, column: 1),
                message: "the lab file stands for more than \(ScenarioParser.maxNodes) YAML values once its aliases (`*name`) are expanded; write the hosts out")])
        }
        let lab = reader.labFile(root)
        guard let lab, reader.diagnostics.isEmpty else { throw LabFileErrors(diagnostics: reader.diagnostics) }
        return lab
    }
}

/// Walks a lab file's YAML node tree (Yams' Codable decoder drops source positions).
struct LabFileReader: YAMLNodeReading {
    let file: String
    let directory: String?
    var diagnostics: [Diagnostic] = []

    mutating func path(_ node: Node, key: String) -> String? {
        guard let s = string(node, key: key) else { return nil }
        if s.hasPrefix("/") || directory == nil { return s }
        return (directory! as NSString).appendingPathComponent(s)
    }

    mutating func address(_ node: Node, key: String) -> PCIAddress? {
        guard let s = string(node, key: key) else { return nil }
        guard let a = PCIAddress(s) else {
            error(node, "`\(key)` must be a PCI address like \"0000:3b:00.2\"; found `\(s)`")
            return nil
        }
        return a
    }

    mutating func name(_ node: Node, what: String) -> String? {
        guard let s = string(node, key: what) else { return nil }
        guard s.wholeMatch(of: #/[a-z][a-z0-9_-]{0,31}/#) != nil else {
            error(node, "\(what) `\(s)` must be lower-case letters, digits, - and _ (at most 32, starting with a letter)")
            return nil
        }
        return s
    }

    /// A device or type name for sysfs and libvirt: letters, digits, `_`, `.`, `:` and `-`.
    mutating func name(_ node: Node, key: String, what: String) -> String? {
        guard let s = string(node, key: key) else { return nil }
        guard s.wholeMatch(of: #/[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}/#) != nil else {
            error(node, "`\(key)` must be \(what) (letters, digits, `_`, `.`, `:`, `-`); found `\(Self.visible(s))`")
            return nil
        }
        return s
    }

    // MARK: the format

    mutating func labFile(_ root: Node) -> LabFile? {
        guard let m = mapping(root, context: "the lab file", allowed: ["version", "hosts", "locks", "stream_proxy"], required: ["hosts"]) else { return nil }
        if let v = m["version"], let n = int(v, key: "version", range: 1...1000), n != LabFile.formatVersion {
            error(v, "this miglab reads lab file format version \(LabFile.formatVersion); the file says \(n)")
        }
        let locks = m["locks"].flatMap { path($0, key: "locks") } ?? LabFile.defaultLockDirectory
        var hosts: [LabFile.Host] = []
        if let h = m["hosts"] {
            if let map = h.mapping {
                for (k, v) in map {
                    guard let name = name(k, what: "host name") else { continue }
                    if let host = host(v, name: name, key: k) { hosts.append(host) }
                }
                if map.count == 0 { error(h, "`hosts` is empty; name at least one host (two to migrate)") }
            } else {
                error(h, "`hosts` must be a mapping from host name to host, like `a: {uri: qemu+ssh://node1/system, ...}`; found \(describe(h))")
            }
        }
        // One machine under two names would get the same devices twice and a guest migrated
        // onto itself (at run time libvirt's host UUIDs are compared as well).
        for (i, h) in hosts.enumerated() {
            if let other = hosts[..<i].first(where: { $0.uri == h.uri && !h.uri.hasPrefix("test:") }) {
                diagnostics.append(Diagnostic(location: h.location ?? SourceLocation(file: file, line: 0, column: 0),
                                              message: "hosts `\(other.name)` and `\(h.name)` have the same `uri` (\(h.uri)): a migration needs two machines"))
            }
        }
        var lab = LabFile(hosts: hosts, lockDirectory: locks, file: file)
        // `stream_proxy: {listen: 10.0.0.100}`: an IP address of this machine the sources reach.
        if let p = m["stream_proxy"], let pm = mapping(p, context: "`stream_proxy`", allowed: ["listen"], required: ["listen"]),
           let v = pm["listen"], let s = string(v, key: "listen") {
            if LabFile.isIPAddress(s) {
                lab.streamProxyAddress = s
            } else {
                error(v, "`listen` is an IP address of the machine that runs miglab, reachable from the hosts' QEMUs, like 10.0.0.100; found `\(s)`")
            }
        }
        return lab
    }

    mutating func host(_ node: Node, name: String, key: Node) -> LabFile.Host? {
        guard let m = mapping(node, context: "host `\(name)`", allowed: ["uri", "peer_uri", "migration_address", "sysfs_root", "pools", "mdev_types",
                                                                    "accelerator", "emulator", "image_dir", "ssh", "log_dir",
                                                                    "ssh_config", "qemu_pid_dir", "daemon_pid_file", "link"],
                              required: ["uri"]) else { return nil }
        let accelerator = m["accelerator"].flatMap { v -> DomainDefinition.Accelerator? in
            guard let s = string(v, key: "accelerator") else { return nil }
            switch s {
            case "kvm": return .kvm
            case "tcg": return .tcg
            default:
                error(v, "`accelerator` is `kvm` or `tcg`; found `\(s)`")
                return nil
            }
        }
        let emulator = m["emulator"].flatMap {
            hostPath($0, key: "emulator", what: "the absolute path of the QEMU binary on the host, like /usr/bin/qemu-system-x86_64")
        }
        let imageDirectory = m["image_dir"].flatMap {
            hostPath($0, key: "image_dir", what: "an absolute folder on the host (its libvirt makes it), like \(LabFile.Host.defaultImageDirectory)")
        }
        let logDirectory = m["log_dir"].flatMap {
            hostPath($0, key: "log_dir", what: "an absolute folder on the machine that runs miglab where this host's libvirt logs can be read (libvirtd.log, qemu/GUEST.log), like /mnt/node1-libvirt-logs")
        }
        let ssh = m["ssh"].flatMap { v -> String? in
            guard let s = string(v, key: "ssh") else { return nil }
            // It becomes an ssh argument: no options, no spaces.
            guard s.wholeMatch(of: #/([A-Za-z0-9._-]+@)?[A-Za-z0-9.:_-]+/#) != nil, !s.hasPrefix("-") else {
                error(v, "`ssh` is a target like root@node1; found `\(s)`")
                return nil
            }
            return s
        }
        let sshConfig = m["ssh_config"].flatMap { path($0, key: "ssh_config") }
        let qemuPids = m["qemu_pid_dir"].flatMap {
            hostPath($0, key: "qemu_pid_dir", what: "the absolute folder of the host's QEMU pid files, like /run/libvirt/qemu")
        }
        let daemonPid = m["daemon_pid_file"].flatMap {
            hostPath($0, key: "daemon_pid_file", what: "the absolute path of the libvirt daemon's pid file, like /run/libvirtd.pid")
        }
        let hostLink = m["link"].flatMap { self.link($0) }
        if ssh == nil, let k = ["ssh_config", "qemu_pid_dir", "daemon_pid_file", "link"].first(where: { m[$0] != nil }),
           let uri = m["uri"]?.scalar?.string, !uri.contains("+ssh") {
            error(m[k]!, "`\(k)` is for the ssh driver: give host `\(name)` `ssh: user@host` (or a qemu+ssh URI)")
        }
        let uri = m["uri"].flatMap { uriValue($0, key: "uri") }
        let peer = m["peer_uri"].flatMap { uriValue($0, key: "peer_uri") }
        let migrationAddress = m["migration_address"].flatMap { node -> String? in
            guard let s = string(node, key: "migration_address") else { return nil }
            guard LabFile.isIPAddress(s) || LabFile.isHostName(s) else {
                error(node, "`migration_address` is an IP address or a host name of the host, like 10.0.0.1 or node1.lab; found `\(Self.visible(s))`")
                return nil
            }
            return s
        }
        let sysfs = m["sysfs_root"].flatMap { path($0, key: "sysfs_root") }
        var pools: [LabFile.Pool] = []
        if let p = m["pools"] {
            if case let .sequence(seq) = p {
                for item in seq {
                    guard let pool = pool(item, host: name) else { continue }
                    if pools.contains(where: { $0.name == pool.name }) {
                        error(item, "host `\(name)` has two pools named `\(pool.name)`")
                        continue
                    }
                    pools.append(pool)
                }
            } else {
                error(p, "`pools` must be a list like `[{name: nics, addresses: [\"0000:3b:00.2\"]}]`; found \(describe(p))")
            }
        }
        // The same address listed twice would be handed out twice within one run.
        var listed: [PCIAddress: String] = [:]
        for pool in pools {
            guard case let .addresses(list) = pool.selector else { continue }
            for a in list {
                if let other = listed[a] {
                    diagnostics.append(Diagnostic(location: pool.location ?? location(node),
                                                  message: "\(a) is listed in pools `\(other)` and `\(pool.name)` of host `\(name)`; list each device once"))
                }
                listed[a] = pool.name
            }
        }
        var mdevs: [LabFile.MdevPool] = []
        if let t = m["mdev_types"] {
            if case let .sequence(seq) = t {
                mdevs = seq.compactMap { mdevPool($0) }
            } else {
                error(t, "`mdev_types` must be a list like `[{type: mtty-2, parent: mtty, instances: 2}]`; found \(describe(t))")
            }
        }
        if let sysfs, let uri, !LabFile.Host(name: name, uri: uri).isLocal {
            error(m["sysfs_root"]!, "`sysfs_root` is only for local hosts (its sysfs must be readable here); host `\(name)` is \(uri), whose devices are read through libvirt: remove `sysfs_root` (\(sysfs))")
        }
        guard let uri else { return nil }
        var host = LabFile.Host(name: name, uri: uri, peerURI: peer, migrationAddress: migrationAddress, sysfsRoot: sysfs,
                                pools: pools, mdevTypes: mdevs, accelerator: accelerator ?? .kvm, emulator: emulator,
                                imageDirectory: imageDirectory, sshTarget: ssh, logDirectory: logDirectory, location: location(key))
        host.sshConfig = sshConfig
        if let qemuPids { host.qemuPidDirectory = qemuPids }
        if let daemonPid { host.daemonPidFile = daemonPid }
        host.link = hostLink
        return host
    }

    /// `link: {interface: NAME, namespace: NS}`: names only (they go into ip and tc commands).
    mutating func link(_ node: Node) -> LabFile.Link? {
        guard let m = mapping(node, context: "`link`", allowed: ["interface", "namespace"], required: ["interface"]) else { return nil }
        let interface = m["interface"].flatMap { v -> String? in
            guard let s = string(v, key: "interface") else { return nil }
            guard s.wholeMatch(of: #/[A-Za-z0-9_.:-]{1,15}/#) != nil, !s.hasPrefix("-") else {
                error(v, "`interface` is a network interface name of at most 15 letters, digits, _ . : -, like ens1f1; found `\(s)`")
                return nil
            }
            return s
        }
        let namespace = m["namespace"].flatMap { v -> String? in
            guard let s = string(v, key: "namespace") else { return nil }
            guard s.wholeMatch(of: #/[A-Za-z0-9_.-]{1,64}/#) != nil, !s.hasPrefix("-"), s != ".", s != ".." else {
                error(v, "`namespace` is a network namespace name (letters, digits, _ . -), like mig; found `\(s)`")
                return nil
            }
            return s
        }
        guard let interface, m["namespace"] == nil || namespace != nil else { return nil }
        return LabFile.Link(interface: interface, namespace: namespace)
    }

    /// An absolute path on the host (never relative to the lab file: the host reads it).
    mutating func hostPath(_ node: Node, key: String, what: String) -> String? {
        guard let s = string(node, key: key) else { return nil }
        guard s.hasPrefix("/") else {
            error(node, "`\(key)` is \(what); found `\(s)`")
            return nil
        }
        return s
    }

    mutating func uriValue(_ node: Node, key: String) -> String? {
        guard let s = string(node, key: key) else { return nil }
        guard !s.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value == 0x7F }),
              let c = URLComponents(string: s), let scheme = c.scheme, LabFile.uriSchemes.contains(scheme) else {
            error(node, "`\(key)` must be a libvirt URI of QEMU (\(LabFile.uriSchemes.joined(separator: ", ")) with no spaces or control characters) like qemu+ssh://root@node1/system or qemu:///system; found `\(Self.visible(s))`")
            return nil
        }
        return s
    }

    mutating func pool(_ node: Node, host: String) -> LabFile.Pool? {
        let selectors = ["addresses", "vfs_of", "vendor_device"]
        guard let m = mapping(node, context: "a pool of host `\(host)`", allowed: ["name"] + selectors + ["driver", "qemu_properties", "allow"], required: ["name"]) else { return nil }
        var allows: Set<LabFile.Pool.Allowance> = []
        if let a = m["allow"] {
            if case let .sequence(seq) = a {
                for item in seq { if let v = choice(item, key: "allow", as: LabFile.Pool.Allowance.self) { allows.insert(v) } }
            } else {
                error(a, "`allow` is a list of what the pool may do on purpose: [\(LabFile.Pool.Allowance.allCases.map(\.rawValue).joined(separator: ", "))]; found \(describe(a))")
            }
        }
        let name = m["name"].flatMap { self.name($0, what: "pool name") }
        let given = selectors.filter { m[$0] != nil }
        if given.count != 1 {
            error(node, given.isEmpty
                  ? "a pool needs one selector: `addresses: [...]`, `vfs_of: PF-ADDRESS` or `vendor_device: \"vvvv:dddd\"`"
                  : "a pool has exactly one selector; this one has \(given.map { "`\($0)`" }.joined(separator: " and ")): split it into pools")
        }
        var selector: LabFile.Pool.Selector?
        if let a = m["addresses"] {
            if case let .sequence(seq) = a, !seq.isEmpty {
                let list = seq.compactMap { address($0, key: "addresses[]") }
                if list.count == seq.count { selector = .addresses(list) }
            } else {
                error(a, "`addresses` must be a non-empty list of PCI addresses like [\"0000:3b:00.2\"]; found \(describe(a))")
            }
        }
        if let v = m["vfs_of"], let pf = address(v, key: "vfs_of") { selector = .virtualFunctionsOf(pf) }
        if let v = m["vendor_device"], let s = string(v, key: "vendor_device") {
            if let ids = PassthroughRequirement.VendorDevice(s) { selector = .vendorDevice(ids) } else {
                error(v, "`vendor_device` must be `vendor:device` in hex, like \"15b3:101e\"; found `\(s)`")
            }
        }
        var driver: String?
        if let d = m["driver"], let s = string(d, key: "driver") {
            if PCIDevice.isVFIODriver(s) { driver = s } else {
                error(d, "`driver` is the vfio driver the pool's devices are used with (`vfio-pci` or a variant driver like `mlx5_vfio_pci`); `\(s)` is not one")
            }
        }
        let properties = m["qemu_properties"].map { qemuProperties($0) } ?? []
        guard let name, let selector, given.count == 1 else { return nil }
        return LabFile.Pool(name: name, selector: selector, driver: driver, qemuProperties: properties, allows: allows, location: location(node))
    }

    mutating func mdevPool(_ node: Node) -> LabFile.MdevPool? {
        if case let .scalar(s) = node {
            error(node, "an mdev type needs the device that creates it: `{type: \(s.string), parent: PARENT}` (PARENT: a PCI address or a libvirt node-device name like `mtty`)")
            return nil
        }
        guard let m = mapping(node, context: "an mdev type", allowed: ["type", "parent", "instances", "qemu_properties"], required: ["type", "parent"]) else { return nil }
        // Names only: they become sysfs paths and libvirt node-device names.
        let type = m["type"].flatMap { name($0, key: "type", what: "an mdev type name like mtty-2") }
        let parent = m["parent"].flatMap { name($0, key: "parent", what: "a PCI address like 0000:3b:00.0 or a libvirt node-device name like mtty") }
        let instances = m["instances"].flatMap { int($0, key: "instances", range: 1...256) } ?? 1
        let properties = m["qemu_properties"].map { qemuProperties($0) } ?? []
        guard let type, let parent else { return nil }
        return LabFile.MdevPool(type: type, parent: parent, instances: instances, qemuProperties: properties, location: location(node))
    }

    /// `qemu_properties: {x-device-dirty-page-tracking: "off"}`: QEMU property names (letters,
    /// digits, `-`, `_`, `.`) and string values without control characters.
    mutating func qemuProperties(_ node: Node) -> [QEMUDeviceProperty] {
        guard let pairs = node.mapping else {
            error(node, "`qemu_properties` must be a mapping of QEMU vfio-pci properties like `{enable-migration: \"on\"}`; found \(describe(node))")
            return []
        }
        var out: [QEMUDeviceProperty] = []
        for (k, v) in pairs {
            guard let name = string(k, key: "qemu_properties"), let value = string(v, key: name) else { continue }
            guard !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }) else {
                error(k, "`\(name)` is not a QEMU property name (letters, digits, `-`, `_`, `.`)")
                continue
            }
            guard !value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
                error(v, "the value of `\(name)` holds a control character")
                continue
            }
            out.append(QEMUDeviceProperty(name: name, value: value))
        }
        return out
    }
}

/// A short stable hash (FNV-1a, 32 bits) in hex, for file names.
func fnv1a(_ text: String) -> String { String(fnv1a32(text), radix: 16) }

/// FNV-1a, 32 bits: a stable hash of a name (not for security).
public func fnv1a32(_ text: String) -> UInt32 {
    var h: UInt32 = 0x811c_9dc5
    for b in text.utf8 { h = (h ^ UInt32(b)) &* 0x0100_0193 }
    return h
}
