import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Libvirt
import Logging
import PCI
import Scenario

/// A property of QEMU's vfio-pci device that a passthrough device needs and libvirt has no
/// element for (`x-device-dirty-page-tracking`, `enable-migration`), set with libvirt's
/// `<qemu:override><qemu:device alias=...><qemu:frontend><qemu:property .../>`.
public struct QEMUDeviceProperty: Sendable, Equatable, Hashable {
    public var name: String
    public var value: String
    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// A passthrough device of a guest: libvirt's `<hostdev mode='subsystem'>`.
public enum Hostdev: Sendable, Equatable {
    case pci(PCIHostdev)
    case mdev(MdevHostdev)

    /// A PCI function assigned through vfio-pci or a vfio-pci variant driver:
    /// ```xml
    /// <hostdev mode='subsystem' type='pci' managed='yes'>
    ///   <driver name='vfio' model='mlx5_vfio_pci'/>
    ///   <source><address domain='0x0000' bus='0x3b' slot='0x00' function='0x2'/></source>
    ///   <alias name='ua-nic-0'/>
    /// </hostdev>
    /// ```
    public struct PCIHostdev: Sendable, Equatable {
        public var address: PCIAddress
        /// libvirt binds the vfio driver at start and gives the device back at the end; with
        /// false the device must already be bound (the runner detaches it, see `PassthroughSession`).
        public var managed: Bool
        /// The vfio driver: `vfio-pci`, or a variant driver (`mlx5_vfio_pci`) that libvirt names in
        /// `<driver model=...>` and that makes the device migratable.
        public var driver: String
        /// A user alias (libvirt wants the `ua-` prefix), so the device is found by name in the
        /// live XML.
        public var alias: String?
        /// Set through `<qemu:override>` on `alias`.
        public var qemuProperties: [QEMUDeviceProperty]

        public init(address: PCIAddress, managed: Bool = true, driver: String = "vfio-pci", alias: String? = nil,
                    qemuProperties: [QEMUDeviceProperty] = []) {
            self.address = address
            self.managed = managed
            self.driver = driver
            self.alias = alias
            self.qemuProperties = qemuProperties
        }
    }

    /// A mediated device, created beforehand through the node-device API:
    /// ```xml
    /// <hostdev mode='subsystem' type='mdev' model='vfio-pci'>
    ///   <source><address uuid='...'/></source>
    /// </hostdev>
    /// ```
    public struct MdevHostdev: Sendable, Equatable {
        public var uuid: UUID
        /// The device API the mdev offers the guest (`vfio-pci`, `vfio-ccw`, `vfio-ap`).
        public var model: String
        public var alias: String?
        /// Set through `<qemu:override>` on `alias`.
        public var qemuProperties: [QEMUDeviceProperty]

        public init(uuid: UUID, model: String = "vfio-pci", alias: String? = nil, qemuProperties: [QEMUDeviceProperty] = []) {
            self.uuid = uuid
            self.model = model
            self.alias = alias
            self.qemuProperties = qemuProperties
        }
    }

    /// The user alias and the QEMU properties to set on it.
    public var qemuOverride: (alias: String, properties: [QEMUDeviceProperty])? {
        let (alias, properties): (String?, [QEMUDeviceProperty]) = switch self {
        case let .pci(p): (p.alias, p.qemuProperties)
        case let .mdev(m): (m.alias, m.qemuProperties)
        }
        guard let alias, !properties.isEmpty else { return nil }
        return (alias, properties)
    }

