import VFIO

// Small steps the checks share. Each either succeeds, or ends the check by throwing
// `CheckFailure` (with what was seen) or `CheckSkipped` (with why the check cannot run).

func expect(_ condition: Bool, _ detail: @autoclosure () -> String) throws {
    if !condition { throw CheckFailure(detail: detail()) }
}

/// The error a refused operation ended with, or nil when it succeeded. An operation miglab
/// did not send (the kernel would not return) is no refusal: the check is skipped, saying why.
func refusal<T>(_ operation: () throws(VFIOError) -> T) throws -> VFIOError? {
    do {
        _ = try operation()
        return nil
    } catch {
        if error.wasNotSent { throw CheckSkipped(reason: "\(error.operation): \(error.detail ?? "")") }
        return error
    }
}

func exerciser(of device: any MigrationDevice, for purpose: String) throws -> any DeviceExerciser {
    guard let exerciser = device.exerciser else {
        throw CheckSkipped(reason: "\(purpose) needs a device-specific way to drive the device, which a VFIO device does not offer")
    }
    return exerciser
}

func member(of device: any MigrationDevice) throws -> any VirtioMemberAdministration {
    guard let member = device.virtioMember else {
        throw CheckSkipped(reason: "no virtio owner-device view: the device is not a virtio member reachable through its owner's admin commands")
    }
    return member
}

/// Requests `state` and checks the device got there.
@discardableResult
func move(_ device: any MigrationDevice, to state: MigrationState) throws -> (any MigrationDataStream)? {
    let from = try device.migrationState()
    let stream: (any MigrationDataStream)?
    do {
        stream = try device.setMigrationState(state)
    } catch {
        throw CheckFailure(detail: "\(from) -> \(state) failed: \(error)")
    }
    let reached = try device.migrationState()
    try expect(reached == state, "\(from) -> \(state) succeeded but the device is in \(reached)")
    return stream
}

/// Requests a state that opens a data session and returns its stream.
func openSession(_ device: any MigrationDevice, in state: MigrationState) throws -> any MigrationDataStream {
    let from = try device.migrationState()
    guard let stream = try move(device, to: state) else {
        throw CheckFailure(detail: "\(from) -> \(state) returned no data fd")
    }
    return stream
}

/// Reads a STOP_COPY stream to its end ("End of stream on the FD indicates the entire device
/// state has been transferred").
func readToEnd(_ stream: any MigrationDataStream, limit: Int) throws -> [UInt8] {
    var bytes: [UInt8] = []
    while true {
        let chunk: [UInt8]
        do {
            chunk = try stream.read(upTo: 64 * 1024)
        } catch {
            throw CheckFailure(detail: "reading the STOP_COPY stream failed after \(bytes.count) bytes: \(error)")
        }
        if chunk.isEmpty { return bytes }
        bytes += chunk
        try expect(bytes.count <= limit, "the STOP_COPY stream did not end within \(limit) bytes")
    }
}

/// Reads exactly `count` bytes of a pre-copy stream.
func readExactly(_ count: UInt64, from stream: any MigrationDataStream) throws -> [UInt8] {
    var bytes: [UInt8] = []
    while UInt64(bytes.count) < count {
        let chunk: [UInt8]
        do {
            chunk = try stream.read(upTo: Int(min(count - UInt64(bytes.count), 64 * 1024)))
        } catch {
            throw CheckFailure(detail: "read failed after \(bytes.count) of the \(count) bytes announced: \(error)")
        }
        try expect(!chunk.isEmpty, "end of stream after \(bytes.count) of the \(count) bytes announced")
        bytes += chunk
    }
    return bytes
}

/// A whole STOP_COPY stream of `device`, taken STOP -> STOP_COPY -> read to end -> STOP.
func saveStopCopyStream(of device: any MigrationDevice, limit: Int) throws -> [UInt8] {
    try move(device, to: .stop)
    let stream = try openSession(device, in: .stopCopy)
    let bytes = try readToEnd(stream, limit: limit)
    try move(device, to: .stop)
    return bytes
}

/// Feeds `bytes` into RESUMING and asks for STOP; nil when the device accepted them, else the
/// error that refused them (at write time or at RESUMING -> STOP).
func resume(_ bytes: [UInt8], into device: any MigrationDevice) throws -> VFIOError? {
    let stream = try openSession(device, in: .resuming)
    var offset = 0
    while offset < bytes.count {
        let end = min(bytes.count, offset + 4096)
        do {
            let written = try stream.write(Array(bytes[offset..<end]))
            try expect(written > 0, "the RESUMING data fd took 0 bytes at offset \(offset)")
            offset += written
        } catch let error as VFIOError {
            return error
        }
    }
    return try refusal { () throws(VFIOError) in try device.setMigrationState(.stop) }
}

/// Drives the device into ERROR the way a destination gets there: RESUMING -> STOP on data that
/// is no migration stream. False when the device does not end up in ERROR.
func enterErrorState(_ device: any MigrationDevice) throws -> Bool {
    let garbage = Array("miglab: this is not a migration stream".utf8)
    guard try resume(garbage, into: device) != nil else {
        throw CheckFailure(detail: "RESUMING -> STOP accepted \(garbage.count) bytes of text as device state")
    }
    return try device.migrationState() == .error
}

/// Moves a fresh device from RUNNING into `state`, ERROR included; nil when `state` cannot be
/// reached on this device (ERROR, where a failed resume does not lead there). In RESUMING it
/// writes `resumeData`, so that leaving RESUMING can succeed.
func reach(_ state: MigrationState, on device: any MigrationDevice, resumeData: [UInt8] = []) throws -> (any MigrationDataStream)?? {
    switch state {
    case .running:
        return .some(nil)
    case .error:
        return try enterErrorState(device) ? .some(nil) : nil
    case .resuming:
        let stream = try openSession(device, in: .resuming)
        var offset = 0
        while offset < resumeData.count {
            let written = try stream.write(Array(resumeData[offset..<min(resumeData.count, offset + 64 * 1024)]))
            try expect(written > 0, "the RESUMING data fd took 0 bytes at offset \(offset)")
            offset += written
        }
        return .some(stream)
    default:
        return .some(try move(device, to: state))
    }
}

/// Lists at most `limit` items, then how many more.
func summarize(_ items: [String], limit: Int = 3) -> String {
    let shown = items.prefix(limit).joined(separator: "; ")
    return items.count > limit ? "\(shown); and \(items.count - limit) more" : shown
}

func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }
