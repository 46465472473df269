import Foundation
import Libvirt
import PCI
import Scenario

/// The PCI functions of the lab's hosts, as the planner reads them. Tests pass fixed inventories.
public protocol HostInventories: Sendable {
    func inventory(of host: LabFile.Host) throws -> PCIInventory
}

/// Reads each host's devices: from sysfs (the host's `sysfs_root`, or `/sys` for a local URI)
/// with libpci, else through the host's libvirt node-device API. By default opens no device:
/// planning must not change (or reset) anything. With `probePoolDevices` (`miglab inventory
/// --lab`), the VFIO migration probe runs, and only on functions of the host's pools: opening
/// a vfio device resets it, and a device outside the pools is never touched.
public struct LabHostInventories: HostInventories {
    public var probePoolDevices: Bool
    public init(probePoolDevices: Bool = false) { self.probePoolDevices = probePoolDevices }

    public func inventory(of host: LabFile.Host) throws -> PCIInventory {
        if host.sysfsRoot != nil || host.isLocal {
            let root = "\(host.sysfsRoot ?? "/sys")/bus/pci"
            let plain = try LocalInventory(sysfsRoot: root, migrationProbe: nil).scan()
            guard probePoolDevices else { return plain }
            let allowed = Set(plain.devices.filter { !host.pools(containing: $0).isEmpty }.map(\.address))
            let probe = PoolOnlyProbe(inner: VFIODeviceMigrationProbe(pciRoot: root), allowed: allowed)
            return try LocalInventory(sysfsRoot: root, migrationProbe: probe).scan()
        }
        return try RemoteInventory(connection: try Connection(uri: host.uri)).scan()
    }
}

/// A migration probe that opens only the given functions (a host's pool devices).
struct PoolOnlyProbe: VFIOMigrationProbe {
    let inner: any VFIOMigrationProbe
    let allowed: Set<PCIAddress>

    func migrationSupport(of address: PCIAddress, iommuGroup: Int) -> VFIOMigrationSupport {
        guard allowed.contains(address) else { return .notProbed("not in a pool of the lab file: never opened") }
        return inner.migrationSupport(of: address, iommuGroup: iommuGroup)
    }
}

/// Inventories given by host name (tests, or ones read earlier).
public struct FixedInventories: HostInventories {
    public var byHost: [String: PCIInventory]
    public init(_ byHost: [String: PCIInventory]) { self.byHost = byHost }

    public func inventory(of host: LabFile.Host) throws -> PCIInventory {
        guard let i = byHost[host.name] else { throw DevicePlanError(location: host.location, message: "no inventory for host `\(host.name)`") }
        return i
    }
}

/// Which lab devices a scenario's guest gets on each host it visits.
public struct DevicePlan: Sendable, Equatable {
    public var scenario: String
    /// The hosts the guest visits, in the order it first gets there.
    public var hosts: [HostDevices]

    public struct HostDevices: Sendable, Equatable {
        public var host: String
        /// In requirement order, then index.
        public var devices: [AllocatedDevice]

        /// Requirement name -> its devices.
        public var byRequirement: [String: [AllocatedDevice]] { Dictionary(grouping: devices, by: \.requirement) }
    }

    public struct AllocatedDevice: Sendable, Equatable {
        public var requirement: String
        /// 0-based within the requirement.
        public var index: Int
        public var pool: String
        public var resource: Resource

        /// A user alias for the domain XML: `ua-nic-0`.
        public var alias: String { "ua-\(requirement)-\(index)" }
    }

    public enum Resource: Sendable, Equatable {
        case pci(PCIFunction)
        case mdev(Mdev)
    }

    public struct PCIFunction: Sendable, Equatable {
        public var address: PCIAddress
        public var vendorID: PCIID
        public var deviceID: PCIID
        /// The vfio driver the guest uses it through.
        public var driver: String
        /// The driver bound when the plan was made.
        public var boundDriver: String?
        public var managed: Bool
        /// From the pool: QEMU vfio-pci properties the device needs.
        public var qemuProperties: [QEMUDeviceProperty] = []
    }

    public struct Mdev: Sendable, Equatable {
        public var type: String
        /// libvirt's node-device name of the parent.
        public var parent: String
        /// Which of the parent's `instances` (for the lock).
        public var slot: Int
        /// Each host's own: two hosts may share one kernel (the virtual VFIO lab), and a kernel
        /// holds a UUID once. The destination definition names the destination's (by alias).
        public var uuid: UUID
        /// From the lab file's mdev type: QEMU vfio-pci properties the device needs.
        public var qemuProperties: [QEMUDeviceProperty] = []
    }