    /// The `<hostdev>` element.
    public func xmlElement() -> XMLElement {
        let hostdev = XMLElement(name: "hostdev")
        hostdev.addAttribute(xmlAttribute("mode", "subsystem"))
        let source = XMLElement(name: "source")
        let address = XMLElement(name: "address")
        let alias: String?
        switch self {
        case let .pci(p):
            hostdev.addAttribute(xmlAttribute("type", "pci"))
            hostdev.addAttribute(xmlAttribute("managed", p.managed ? "yes" : "no"))
            let driver = XMLElement(name: "driver")
            driver.addAttribute(xmlAttribute("name", "vfio"))
            // Plain vfio-pci is libvirt's default; a variant driver must be named (libvirt 10.0+).
            if p.driver != "vfio-pci" { driver.addAttribute(xmlAttribute("model", p.driver)) }
            hostdev.addChild(driver)
            address.addAttribute(xmlAttribute("domain", "0x" + hexDigits(p.address.domain, width: 4)))
            address.addAttribute(xmlAttribute("bus", "0x" + hexDigits(p.address.bus, width: 2)))
            address.addAttribute(xmlAttribute("slot", "0x" + hexDigits(p.address.device, width: 2)))
            address.addAttribute(xmlAttribute("function", "0x" + hexDigits(p.address.function, width: 1)))
            alias = p.alias
        case let .mdev(m):
            hostdev.addAttribute(xmlAttribute("type", "mdev"))
            hostdev.addAttribute(xmlAttribute("model", m.model))
            address.addAttribute(xmlAttribute("uuid", m.uuid.uuidString.lowercased()))
            alias = m.alias
        }
        source.addChild(address)
        hostdev.addChild(source)
        if let alias {
            let a = XMLElement(name: "alias")
            a.addAttribute(xmlAttribute("name", alias))
            hostdev.addChild(a)
        }
        return hostdev
    }
}

func xmlAttribute(_ name: String, _ value: String) -> XMLNode {
    XMLNode.attribute(withName: name, stringValue: value) as! XMLNode
}

func hexDigits(_ value: some BinaryInteger, width: Int) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: max(0, width - digits.count)) + digits
}

/// libvirt's node-device XML for a transient mediated device (what `virNodeDeviceCreateXML`
/// takes): parent, type and the UUID the domain XML refers to.
public func mdevNodeDeviceXML(parent: String, type: String, uuid: UUID) -> String {
    let device = XMLElement(name: "device")
    device.addChild(XMLElement(name: "parent", stringValue: parent))
    let capability = XMLElement(name: "capability")
    capability.addAttribute(xmlAttribute("type", "mdev"))
    let typeElement = XMLElement(name: "type")
    typeElement.addAttribute(xmlAttribute("id", type))
    capability.addChild(typeElement)
    capability.addChild(XMLElement(name: "uuid", stringValue: uuid.uuidString.lowercased()))
    device.addChild(capability)
    return XMLDocument(rootElement: device).xmlString(options: [.nodePrettyPrint])
}

// MARK: - Host-side preparation

/// What the runner changes on a host for passthrough, behind a protocol so that the ordering
/// and the restore-after-failure rules are tested without hardware.
public protocol PassthroughHostControl: Sendable {
    /// Binds `address` to `driver` (`vfio-pci` or a variant driver), unbinding its host driver.
    func detach(_ address: PCIAddress, toDriver driver: String) async throws
    /// Gives `address` back to its host driver.
    func reattach(_ address: PCIAddress) async throws
    /// The driver bound now; nil when unbound.
    func boundDriver(_ address: PCIAddress) throws -> String?
    /// Creates a transient mediated device.
    func createMdev(parent: String, type: String, uuid: UUID) async throws
    /// Removes it.
    func destroyMdev(uuid: UUID) async throws
    /// Resets the function on the host (while a guest may be using it).
    func reset(_ address: PCIAddress, method: HostResetMethod) async throws
}

/// `PassthroughHostControl` through libvirt's node-device API (works for remote hosts too);
/// the sysfs FLR, which libvirt has no call for, through `sysfs`.
public struct LibvirtPassthroughControl: PassthroughHostControl {
    public let connection: Connection
    public let sysfs: SysfsFunctionReset?
    public init(connection: Connection, sysfs: SysfsFunctionReset? = nil) {
        self.connection = connection
        self.sysfs = sysfs
    }

    public func reset(_ address: PCIAddress, method: HostResetMethod) async throws {
        switch method {
        case .nodeDevice:
            try await device(address).reset()
        case .flr:
            guard let sysfs else {
                throw PassthroughError(message: "host-flr on \(connection.uri) needs the host's sysfs: a local host, or `ssh: user@host` in the lab file")
            }
            try await sysfs.functionLevelReset(address)
        }
    }

