/// The virtio device context of a member device (virtio spec proposal "device-context.tex",
/// seed 002): `le32 field_count` followed by that many TLVs
/// `{ le16 type; u8 reserved[6]; le64 length; u8 value[length]; }`.
public struct DeviceContext: Hashable, Sendable {
    public var fields: [DeviceContextField]
    public init(fields: [DeviceContextField]) { self.fields = fields }
}

public struct DeviceContextField: Hashable, Sendable {
    public var type: DeviceContextFieldType
    public var value: [UInt8]
    public init(type: DeviceContextFieldType, value: [UInt8]) {
        self.type = type
        self.value = value
    }

    /// The virtqueue a per-virtqueue field describes (its leading `le16 vq_index`).
    public var virtqueueIndex: UInt16? {
        guard type.isPerVirtqueue, value.count >= 2 else { return nil }
        return UInt16(value[0]) | UInt16(value[1]) << 8
    }
}

/// A device context field type, with the spec's ranges: 0x0-0xFFF generic, 0x1000-0x1FFF device
/// type specific, everything above reserved.
public struct DeviceContextFieldType: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let pciCommonConfig = Self(rawValue: 0x0)
    public static let deviceFeatures = Self(rawValue: 0x1)
    public static let pciVirtqueueConfig = Self(rawValue: 0x2)
    public static let splitVirtqueueRuntime = Self(rawValue: 0x3)
    public static let splitVirtqueueDeviceOwnedDescriptors = Self(rawValue: 0x4)
    public static let deviceConfig = Self(rawValue: 0x1000)

    public enum Range: String, Sendable { case generic, deviceSpecific = "device-specific", reserved }

    public var range: Range {
        switch rawValue {
        case 0x0...0xFFF: .generic
        case 0x1000...0x1FFF: .deviceSpecific
        default: .reserved
        }
    }

    /// Listed in the spec's table of device context fields.
    public var isDefined: Bool { Self.definitions[self] != nil }

    /// The value length of the structure as the spec first defines it. Fields only grow at the
    /// end ("a new field must be added at the end ... Any field which is already present MUST NOT
    /// be removed"), so no valid value is shorter. Nil where the layout is device specific.
    public var definedLength: Int? { Self.definitions[self]?.length }

    /// Fields that occur once per virtqueue, keyed by their leading `vq_index`.
    public var isPerVirtqueue: Bool { Self.definitions[self]?.perVirtqueue ?? false }

    static let definitions: [DeviceContextFieldType: (name: String, length: Int?, perVirtqueue: Bool)] = [
        // struct virtio_pci_common_cfg: 4 x le32, le16, le16, u8, u8, 5 x le16, 3 x le64.
        .pciCommonConfig: ("VIRTIO_DEV_CTX_PCI_COMMON_CFG", 56, false),
        // le64 feature_bits[]: at least one word.
        .deviceFeatures: ("VIRTIO_DEV_CTX_DEV_FEATURES", 8, false),
        // vq_index, queue_size, queue_msix_vector (le16), queue_desc, queue_driver, queue_device (le64).
        .pciVirtqueueConfig: ("VIRTIO_DEV_CTX_PCI_VQ_CFG", 30, true),
        // vq_index, dev_avail_idx (le16), enabled (u8).
        .splitVirtqueueRuntime: ("VIRTIO_DEV_CTX_VQ_SPLIT_RUNTIME_CFG", 5, true),
        // vq_index, desc_count (le16), desc_idx[desc_count] (le16).
        .splitVirtqueueDeviceOwnedDescriptors: ("VIRTIO_DEV_CTX_VQ_SPLIT_DEV_OWN_DESC", 4, true),
        .deviceConfig: ("VIRTIO_DEV_CTX_DEV_CFG", nil, false),
    ]

    public var description: String {
        let hex = "0x" + String(rawValue, radix: 16)
        return Self.definitions[self].map { "\($0.name) (\(hex))" } ?? hex
    }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// One entry of the Device Context Supported Fields Query result
