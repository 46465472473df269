import Foundation
@testable import PCI

/// A config space image, built capability by capability the way devices lay them out.
struct ConfigSpace {
    private(set) var bytes: [UInt8]
    private var lastCapability: Int?
    private var nextCapability = 0x40
    private var lastExtended: Int?
    private var nextExtended = 0x100

    /// `extended`: 4096 bytes (PCIe), else 256 (conventional PCI).
    init(vendor: UInt16, device: UInt16, classCode: UInt32, extended: Bool) {
        bytes = [UInt8](repeating: 0, count: extended ? 4096 : 256)
        put16(0x00, vendor)
        put16(0x02, device)
        bytes[0x09] = UInt8(classCode & 0xff)
        bytes[0x0a] = UInt8(classCode >> 8 & 0xff)
        bytes[0x0b] = UInt8(classCode >> 16 & 0xff)
    }

    /// A conventional capability of `size` bytes (header included), chained after the last one.
    @discardableResult
    mutating func addCapability(id: UInt8, size: Int) -> Int {
        let at = nextCapability
        bytes[at] = id
        if let last = lastCapability { bytes[last + 1] = UInt8(at) } else {
            bytes[0x34] = UInt8(at)
            bytes[0x06] |= 0x10  // Status: capability list
        }
        lastCapability = at
        nextCapability = (at + size + 3) & ~3
        return at
    }

    /// An extended capability (version 1) chained after the last one.
    @discardableResult
    mutating func addExtendedCapability(id: UInt16, size: Int) -> Int {
        let at = nextExtended
        put32(at, UInt32(id) | 1 << 16)
        if let last = lastExtended {
            put32(last, get32(last) | UInt32(at) << 20)
        }
        lastExtended = at
        nextExtended = (at + size + 3) & ~3
        return at
    }

    /// PCIe capability v2 of `type` (0 endpoint); DevCap FLR bit as given.
    mutating func addPCIExpress(type: UInt16 = 0, flr: Bool) {
        let at = addCapability(id: 0x10, size: 0x3c)
        put16(at + 2, 2 | type << 4)
        put32(at + 4, flr ? 0x1000_8fc2 : 0x0000_8fc2)
    }

    /// Advanced Features capability (conventional PCI FLR).
    mutating func addAdvancedFeatures(flr: Bool) {
        let at = addCapability(id: 0x13, size: 6)
        bytes[at + 2] = 6
        bytes[at + 3] = flr ? 0x03 : 0x01
    }

    mutating func addSRIOV(initial: UInt16, total: UInt16, num: UInt16, vfDevice: UInt16) {
        let at = addExtendedCapability(id: 0x10, size: 0x40)
        put16(at + 0x0c, initial)
        put16(at + 0x0e, total)
        put16(at + 0x10, num)
        put16(at + 0x14, 0x80)  // first VF offset
        put16(at + 0x16, 2)  // VF stride
        put16(at + 0x1a, vfDevice)
    }

    mutating func put16(_ at: Int, _ v: UInt16) {
        bytes[at] = UInt8(v & 0xff)
        bytes[at + 1] = UInt8(v >> 8)
    }

    mutating func put32(_ at: Int, _ v: UInt32) {
        for i in 0..<4 { bytes[at + i] = UInt8(v >> (8 * UInt32(i)) & 0xff) }
    }

    func get32(_ at: Int) -> UInt32 {
        (0..<4).reduce(0) { $0 | UInt32(bytes[at + $1]) << (8 * UInt32($1)) }
    }
}

/// One PCI function of a fake sysfs tree.
struct FakeFunction {
    var address: PCIAddress
    var vendor: UInt16
    var device: UInt16
    var classCode: UInt32
    var subsystem: (vendor: UInt16, device: UInt16)?
    var revision: UInt8 = 1
    var driver: String?
    var iommuGroup: Int?
    var config: ConfigSpace
    /// Contents of `reset_method`; nil leaves the file out.
    var resetMethod: String?
    var sriov: (total: Int, num: Int)?
    var physicalFunction: PCIAddress?
    var virtualFunctions: [PCIAddress] = []
}

