import VFIO

/// Checks of a virtio member device through its owner's admin commands (virtio device migration
/// proposal v2, seed 002: admin-cmds-device-migration.tex and device-context.tex).
enum VirtioChecks {
    static let commands = "virtio spec proposal (seed 002), admin-cmds-device-migration.tex"
    static let context = "virtio spec proposal (seed 002), device-context.tex"

    static var all: [Check] {
        [
            contextWellFormed, contextFields, writeOnlyInFreeze, writeValidation, modeValues, partialTransferBlocksMode,
            discard, readAfterEnd, roundTrip, writeRecordsSurviveFLR, writeRecordsReadClears, writeRecordsNeedStart,
            writeRecordsStopIdempotent,
        ]
    }

    /// Reads a whole context: the stream ends at a read shorter than asked for ("When the length
    /// returned is zero or when the returned context data is less the data requested by the
    /// driver ... the device context stream ends").
    static func readWhole(_ member: any VirtioMemberAdministration, chunk: Int = 100) throws -> [UInt8] {
        var bytes: [UInt8] = []
        while true {
            let part = try member.readDeviceContext(maxLength: chunk)
            bytes += part
            if part.count < chunk { return bytes }
            try expect(bytes.count <= 1 << 20, "the device context did not end within 1 MiB")
        }
    }

    static func setMode(_ member: any VirtioMemberAdministration, _ mode: VirtioMigrationMode) throws {
        do {
            try member.setDeviceMode(mode.rawValue)
        } catch {
            throw CheckFailure(detail: "setting mode \(mode) failed: \(error)")
        }
    }

    /// The member's own context, decoded and re-encoded with our codec: bytes the device must
    /// take, whatever else is wrong with what it emits.
    static func ownContext(_ member: any VirtioMemberAdministration) throws -> DeviceContext {
        let bytes = try readWhole(member)
        do {
            return try DeviceContextCodec.decode(bytes)
        } catch {
            throw CheckSkipped(reason: "the device's context does not decode (\(error)); see virtio.context-well-formed")
        }
    }

    static let contextWellFormed = Check(
        id: "virtio.context-well-formed",
        rule: "The device context read in Freeze holds exactly field_count TLVs, each value within the bytes, nothing after the last.",
        source: "\(context): struct virtio_dev_ctx ('The field_count indicates how many instances of struct virtio_dev_ctx_field_tlv are present')"
    ) { context in
        let member = try member(of: try context.open())
        try setMode(member, .stop)
        try setMode(member, .freeze)
        let bytes = try readWhole(member)
        do {
            let decoded = try DeviceContextCodec.decode(bytes)
            try expect(!decoded.fields.isEmpty, "the context has no fields")
            return .pass("\(decoded.fields.count) fields in \(bytes.count) bytes")
        } catch let error as DeviceContextError {
            return .fail("\(bytes.count) bytes: \(error)")
        }
    }

    static let contextFields = Check(
        id: "virtio.context-fields",
        rule: "Every context field has a type in the generic (0x0-0xFFF) or device-specific (0x1000-0x1FFF) range that the supported-fields query lists, with the length it lists, no shorter than the structure's definition, once per field (per virtqueue).",
        source: "\(context): field type table and 'Device Context Extensions' (fields only grow at the end); \(commands): Device Context Supported Fields Query Command"
    ) { context in
        let member = try member(of: try context.open())
        let supported = try member.deviceContextSupportedFields()
        try expect(!supported.isEmpty, "the supported-fields query lists nothing")
        let badDescriptors = supported.filter { $0.type.range == .reserved || UInt64($0.type.definedLength ?? 0) > $0.length }
        try expect(badDescriptors.isEmpty, "the supported-fields query lists \(badDescriptors.map { "\($0.type) of \($0.length) bytes" })")
        try setMode(member, .stop)
        try setMode(member, .freeze)
        let decoded = try ownContext(member)
        let issues = DeviceContextValidator.validate(decoded, supportedFields: supported)
        try expect(issues.isEmpty, summarize(issues.map(\.description)))
        return .pass("\(decoded.fields.count) fields of \(Set(decoded.fields.map(\.type)).count) types, all listed with their lengths")
    }

