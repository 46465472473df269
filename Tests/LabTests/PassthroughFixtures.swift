import Foundation
import PCI
@testable import Lab

/// A fake sysfs tree for passthrough tests, laid out like the kernel's (function directories
/// under `sys/devices/pciDDDD:BB/`, links from `sys/bus/pci/devices/`, drivers and IOMMU groups),
/// readable by libpci and `LocalInventory`. Removed in deinit.
final class PassthroughSysfs {
    struct Function {
        var address: String
        var vendor: UInt16
        var device: UInt16
        var classCode: UInt32 = 0x020000
        var driver: String?
        var iommuGroup: Int
        var flr: Bool
        var virtualFunctions: [String] = []
        var physicalFunction: String?
    }

    let base: String
    /// What a lab file's `sysfs_root` names.
    var sysfsRoot: String { "\(base)/sys" }
    private let fm = FileManager.default

    init(_ functions: [Function]) throws {
        base = fm.temporaryDirectory.appendingPathComponent("miglab-pt-sysfs-\(UUID().uuidString)").path
        for dir in ["sys/bus/pci/devices", "sys/bus/pci/drivers", "sys/kernel/iommu_groups"] {
            try fm.createDirectory(atPath: "\(base)/\(dir)", withIntermediateDirectories: true)
        }
        for f in functions { try add(f) }
    }

    deinit { try? FileManager.default.removeItem(atPath: base) }

    private func parent(_ a: String) -> String { "pci" + a.prefix(7) }

    private func add(_ f: Function) throws {
        let dir = "\(base)/sys/devices/\(parent(f.address))/\(f.address)"
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        func write(_ name: String, _ text: String) throws { try Data(text.utf8).write(to: URL(fileURLWithPath: "\(dir)/\(name)")) }
        func hex(_ v: some BinaryInteger, _ w: Int) -> String { hexDigits(v, width: w) }
        try write("vendor", "0x\(hex(f.vendor, 4))\n")
        try write("device", "0x\(hex(f.device, 4))\n")
        try write("class", "0x\(hex(f.classCode, 6))\n")
        try write("revision", "0x01\n")
        try write("irq", "0\n")
        try write("resource", String(repeating: "0x0000000000000000 0x0000000000000000 0x0000000000000000\n", count: 13))
        try write("reset_method", f.flr ? "flr\n" : "bus\n")
        // Config space: IDs, class, a PCIe capability at 0x40 with DevCap FLR as given.
        var config = [UInt8](repeating: 0, count: 4096)
        config[0] = UInt8(f.vendor & 0xff); config[1] = UInt8(f.vendor >> 8)
        config[2] = UInt8(f.device & 0xff); config[3] = UInt8(f.device >> 8)
        config[0x06] = 0x10
        config[0x09] = UInt8(f.classCode & 0xff); config[0x0a] = UInt8(f.classCode >> 8 & 0xff); config[0x0b] = UInt8(f.classCode >> 16)
        config[0x34] = 0x40
        config[0x40] = 0x10; config[0x42] = 0x02
        let devcap: UInt32 = f.flr ? 0x1000_8fc2 : 0x0000_8fc2
        for i in 0..<4 { config[0x44 + i] = UInt8(devcap >> (8 * UInt32(i)) & 0xff) }
        try Data(config).write(to: URL(fileURLWithPath: "\(dir)/config"))
        if !f.virtualFunctions.isEmpty {
            try write("sriov_totalvfs", "8\n")
            try write("sriov_numvfs", "\(f.virtualFunctions.count)\n")
        }
        for (n, vf) in f.virtualFunctions.enumerated() { try fm.createSymbolicLink(atPath: "\(dir)/virtfn\(n)", withDestinationPath: "../\(vf)") }
        if let pf = f.physicalFunction { try fm.createSymbolicLink(atPath: "\(dir)/physfn", withDestinationPath: "../\(pf)") }
        if let driver = f.driver {
            try fm.createDirectory(atPath: "\(base)/sys/bus/pci/drivers/\(driver)", withIntermediateDirectories: true)
            try fm.createSymbolicLink(atPath: "\(dir)/driver", withDestinationPath: "../../../bus/pci/drivers/\(driver)")
        }
        let group = "\(base)/sys/kernel/iommu_groups/\(f.iommuGroup)/devices"
        try fm.createDirectory(atPath: group, withIntermediateDirectories: true)
        try fm.createSymbolicLink(atPath: "\(group)/\(f.address)", withDestinationPath: "../../../../devices/\(parent(f.address))/\(f.address)")
        try fm.createSymbolicLink(atPath: "\(dir)/iommu_group", withDestinationPath: "../../../kernel/iommu_groups/\(f.iommuGroup)")
        try fm.createSymbolicLink(atPath: "\(base)/sys/bus/pci/devices/\(f.address)",
                                  withDestinationPath: "../../../devices/\(parent(f.address))/\(f.address)")
    }