    func device(_ address: PCIAddress) throws -> NodeDevice {
        guard let d = try connection.nodeDevice(named: address.nodeDeviceName) else {
            throw PassthroughError(message: "\(connection.uri) has no node device \(address.nodeDeviceName) (\(address)); is the address right, is the device present?")
        }
        return d
    }

    public func detach(_ address: PCIAddress, toDriver driver: String) async throws {
        // libvirt's name for plain vfio-pci is its backend name, `vfio`; variant drivers are
        // named as the kernel names them.
        try await device(address).detach(driverName: driver == "vfio-pci" ? "vfio" : driver)
    }

    public func reattach(_ address: PCIAddress) async throws {
        try await device(address).reattach()
    }

    public func boundDriver(_ address: PCIAddress) throws -> String? {
        try NodeDeviceXML.pciDevice(from: try device(address).xml())?.driver
    }

    public func createMdev(parent: String, type: String, uuid: UUID) async throws {
        _ = try await connection.createNodeDevice(xml: mdevNodeDeviceXML(parent: parent, type: type, uuid: uuid))
    }

    public func destroyMdev(uuid: UUID) async throws {
        guard let d = try connection.mediatedDevice(uuid: uuid) else { return }
        try await d.destroy()
    }
}

/// A function-level reset through sysfs: `reset_method` set to `flr`, `1` written to `reset`,
/// then `reset_method` put back; one shell script, run with sh on the local machine (or a fake
/// sysfs tree in tests) and over ssh on a remote host, since libvirt has no call for it.
public struct SysfsFunctionReset: Sendable {
    public enum Access: Sendable, Equatable {
        /// A sysfs mount readable here (`/sys`, or a test's tree).
        case local(root: String)
        /// A remote host, reached with ssh in batch mode.
        case ssh(SSHClient)
    }
    public let access: Access
    public init(access: Access) { self.access = access }

    /// How a lab-file host's sysfs is reached, when it can be.
    public init?(host: LabFile.Host) {
        if host.isLocal || host.sysfsRoot != nil {
            self.init(access: .local(root: host.sysfsRoot ?? "/sys"))
        } else if let target = host.sshTarget {
            self.init(access: .ssh(SSHClient(target: target, configFile: host.sshConfig)))
        } else {
            return nil
        }
    }

    public func functionLevelReset(_ address: PCIAddress) async throws {
        let argv: [String]
        switch access {
        case let .local(root): argv = ["/bin/sh", "-c", Self.script(address, sysfsRoot: root)]
        case let .ssh(client): argv = client.argv(Self.script(address, sysfsRoot: "/sys"))
        }
        let result = try await onBlockingThread("sysfs FLR") { try Command.run(argv, check: false) }
        guard result.status == 0 else {
            let why = result.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
            throw PassthroughError(message: "host FLR of \(address) failed: \(why.isEmpty ? "exit status \(result.status)" : why)")
        }
    }

    /// The reset as one shell script, the same on the local machine and over ssh: select FLR
    /// in `reset_method`, write `reset`, put the method back. Kernels before 5.15 have no
    /// `reset_method`; their `reset` tries FLR first. The address is hex digits and separators
    /// only (PCIAddress parses nothing else); the root is quoted.
    static func script(_ address: PCIAddress, sysfsRoot: String) -> String {
        let d = Command.shellQuoted("\(sysfsRoot)/bus/pci/devices/\(address)")
        return "d=\(d); [ -d \"$d\" ] || { echo '\(address): no such device' >&2; exit 2; }; "
            + "[ -e \"$d/reset\" ] || { echo '\(address) has no reset file: the kernel knows no way to reset this function' >&2; exit 2; }; "
            + "[ -e \"$d/reset_method\" ] || { echo 1 > \"$d/reset\"; exit $?; }; "
            + "old=$(cat \"$d/reset_method\"); "
            + "echo flr > \"$d/reset_method\" || { echo '\(address) does not offer FLR; use host-device-reset' >&2; exit 3; }; "
            + "echo 1 > \"$d/reset\"; rc=$?; echo \"${old:-default}\" > \"$d/reset_method\"; exit $rc"
    }
}