    static let writeOnlyInFreeze = Check(
        id: "virtio.context-write-only-in-freeze",
        rule: "DEV_CTX_WRITE fails in Active and Stop mode and succeeds in Freeze.",
        source: "\(commands): 'The device MUST fail VIRTIO_ADMIN_CMD_DEV_CTX_WRITE command when the device mode is not Freeze'"
    ) { context in
        let member = try member(of: try context.open())
        let bytes = DeviceContextCodec.encode(try ownContext(member))
        for mode in [VirtioMigrationMode.active, .stop] {
            try setMode(member, mode)
            if try refusal({ () throws(VFIOError) in try member.writeDeviceContext(bytes) }) == nil {
                return .fail("DEV_CTX_WRITE succeeded in \(mode) mode")
            }
        }
        try setMode(member, .freeze)
        if let error = try refusal({ () throws(VFIOError) in try member.writeDeviceContext(bytes) }) {
            return .fail("DEV_CTX_WRITE of the device's own context failed in Freeze: \(error)")
        }
        try setMode(member, .active)
        return .pass("refused in Active and Stop, taken in Freeze")
    }

    static let writeValidation = Check(
        id: "virtio.context-write-validation",
        rule: "DEV_CTX_WRITE fails for a field of unknown or reserved type and for a field whose length differs from the device's.",
        source: "\(commands): 'The device MUST respond with an error for the command VIRTIO_ADMIN_CMD_DEV_CTX_WRITE, if there is a mismatch in the device context field length'; \(context): type ranges"
    ) { context in
        let member = try member(of: try context.open())
        let own = try ownContext(member)
        try setMode(member, .freeze)
        func with(_ change: (inout [DeviceContextField]) -> Void) -> DeviceContext {
            var fields = own.fields
            change(&fields)
            return DeviceContext(fields: fields)
        }
        func resized(_ type: DeviceContextFieldType, by delta: Int) -> DeviceContext {
            with { fields in
                guard let index = fields.firstIndex(where: { $0.type == type }) else { return }
                fields[index].value = delta < 0 ? Array(fields[index].value.dropLast(-delta)) : fields[index].value + [UInt8](repeating: 0, count: delta)
            }
        }
        let cases: [(String, DeviceContext)] = [
            ("an undefined generic type 0xfff", with { $0.append(DeviceContextField(type: DeviceContextFieldType(rawValue: 0xFFF), value: [0, 0, 0, 0])) }),
            ("a reserved type 0x3000", with { $0.append(DeviceContextField(type: DeviceContextFieldType(rawValue: 0x3000), value: [0, 0, 0, 0])) }),
            ("common config 4 bytes short", resized(.pciCommonConfig, by: -4)),
            ("device features 8 bytes long", resized(.deviceFeatures, by: 8)),
        ]
        var refused: [String] = []
        for (name, bad) in cases {
            try member.discardDeviceContext()
            if try refusal({ () throws(VFIOError) in try member.writeDeviceContext(DeviceContextCodec.encode(bad)) }) == nil {
                return .fail("DEV_CTX_WRITE accepted a context with \(name)")
            }
            refused.append(name)
        }
        return .pass("refused " + refused.joined(separator: ", "))
    }

