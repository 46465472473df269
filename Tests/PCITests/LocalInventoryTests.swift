import Foundation
import Synchronization
import Testing
@testable import PCI

/// Records which functions the inventory asks about and answers with fixed flags.
final class RecordingProbe: VFIOMigrationProbe {
    let asked = Mutex<[PCIAddress: Int]>([:])
    let answer: VFIOMigrationSupport

    init(answer: VFIOMigrationSupport) { self.answer = answer }

    func migrationSupport(of address: PCIAddress, iommuGroup: Int) -> VFIOMigrationSupport {
        asked.withLock { $0[address] = iommuGroup }
        return answer
    }
}

/// An Intel 82599 PF with two VFs enabled out of eight (one VF on vfio-pci), its second port,
/// a ConnectX VF on a vfio variant driver, and a conventional virtio function with no driver.
enum Lab {
    static let pf = PCIAddress("0000:3b:00.0")!
    static let secondPort = PCIAddress("0000:3b:00.1")!
    static let vf0 = PCIAddress("0000:3b:10.0")!
    static let vf1 = PCIAddress("0000:3b:10.2")!
    static let variant = PCIAddress("0000:5e:00.1")!
    static let virtio = PCIAddress("0000:00:02.0")!

    static func build() throws -> FakeSysfs {
        let sysfs = try FakeSysfs()

        var pfConfig = ConfigSpace(vendor: 0x8086, device: 0x10fb, classCode: 0x020000, extended: true)
        pfConfig.addCapability(id: 0x01, size: 8)  // power management
        pfConfig.addPCIExpress(flr: true)
        pfConfig.addCapability(id: 0x11, size: 12)  // MSI-X
        pfConfig.addExtendedCapability(id: 0x01, size: 0x48)  // AER
        pfConfig.addExtendedCapability(id: 0x0d, size: 8)  // ACS
        pfConfig.addSRIOV(initial: 64, total: 64, num: 2, vfDevice: 0x10ed)
        try sysfs.add(FakeFunction(
            address: pf, vendor: 0x8086, device: 0x10fb, classCode: 0x020000, subsystem: (0x8086, 0x0003),
            driver: "ixgbe", iommuGroup: 40, config: pfConfig, resetMethod: "flr bus",
            sriov: (total: 8, num: 2), virtualFunctions: [vf0, vf1]))

        var portConfig = ConfigSpace(vendor: 0x8086, device: 0x10fb, classCode: 0x020000, extended: true)
        portConfig.addPCIExpress(flr: false)
        portConfig.addExtendedCapability(id: 0x01, size: 0x48)
        try sysfs.add(FakeFunction(
            address: secondPort, vendor: 0x8086, device: 0x10fb, classCode: 0x020000, subsystem: (0x8086, 0x0003),
            driver: "ixgbe", iommuGroup: 40, config: portConfig, resetMethod: "bus"))

        for (vf, driver, group) in [(vf0, "vfio-pci", 41), (vf1, "ixgbevf", 42)] {
            // A VF's config space reads 0xffff for its IDs; the kernel's sysfs files have the real ones.
            var vfConfig = ConfigSpace(vendor: 0xffff, device: 0xffff, classCode: 0x020000, extended: true)
            vfConfig.addPCIExpress(flr: true)
            vfConfig.addExtendedCapability(id: 0x01, size: 0x48)
            try sysfs.add(FakeFunction(
                address: vf, vendor: 0x8086, device: 0x10ed, classCode: 0x020000, subsystem: (0x8086, 0x0003),
                driver: driver, iommuGroup: group, config: vfConfig, resetMethod: "flr", physicalFunction: pf))
        }

        var variantConfig = ConfigSpace(vendor: 0x15b3, device: 0x101e, classCode: 0x020000, extended: true)
        variantConfig.addPCIExpress(flr: true)
        try sysfs.add(FakeFunction(
            address: variant, vendor: 0x15b3, device: 0x101e, classCode: 0x020000, subsystem: (0x15b3, 0x0042),
            driver: "mlx5_vfio_pci", iommuGroup: 50, config: variantConfig, resetMethod: "flr"))

        var virtioConfig = ConfigSpace(vendor: 0x1af4, device: 0x1041, classCode: 0x020000, extended: false)
        virtioConfig.addCapability(id: 0x09, size: 16)  // vendor specific
        virtioConfig.addAdvancedFeatures(flr: false)
        try sysfs.add(FakeFunction(
            address: virtio, vendor: 0x1af4, device: 0x1041, classCode: 0x020000, subsystem: (0x1af4, 0x1100),
            config: virtioConfig))
        return sysfs
    }
}

