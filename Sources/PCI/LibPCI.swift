import CPCI

/// An error libpci reported (through its fatal-error callback) or a libpci call that failed.
public struct LibPCIError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The libpci call, as miglab called it.
    public let operation: String
    public let message: String

    public init(operation: String, message: String) {
        self.operation = operation
        self.message = message
    }

    public var description: String { "\(operation): \(message)" }
}

/// What libpci reports about one PCI function: identity, names, driver, IOMMU group and the
/// config-space registers the inventory needs.
public struct LibPCIFunction: Sendable, Equatable {
    public var address: PCIAddress
    public var vendorID: PCIID
    public var deviceID: PCIID
    public var subsystemVendorID: PCIID?
    public var subsystemDeviceID: PCIID?
    public var classCode: PCIClassCode
    public var revision: UInt8
    public var names: PCINames
    /// `PCI_FILL_DRIVER`: the basename of the sysfs `driver` link.
    public var driver: String?
    /// `PCI_FILL_IOMMU_GROUP`: the basename of the sysfs `iommu_group` link.
    public var iommuGroup: Int?
    public var capabilities: [PCICapability]
    /// The config space past the standard header (0x40 on) could be read. Without root, sysfs
    /// serves only the header, and the capability list looks empty.
    public var capabilitiesReadable: Bool
    /// The PCIe extended config space (0x100 on) could be read; false for conventional PCI.
    public var extendedCapabilitiesReadable: Bool
    /// PCIe Capabilities register (offset 2 of the PCIe capability).
    public var pcieFlags: UInt16?
    /// PCIe Device Capabilities register.
    public var pcieDeviceCapabilities: UInt32?
    /// Capabilities byte of the Advanced Features capability.
    public var advancedFeaturesCapabilities: UInt8?
    /// The SR-IOV capability's registers.
    public var sriov: SRIOVRegisters?
}

/// The registers of an SR-IOV extended capability that the inventory reports.
public struct SRIOVRegisters: Sendable, Equatable {
    public var initialVFs: UInt16
    public var totalVFs: UInt16
    public var numVFs: UInt16
    public var vfDeviceID: UInt16
}

/// A libpci handle (`struct pci_access`), cleaned up with `pci_cleanup` in deinit.
///
/// libpci keeps per-handle state (the device list, a cached config-space file descriptor), so
/// a handle is not thread-safe: make one per scan and use it from one thread.
public final class LibPCIAccess {
    private let raw: UnsafeMutablePointer<pci_access>
    private let diagnostics: UnsafeMutablePointer<cpci_diagnostics>
    /// Set once libpci reported an error: its state may be half-built, so nothing more is read.
    private var failed = false
    private var scanned = false
    /// Warnings libpci reported so far (unreadable files and the like).
    public private(set) var warnings: [String] = []
    /// The directory holding `devices/`, as libpci's `sysfs.path` parameter.
    public let sysfsRoot: String

    /// `pci_alloc` and `pci_init` with the linux-sysfs method reading `sysfsRoot`
    /// (`/sys/bus/pci` on a live system; a fake tree in tests).
    public init(sysfsRoot: String = "/sys/bus/pci") throws {
        guard let raw = cpci_alloc() else { throw LibPCIError(operation: "pci_alloc", message: "out of memory") }
        self.raw = raw
        self.sysfsRoot = sysfsRoot
        diagnostics = .allocate(capacity: 1)
        diagnostics.initialize(to: cpci_diagnostics())
        try call("pci_init(sysfs.path=\(sysfsRoot))") { cpci_init_sysfs(raw, sysfsRoot, diagnostics) }
    }

    deinit {
        pci_cleanup(raw)
        diagnostics.deinitialize(count: 1)
        diagnostics.deallocate()
    }