    static let modeValues = Check(
        id: "virtio.mode-values",
        rule: "A member starts in Active; DEV_MODE_SET to the current mode succeeds, to an undefined mode fails and keeps the mode.",
        source: "\(commands): 'Active: It is the default mode after instantiation', 'same as what the mode in the device, the device MUST complete the command successfully', 'MUST fail ... when the mode is other than Active or Stop or Freeze', 'MUST retain the current device mode'"
    ) { context in
        let member = try member(of: try context.open())
        let initial = try member.deviceMode()
        try expect(initial == .active, "a fresh member is in \(initial)")
        try setMode(member, .active)
        try setMode(member, .stop)
        try setMode(member, .stop)
        for undefined: UInt8 in [3, 0xFF] {
            if try refusal({ () throws(VFIOError) in try member.setDeviceMode(undefined) }) == nil {
                return .fail("DEV_MODE_SET to undefined mode \(undefined) succeeded")
            }
            let mode = try member.deviceMode()
            try expect(mode == .stop, "a refused DEV_MODE_SET \(undefined) changed the mode to \(mode)")
        }
        return .pass("starts Active, same-mode sets succeed, modes 3 and 255 refused")
    }

    static let partialTransferBlocksMode = Check(
        id: "virtio.mode-blocked-by-partial-transfer",
        rule: "DEV_MODE_SET to Active or Stop fails while the device context is partly read or partly written, until DEV_CTX_DISCARD.",
        source: "\(commands): 'The device MUST fail VIRTIO_ADMIN_CMD_DEV_MODE_SET command when mode is set to Active or Stop and if the device context is partially read or written'"
    ) { context in
        // Partly read, in Stop.
        let reader = try member(of: try context.open())
        try setMode(reader, .stop)
        let part = try reader.readDeviceContext(maxLength: 20)
        try expect(part.count == 20, "the context is shorter than 20 bytes")
        if try refusal({ () throws(VFIOError) in try reader.setDeviceMode(VirtioMigrationMode.active.rawValue) }) == nil {
            return .fail("Stop -> Active succeeded while the context was partly read")
        }
        try expect(try reader.deviceMode() == .stop, "the refused mode change moved the member")
        try reader.discardDeviceContext()
        try setMode(reader, .active)
        // Partly written, in Freeze.
        let writer = try member(of: try context.open())
        let bytes = DeviceContextCodec.encode(try ownContext(writer))
        try setMode(writer, .freeze)
        try writer.writeDeviceContext(Array(bytes.prefix(20)))
        for mode in [VirtioMigrationMode.active, .stop] {
            if try refusal({ () throws(VFIOError) in try writer.setDeviceMode(mode.rawValue) }) == nil {
                return .fail("Freeze -> \(mode) succeeded while the context was partly written")
            }
        }
        try writer.discardDeviceContext()
        try setMode(writer, .active)
        return .pass("refused while partly read (Stop) and partly written (Freeze); allowed after discard")
    }

    static let discard = Check(
        id: "virtio.context-discard",
        rule: "After DEV_CTX_DISCARD the device behaves as if the context was never read in this mode, nor written.",
        source: "\(commands): Device Context Discard Command ('as if the device context was never read in the given device mode', 'as if the command VIRTIO_ADMIN_CMD_DEV_CTX_WRITE was never received')"
    ) { context in
        let device = try context.open()
        let member = try member(of: device)
        try setMode(member, .stop)
        try setMode(member, .freeze)
        let fullSize = try member.deviceContextSize(forFreezeMode: false)
        let first = try member.readDeviceContext(maxLength: 20)
        try member.discardDeviceContext()
        let sizeAfter = try member.deviceContextSize(forFreezeMode: false)
        try expect(sizeAfter == fullSize, "after discard the remaining size is \(sizeAfter), the whole context has \(fullSize)")
        let whole = try readWhole(member)
        try expect(whole.starts(with: first) && UInt64(whole.count) == fullSize,
                   "after discard the read went on from the old position (\(whole.count) of \(fullSize) bytes, starting \(whole.prefix(4)))")
        // A partial write discarded leaves the device as it was.
        let digest = device.exerciser?.internalStateDigest()
        try member.writeDeviceContext(Array(DeviceContextCodec.encode(DeviceContext(fields: [])).prefix(2)))
        try member.discardDeviceContext()
        try setMode(member, .active)
        try expect(device.exerciser?.internalStateDigest() == digest, "a discarded partial write changed the device state")
        return .pass("read restarted from byte 0 with the full size; a discarded partial write left no trace")
    }