    public func devices(on host: String) -> [AllocatedDevice] { hosts.first { $0.host == host }?.devices ?? [] }

    /// The `<hostdev>` elements of the guest on `host`.
    public func hostdevs(on host: String) -> [Hostdev] {
        devices(on: host).map { d in
            switch d.resource {
            case let .pci(f): .pci(.init(address: f.address, managed: f.managed, driver: f.driver, alias: d.alias, qemuProperties: f.qemuProperties))
            case let .mdev(m): .mdev(.init(uuid: m.uuid, alias: d.alias, qemuProperties: m.qemuProperties))
            }
        }
    }

    /// One lock name per device and host machine: `<machine>-pci-0000:3b:00.2`,
    /// `<machine>-mdev-<parent>-<type>-<slot>`.
    public func lockNames(lab: LabFile) -> [String] {
        hosts.flatMap { h in h.devices.map { Self.lockName($0, host: h.host, lab: lab) } }
    }

    /// The lock name of one allocated device.
    public static func lockName(_ d: AllocatedDevice, host: String, lab: LabFile) -> String {
        let machine = lab[host: host]?.machineKey ?? host
        let name = switch d.resource {
        case let .pci(f): "\(machine)-pci-\(f.address)"
        case let .mdev(m): "\(machine)-mdev-\(m.parent)-\(m.type)-\(m.slot)"
        }
        return String(name.map { $0 == "/" ? "_" : $0 })
    }

    /// Refuses any PCI function of the plan that is not in a pool of its host, or that
    /// `inventories` does not list (a plan edited by hand, a lab file changed since). Changes nothing.
    public func verifyAllowed(by lab: LabFile, inventories: [String: PCIInventory]) throws(DevicePlanError) {
        for h in hosts {
            guard let host = lab[host: h.host] else {
                throw DevicePlanError(location: nil, message: "the plan uses host `\(h.host)`, which \(lab.file) does not have")
            }
            for d in h.devices {
                switch d.resource {
                case let .pci(f):
                    guard let device = inventories[h.host]?[f.address] else {
                        throw DevicePlanError(location: host.location, message: "refused: \(f.address) is not a PCI device of host `\(h.host)` (not in its inventory)")
                    }
                    let pools = host.pools(containing: device)
                    guard pools.contains(where: { $0.name == d.pool }) else {
                        throw DevicePlanError(location: host.location, message: DevicePlanner.outsidePoolsText(device, host: host, file: lab.file))
                    }
                case let .mdev(m):
                    guard host.mdevTypes.contains(where: { $0.type == m.type && $0.parentNodeDeviceName == m.parent && m.slot < $0.instances }) else {
                        throw DevicePlanError(location: host.location, message: "refused: mdev \(m.type) on \(m.parent) (slot \(m.slot)) is not in `mdev_types` of host `\(h.host)`")
                    }
                }
            }
        }
    }
}

/// A requirement the lab cannot meet, or a device it must not use; at the scenario line that asks.
public struct DevicePlanError: Error, Sendable, Equatable, CustomStringConvertible {
    public var location: SourceLocation?
    public var message: String
    public init(location: SourceLocation?, message: String) {
        self.location = location
        self.message = message
    }
    public var description: String { location.map { "\($0): error: \(message)" } ?? "error: \(message)" }
}

/// Allocates the devices a scenario asks for from the lab file's pools. Pure: it reads
/// inventories and changes nothing, so every refusal happens before any host is touched.
public struct DevicePlanner: Sendable {
    public var lab: LabFile

    public init(lab: LabFile) { self.lab = lab }

    /// The hosts the guest visits, in order of first visit.
    public static func visitedHosts(_ scenario: Scenario) -> [String] { scenario.visitedHosts }

