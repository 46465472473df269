#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The reference device as a virtio member seen through its owner device (the admin commands of
/// admin-cmds-device-migration.tex, seed 002). Statuses are errnos, as VIRTIO_ADMIN_STATUS_* are.
extension ReferenceDevice: VirtioMemberAdministration {
    public func deviceMode() throws(VFIOError) -> VirtioMigrationMode { mode }

    public func setDeviceMode(_ rawMode: UInt8) throws(VFIOError) {
        let operation = "VIRTIO_ADMIN_CMD_DEV_MODE_SET"
        // "The device MUST fail ... when the mode is other than Active or Stop or Freeze";
        // "if the command fails, the device MUST retain the current device mode."
        guard let requested = VirtioMigrationMode(rawValue: rawMode) else {
            throw VFIOError(operation, errorNumber: EINVAL, detail: "mode \(rawMode) is not defined")
        }
        // "same as what the mode in the device, the device MUST complete the command successfully"
        guard requested != mode else { return }
        if requested != .freeze {
            // "MUST fail ... when mode is set to Active or Stop and if the device context is
            // partially read or written".
            if case .reading = contextRead, bug != .modeChangeDuringPartialRead {
                throw VFIOError(operation, errorNumber: EBUSY, detail: "the device context is partly read")
            }
            if !contextWriteBuffer.isEmpty {
                throw VFIOError(operation, errorNumber: EBUSY, detail: "the device context is partly written")
            }
            // "The written device context is effective when the device mode is changed from
            // Freeze to Stop or from Freeze to Active."
            if mode == .freeze, let written = writtenContext {
                virtio.apply(written)
                writtenContext = nil
            }
        }
        mode = requested
        contextRead = .notStarted
    }

    /// The context as the device reports it now.
    var contextBytes: [UInt8] {
        let context = virtio.context
        return DeviceContextCodec.encode(
            context, fieldCount: bug == .contextFieldCountWrong ? UInt32(context.fields.count + 1) : nil)
    }

    public func deviceContextSize(forFreezeMode: Bool) throws(VFIOError) -> UInt64 {
        if forFreezeMode { return UInt64(contextBytes.count) }
        switch contextRead {
        case .notStarted: return UInt64(contextBytes.count)
        case .reading(let bytes, let cursor): return UInt64(bytes.count - cursor)
        // "Once the device context is fully read, this command returns zero for size until the
        // new device context is generated."
        case .complete: return 0
        }
    }

    public func readDeviceContext(maxLength: Int) throws(VFIOError) -> [UInt8] {
        if contextRead == .complete {
            // "when the complete device context is already read ... the device MUST complete the
            // command successfully with context_len set to zero."
            guard bug == .contextReadRestartsAfterEnd else { return [] }
            contextRead = .notStarted
        }
        if contextRead == .notStarted {
            contextRead = .reading(bytes: contextBytes, cursor: 0)
        }
        guard case .reading(let bytes, let cursor) = contextRead else { return [] }
        let end = min(bytes.count, cursor + max(0, maxLength))
        contextRead = end == bytes.count ? .complete : .reading(bytes: bytes, cursor: end)
        return Array(bytes[cursor..<end])
    }

    public func writeDeviceContext(_ bytes: [UInt8]) throws(VFIOError) {
        let operation = "VIRTIO_ADMIN_CMD_DEV_CTX_WRITE"
        // "The device MUST fail VIRTIO_ADMIN_CMD_DEV_CTX_WRITE command when the device mode is
        // not Freeze."
        guard mode == .freeze || bug == .contextWriteOutsideFreeze else {
            throw VFIOError(operation, errorNumber: EINVAL, detail: "the device is in \(mode), not Freeze")
        }
        let candidate = contextWriteBuffer + bytes
        switch DeviceContextCodec.scan(candidate) {
        case .malformed(let error):
            throw VFIOError(operation, errorNumber: EINVAL, detail: "\(error)")
        case .incomplete(_, let headers):
            try accept(headers, operation: operation)
            contextWriteBuffer = candidate
        case .complete(let context):
            try accept(context.fields.map { DeviceContextFieldDescriptor(type: $0.type, length: UInt64($0.value.count)) }, operation: operation)
            writtenContext = context
            contextWriteBuffer = []
        }
    }