    static let readAfterEnd = Check(
        id: "virtio.context-read-after-end",
        rule: "Once the whole context is read, DEV_CTX_READ returns length 0 and DEV_CTX_SIZE_GET 0 in that mode.",
        source: "\(commands): 'the device MUST complete the command successfully with context_len set to zero'; 'Once the device context is fully read, this command returns zero for size'"
    ) { context in
        let member = try member(of: try context.open())
        try setMode(member, .stop)
        try setMode(member, .freeze)
        let whole = try readWhole(member)
        for attempt in 1...2 {
            let more = try member.readDeviceContext(maxLength: 64)
            try expect(more.isEmpty, "read \(attempt) after the end returned \(more.count) bytes")
        }
        let size = try member.deviceContextSize(forFreezeMode: false)
        try expect(size == 0, "DEV_CTX_SIZE_GET reports \(size) bytes after the whole context was read")
        return .pass("\(whole.count) bytes, then length 0 twice and size 0")
    }

    static let roundTrip = Check(
        id: "virtio.context-round-trip",
        rule: "A context read from a frozen source, written to a frozen destination in pieces, is in effect once the destination is Active.",
        source: "\(commands): theory of operation ('the device uses the most recently set device context'), 'The written device context is effective when the device mode is changed from Freeze to Stop or from Freeze to Active'"
    ) { context in
        let sourceDevice = try context.open()
        try sourceDevice.exerciser?.advanceInternalState(seed: 11)
        let source = try member(of: sourceDevice)
        try setMode(source, .stop)
        try setMode(source, .freeze)
        let bytes = try readWhole(source)
        let sent: DeviceContext
        do {
            sent = try DeviceContextCodec.decode(bytes)
        } catch {
            return .fail("the source's context does not decode: \(error)")
        }
        let destination = try member(of: try context.open())
        try setMode(destination, .freeze)
        for offset in stride(from: 0, to: bytes.count, by: 64) {
            do {
                try destination.writeDeviceContext(Array(bytes[offset..<min(bytes.count, offset + 64)]))
            } catch {
                return .fail("DEV_CTX_WRITE at offset \(offset) failed: \(error)")
            }
        }
        try setMode(destination, .active)
        let received = try ownContext(destination)
        try expect(received == sent, "the destination's context differs from the source's in \(zip(received.fields, sent.fields).filter { $0 != $1 }.map { "\($0.0.type)" })")
        return .pass("\(bytes.count) bytes in \((bytes.count + 63) / 64) writes; the destination's context equals the source's")
    }

    static let recordsBase: UInt64 = 0x2000_0000

    static func startRecording(_ member: any VirtioMemberAdministration) throws -> UInt64 {
        let capabilities = try member.writeRecordCapabilities()
        guard let pageSize = capabilities.supportedPageSizes.first, capabilities.supportedRanges > 0 else {
            throw CheckFailure(detail: "write record capabilities list no page size or no ranges ('MUST set minimum one bit ... and non zero value in the supported_ranges')")
        }
        try member.startWriteRecording(pageSize: pageSize, ranges: [WriteRecordRange(pageAddress: recordsBase, pageCount: 64)])
        return pageSize
    }

    static let writeRecordsSurviveFLR = Check(
        id: "virtio.write-records-flr",
        rule: "A member FLR neither stops write recording nor drops the records gathered.",
        source: "\(commands): 'VF function level reset (FLR) MUST NOT stop write recording on the VF device and it MUST NOT clear any write records already gathered'"
    ) { context in
        let device = try context.open()
        let member = try member(of: device)
        let exerciser = try exerciser(of: device, for: "making the member write memory")
        let pageSize = try startRecording(member)
        try exerciser.performDMAWrite(iova: recordsBase + pageSize, length: 8)
        try member.functionLevelReset()
        try exerciser.performDMAWrite(iova: recordsBase + 5 * pageSize, length: 8)
        let records: [UInt64]
        do {
            records = try member.readWriteRecords(pageAddress: recordsBase, length: 64 * pageSize)
        } catch {
            return .fail("reading the write records after an FLR failed: \(error)")
        }
        let expected = [recordsBase + pageSize, recordsBase + 5 * pageSize]
        try expect(records.sorted() == expected, "records after an FLR: \(records.map(hex)); expected \(expected.map(hex))")
        try member.stopWriteRecording()
        return .pass("the records from before and after the FLR were both reported")
    }

