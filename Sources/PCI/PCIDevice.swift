import VFIO

/// The PCI functions of one host, as `miglab inventory` reports them.
public struct PCIInventory: Codable, Sendable, Equatable {
    /// Where the inventory came from.
    public enum Source: String, Codable, Sendable {
        /// libpci and sysfs on this machine.
        case local
        /// libvirt's node-device API of a (remote) libvirt daemon.
        case libvirt
    }

    public var source: Source
    /// The sysfs PCI root (local) or the libvirt URI (libvirt).
    public var location: String
    /// Sorted by address.
    public var devices: [PCIDevice]
    /// What could not be read, for example an unreadable config space; the inventory is
    /// still complete in everything else.
    public var warnings: [String]

    public init(source: Source, location: String, devices: [PCIDevice], warnings: [String] = []) {
        self.source = source
        self.location = location
        self.devices = devices.sorted { $0.address < $1.address }
        self.warnings = warnings
    }

    public subscript(address: PCIAddress) -> PCIDevice? { devices.first { $0.address == address } }
}

/// One PCI function with what matters for passthrough and migration.
///
/// Optional fields are nil when the source cannot tell (libvirt's node-device XML has no FLR,
/// AER or ACS bits) or when the function does not have the thing (no SR-IOV capability).
public struct PCIDevice: Codable, Sendable, Equatable {
    public var address: PCIAddress
    public var vendorID: PCIID
    public var deviceID: PCIID
    public var subsystemVendorID: PCIID?
    public var subsystemDeviceID: PCIID?
    /// nil when the source does not say (libvirt before 5.2).
    public var classCode: PCIClassCode?
    public var revision: UInt8?
    public var names: PCINames
    /// The bound kernel driver, for example `vfio-pci` or `mlx5_vfio_pci`; nil when unbound.
    public var driver: String?
    public var iommuGroup: IOMMUGroup?
    /// nil for a conventional PCI function.
    public var pciExpress: PCIExpress?
    /// Function-level reset: the FLR bit of the PCIe Device Capabilities register, or of the
    /// Advanced Features capability of a conventional PCI function.
    public var flr: Bool?
    /// Advanced Error Reporting extended capability present.
    public var aer: Bool?
    /// Access Control Services extended capability present.
    public var acs: Bool?
    /// The SR-IOV capability of a physical function.
    public var sriov: SRIOV?
    /// For a virtual function, its physical function.
    public var physicalFunction: PCIAddress?
    /// The kernel's reset methods in its order of preference (sysfs `reset_method`, Linux 5.15
    /// and later). nil when the attribute is missing: the kernel hides it when it has no way to
    /// reset the function, and older kernels and libvirt do not report it.
    public var resetMethods: [String]?
    /// What VFIO says about migration (`VFIO_DEVICE_FEATURE_MIGRATION`).
    public var vfioMigration: VFIOMigrationSupport
    /// Every capability in the config space, in list order; nil when the source does not list them.
    public var capabilities: [PCICapability]?

    public init(address: PCIAddress, vendorID: PCIID, deviceID: PCIID, subsystemVendorID: PCIID? = nil,
                subsystemDeviceID: PCIID? = nil, classCode: PCIClassCode?, revision: UInt8? = nil,
                names: PCINames = PCINames(), driver: String? = nil, iommuGroup: IOMMUGroup? = nil,
                pciExpress: PCIExpress? = nil, flr: Bool? = nil, aer: Bool? = nil, acs: Bool? = nil,
                sriov: SRIOV? = nil, physicalFunction: PCIAddress? = nil, resetMethods: [String]? = nil,
                vfioMigration: VFIOMigrationSupport, capabilities: [PCICapability]? = nil) {
        self.address = address
        self.vendorID = vendorID
        self.deviceID = deviceID
        self.subsystemVendorID = subsystemVendorID
        self.subsystemDeviceID = subsystemDeviceID
        self.classCode = classCode
        self.revision = revision
        self.names = names
        self.driver = driver
        self.iommuGroup = iommuGroup
        self.pciExpress = pciExpress
        self.flr = flr
        self.aer = aer
        self.acs = acs
        self.sriov = sriov
        self.physicalFunction = physicalFunction
        self.resetMethods = resetMethods
        self.vfioMigration = vfioMigration
        self.capabilities = capabilities
    }

    /// Bound to vfio-pci or to a vfio-pci variant driver (`mlx5_vfio_pci`, `virtio_vfio_pci`, ...).
    public var isBoundToVFIO: Bool { driver.map(PCIDevice.isVFIODriver) ?? false }

