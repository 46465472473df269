/// The guest memory a device writes by DMA, as 4 KiB pages allocated on first write.
public struct GuestMemory: Hashable, Sendable {
    public static let pageSize: UInt64 = 4096
    public let size: UInt64
    private var pages: [UInt64: [UInt8]] = [:]

    public init(size: UInt64) { self.size = size }

    public func contains(_ range: IOVARange) -> Bool { range.iova <= size && range.length <= size - range.iova }

    public func read(_ range: IOVARange) -> [UInt8] {
        (range.iova..<range.end).map { address in
            pages[address / Self.pageSize]?[Int(address % Self.pageSize)] ?? 0
        }
    }

    mutating func write(_ bytes: [UInt8], at iova: UInt64) {
        for (offset, byte) in bytes.enumerated() {
            let address = iova + UInt64(offset)
            pages[address / Self.pageSize, default: [UInt8](repeating: 0, count: Int(Self.pageSize))][Int(address % Self.pageSize)] = byte
        }
    }
}