/// (`struct virtio_admin_cmd_dev_ctx_supported_field`).
public struct DeviceContextFieldDescriptor: Hashable, Sendable {
    public var type: DeviceContextFieldType
    public var length: UInt64
    public init(type: DeviceContextFieldType, length: UInt64) {
        self.type = type
        self.length = length
    }
}

/// Why bytes are not a device context: the field count and the TLV lengths disagree with the
/// bytes present.
public enum DeviceContextError: Error, Hashable, Sendable, CustomStringConvertible {
    case truncatedFieldCount(available: Int)
    case truncatedFieldHeader(field: Int, fieldCount: UInt32, offset: Int)
    case truncatedValue(field: Int, type: DeviceContextFieldType, declaredLength: UInt64, available: Int)
    case trailingBytes(fieldCount: UInt32, extra: Int)

    public var description: String {
        switch self {
        case .truncatedFieldCount(let available):
            "\(available) bytes: too short for the le32 field_count"
        case .truncatedFieldHeader(let field, let count, let offset):
            "field_count says \(count) but field \(field) has no complete TLV header at offset \(offset)"
        case .truncatedValue(let field, let type, let declared, let available):
            "field \(field) (\(type)) declares \(declared) value bytes but \(available) remain"
        case .trailingBytes(let count, let extra):
            "\(extra) bytes follow the \(count) fields field_count announces"
        }
    }
}

/// Byte encoding of the device context. Pure functions.
public enum DeviceContextCodec {
    public static let fieldCountSize = 4
    public static let fieldHeaderSize = 16

    /// Encodes `context`; `fieldCount` overrides the announced count (to build bad contexts).
    public static func encode(_ context: DeviceContext, fieldCount: UInt32? = nil) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.appendLittleEndian(fieldCount ?? UInt32(context.fields.count))
        for field in context.fields {
            bytes.appendLittleEndian(field.type.rawValue)
            bytes.append(contentsOf: [UInt8](repeating: 0, count: 6))
            bytes.appendLittleEndian(UInt64(field.value.count))
            bytes.append(contentsOf: field.value)
        }
        return bytes
    }

    /// Decodes a complete device context: exactly `field_count` TLVs, each value within the
    /// bytes, nothing after the last one.
    public static func decode(_ bytes: [UInt8]) throws(DeviceContextError) -> DeviceContext {
        switch scan(bytes) {
        case .complete(let context): return context
        case .incomplete(let error, _): throw error
        case .malformed(let error): throw error
        }
    }

    /// The outcome of reading a prefix of a device context, as a device sees one arriving in
    /// several write commands.
    public enum Scan: Hashable, Sendable {
        /// Exactly one whole context.
        case complete(DeviceContext)
        /// A prefix: more bytes may complete it. `headers` lists the fields whose TLV header
        /// arrived, so a device can refuse an unknown type or a wrong length early.
        case incomplete(DeviceContextError, headers: [DeviceContextFieldDescriptor])
        /// Can never become a context (bytes beyond the announced fields).
        case malformed(DeviceContextError)
    }

    public static func scan(_ bytes: [UInt8]) -> Scan {
        guard bytes.count >= fieldCountSize else {
            return .incomplete(.truncatedFieldCount(available: bytes.count), headers: [])
        }
        let count = bytes.loadLittleEndian(UInt32.self, at: 0)
        var offset = fieldCountSize
        var fields: [DeviceContextField] = []
        var headers: [DeviceContextFieldDescriptor] = []
        for index in 0..<Int(count) {
            guard bytes.count - offset >= fieldHeaderSize else {
                return .incomplete(.truncatedFieldHeader(field: index, fieldCount: count, offset: offset), headers: headers)
            }
            let type = DeviceContextFieldType(rawValue: bytes.loadLittleEndian(UInt16.self, at: offset))
            let length = bytes.loadLittleEndian(UInt64.self, at: offset + 8)
            headers.append(DeviceContextFieldDescriptor(type: type, length: length))
            let available = bytes.count - offset - fieldHeaderSize
            guard length <= UInt64(available) else {
                return .incomplete(.truncatedValue(field: index, type: type, declaredLength: length, available: available), headers: headers)
            }
            let start = offset + fieldHeaderSize
            fields.append(DeviceContextField(type: type, value: Array(bytes[start..<start + Int(length)])))
            offset = start + Int(length)
        }
        guard offset == bytes.count else { return .malformed(.trailingBytes(fieldCount: count, extra: bytes.count - offset)) }
        return .complete(DeviceContext(fields: fields))
    }
}