    /// vfio-pci itself and the variant drivers built on vfio-pci-core (`mlx5_vfio_pci`, ...),
    /// by the VFIO target's rule, so that the inventory probes exactly what VFIO would open.
    public static func isVFIODriver(_ name: String) -> Bool {
        VFIODeviceLocator.isVFIODriver(name)
    }
}

/// A 16-bit PCI ID (vendor, device, subsystem), written in hexadecimal as lspci writes it.
public struct PCIID: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public init(_ rawValue: UInt16) { self.rawValue = rawValue }
    public init(integerLiteral value: UInt16) { self.rawValue = value }

    /// Parses `0x15b3` or `15b3`.
    public init?(hex text: String) {
        let digits = text.hasPrefix("0x") || text.hasPrefix("0X") ? String(text.dropFirst(2)) : text
        guard let value = UInt16(digits, radix: 16) else { return nil }
        self.rawValue = value
    }

    public var description: String { hex(rawValue, width: 4) }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let id = PCIID(hex: text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a PCI ID: \(text)")
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// The 24-bit class code: base class, subclass, programming interface. Written as 6 hex
/// digits; `deviceClass` is the 16-bit part lspci shows in brackets (`[0200]`).
public struct PCIClassCode: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue & 0xff_ffff }
    public init(deviceClass: UInt16, programmingInterface: UInt8) {
        self.init(rawValue: UInt32(deviceClass) << 8 | UInt32(programmingInterface))
    }

    /// Parses `0x020000` or `020000`.
    public init?(hex text: String) {
        let digits = text.hasPrefix("0x") || text.hasPrefix("0X") ? String(text.dropFirst(2)) : text
        guard let value = UInt32(digits, radix: 16), value <= 0xff_ffff else { return nil }
        self.rawValue = value
    }

    public var baseClass: UInt8 { UInt8(rawValue >> 16) }
    public var subclass: UInt8 { UInt8(rawValue >> 8 & 0xff) }
    public var programmingInterface: UInt8 { UInt8(rawValue & 0xff) }
    /// Base class and subclass, as libpci's `device_class`.
    public var deviceClass: UInt16 { UInt16(rawValue >> 8) }

    public var description: String { hex(rawValue, width: 6) }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let code = PCIClassCode(hex: text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a PCI class code: \(text)")
        }
        self = code
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// Names from the PCI ID database (pci.ids or udev's hwdb, whichever libpci uses); nil when
/// the database does not know the ID.
public struct PCINames: Codable, Sendable, Equatable {
    public var vendor: String?
    public var device: String?
    public var subsystemVendor: String?
    public var subsystemDevice: String?
    public var deviceClass: String?
    public var programmingInterface: String?

    public init(vendor: String? = nil, device: String? = nil, subsystemVendor: String? = nil,
                subsystemDevice: String? = nil, deviceClass: String? = nil, programmingInterface: String? = nil) {
        self.vendor = vendor
        self.device = device
        self.subsystemVendor = subsystemVendor
        self.subsystemDevice = subsystemDevice
        self.deviceClass = deviceClass
        self.programmingInterface = programmingInterface
    }
}

/// The IOMMU group of a function: everything in it is assigned to a guest together.
public struct IOMMUGroup: Codable, Sendable, Equatable {
    public var number: Int
    /// The other PCI functions of the group (the function itself is not listed).
    public var otherMembers: [PCIAddress]

    public init(number: Int, otherMembers: [PCIAddress] = []) {
        self.number = number
        self.otherMembers = otherMembers
    }
}

/// The PCI Express capability of a function.
public struct PCIExpress: Codable, Sendable, Equatable {
    /// Device/port type from the PCIe Capabilities register; nil when the source does not say.
    public var portType: PortType?
    /// Capability version (1 or 2); nil when unknown.
    public var version: Int?

    public init(portType: PortType? = nil, version: Int? = nil) {
        self.portType = portType
        self.version = version
    }

    /// `PCI_EXP_TYPE_*`.
    public enum PortType: String, Codable, Sendable {
        case endpoint, legacyEndpoint = "legacy-endpoint", rootPort = "root-port"
        case upstreamPort = "upstream-port", downstreamPort = "downstream-port"
        case pcieToPCIBridge = "pcie-to-pci-bridge", pciToPCIeBridge = "pci-to-pcie-bridge"
        case rootComplexIntegratedEndpoint = "root-complex-integrated-endpoint"
        case rootComplexEventCollector = "root-complex-event-collector"
        case unknown

