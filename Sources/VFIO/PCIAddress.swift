/// A PCI function address, "DDDD:BB:DD.F" (domain, bus, device, function), as sysfs names it.
public struct PCIAddress: Hashable, Sendable, Codable, CustomStringConvertible {
    public let domain: UInt32
    public let bus: UInt8
    public let device: UInt8
    public let function: UInt8

    /// Parses "0000:3b:00.1" or the short "3b:00.1" (domain 0). Anything else is nil: the string
    /// becomes part of sysfs paths, so nothing but hex digits and the separators gets through.
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
        self.domain = domain
        self.bus = bus
        self.device = device
        self.function = function
    }

    public var description: String {
        func hex(_ value: some BinaryInteger, _ width: Int) -> String {
            let digits = String(value, radix: 16)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return "\(hex(domain, 4)):\(hex(bus, 2)):\(hex(device, 2)).\(hex(function, 1))"
    }
}
