import CPCI

/// The PCI inventory of this machine, through libpci (identity, names, config space) and sysfs
/// (SR-IOV links, reset methods, IOMMU group members), plus VFIO for the migration flags of
/// vfio-bound functions.
public struct LocalInventory: Sendable {
    /// The directory holding `devices/`: `/sys/bus/pci`, or a fake tree in tests.
    public var sysfsRoot: String
    /// Asked once for each function bound to a vfio driver; nil opens no device at all.
    public var migrationProbe: (any VFIOMigrationProbe)?

    /// With the default probe, VFIO looks at the same sysfs tree (`sysfsRoot` minus `/bus/pci`).
    public init(sysfsRoot: String = "/sys/bus/pci") {
        self.init(sysfsRoot: sysfsRoot, migrationProbe: VFIODeviceMigrationProbe(pciRoot: sysfsRoot))
    }

    public init(sysfsRoot: String = "/sys/bus/pci", migrationProbe: (any VFIOMigrationProbe)?) {
        self.sysfsRoot = sysfsRoot
        self.migrationProbe = migrationProbe
    }

    /// Scans with a fresh libpci handle (they are not thread-safe). Blocking file I/O.
    public func scan() throws -> PCIInventory {
        let access = try LibPCIAccess(sysfsRoot: sysfsRoot)
        let functions = try access.functions()
        var warnings = access.warnings
        var devices: [PCIDevice] = []
        for function in functions {
            devices.append(device(function, among: functions, warnings: &warnings))
        }
        return PCIInventory(source: .local, location: sysfsRoot, devices: devices, warnings: warnings)
    }

    private func device(_ f: LibPCIFunction, among all: [LibPCIFunction], warnings: inout [String]) -> PCIDevice {
        let sysfs = SysfsPCIFunction(root: sysfsRoot, address: f.address)
        var device = PCIDevice(
            address: f.address, vendorID: f.vendorID, deviceID: f.deviceID,
            subsystemVendorID: f.subsystemVendorID, subsystemDeviceID: f.subsystemDeviceID,
            classCode: f.classCode, revision: f.revision, names: f.names, driver: f.driver,
            physicalFunction: sysfs.physicalFunction, resetMethods: sysfs.resetMethods,
            vfioMigration: .notProbed("not probed"), capabilities: f.capabilities)

        if let number = f.iommuGroup {
            let members = sysfs.iommuGroupMembers ?? all.filter { $0.iommuGroup == number }.map(\.address)
            device.iommuGroup = IOMMUGroup(number: number, otherMembers: members.filter { $0 != f.address })
        }

        if f.capabilitiesReadable {
            if let flags = f.pcieFlags {
                device.pciExpress = PCIExpress(
                    portType: PCIExpress.PortType(typeField: Int(flags & UInt16(PCI_EXP_FLAGS_TYPE)) >> 4),
                    version: Int(flags & UInt16(PCI_EXP_FLAGS_VERS)))
            }
            let pcieFLR = f.pcieDeviceCapabilities.map { $0 & UInt32(PCI_EXP_DEVCAP_FLRESET) != 0 } ?? false
            let afFLR = f.advancedFeaturesCapabilities.map { $0 & UInt8(PCI_AF_CAP_FLR) != 0 } ?? false
            device.flr = pcieFLR || afFLR
            // Extended capabilities exist only in PCIe config space; a conventional function has none.
            if f.extendedCapabilitiesReadable || f.pcieFlags == nil {
                device.aer = f.capabilities.contains { $0.extended && $0.id == UInt16(PCI_EXT_CAP_ID_AER) }
                device.acs = f.capabilities.contains { $0.extended && $0.id == UInt16(PCI_EXT_CAP_ID_ACS) }
            } else {
                warnings.append("\(f.address): extended config space not readable; AER, ACS and SR-IOV unknown")
            }
        } else {
            device.capabilities = nil
            warnings.append("\(f.address): config space past the header not readable (not root?); capabilities unknown")
        }

        let registers = f.sriov
        if let total = sysfs.totalVFs ?? registers.map({ Int($0.totalVFs) }) {
            device.sriov = SRIOV(
                totalVFs: total, currentVFs: sysfs.numVFs ?? registers.map { Int($0.numVFs) } ?? 0,
                vfDeviceID: registers.map { PCIID($0.vfDeviceID) }, virtualFunctions: sysfs.virtualFunctions)
        }

        device.vfioMigration = migrationSupport(of: device)
        return device
    }

    /// Opens nothing unless the function is bound to a vfio driver and has an IOMMU group.
    func migrationSupport(of device: PCIDevice) -> VFIOMigrationSupport {
        guard let driver = device.driver else { return .notProbed("no driver") }
        guard PCIDevice.isVFIODriver(driver) else { return .notProbed("\(driver) is not a vfio driver") }
        guard let group = device.iommuGroup?.number else { return .notProbed("no IOMMU group") }
        guard let migrationProbe else { return .notProbed("probing disabled") }
        return migrationProbe.migrationSupport(of: device.address, iommuGroup: group)
    }
}