        /// From the 4-bit type field of the PCIe Capabilities register.
        public init(typeField: Int) {
            switch typeField {
            case 0x0: self = .endpoint
            case 0x1: self = .legacyEndpoint
            case 0x4: self = .rootPort
            case 0x5: self = .upstreamPort
            case 0x6: self = .downstreamPort
            case 0x7: self = .pcieToPCIBridge
            case 0x8: self = .pciToPCIeBridge
            case 0x9: self = .rootComplexIntegratedEndpoint
            case 0xa: self = .rootComplexEventCollector
            default: self = .unknown
            }
        }
    }
}

/// The SR-IOV side of a physical function.
public struct SRIOV: Codable, Sendable, Equatable {
    /// How many VFs the PF can have (sysfs `sriov_totalvfs`, else TotalVFs of the capability).
    public var totalVFs: Int
    /// How many VFs are enabled now (sysfs `sriov_numvfs`, else NumVFs of the capability).
    public var currentVFs: Int
    /// The device ID the VFs report; nil when unknown.
    public var vfDeviceID: PCIID?
    /// The enabled VFs (sysfs `virtfnN` links), in VF order.
    public var virtualFunctions: [PCIAddress]

    public init(totalVFs: Int, currentVFs: Int, vfDeviceID: PCIID? = nil, virtualFunctions: [PCIAddress] = []) {
        self.totalVFs = totalVFs
        self.currentVFs = currentVFs
        self.vfDeviceID = vfDeviceID
        self.virtualFunctions = virtualFunctions
    }
}

/// One entry of the capability list.
public struct PCICapability: Codable, Sendable, Equatable {
    /// `PCI_CAP_ID_*` or, when `extended`, `PCI_EXT_CAP_ID_*`.
    public var id: UInt16
    /// Offset in the config space.
    public var offset: UInt16
    /// In the PCIe extended config space (offset 0x100 and up).
    public var extended: Bool
    public var name: String?

    public init(id: UInt16, offset: UInt16, extended: Bool) {
        self.id = id
        self.offset = offset
        self.extended = extended
        self.name = extended ? PCICapability.extendedNames[id] : PCICapability.names[id]
    }

    static let names: [UInt16: String] = [
        0x01: "Power Management", 0x02: "AGP", 0x03: "Vital Product Data", 0x04: "Slot Identification",
        0x05: "MSI", 0x06: "CompactPCI Hot Swap", 0x07: "PCI-X", 0x08: "HyperTransport",
        0x09: "Vendor Specific", 0x0a: "Debug Port", 0x0b: "CompactPCI Central Resource Control",
        0x0c: "PCI Hot-Plug", 0x0d: "Bridge Subsystem Vendor ID", 0x0e: "AGP 8x", 0x0f: "Secure Device",
        0x10: "PCI Express", 0x11: "MSI-X", 0x12: "SATA", 0x13: "Advanced Features", 0x14: "Enhanced Allocation",
    ]

    static let extendedNames: [UInt16: String] = [
        0x01: "Advanced Error Reporting", 0x02: "Virtual Channel", 0x03: "Device Serial Number",
        0x04: "Power Budgeting", 0x05: "Root Complex Link Declaration", 0x06: "Root Complex Internal Link Control",
        0x07: "Root Complex Event Collector Endpoint Association", 0x08: "Multi-Function Virtual Channel",
        0x09: "Virtual Channel", 0x0a: "Root Complex Register Block", 0x0b: "Vendor Specific",
        0x0d: "Access Control Services", 0x0e: "Alternative Routing-ID Interpretation",
        0x0f: "Address Translation Service", 0x10: "Single Root I/O Virtualization",
        0x11: "Multi-Root I/O Virtualization", 0x12: "Multicast", 0x13: "Page Request Interface",
        0x15: "Resizable BAR", 0x16: "Dynamic Power Allocation", 0x17: "TPH Requester",
        0x18: "Latency Tolerance Reporting", 0x19: "Secondary PCI Express", 0x1a: "Protocol Multiplexing",
        0x1b: "Process Address Space ID", 0x1c: "LN Requester", 0x1d: "Downstream Port Containment",
        0x1e: "L1 PM Substates", 0x1f: "Precision Time Measurement", 0x21: "FRS Queueing",
        0x22: "Readiness Time Reporting", 0x23: "Designated Vendor-Specific", 0x24: "VF Resizable BAR",
        0x25: "Data Link Feature", 0x26: "Physical Layer 16.0 GT/s", 0x27: "Lane Margining at the Receiver",
        0x28: "Hierarchy ID", 0x29: "Native PCIe Enclosure Management", 0x2a: "Physical Layer 32.0 GT/s",
        0x2e: "Data Object Exchange", 0x31: "Physical Layer 64.0 GT/s",
    ]
}