    /// `pci_scan_bus` (once per handle: a second scan would append the devices again), then
    /// `pci_fill_info` and config-space reads for every function found.
    public func functions() throws -> [LibPCIFunction] {
        if !scanned {
            try call("pci_scan_bus") { cpci_scan_bus(raw, diagnostics) }
            scanned = true
        }
        var result: [LibPCIFunction] = []
        var next = raw.pointee.devices
        while let device = next {
            next = device.pointee.next
            result.append(try function(device))
        }
        return result.sorted { $0.address < $1.address }
    }

    private func function(_ device: UnsafeMutablePointer<pci_dev>) throws -> LibPCIFunction {
        let fields = PCI_FILL_IDENT | PCI_FILL_CLASS | PCI_FILL_CLASS_EXT | PCI_FILL_SUBSYS | PCI_FILL_CAPS
            | PCI_FILL_EXT_CAPS | PCI_FILL_DRIVER | PCI_FILL_IOMMU_GROUP
        let d0 = device.pointee
        let address = PCIAddress(domain: UInt32(bitPattern: d0.domain), bus: d0.bus, device: d0.dev, function: d0.func)
        let known = try call("pci_fill_info(\(address))") { cpci_fill_info(device, Int32(fields), diagnostics) }
        let d = device.pointee

        var capabilities: [PCICapability] = []
        var cap = d.first_cap
        while let c = cap {
            capabilities.append(PCICapability(id: c.pointee.id, offset: UInt16(c.pointee.addr),
                                              extended: c.pointee.type == UInt16(PCI_CAP_EXTENDED)))
            cap = c.pointee.next
        }
        func offset(of id: Int32, extended: Bool) -> Int32? {
            capabilities.first { $0.id == UInt16(id) && $0.extended == extended }.map { Int32($0.offset) }
        }

        var function = LibPCIFunction(
            address: address, vendorID: PCIID(d.vendor_id), deviceID: PCIID(d.device_id),
            classCode: PCIClassCode(deviceClass: d.device_class, programmingInterface: d.prog_if),
            revision: d.rev_id, names: PCINames(), capabilities: capabilities,
            capabilitiesReadable: try read(device, 0x40) as UInt8? != nil,
            extendedCapabilitiesReadable: try read(device, 0x100) as UInt32? != nil)
        // Subsystem vendor 0000 or ffff means the function has no subsystem ID (host bridges,
        // many bridges); lspci prints no Subsystem line for them either.
        if known & PCI_FILL_SUBSYS != 0, d.subsys_vendor_id != 0, d.subsys_vendor_id != 0xffff {
            function.subsystemVendorID = PCIID(d.subsys_vendor_id)
            function.subsystemDeviceID = PCIID(d.subsys_id)
        }
        function.driver = stringProperty(device, PCI_FILL_DRIVER)
        function.iommuGroup = stringProperty(device, PCI_FILL_IOMMU_GROUP).flatMap { Int($0) }

        if let exp = offset(of: PCI_CAP_ID_EXP, extended: false) {
            function.pcieFlags = try read(device, exp + PCI_EXP_FLAGS)
            function.pcieDeviceCapabilities = try read(device, exp + PCI_EXP_DEVCAP)
        }
        if let af = offset(of: PCI_CAP_ID_AF, extended: false) {
            function.advancedFeaturesCapabilities = try read(device, af + PCI_AF_CAP)
        }
        if let iov = offset(of: PCI_EXT_CAP_ID_SRIOV, extended: true) {
            let initial: UInt16? = try read(device, iov + PCI_IOV_INITIALVF)
            let total: UInt16? = try read(device, iov + PCI_IOV_TOTALVF)
            let num: UInt16? = try read(device, iov + PCI_IOV_NUMVF)
            let did: UInt16? = try read(device, iov + PCI_IOV_DID)
            if let initial, let total, let num, let did {
                function.sriov = SRIOVRegisters(initialVFs: initial, totalVFs: total, numVFs: num, vfDeviceID: did)
            }
        }
        function.names = try names(of: function)
        return function
    }

