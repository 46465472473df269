/// The reference device's migration stream. Like every driver's stream it is opaque to the user
/// ("The user must consider the migration data stream carried over the FD to be opaque"); it is
/// built so that the destination can refuse anything that is not a whole stream of its own kind:
///
///     header  "MLRD" | le16 format version | le16 device id | le32 image length | le32 chunk size
///     chunk   0x01 | le32 index | le32 length | bytes          (any order, later ones win)
///     end     0x02 | le64 FNV-1a digest of the whole image
///
/// Pre-copy sends every chunk once, then chunks that changed since they were sent; STOP_COPY
/// sends what is still missing or changed, then the end record.
enum ReferenceStreamFormat {
    static let magic: [UInt8] = Array("MLRD".utf8)
    static let headerLength = 16
    static let chunkRecordOverhead = 9
    static let endRecordLength = 9
    static let chunkTag: UInt8 = 0x01
    static let endTag: UInt8 = 0x02

    struct Header: Hashable {
        var formatVersion: UInt16
        var deviceID: UInt16
        var imageLength: UInt32
        var chunkSize: UInt32
    }

    static func encode(_ header: Header) -> [UInt8] {
        var bytes = magic
        bytes.appendLittleEndian(header.formatVersion)
        bytes.appendLittleEndian(header.deviceID)
        bytes.appendLittleEndian(header.imageLength)
        bytes.appendLittleEndian(header.chunkSize)
        return bytes
    }

    static func encodeChunk(index: Int, bytes: ArraySlice<UInt8>) -> [UInt8] {
        var record: [UInt8] = [chunkTag]
        record.appendLittleEndian(UInt32(index))
        record.appendLittleEndian(UInt32(bytes.count))
        record.append(contentsOf: bytes)
        return record
    }

    static func encodeEnd(digest: UInt64) -> [UInt8] {
        var record: [UInt8] = [endTag]
        record.appendLittleEndian(digest)
        return record
    }

    /// Which checks a (deliberately broken) destination leaves out.
    struct Leniency: Hashable {
        var skipsDigest = false
        var acceptsTruncation = false
        var skipsVersion = false
    }

    enum LoadError: Error, Hashable, CustomStringConvertible {
        case badMagic
        case foreignVersion(found: UInt16, expected: UInt16)
        case foreignDevice(found: UInt16, expected: UInt16)
        case layoutMismatch(imageLength: UInt32, chunkSize: UInt32)
        case truncated(offset: Int)
        case unknownRecord(tag: UInt8, offset: Int)
        case chunkOutOfRange(index: UInt32, length: UInt32)
        case missingEnd
        case missingChunks(count: Int)
        case digestMismatch
        case trailingBytes(count: Int)

        var description: String {
            switch self {
            case .badMagic: "not a reference device stream (bad magic)"
            case .foreignVersion(let found, let expected): "stream format version \(found), this device reads \(expected)"
            case .foreignDevice(let found, let expected): "stream of device 0x\(String(found, radix: 16)), this is 0x\(String(expected, radix: 16))"
            case .layoutMismatch(let length, let chunk): "stream image \(length) bytes in \(chunk)-byte chunks does not match this device"
            case .truncated(let offset): "stream ends inside a record at offset \(offset)"
            case .unknownRecord(let tag, let offset): "unknown record 0x\(String(tag, radix: 16)) at offset \(offset)"
            case .chunkOutOfRange(let index, let length): "chunk \(index) (\(length) bytes) lies outside the image"
            case .missingEnd: "stream has no end record"
            case .missingChunks(let count): "\(count) chunks of the image never arrived"
            case .digestMismatch: "image digest differs from the end record's: corrupted data"
            case .trailingBytes(let count): "\(count) bytes after the end record"
            }
        }
    }

