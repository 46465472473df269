/// The address of a PCI function: domain, bus, device (slot) and function, written as the
/// kernel, sysfs and lspci write it, `0000:3b:00.2`. One type for every layer (the PCI
/// inventory, the lab's pools and hostdevs, the VFIO backend).
public struct PCIAddress: Hashable, Comparable, Sendable, CustomStringConvertible, LosslessStringConvertible {
    public let domain: UInt32
    public let bus: UInt8
    public let device: UInt8
    public let function: UInt8

    public init(domain: UInt32 = 0, bus: UInt8, device: UInt8, function: UInt8) {
        precondition(device < 32 && function < 8, "PCI device \(device) / function \(function) out of range")
        self.domain = domain
        self.bus = bus
        self.device = device
        self.function = function
    }

    /// Parses "0000:3b:00.1" or the short "3b:00.1" (domain 0). Anything else is nil: the string
    /// becomes part of sysfs paths and host commands, so nothing but hex digits and the
    /// separators gets through.
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2 || parts.count == 3 else { return nil }
        let domainText = parts.count == 3 ? parts[0] : "0000"
        let busText = parts[parts.count - 2]
        let slot = parts[parts.count - 1].split(separator: ".", omittingEmptySubsequences: false)
        guard slot.count == 2, (1...8).contains(domainText.count), busText.count == 2, slot[0].count == 2, slot[1].count == 1,
              [domainText, busText, slot[0], slot[1]].allSatisfy({ $0.allSatisfy(\.isHexDigit) }),
              let domain = UInt32(domainText, radix: 16), let bus = UInt8(busText, radix: 16),
              let device = UInt8(slot[0], radix: 16), device < 32,
              let function = UInt8(slot[1], radix: 16), function < 8 else { return nil }
        self.init(domain: domain, bus: bus, device: device, function: function)
    }

    /// Parses libvirt's node-device name, `pci_0000_3b_00_2`.
    public init?(nodeDeviceName name: String) {
        let parts = name.split(separator: "_")
        guard parts.count == 5, parts[0] == "pci" else { return nil }
        self.init("\(parts[1]):\(parts[2]):\(parts[3]).\(parts[4])")
    }

    public var description: String {
        "\(Self.hex(domain, 4)):\(Self.hex(bus, 2)):\(Self.hex(device, 2)).\(Self.hex(function, 1))"
    }

    /// libvirt's node-device name for this function, `pci_0000_3b_00_2`.
    public var nodeDeviceName: String {
        "pci_\(Self.hex(domain, 4))_\(Self.hex(bus, 2))_\(Self.hex(device, 2))_\(Self.hex(function, 1))"
    }

    public static func < (a: PCIAddress, b: PCIAddress) -> Bool {
        (a.domain, a.bus, a.device, a.function) < (b.domain, b.bus, b.device, b.function)
    }

    /// Lower-case hexadecimal, zero-padded to `width` digits.
    static func hex(_ value: some BinaryInteger, _ width: Int) -> String {
        let digits = String(value, radix: 16)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }
}

extension PCIAddress: Codable {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let address = PCIAddress(text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a PCI address: \(text)")
        }
        self = address
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// What names a VFIO device: a PCI function by its address, or a mediated device (mdev) by its
/// UUID, as sysfs writes them (`/sys/bus/pci/devices/0000:3b:00.2`,
/// `/sys/bus/mdev/devices/83b8f4f2-509f-382f-3c1e-e6bfe0fa1001`). A group hands out either by
/// that same name (VFIO_GROUP_GET_DEVICE_FD).
public enum VFIODeviceName: Hashable, Sendable, CustomStringConvertible, LosslessStringConvertible {
    case pci(PCIAddress)
    /// The UUID in lower case.
    case mdev(String)

    /// A PCI address (`0000:3b:00.1`, `3b:00.1`) or an mdev UUID (8-4-4-4-12 hex digits). The
    /// text becomes part of sysfs paths, so nothing else gets through.
    public init?(_ text: String) {
        if let a = PCIAddress(text) {
            self = .pci(a)
            return
        }
        let groups = text.split(separator: "-", omittingEmptySubsequences: false)
        guard groups.map(\.count) == [8, 4, 4, 4, 12], groups.allSatisfy({ $0.allSatisfy(\.isHexDigit) }) else { return nil }
        self = .mdev(text.lowercased())
    }

    public var description: String {
        switch self {
        case let .pci(a): a.description
        case let .mdev(uuid): uuid
        }
    }

    /// The sysfs bus it is on.
    public var bus: String {
        switch self {
        case .pci: "pci"
        case .mdev: "mdev"
        }
    }
}