@Suite struct LocalInventoryTests {
    @Test func readsIdentityNamesAndDrivers() throws {
        let sysfs = try Lab.build()
        let inventory = try LocalInventory(sysfsRoot: sysfs.pciRoot, migrationProbe: nil).scan()
        #expect(inventory.devices.map(\.address) == [Lab.virtio, Lab.pf, Lab.secondPort, Lab.vf0, Lab.vf1, Lab.variant])
        #expect(inventory.warnings.isEmpty)

        let pf = try #require(inventory[Lab.pf])
        #expect(pf.vendorID == 0x8086 && pf.deviceID == 0x10fb)
        #expect(pf.subsystemVendorID == 0x8086 && pf.subsystemDeviceID == 0x0003)
        #expect(pf.classCode == PCIClassCode(rawValue: 0x020000))
        #expect(pf.revision == 1)
        #expect(pf.names.vendor == "Intel Corporation")
        #expect(pf.names.device?.contains("82599") == true)
        #expect(pf.names.deviceClass == "Ethernet controller")
        #expect(pf.driver == "ixgbe")

        let vf = try #require(inventory[Lab.vf0])
        #expect(vf.vendorID == 0x8086 && vf.deviceID == 0x10ed, "IDs come from sysfs, not the VF's 0xffff config space")
        #expect(vf.names.device?.contains("Virtual Function") == true)
        #expect(inventory[Lab.virtio]?.driver == nil)
    }

    @Test func readsCapabilities() throws {
        let sysfs = try Lab.build()
        let inventory = try LocalInventory(sysfsRoot: sysfs.pciRoot, migrationProbe: nil).scan()

        let pf = try #require(inventory[Lab.pf])
        #expect(pf.flr == true && pf.aer == true && pf.acs == true)
        #expect(pf.pciExpress == PCIExpress(portType: .endpoint, version: 2))
        #expect(pf.capabilities?.map(\.id) == [0x01, 0x10, 0x11, 0x01, 0x0d, 0x10])
        #expect(pf.capabilities?.last?.name == "Single Root I/O Virtualization")

        let port = try #require(inventory[Lab.secondPort])
        #expect(port.flr == false && port.aer == true && port.acs == false)

        let virtio = try #require(inventory[Lab.virtio])
        #expect(virtio.pciExpress == nil)
        #expect(virtio.flr == false, "Advanced Features without the FLR bit")
        #expect(virtio.aer == false && virtio.acs == false)
    }

    @Test func readsSRIOVLinks() throws {
        let sysfs = try Lab.build()
        let inventory = try LocalInventory(sysfsRoot: sysfs.pciRoot, migrationProbe: nil).scan()

        // sysfs counts win over the capability's (the driver may cap TotalVFs).
        #expect(inventory[Lab.pf]?.sriov == SRIOV(totalVFs: 8, currentVFs: 2, vfDeviceID: 0x10ed, virtualFunctions: [Lab.vf0, Lab.vf1]))
        #expect(inventory[Lab.vf0]?.physicalFunction == Lab.pf)
        #expect(inventory[Lab.vf1]?.physicalFunction == Lab.pf)
        #expect(inventory[Lab.vf0]?.sriov == nil)
        #expect(inventory[Lab.secondPort]?.sriov == nil && inventory[Lab.secondPort]?.physicalFunction == nil)
    }

    @Test func readsIOMMUGroupsAndResetMethods() throws {
        let sysfs = try Lab.build()
        let inventory = try LocalInventory(sysfsRoot: sysfs.pciRoot, migrationProbe: nil).scan()

        #expect(inventory[Lab.pf]?.iommuGroup == IOMMUGroup(number: 40, otherMembers: [Lab.secondPort]))
        #expect(inventory[Lab.secondPort]?.iommuGroup == IOMMUGroup(number: 40, otherMembers: [Lab.pf]))
        #expect(inventory[Lab.vf0]?.iommuGroup == IOMMUGroup(number: 41))
        #expect(inventory[Lab.virtio]?.iommuGroup == nil)

        #expect(inventory[Lab.pf]?.resetMethods == ["flr", "bus"])
        #expect(inventory[Lab.secondPort]?.resetMethods == ["bus"])
        #expect(inventory[Lab.virtio]?.resetMethods == nil)
    }

    @Test func probesOnlyVFIOBoundFunctions() throws {
        let sysfs = try Lab.build()
        let probe = RecordingProbe(answer: .supported([.stopCopy, .p2p]))
        let inventory = try LocalInventory(sysfsRoot: sysfs.pciRoot, migrationProbe: probe).scan()

        #expect(probe.asked.withLock { $0 } == [Lab.vf0: 41, Lab.variant: 50])
        #expect(inventory[Lab.vf0]?.vfioMigration == .supported([.stopCopy, .p2p]))
        #expect(inventory[Lab.variant]?.vfioMigration == .supported([.stopCopy, .p2p]))
        #expect(inventory[Lab.vf1]?.vfioMigration == .notProbed("ixgbevf is not a vfio driver"))
        #expect(inventory[Lab.virtio]?.vfioMigration == .notProbed("no driver"))
    }