    /// Rebuilds the device image a stream carries, refusing anything incomplete, inconsistent or
    /// foreign (RESUMING -> STOP: "If the user provided data is found to be incomplete,
    /// inconsistent, or otherwise invalid, the migration driver must fail the SET_STATE ioctl").
    static func load(_ bytes: [UInt8], expecting header: Header, leniency: Leniency = Leniency()) -> Result<[UInt8], LoadError> {
        guard bytes.count >= headerLength else {
            return leniency.acceptsTruncation && bytes.starts(with: magic)
                ? .success([UInt8](repeating: 0, count: Int(header.imageLength))) : .failure(.truncated(offset: 0))
        }
        guard Array(bytes[0..<4]) == magic else { return .failure(.badMagic) }
        let found = Header(
            formatVersion: bytes.loadLittleEndian(UInt16.self, at: 4), deviceID: bytes.loadLittleEndian(UInt16.self, at: 6),
            imageLength: bytes.loadLittleEndian(UInt32.self, at: 8), chunkSize: bytes.loadLittleEndian(UInt32.self, at: 12))
        if found.formatVersion != header.formatVersion && !leniency.skipsVersion {
            return .failure(.foreignVersion(found: found.formatVersion, expected: header.formatVersion))
        }
        guard found.deviceID == header.deviceID else { return .failure(.foreignDevice(found: found.deviceID, expected: header.deviceID)) }
        guard found.imageLength == header.imageLength, found.chunkSize == header.chunkSize, header.chunkSize > 0 else {
            return .failure(.layoutMismatch(imageLength: found.imageLength, chunkSize: found.chunkSize))
        }
        let imageLength = Int(header.imageLength)
        let chunkSize = Int(header.chunkSize)
        let chunkCount = (imageLength + chunkSize - 1) / chunkSize
        var image = [UInt8](repeating: 0, count: imageLength)
        var received = Set<Int>()
        var offset = headerLength
        while offset < bytes.count {
            switch bytes[offset] {
            case chunkTag:
                guard bytes.count - offset >= chunkRecordOverhead else {
                    return leniency.acceptsTruncation ? .success(image) : .failure(.truncated(offset: offset))
                }
                let index = bytes.loadLittleEndian(UInt32.self, at: offset + 1)
                let length = bytes.loadLittleEndian(UInt32.self, at: offset + 5)
                let start = Int(index) * chunkSize
                guard Int(index) < chunkCount, start + Int(length) <= imageLength else {
                    return .failure(.chunkOutOfRange(index: index, length: length))
                }
                let dataStart = offset + chunkRecordOverhead
                guard bytes.count - dataStart >= Int(length) else {
                    return leniency.acceptsTruncation ? .success(image) : .failure(.truncated(offset: offset))
                }
                image.replaceSubrange(start..<start + Int(length), with: bytes[dataStart..<dataStart + Int(length)])
                received.insert(Int(index))
                offset = dataStart + Int(length)
            case endTag:
                guard bytes.count - offset >= endRecordLength else {
                    return leniency.acceptsTruncation ? .success(image) : .failure(.truncated(offset: offset))
                }
                let digest = bytes.loadLittleEndian(UInt64.self, at: offset + 1)
                guard offset + endRecordLength == bytes.count else {
                    return .failure(.trailingBytes(count: bytes.count - offset - endRecordLength))
                }
                guard received.count == chunkCount else { return .failure(.missingChunks(count: chunkCount - received.count)) }
                guard digest == fnv1a(image) || leniency.skipsDigest else { return .failure(.digestMismatch) }
                return .success(image)
            case let tag:
                return .failure(.unknownRecord(tag: tag, offset: offset))
            }
        }
        return leniency.acceptsTruncation ? .success(image) : .failure(.missingEnd)
    }
}

/// FNV-1a, 64 bit: a cheap digest that changes with any single flipped byte.
func fnv1a<C: Collection>(_ bytes: C) -> UInt64 where C.Element == UInt8 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in bytes {
        hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
    }
    return hash
}