/// A rule of the device context a context breaks.
public struct DeviceContextIssue: Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Hashable, Sendable {
        /// Type above 0x1FFF: "Reserved for future".
        case reservedType = "reserved-type"
        /// In the generic or device range but not defined by the spec, and not offered by the
        /// device either.
        case undefinedType = "undefined-type"
        /// Not among the device's supported fields.
        case unsupportedType = "unsupported-type"
        /// Shorter than the structure as first defined: fields only grow at the end.
        case shorterThanDefined = "shorter-than-defined"
        /// Length differs from the device's ("MUST respond with an error ... if there is a
        /// mismatch in the device context field length").
        case lengthMismatch = "length-mismatch"
        /// The value disagrees with itself (feature words, descriptor count).
        case malformedValue = "malformed-value"
        /// A field twice (per virtqueue fields: twice for one vq_index).
        case duplicate
    }
    public let kind: Kind
    public let type: DeviceContextFieldType
    public let detail: String

    public var description: String { "\(type): \(kind.rawValue): \(detail)" }
}

/// Checks a decoded context against the spec, and against a device's supported fields.
public enum DeviceContextValidator {
    public static func validate(
        _ context: DeviceContext, supportedFields: [DeviceContextFieldDescriptor]? = nil
    ) -> [DeviceContextIssue] {
        var issues: [DeviceContextIssue] = []
        let supported = supportedFields.map { Dictionary($0.map { ($0.type, $0.length) }, uniquingKeysWith: { first, _ in first }) }
        var seen = Set<[UInt32]>()
        for field in context.fields {
            let type = field.type
            func issue(_ kind: DeviceContextIssue.Kind, _ detail: String) {
                issues.append(DeviceContextIssue(kind: kind, type: type, detail: detail))
            }
            if type.range == .reserved {
                issue(.reservedType, "type outside the generic (0x0-0xFFF) and device-specific (0x1000-0x1FFF) ranges")
            } else if let supported, supported[type] == nil {
                issue(.unsupportedType, "not among the device's supported fields")
            } else if supported == nil && !type.isDefined {
                issue(.undefinedType, "\(type.range.rawValue) type the spec does not define")
            }
            if let defined = type.definedLength, field.value.count < defined {
                issue(.shorterThanDefined, "\(field.value.count) bytes, the structure has \(defined)")
            }
            if let deviceLength = supported?[type], UInt64(field.value.count) != deviceLength,
               type != .splitVirtqueueDeviceOwnedDescriptors {
                issue(.lengthMismatch, "\(field.value.count) bytes, the device's field has \(deviceLength)")
            }
            if type == .deviceFeatures && field.value.count % 8 != 0 {
                issue(.malformedValue, "\(field.value.count) bytes is not a whole number of le64 feature words")
            }
            if type == .splitVirtqueueDeviceOwnedDescriptors && field.value.count >= 4 {
                let count = Int(field.value.loadLittleEndian(UInt16.self, at: 2))
                if field.value.count != 4 + 2 * count {
                    issue(.malformedValue, "desc_count \(count) needs \(4 + 2 * count) bytes, the field has \(field.value.count)")
                }
            }
            let key = [UInt32(type.rawValue), field.virtqueueIndex.map(UInt32.init) ?? UInt32.max]
            if !seen.insert(key).inserted {
                issue(.duplicate, field.virtqueueIndex.map { "second entry for vq_index \($0)" } ?? "second entry")
            }
        }
        return issues
    }
}

extension Array where Element == UInt8 {
    mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        var remaining = value
        for _ in 0..<MemoryLayout<T>.size {
            append(UInt8(truncatingIfNeeded: remaining))
            remaining >>= 8
        }
    }

    func loadLittleEndian<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size {
            value |= T(truncatingIfNeeded: self[offset + index]) << (8 * index)
        }
        return value
    }
}
