import Testing
@testable import VFIO

struct DeviceContextTests {
    static let commonConfig = DeviceContextField(type: .pciCommonConfig, value: [UInt8](repeating: 1, count: 56))
    static let features = DeviceContextField(type: .deviceFeatures, value: [1, 0, 0, 0, 1, 0, 0, 0])
    static func virtqueueConfig(_ index: UInt8) -> DeviceContextField {
        DeviceContextField(type: .pciVirtqueueConfig, value: [index, 0] + [UInt8](repeating: 2, count: 28))
    }
    static let context = DeviceContext(fields: [commonConfig, features, virtqueueConfig(0), virtqueueConfig(1)])

    @Test func encodesTheSpecLayout() {
        let bytes = DeviceContextCodec.encode(DeviceContext(fields: [Self.features]))
        // le32 field_count, le16 type, u8 reserved[6], le64 length, value.
        #expect(bytes == [1, 0, 0, 0] + [1, 0] + [0, 0, 0, 0, 0, 0] + [8, 0, 0, 0, 0, 0, 0, 0] + Self.features.value)
    }

    @Test func roundTrips() throws {
        #expect(try DeviceContextCodec.decode(DeviceContextCodec.encode(Self.context)) == Self.context)
        #expect(try DeviceContextCodec.decode(DeviceContextCodec.encode(DeviceContext(fields: []))) == DeviceContext(fields: []))
    }

    @Test func fieldCountAndLengthsMustAgreeWithTheBytes() {
        let bytes = DeviceContextCodec.encode(Self.context)
        #expect(throws: DeviceContextError.truncatedFieldCount(available: 3)) { try DeviceContextCodec.decode([1, 0, 0]) }
        // One field more announced than present.
        #expect(throws: DeviceContextError.truncatedFieldHeader(field: 4, fieldCount: 5, offset: bytes.count)) {
            try DeviceContextCodec.decode(DeviceContextCodec.encode(Self.context, fieldCount: 5))
        }
        // One field fewer announced than present.
        #expect(throws: DeviceContextError.trailingBytes(fieldCount: 3, extra: 16 + 30)) {
            try DeviceContextCodec.decode(DeviceContextCodec.encode(Self.context, fieldCount: 3))
        }
        // A value cut short.
        #expect(throws: DeviceContextError.truncatedValue(field: 3, type: .pciVirtqueueConfig, declaredLength: 30, available: 29)) {
            try DeviceContextCodec.decode(Array(bytes.dropLast()))
        }
    }

    @Test func scanSeesHeadersOfAPartialContext() {
        let bytes = DeviceContextCodec.encode(Self.context)
        guard case .incomplete(_, let headers) = DeviceContextCodec.scan(Array(bytes.prefix(4 + 16 + 56 + 16))) else {
            Issue.record("a prefix must scan as incomplete")
            return
        }
        #expect(headers == [DeviceContextFieldDescriptor(type: .pciCommonConfig, length: 56), DeviceContextFieldDescriptor(type: .deviceFeatures, length: 8)])
        #expect(DeviceContextCodec.scan(bytes + [0]) == .malformed(.trailingBytes(fieldCount: 4, extra: 1)))
    }

    @Test func typeRanges() {
        #expect(DeviceContextFieldType(rawValue: 0x0).range == .generic)
        #expect(DeviceContextFieldType(rawValue: 0xFFF).range == .generic)
        #expect(DeviceContextFieldType(rawValue: 0x1000).range == .deviceSpecific)
        #expect(DeviceContextFieldType(rawValue: 0x1FFF).range == .deviceSpecific)
        #expect(DeviceContextFieldType(rawValue: 0x2000).range == .reserved)
        #expect(DeviceContextFieldType(rawValue: 0xFFFF).range == .reserved)
        #expect([0x0, 0x1, 0x2, 0x3, 0x4, 0x1000].allSatisfy { DeviceContextFieldType(rawValue: $0).isDefined })
        #expect(![0x5, 0xFFF, 0x1001, 0x3000].contains { DeviceContextFieldType(rawValue: $0).isDefined })
    }

    @Test func validContextHasNoIssues() {
        #expect(DeviceContextValidator.validate(Self.context).isEmpty)
        let supported = [
            DeviceContextFieldDescriptor(type: .pciCommonConfig, length: 56), DeviceContextFieldDescriptor(type: .deviceFeatures, length: 8),
            DeviceContextFieldDescriptor(type: .pciVirtqueueConfig, length: 30),
        ]
        #expect(DeviceContextValidator.validate(Self.context, supportedFields: supported).isEmpty)
    }

    static func kinds(_ context: DeviceContext, _ supported: [DeviceContextFieldDescriptor]? = nil) -> [DeviceContextIssue.Kind] {
        DeviceContextValidator.validate(context, supportedFields: supported).map(\.kind)
    }

    @Test func unknownAndReservedTypes() {
        let reserved = DeviceContext(fields: [DeviceContextField(type: DeviceContextFieldType(rawValue: 0x3000), value: [])])
        #expect(Self.kinds(reserved) == [.reservedType])
        let undefined = DeviceContext(fields: [DeviceContextField(type: DeviceContextFieldType(rawValue: 0x1001), value: [])])
        #expect(Self.kinds(undefined) == [.undefinedType])
        // A newer field the device offers is fine; one it does not offer is not.
        #expect(Self.kinds(undefined, [DeviceContextFieldDescriptor(type: DeviceContextFieldType(rawValue: 0x1001), length: 0)]).isEmpty)
        #expect(Self.kinds(DeviceContext(fields: [Self.features]), []) == [.unsupportedType])
    }

    @Test func extensionRuleAndDeviceLengths() {
        let short = DeviceContext(fields: [DeviceContextField(type: .pciCommonConfig, value: [UInt8](repeating: 0, count: 52))])
        #expect(Self.kinds(short) == [.shorterThanDefined])
        // Longer than the first definition is an extension at the end: fine by the spec...
        let extended = DeviceContext(fields: [DeviceContextField(type: .pciCommonConfig, value: [UInt8](repeating: 0, count: 60))])
        #expect(Self.kinds(extended).isEmpty)
        // ...but not for a device whose field is shorter.
        #expect(Self.kinds(extended, [DeviceContextFieldDescriptor(type: .pciCommonConfig, length: 56)]) == [.lengthMismatch])
    }

    @Test func valuesThatDisagreeWithThemselves() {
        let features = DeviceContext(fields: [DeviceContextField(type: .deviceFeatures, value: [UInt8](repeating: 0, count: 12))])
        #expect(Self.kinds(features) == [.malformedValue])
        // vq_index 0, desc_count 3, but only two indices.
        let descriptors = DeviceContext(fields: [DeviceContextField(type: .splitVirtqueueDeviceOwnedDescriptors, value: [0, 0, 3, 0, 1, 0, 2, 0])])
        #expect(Self.kinds(descriptors) == [.malformedValue])
        let consistent = DeviceContext(fields: [DeviceContextField(type: .splitVirtqueueDeviceOwnedDescriptors, value: [0, 0, 2, 0, 1, 0, 2, 0])])
        #expect(Self.kinds(consistent).isEmpty)
    }

    @Test func duplicates() {
        #expect(Self.kinds(DeviceContext(fields: [Self.features, Self.features])) == [.duplicate])
        #expect(Self.kinds(DeviceContext(fields: [Self.virtqueueConfig(0), Self.virtqueueConfig(1)])).isEmpty)
        #expect(Self.kinds(DeviceContext(fields: [Self.virtqueueConfig(1), Self.virtqueueConfig(1)])) == [.duplicate])
    }
}