    @Test func withoutVFIOTheProbeSaysWhyItDidNotOpen() throws {
        let sysfs = try Lab.build()
        let emptyDev = FileManager.default.temporaryDirectory.appendingPathComponent("miglab-dev-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: emptyDev, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: emptyDev) }

        let probe = VFIODeviceMigrationProbe(pciRoot: sysfs.pciRoot, devRoot: emptyDev)
        let inventory = try LocalInventory(sysfsRoot: sysfs.pciRoot, migrationProbe: probe).scan()
        for address in [Lab.vf0, Lab.variant] {
            let status = try #require(inventory[address]?.vfioMigration)
            #expect(status.status == .notProbed)
            #expect(status.reason?.hasPrefix("VFIO unavailable:") == true, "\(status)")
        }
        #expect(inventory[Lab.vf1]?.vfioMigration == .notProbed("ixgbevf is not a vfio driver"))
    }

    @Test func vfioDriverNames() {
        #expect(PCIDevice.isVFIODriver("vfio-pci"))
        #expect(PCIDevice.isVFIODriver("mlx5_vfio_pci"))
        #expect(PCIDevice.isVFIODriver("virtio_vfio_pci"))
        #expect(!PCIDevice.isVFIODriver("mlx5_core"))
        #expect(!PCIDevice.isVFIODriver("vfio"))
    }

    @Test func aMissingTreeIsAnErrorNotAnExit() throws {
        let missing = FileManager.default.temporaryDirectory.appendingPathComponent("miglab-nothing-\(UUID().uuidString)").path
        let error = try #require(throws: LibPCIError.self) { try LocalInventory(sysfsRoot: missing, migrationProbe: nil).scan() }
        #expect(error.message.contains("devices"))
    }

    @Test func aBrokenFunctionIsAnErrorNotAnExit() throws {
        let sysfs = try Lab.build()
        try FileManager.default.removeItem(atPath: "\(sysfs.functionDirectory(Lab.pf))/vendor")
        let error = try #require(throws: LibPCIError.self) { try LocalInventory(sysfsRoot: sysfs.pciRoot, migrationProbe: nil).scan() }
        #expect(error.operation.contains("pci_fill_info(\(Lab.pf))"))
        #expect(error.message.contains("vendor"))

        // The next scan, on a fresh handle, works again.
        try Data("0x8086\n".utf8).write(to: URL(fileURLWithPath: "\(sysfs.functionDirectory(Lab.pf))/vendor"))
        #expect(try LocalInventory(sysfsRoot: sysfs.pciRoot, migrationProbe: nil).scan().devices.count == 6)
    }

    @Test func jsonRoundTripsAndTableShowsEveryFunction() throws {
        let sysfs = try Lab.build()
        let inventory = try LocalInventory(sysfsRoot: sysfs.pciRoot, migrationProbe: RecordingProbe(answer: .supported([.stopCopy]))).scan()

        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = try encoder.encode(inventory)
        #expect(try JSONDecoder().decode(PCIInventory.self, from: json) == inventory)
        let text = String(decoding: json, as: UTF8.self)
        #expect(text.contains(#""address":"0000:3b:00.0""#))
        #expect(text.contains(#""vendorID":"8086""#))
        #expect(text.contains(#""flags":["STOP_COPY"]"#))

        let table = inventory.table()
        let lines = table.split(separator: "\n").map(String.init)
        #expect(lines.count == 1 + 2 * inventory.devices.count)
        let pfRow = try #require(lines.first { $0.hasPrefix("0000:3b:00.0") })
        for cell in ["0200", "8086:10fb", "ixgbe", "40", "yes", "PF 2/8", "flr,bus", "not probed: ixgbe is not a vfio driver"] {
            #expect(pfRow.contains(cell), "\(cell) in \(pfRow)")
        }
        let vfRow = try #require(lines.first { $0.hasPrefix("0000:3b:10.0") })
        #expect(vfRow.contains("vfio-pci") && vfRow.contains("STOP_COPY"))
        #expect(table.contains("VF of 0000:3b:00.0"))
        #expect(table.contains("group shared with 0000:3b:00.1"))
    }
}

@Suite struct PCIAddressTests {
    @Test func parsesAndPrints() throws {
        let a = try #require(PCIAddress("0000:3b:00.2"))
        #expect(a == PCIAddress(domain: 0, bus: 0x3b, device: 0, function: 2))
        #expect(a.description == "0000:3b:00.2")
        #expect(a.nodeDeviceName == "pci_0000_3b_00_2")
        #expect(PCIAddress(nodeDeviceName: "pci_0000_3b_00_2") == a)
        #expect(PCIAddress("3b:00.2") == a)
        #expect(PCIAddress("10000:00:1f.7")?.description == "10000:00:1f.7")
        for bad in ["", "0000:3b:00", "0000:3b:20.0", "0000:3b:00.8", "zz:00.0", "0000:100:00.0"] {
            #expect(PCIAddress(bad) == nil, "\(bad)")
        }
        #expect(PCIAddress("0000:00:02.0")! < PCIAddress("0000:3b:00.0")!)
    }
}