    /// "The device MUST respond with an error for the command VIRTIO_ADMIN_CMD_DEV_CTX_WRITE, if
    /// there is a mismatch in the device context field length".
    private func accept(_ headers: [DeviceContextFieldDescriptor], operation: String) throws(VFIOError) {
        for header in headers {
            guard let supported = VirtioMemberState.supportedFields.first(where: { $0.type == header.type }) else {
                throw VFIOError(operation, errorNumber: EINVAL, detail: "field \(header.type) is not supported")
            }
            if supported.length != header.length && bug != .contextLengthMismatchAccepted {
                throw VFIOError(operation, errorNumber: EINVAL, detail: "field \(header.type) has \(header.length) bytes, the device's has \(supported.length)")
            }
        }
    }

    public func deviceContextSupportedFields() throws(VFIOError) -> [DeviceContextFieldDescriptor] {
        VirtioMemberState.supportedFields
    }

    public func discardDeviceContext() throws(VFIOError) {
        // "the device functions as if the device context was never read in the given device
        // mode" / "as if the command VIRTIO_ADMIN_CMD_DEV_CTX_WRITE was never received."
        if bug != .discardKeepsReadPosition { contextRead = .notStarted }
        contextWriteBuffer = []
        writtenContext = nil
    }

    /// 4 KiB and 2 MiB pages, up to 8 ranges.
    static let writeRecordCapabilities = WriteRecordCapabilities(supportedPageSizeBitmap: 1 << 0 | 1 << 9, supportedRanges: 8)

    public func writeRecordCapabilities() throws(VFIOError) -> WriteRecordCapabilities { Self.writeRecordCapabilities }

    public func startWriteRecording(pageSize: UInt64, ranges: [WriteRecordRange]) throws(VFIOError) {
        let operation = "VIRTIO_ADMIN_CMD_DEV_WRITE_RECORDS_START"
        let capabilities = Self.writeRecordCapabilities
        guard writeRecorder == nil else {
            throw VFIOError(operation, errorNumber: EBUSY, detail: "write recording already runs")
        }
        guard capabilities.supportedPageSizes.contains(pageSize), !ranges.isEmpty,
              ranges.count <= Int(capabilities.supportedRanges) else {
            throw VFIOError(operation, errorNumber: EINVAL, detail: "unsupported page size or number of ranges")
        }
        for (index, range) in ranges.enumerated() {
            let end = range.pageAddress + range.pageCount * pageSize
            guard range.pageCount > 0, range.pageAddress % pageSize == 0,
                  !ranges[..<index].contains(where: { $0.pageAddress < end && range.pageAddress < $0.pageAddress + $0.pageCount * pageSize }) else {
                throw VFIOError(operation, errorNumber: EINVAL, detail: "range \(index) is empty, unaligned or overlaps another")
            }
        }
        writeRecorder = WriteRecorder(pageSize: pageSize, ranges: ranges)
    }

    public func stopWriteRecording() throws(VFIOError) {
        // "MUST complete ... successfully, even if the write recording is not started".
        writeRecorder = nil
    }

    public func readWriteRecords(pageAddress: UInt64, length: UInt64) throws(VFIOError) -> [UInt64] {
        let operation = "VIRTIO_ADMIN_CMD_DEV_WRITE_RECORDS_READ"
        // "The device MUST fail ... if the write recording is not started by the driver."
        guard var recorder = writeRecorder else {
            throw VFIOError(operation, errorNumber: EINVAL, detail: "write recording is not running")
        }
        guard Self.writeRecordCapabilities.supportedPageSizes.contains(where: { length > 0 && length % $0 == 0 }) else {
            throw VFIOError(operation, errorNumber: EINVAL, detail: "length \(length) is not a multiple of a supported page size")
        }
        let records = recorder.take(pageAddress: pageAddress, length: length)
        writeRecorder = recorder
        return records
    }

    public func functionLevelReset() throws(VFIOError) {
        functionLevelResetOfMember()
    }

    /// "VF function level reset (FLR) MUST NOT stop write recording on the VF device and it MUST
    /// NOT clear any write records already gathered".
    func functionLevelResetOfMember() {
        virtio.resetRuntime()
        if bug == .flrStopsWriteRecording { writeRecorder = nil }
    }
}