    /// The plan for `scenario`: for each requirement, `count` devices on every host the guest
    /// visits, of one vendor:device and driver on all of them (the destination needs what the
    /// source has). `newUUID` names mdevs (tests pass a fixed one).
    public func plan(_ scenario: Scenario, inventories: [String: PCIInventory],
                     newUUID: () -> UUID = { UUID() }) throws(DevicePlanError) -> DevicePlan {
        let visited = Self.visitedHosts(scenario)
        var hosts: [LabFile.Host] = []
        for name in visited {
            guard let h = lab[host: name] else {
                throw DevicePlanError(location: nil, message: "scenario `\(scenario.name)` uses host `\(name)`, which \(lab.file) does not define (it has \(lab.hosts.map(\.name).joined(separator: ", ")))")
            }
            guard inventories[name] != nil else {
                throw DevicePlanError(location: h.location, message: "no PCI inventory of host `\(name)`")
            }
            hosts.append(h)
        }
        var allocated: [String: [DevicePlan.AllocatedDevice]] = [:]
        var usedPCI: [String: Set<PCIAddress>] = [:]
        var usedMdevSlots: [String: [String: Int]] = [:]   // host -> "parent/type" -> slots used
        for r in scenario.guest.passthrough {
            switch r.kind {
            case .vfioPCI:
                let chosen = try choosePCI(r, hosts: hosts, inventories: inventories, used: usedPCI)
                for (host, devices) in chosen {
                    for (i, (device, pool, driver)) in devices.enumerated() {
                        usedPCI[host, default: []].insert(device.address)
                        allocated[host, default: []].append(.init(
                            requirement: r.name, index: i, pool: pool.name,
                            resource: .pci(.init(address: device.address, vendorID: device.vendorID, deviceID: device.deviceID,
                                                 driver: driver, boundDriver: device.driver, managed: r.managed,
                                                 qemuProperties: pool.qemuProperties))))
                    }
                }
            case .mdev:
                for host in hosts {
                    let uuids = (0..<r.count).map { _ in newUUID() }
                    let type = Self.mdevType(of: r, on: host.name, scenario)
                    var got: [DevicePlan.AllocatedDevice] = []
                    for pool in host.mdevTypes where pool.type == type && got.count < r.count {
                        let key = "\(pool.parentNodeDeviceName)/\(type)"
                        while usedMdevSlots[host.name, default: [:]][key, default: 0] < pool.instances && got.count < r.count {
                            let slot = usedMdevSlots[host.name, default: [:]][key, default: 0]
                            usedMdevSlots[host.name, default: [:]][key] = slot + 1
                            got.append(.init(requirement: r.name, index: got.count, pool: "mdev:\(type)",
                                             resource: .mdev(.init(type: type, parent: pool.parentNodeDeviceName, slot: slot, uuid: uuids[got.count],
                                                                   qemuProperties: pool.qemuProperties))))
                        }
                    }
                    guard got.count == r.count else {
                        let offered = host.mdevTypes.map { "\($0.type) on \($0.parent) ×\($0.instances)" }
                        throw DevicePlanError(location: r.location, message: "`\(r.name)` needs \(r.count) × mdev type \(type) on host `\(host.name)`, but its `mdev_types` in \(lab.file) offer \(got.count) free (\(offered.isEmpty ? "none listed" : offered.joined(separator: ", "))); add `{type: \(type), parent: ..., instances: \(r.count)}` to host `\(host.name)`")
                    }
                    allocated[host.name, default: []].append(contentsOf: got)
                }
            }
        }
        return DevicePlan(scenario: scenario.name,
                          hosts: visited.map { DevicePlan.HostDevices(host: $0, devices: allocated[$0] ?? []) })
    }

    /// The mdev type `r` has on `host`: its own, or the one a migration's `destination:
    /// {mdev_type}` gives it there (the parser lets no other step bring the guest to that host).
    static func mdevType(of r: PassthroughRequirement, on host: String, _ scenario: Scenario) -> String {
        for step in scenario.steps {
            if let m = step.action(as: Step.Migrate.self), m.to == host, case let .mdevType(device, type)? = m.destinationChange, device == r.name {
                return type
            }
        }
        return r.mdevType ?? ""
    }

    typealias Candidate = (device: PCIDevice, pool: LabFile.Pool, driver: String)