    /// `pci_get_string_property`, after `pci_fill_info` asked for `property`.
    private func stringProperty(_ device: UnsafeMutablePointer<pci_dev>, _ property: Int32) -> String? {
        pci_get_string_property(device, UInt32(property)).map { String(cString: $0) }
    }

    /// A little-endian config-space register through `pci_read_block`; nil when that part of
    /// the config space cannot be read.
    private func read<T: FixedWidthInteger>(_ device: UnsafeMutablePointer<pci_dev>, _ offset: Int32) throws -> T? {
        var value = T.zero
        let status = try call("pci_read_block(offset \(offset))") {
            withUnsafeMutableBytes(of: &value) { bytes in
                cpci_read_config(device, offset, bytes.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                 Int32(bytes.count), diagnostics)
            }
        }
        return status == 1 ? T(littleEndian: value) : nil
    }

    /// `pci_lookup_name` for each name; nil where the ID database has none.
    private func names(of f: LibPCIFunction) throws -> PCINames {
        let vendor = UInt32(f.vendorID.rawValue), device = UInt32(f.deviceID.rawValue)
        let deviceClass = UInt32(f.classCode.deviceClass)
        var names = PCINames()
        names.vendor = try lookup { cpci_vendor_name(raw, $0, $1, vendor, diagnostics) }
        names.device = try lookup { cpci_device_name(raw, $0, $1, vendor, device, diagnostics) }
        if let sv = f.subsystemVendorID.map({ UInt32($0.rawValue) }), let sd = f.subsystemDeviceID.map({ UInt32($0.rawValue) }) {
            names.subsystemVendor = try lookup { cpci_subsystem_vendor_name(raw, $0, $1, sv, diagnostics) }
            names.subsystemDevice = try lookup { cpci_subsystem_device_name(raw, $0, $1, vendor, device, sv, sd, diagnostics) }
        }
        // When only the base class is in the database, libpci appends the number ("Unassigned
        // class [ffff]"); the model keeps names and numbers apart.
        names.deviceClass = try lookup { cpci_class_name(raw, $0, $1, deviceClass, diagnostics) }
            .map { name in
                let suffix = " [\(hex(deviceClass, width: 4))]"
                return name.hasSuffix(suffix) ? String(name.dropLast(suffix.count)) : name
            }
        let progIf = UInt32(f.classCode.programmingInterface)
        names.programmingInterface = try lookup { cpci_programming_interface_name(raw, $0, $1, deviceClass, progIf, diagnostics) }
        return names
    }

    private func lookup(_ body: (UnsafeMutablePointer<CChar>, Int32) -> UnsafePointer<CChar>?) throws -> String? {
        var name: String?
        try call("pci_lookup_name") {
            var buffer = [CChar](repeating: 0, count: 1024)
            name = buffer.withUnsafeMutableBufferPointer { b in body(b.baseAddress!, Int32(b.count)).map { String(cString: $0) } }
            // NULL is also "not in the database"; only a recorded error is a failure.
            return name == nil && cpci_diagnostics_error(diagnostics).pointee != 0 ? -1 : 0
        }
        return name
    }

    /// Runs one guarded libpci call: a negative status becomes a thrown `LibPCIError` carrying
    /// libpci's message, and the handle is not used again. Gathers libpci's warnings.
    @discardableResult
    private func call(_ operation: String, _ body: () -> Int32) throws -> Int32 {
        guard !failed else {
            throw LibPCIError(operation: operation, message: "an earlier libpci error left the handle unusable")
        }
        cpci_diagnostics_clear(diagnostics)
        let status = body()
        warnings += String(cString: cpci_diagnostics_warnings(diagnostics)).split(separator: "\n").map(String.init)
        guard status >= 0 else {
            failed = true
            let message = String(cString: cpci_diagnostics_error(diagnostics))
            throw LibPCIError(operation: operation, message: message.isEmpty ? "failed" : message)
        }
        return status
    }
}

@available(*, unavailable, message: "a libpci handle is used by one thread; make one per scan")
extension LibPCIAccess: Sendable {}
