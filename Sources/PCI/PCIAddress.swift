/// The address of a PCI function: domain, bus, device (slot) and function, written as the
/// kernel and lspci write it, `0000:3b:00.2`.
public struct PCIAddress: Hashable, Comparable, Sendable, CustomStringConvertible, LosslessStringConvertible {
    public var domain: UInt32
    public var bus: UInt8
    public var device: UInt8
    public var function: UInt8

    public init(domain: UInt32 = 0, bus: UInt8, device: UInt8, function: UInt8) {
        self.domain = domain
        self.bus = bus
        self.device = device
        self.function = function
    }

    /// Parses `0000:3b:00.2`, or `3b:00.2` for domain 0.
    public init?(_ text: String) {
        let functionParts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard functionParts.count == 2, let function = UInt8(functionParts[1], radix: 16), function < 8 else { return nil }
        let parts = functionParts[0].split(separator: ":", omittingEmptySubsequences: false)
        let domainText: Substring
        switch parts.count {
        case 3: domainText = parts[0]
        case 2: domainText = "0"
        default: return nil
        }
        guard let domain = UInt32(domainText, radix: 16),
              let bus = UInt8(parts[parts.count - 2], radix: 16),
              let device = UInt8(parts[parts.count - 1], radix: 16), device < 32 else { return nil }
        self.init(domain: domain, bus: bus, device: device, function: function)
    }

    /// Parses libvirt's node-device name, `pci_0000_3b_00_2`.
    public init?(nodeDeviceName name: String) {
        let parts = name.split(separator: "_")
        guard parts.count == 5, parts[0] == "pci" else { return nil }
        self.init("\(parts[1]):\(parts[2]):\(parts[3]).\(parts[4])")
    }

    public var description: String {
        "\(hex(domain, width: 4)):\(hex(bus, width: 2)):\(hex(device, width: 2)).\(String(function, radix: 16))"
    }

    /// libvirt's node-device name for this function, `pci_0000_3b_00_2`.
    public var nodeDeviceName: String {
        "pci_\(hex(domain, width: 4))_\(hex(bus, width: 2))_\(hex(device, width: 2))_\(String(function, radix: 16))"
    }

    public static func < (a: PCIAddress, b: PCIAddress) -> Bool {
        (a.domain, a.bus, a.device, a.function) < (b.domain, b.bus, b.device, b.function)
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

/// Lower-case hexadecimal, zero-padded to `width` digits.
func hex(_ value: some BinaryInteger, width: Int) -> String {
    let digits = String(value, radix: 16)
    return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
}