    /// `count` devices per host, of one (vendor:device, driver) present on all hosts.
    func choosePCI(_ r: PassthroughRequirement, hosts: [LabFile.Host], inventories: [String: PCIInventory],
                   used: [String: Set<PCIAddress>]) throws(DevicePlanError) -> [(String, [Candidate])] {
        var perHost: [(LabFile.Host, [Candidate])] = []
        for host in hosts {
            let inventory = inventories[host.name]!
            var inPools: [Candidate] = []
            var outside: [PCIDevice] = []
            for device in inventory.devices where Self.isAssignable(device) && !(used[host.name]?.contains(device.address) ?? false) {
                let pools = host.pools(containing: device)
                // Two pools that name one device could hand it out twice, or with two drivers.
                if pools.count > 1, !pools.allSatisfy({ $0.allows.contains(.overlap) }) {
                    throw DevicePlanError(location: pools[1].location ?? r.location,
                        message: "\(device.address) is in pools \(pools.map { "`\($0.name)`" }.joined(separator: " and ")) of host `\(host.name)`: pools must not overlap; keep it in one pool, or give each of them `allow: [overlap]` in \(lab.file)")
                }
                // A physical function with VFs enabled is a NIC that others use through its VFs.
                if let vfs = device.sriov?.currentVFs, vfs > 0, let pool = pools.first,
                   !pools.allSatisfy({ $0.allows.contains(.pfWithVFs) }),
                   Self.matches(r, device: device, driver: Self.driver(device, pool: pool)) {
                    throw DevicePlanError(location: pool.location ?? r.location,
                        message: "\(device.address) in pool `\(pool.name)` of host `\(host.name)` is a physical function with \(vfs) VFs enabled\(device.driver.map { " (bound to \($0))" } ?? ""): passing it through takes its VFs from whoever uses them; pool its VFs instead (`vfs_of: \(device.address)`), disable them, or give the pool `allow: [pf_with_vfs]` in \(lab.file)")
                }
                if let pool = pools.first(where: { Self.matches(r, device: device, driver: Self.driver(device, pool: $0)) }) {
                    inPools.append((device, pool, Self.driver(device, pool: pool)))
                } else if pools.isEmpty, Self.matches(r, device: device, driver: Self.driver(device, pool: nil)) {
                    outside.append(device)
                }
            }
            if inPools.count < r.count {
                var message = "`\(r.name)` needs \(r.summary.dropFirst(r.name.count + 2)) on host `\(host.name)`, but its pools "
                message += "(\(host.pools.map(\.name).joined(separator: ", ")))"
                message += inPools.isEmpty ? " have no matching free device" : " have \(inPools.count): \(inPools.map { "\($0.device.address)" }.joined(separator: ", "))"
                for d in outside {
                    message += ". " + Self.outsidePoolsText(d, host: host, file: lab.file)
                }
                throw DevicePlanError(location: r.location, message: message)
            }
            perHost.append((host, inPools))
        }
        // One model and driver for every host: the destination must accept the source's state.
        struct Model: Hashable, Comparable {
            var vendor: UInt16, device: UInt16, driver: String
            static func < (a: Model, b: Model) -> Bool { (a.vendor, a.device, a.driver) < (b.vendor, b.device, b.driver) }
        }
        func model(_ c: Candidate) -> Model { Model(vendor: c.device.vendorID.rawValue, device: c.device.deviceID.rawValue, driver: c.driver) }
        let models = Set(perHost.flatMap { $0.1.map(model) }).sorted()
        guard let common = models.first(where: { m in perHost.allSatisfy { $0.1.filter { model($0) == m }.count >= r.count } }) else {
            let have = perHost.map { host, cs in
                "\(host.name) has " + Dictionary(grouping: cs, by: model).sorted { $0.key < $1.key }
                    .map { "\(hexDigits($0.key.vendor, width: 4)):\(hexDigits($0.key.device, width: 4)) (\($0.key.driver)) ×\($0.value.count)" }
                    .joined(separator: ", ")
            }
            throw DevicePlanError(location: r.location, message: "`\(r.name)` needs \(r.count) devices of one model and driver on every host, and no model is available \(r.count) times on all of them: \(have.joined(separator: "; ")). Add devices to the pools, or narrow the requirement with `vendor_device`")
        }
        return perHost.map { host, cs in (host.name, Array(cs.filter { model($0) == common }.prefix(r.count))) }
    }

    /// Functions that can be given to a guest at all: not bridges (class 06).
    static func isAssignable(_ device: PCIDevice) -> Bool {
        device.classCode?.baseClass != 0x06
    }

    /// The vfio driver a device would be used with: its pool's, else the vfio driver bound now,
    /// else vfio-pci.
    static func driver(_ device: PCIDevice, pool: LabFile.Pool?) -> String {
        if let d = pool?.driver { return d }
        if let d = device.driver, PCIDevice.isVFIODriver(d) { return d }
        return "vfio-pci"
    }

    static func matches(_ r: PassthroughRequirement, device: PCIDevice, driver: String) -> Bool {
        if let ids = r.vendorDevice, ids.vendor != device.vendorID.rawValue || ids.device != device.deviceID.rawValue { return false }
        if let wanted = r.driver, wanted != driver { return false }
        return true
    }

    static func outsidePoolsText(_ device: PCIDevice, host: LabFile.Host, file: String) -> String {
        let pools = host.pools.map { "`\($0.name)` (\($0.selectorDescription))" }
        return "refused: \(device.address) [\(device.vendorID):\(device.deviceID)]\(device.driver.map { " bound to \($0)" } ?? "") matches but is in no pool of host `\(host.name)` (pools: \(pools.isEmpty ? "none" : pools.joined(separator: "; "))); miglab never uses a device outside the pools: add it to a pool in \(file) if the lab may use it"
    }
}