public struct PassthroughError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

/// The host-side state of a run's passthrough devices: locks held, devices detached (managed=no),
/// mdevs created. `prepare` refuses anything outside the pools before it changes anything, and
/// undoes what it did when a later step fails; `finish` restores every device's original driver
/// and removes the mdevs, also after a failed run, and only then releases the locks.
public final class PassthroughSession: Sendable {
    /// One change and how to undo it.
    struct Change: Sendable {
        var host: String
        var what: String
        var undo: @Sendable () async throws -> Void
    }

    public let plan: DevicePlan
    private let changes: [Change]
    private let locks: DeviceLockSet
    private let controls: [String: any PassthroughHostControl]
    private let logger: Logger

    private init(plan: DevicePlan, changes: [Change], locks: DeviceLockSet, controls: [String: any PassthroughHostControl], logger: Logger) {
        self.plan = plan
        self.changes = changes
        self.locks = locks
        self.controls = controls
        self.logger = logger
    }

    /// Resets every PCI function of requirement `requirement` on `host`, and nothing else: only
    /// the functions this run was given from the pools (checked and locked by `prepare`) are
    /// ever reset. Returns the addresses reset.
    public func reset(requirement: String, on host: String, method: HostResetMethod) async throws -> [PCIAddress] {
        let functions = plan.devices(on: host).filter { $0.requirement == requirement }.compactMap { d -> PCIAddress? in
            if case let .pci(f) = d.resource { f.address } else { nil }
        }
        guard !functions.isEmpty else {
            throw PassthroughError(message: "refused: `\(requirement)` has no PCI function of the run's pools on host `\(host)`; a host-side reset only touches the devices the lab file gave this run")
        }
        guard let control = controls[host] else { throw PassthroughError(message: "no control for host `\(host)`") }
        for address in functions {
            try await control.reset(address, method: method)
            logger.info("passthrough: \(method.kind) of \(address) on \(host)")
        }
        return functions
    }

    /// Removes and recreates every mdev of this run on `host`, each with its UUID and type (so
    /// the plan, the locks and the guest definitions stay true), and returns what it recreated.
    /// For a destination after a failed migration: the device state of a refused resume must
    /// not reach the next user.
    public func recreateMdevs(on host: String) async throws -> [String] {
        let mdevs = plan.devices(on: host).compactMap { d -> DevicePlan.Mdev? in
            if case let .mdev(m) = d.resource { m } else { nil }
        }
        guard !mdevs.isEmpty else { return [] }
        guard let control = controls[host] else { throw PassthroughError(message: "no control for host `\(host)`") }
        var done: [String] = []
        for m in mdevs {
            try await control.destroyMdev(uuid: m.uuid)
            try await control.createMdev(parent: m.parent, type: m.type, uuid: m.uuid)
            done.append("mdev \(m.uuid.uuidString.lowercased()) (\(m.type))")
            logger.info("passthrough: recreated mdev \(m.uuid) (\(m.type)) on \(host)")
        }
        return done
    }

    /// Lock takeovers (a dead run's lock), for the run's log.
    public var takeovers: [String] { locks.takeovers }