    static let writeRecordsReadClears = Check(
        id: "virtio.write-records-read-clears",
        rule: "DEV_WRITE_RECORDS_READ returns the written pages and clears them; a later write to the same page is a new record.",
        source: "\(commands): 'The device MUST clear the write records which are returned ... if new write record is created for the same page, the device MUST report such a write record as new entry'"
    ) { context in
        let device = try context.open()
        let member = try member(of: device)
        let exerciser = try exerciser(of: device, for: "making the member write memory")
        let pageSize = try startRecording(member)
        let length = 64 * pageSize
        try exerciser.performDMAWrite(iova: recordsBase + 3 * pageSize - 2, length: 4)
        let first = try member.readWriteRecords(pageAddress: recordsBase, length: length)
        try expect(first.sorted() == [recordsBase + 2 * pageSize, recordsBase + 3 * pageSize], "a write across two pages was recorded as \(first.map(hex))")
        let second = try member.readWriteRecords(pageAddress: recordsBase, length: length)
        try expect(second.isEmpty, "a second read returned \(second.map(hex)) again")
        try exerciser.performDMAWrite(iova: recordsBase + 2 * pageSize, length: 1)
        let third = try member.readWriteRecords(pageAddress: recordsBase, length: length)
        try expect(third == [recordsBase + 2 * pageSize], "a new write to a reported page was recorded as \(third.map(hex))")
        try member.stopWriteRecording()
        return .pass("records reported once, cleared, and recorded anew")
    }

    static let writeRecordsNeedStart = Check(
        id: "virtio.write-records-need-start",
        rule: "DEV_WRITE_RECORDS_READ fails when write recording was never started, and after it was stopped.",
        source: "\(commands): 'The device MUST fail VIRTIO_ADMIN_CMD_DEV_WRITE_RECORDS_READ command if the write recording is not started by the driver'"
    ) { context in
        let member = try member(of: try context.open())
        if try refusal({ () throws(VFIOError) in try member.readWriteRecords(pageAddress: recordsBase, length: 1 << 20) }) == nil {
            return .fail("reading records without START succeeded")
        }
        _ = try startRecording(member)
        try member.stopWriteRecording()
        if try refusal({ () throws(VFIOError) in try member.readWriteRecords(pageAddress: recordsBase, length: 1 << 20) }) == nil {
            return .fail("reading records after STOP succeeded")
        }
        return .pass("refused before START and after STOP")
    }

    static let writeRecordsStopIdempotent = Check(
        id: "virtio.write-records-stop-idempotent",
        rule: "DEV_WRITE_RECORDS_STOP succeeds when recording is not running, and twice in a row.",
        source: "\(commands): 'The device MUST complete VIRTIO_ADMIN_CMD_DEV_WRITE_RECORDS_STOP command successfully, even if the write recording is not started by the driver or write recording is already stopped previously'"
    ) { context in
        let member = try member(of: try context.open())
        if let error = try refusal({ () throws(VFIOError) in try member.stopWriteRecording() }) {
            return .fail("STOP before START failed: \(error)")
        }
        _ = try startRecording(member)
        try member.stopWriteRecording()
        if let error = try refusal({ () throws(VFIOError) in try member.stopWriteRecording() }) {
            return .fail("a second STOP failed: \(error)")
        }
        return .pass("STOP succeeded before START and twice after it")
    }
}