/// A sysfs tree laid out like the kernel's: function directories under
/// `sys/devices/pci<domain>:<bus>/`, `sys/bus/pci/devices/<address>` links to them, drivers under
/// `sys/bus/pci/drivers/`, IOMMU groups under `sys/kernel/iommu_groups/`, all links relative.
/// Removed in deinit.
final class FakeSysfs {
    let base: String
    /// What libpci's `sysfs.path` and `LocalInventory.sysfsRoot` take.
    var pciRoot: String { "\(base)/sys/bus/pci" }
    private let fm = FileManager.default

    init() throws {
        base = fm.temporaryDirectory.appendingPathComponent("miglab-sysfs-\(UUID().uuidString)").path
        try fm.createDirectory(atPath: "\(base)/sys/bus/pci/devices", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: "\(base)/sys/bus/pci/drivers", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: "\(base)/sys/kernel/iommu_groups", withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: base) }

    private func parentDirectory(_ a: PCIAddress) -> String { "pci\(hex(a.domain, width: 4)):\(hex(a.bus, width: 2))" }
    func functionDirectory(_ a: PCIAddress) -> String { "\(base)/sys/devices/\(parentDirectory(a))/\(a)" }

    func add(_ f: FakeFunction) throws {
        let dir = functionDirectory(f.address)
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        func write(_ name: String, _ text: String) throws {
            try Data(text.utf8).write(to: URL(fileURLWithPath: "\(dir)/\(name)"))
        }
        func link(_ name: String, to target: String) throws {
            try fm.createSymbolicLink(atPath: "\(dir)/\(name)", withDestinationPath: target)
        }
        // What libpci's sysfs back end reads (lib/sysfs.c): vendor, device, class mandatory;
        // revision, subsystem_* optional; irq and resource when asked; config through pread.
        try write("vendor", "0x\(hex(f.vendor, width: 4))\n")
        try write("device", "0x\(hex(f.device, width: 4))\n")
        try write("class", "0x\(hex(f.classCode, width: 6))\n")
        try write("revision", "0x\(hex(f.revision, width: 2))\n")
        if let s = f.subsystem {
            try write("subsystem_vendor", "0x\(hex(s.vendor, width: 4))\n")
            try write("subsystem_device", "0x\(hex(s.device, width: 4))\n")
        }
        try write("irq", "0\n")
        try write("resource", String(repeating: "0x0000000000000000 0x0000000000000000 0x0000000000000000\n", count: 13))
        try Data(f.config.bytes).write(to: URL(fileURLWithPath: "\(dir)/config"))
        if let r = f.resetMethod { try write("reset_method", r + "\n") }
        if let s = f.sriov {
            try write("sriov_totalvfs", "\(s.total)\n")
            try write("sriov_numvfs", "\(s.num)\n")
        }
        for (n, vf) in f.virtualFunctions.enumerated() { try link("virtfn\(n)", to: "../\(vf)") }
        if let pf = f.physicalFunction { try link("physfn", to: "../\(pf)") }
        if let driver = f.driver {
            try fm.createDirectory(atPath: "\(base)/sys/bus/pci/drivers/\(driver)", withIntermediateDirectories: true)
            try link("driver", to: "../../../bus/pci/drivers/\(driver)")
        }
        if let group = f.iommuGroup {
            let groupDevices = "\(base)/sys/kernel/iommu_groups/\(group)/devices"
            try fm.createDirectory(atPath: groupDevices, withIntermediateDirectories: true)
            try fm.createSymbolicLink(atPath: "\(groupDevices)/\(f.address)",
                                      withDestinationPath: "../../../../devices/\(parentDirectory(f.address))/\(f.address)")
            try link("iommu_group", to: "../../../kernel/iommu_groups/\(group)")
        }
        try fm.createSymbolicLink(atPath: "\(pciRoot)/devices/\(f.address)",
                                  withDestinationPath: "../../../devices/\(parentDirectory(f.address))/\(f.address)")
    }
}