    /// Checks the plan against the pools, takes every lock, then detaches managed=no devices and
    /// creates mdevs, host by host. `controls` maps host names to how to change them.
    public static func prepare(plan: DevicePlan, lab: LabFile, inventories: [String: PCIInventory],
                               controls: [String: any PassthroughHostControl], owner: DeviceLockOwner,
                               logger: Logger = Logger(label: "miglab.passthrough")) async throws -> PassthroughSession {
        // 1. Refuse before anything changes.
        try plan.verifyAllowed(by: lab, inventories: inventories)
        for h in plan.hosts where controls[h.host] == nil {
            throw PassthroughError(message: "no control for host `\(h.host)`")
        }
        // 2. All locks or none.
        let locks = try DeviceLockSet.acquire(plan.lockNames(lab: lab), directory: lab.lockDirectory, owner: owner, logger: logger)
        // 3. Changes, each recorded with its undo as soon as it happened.
        // Each change is written into the device's lock file before it is made: a run that
        // dies keeps its changes on record, and the run that takes the lock over undoes them.
        var changes: [Change] = []
        do {
            for h in plan.hosts {
                let control = controls[h.host]!
                for d in h.devices {
                    let lock = locks.lock(named: DevicePlan.lockName(d, host: h.host, lab: lab))
                    if let left = lock?.takenOverFrom?.leftover {
                        try await undoLeftover(left, of: d, control: control)
                        try lock?.record(nil)
                        logger.warning("passthrough: undid what a dead run left on host \(h.host): \(d.requirement)[\(d.index)] \(left)")
                    }
                    switch d.resource {
                    case let .pci(f) where !f.managed:
                        let original = try control.boundDriver(f.address)
                        if original == f.driver { continue }   // already bound: nothing to do, nothing to undo
                        try lock?.record(.detached(fromDriver: original))
                        try await control.detach(f.address, toDriver: f.driver)
                        changes.append(Change(host: h.host, what: "\(f.address) detached from \(original ?? "no driver") to \(f.driver)") {
                            try await restoreDriver(f.address, original: original, control: control)
                        })
                    case .pci:
                        break   // managed: libvirt binds and restores it with the domain
                    case let .mdev(m):
                        try lock?.record(.mdev(uuid: m.uuid.uuidString.lowercased()))
                        try await control.createMdev(parent: m.parent, type: m.type, uuid: m.uuid)
                        changes.append(Change(host: h.host, what: "mdev \(m.uuid) (\(m.type)) created on \(m.parent)") {
                            try await control.destroyMdev(uuid: m.uuid)
                        })
                    }
                }
            }
        } catch {
            let undoErrors = await undo(changes, logger: logger)
            locks.release()
            if undoErrors.isEmpty { throw error }
            throw PassthroughError(message: "\(error); undoing what was done also failed: \(undoErrors.joined(separator: "; "))")
        }
        return PassthroughSession(plan: plan, changes: changes, locks: locks, controls: controls, logger: logger)
    }

    /// Restores everything `prepare` changed, newest first, going on after errors; releases the
    /// locks last. Returns what could not be restored (empty: all restored). When something
    /// could not be, the lock files keep their records, and the next run undoes it first.
    public func finish() async -> [String] {
        let errors = await Self.undo(changes, logger: logger)
        locks.release(keepRecords: !errors.isEmpty)
        return errors
    }

    private static func undo(_ changes: [Change], logger: Logger) async -> [String] {
        var errors: [String] = []
        for change in changes.reversed() {
            do {
                try await change.undo()
                logger.info("passthrough: undid \(change.what) on \(change.host)")
            } catch {
                let message = "host \(change.host): could not undo \(change.what): \(error)"
                logger.error("\(message)")
                errors.append(message)
            }
        }
        return errors
    }

    /// Undoes a change a dead run recorded in the lock of `d`.
    static func undoLeftover(_ left: DeviceLockOwner.Leftover, of d: DevicePlan.AllocatedDevice,
                             control: any PassthroughHostControl) async throws {
        switch (left, d.resource) {
        case let (.detached(driver), .pci(f)):
            if try control.boundDriver(f.address) != driver {
                try await restoreDriver(f.address, original: driver, control: control)
            }
        case let (.mdev(uuid), _):
            if let id = UUID(uuidString: uuid) { try await control.destroyMdev(uuid: id) }
        case (.detached, .mdev):
            break   // a record that does not fit the device: nothing of ours to undo
        }
    }

    /// Back to the driver bound before the run: a host driver through reattach (the kernel
    /// probes the host driver again), another vfio driver by binding it again.
    static func restoreDriver(_ address: PCIAddress, original: String?, control: any PassthroughHostControl) async throws {
        if let original, PCIDevice.isVFIODriver(original) {
            try await control.detach(address, toDriver: original)
        } else {
            try await control.reattach(address)
        }
        let now = try control.boundDriver(address)
        if let original, now != original {
            throw PassthroughError(message: "\(address) is bound to \(now ?? "no driver") after the restore, not to \(original): bind it by hand (echo \(address) > /sys/bus/pci/drivers/\(original)/bind)")
        }
    }
}