    /// Every path with its link target or contents: compared before and after to show that
    /// nothing was changed.
    func state() throws -> [String: String] {
        var out: [String: String] = [:]
        guard let walker = fm.enumerator(atPath: base) else { return out }
        for case let path as String in walker {
            let full = "\(base)/\(path)"
            if let target = try? fm.destinationOfSymbolicLink(atPath: full) {
                out[path] = "-> " + target
            } else if let data = fm.contents(atPath: full) {
                out[path] = data.base64EncodedString()
            } else {
                out[path] = "dir"
            }
        }
        return out
    }

    /// One machine of the test lab: an Intel 82599 PF with two VFs (one on vfio-pci, one on
    /// ixgbevf), three ConnectX functions on mlx5_vfio_pci (two in a pool, one not), and a
    /// function without FLR.
    static func node() throws -> PassthroughSysfs {
        try PassthroughSysfs([
            Function(address: "0000:3b:00.0", vendor: 0x8086, device: 0x10fb, driver: "ixgbe", iommuGroup: 40, flr: true,
                     virtualFunctions: ["0000:3b:10.0", "0000:3b:10.2"]),
            Function(address: "0000:3b:10.0", vendor: 0x8086, device: 0x10ed, driver: "vfio-pci", iommuGroup: 41, flr: true,
                     physicalFunction: "0000:3b:00.0"),
            Function(address: "0000:3b:10.2", vendor: 0x8086, device: 0x10ed, driver: "ixgbevf", iommuGroup: 42, flr: true,
                     physicalFunction: "0000:3b:00.0"),
            Function(address: "0000:5e:00.1", vendor: 0x15b3, device: 0x101e, driver: "mlx5_vfio_pci", iommuGroup: 50, flr: true),
            Function(address: "0000:5e:00.2", vendor: 0x15b3, device: 0x101e, driver: "mlx5_vfio_pci", iommuGroup: 51, flr: true),
            Function(address: "0000:5e:00.3", vendor: 0x15b3, device: 0x101e, driver: "mlx5_vfio_pci", iommuGroup: 52, flr: true),
            Function(address: "0000:00:1f.6", vendor: 0x8086, device: 0x15bb, driver: "e1000e", iommuGroup: 10, flr: false),
        ])
    }
}

/// A two-host lab on two fake trees, its lab file written next to them.
struct TwoNodeLab {
    let a: PassthroughSysfs
    let b: PassthroughSysfs
    let directory: String
    let labPath: String
    var lockDirectory: String { "\(directory)/locks" }

    init() throws {
        a = try PassthroughSysfs.node()
        b = try PassthroughSysfs.node()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("miglab-labfile-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        labPath = "\(directory)/lab.yaml"
        try """
        version: 1
        locks: locks
        hosts:
          a:
            uri: test:///default
            migration_address: 10.0.0.1
            sysfs_root: \(a.sysfsRoot)
            pools:
              - {name: mlx, addresses: ["0000:5e:00.1", "0000:5e:00.2"], driver: mlx5_vfio_pci}
              - {name: vfs, vfs_of: "0000:3b:00.0"}
            mdev_types:
              - {type: mtty-2, parent: mtty, instances: 2}
          b:
            uri: test:///default
            migration_address: 10.0.0.2
            sysfs_root: \(b.sysfsRoot)
            pools:
              - {name: mlx, addresses: ["0000:5e:00.1", "0000:5e:00.2"], driver: mlx5_vfio_pci}
              - {name: vfs, vfs_of: "0000:3b:00.0"}
            mdev_types:
              - {type: mtty-2, parent: mtty, instances: 2}
              - {type: mtty-1, parent: mtty, instances: 1}
        """.write(toFile: labPath, atomically: true, encoding: .utf8)
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}
