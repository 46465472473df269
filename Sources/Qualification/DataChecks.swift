#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import VFIO

/// Checks of the data transfer sessions: STOP_COPY, RESUMING and pre-copy.
enum DataChecks {
    static let uapi = "include/uapi/linux/vfio.h"

    static var all: [Check] {
        [
            resetEndsSession, leavingSavingEndsSession, stopCopyReadToEnd, stopCopySize,
            resumeRoundTrip, resumeTruncated, resumeCorrupted, resumeForeign,
            precopyInfoConsistent, precopyInfoOnlyInPreCopy,
        ]
    }

    /// Asks for one read from a stream whose session should be over.
    static func deadSessionRead(_ stream: any MigrationDataStream, _ what: String) throws {
        do {
            let bytes = try stream.read(upTo: 4096)
            throw CheckFailure(detail: bytes.isEmpty
                ? "after \(what) the old data fd reports end of stream, which claims a complete device state"
                : "after \(what) the old data fd still yields data (\(bytes.count) bytes)")
        } catch is VFIOError {
            return
        }
    }

    static let resetEndsSession = Check(
        id: "data.reset-ends-session",
        rule: "A reset during PRE_COPY or STOP_COPY ends the data session: the old data fd yields no more data.",
        source: "\(uapi), enum vfio_device_mig_state comment ('To abort a RESUMING session the device must be reset'); drivers end their sessions on reset (mlx5vf_disable_fds() in reset_done); QEMU reports a new fd during save as 'data_fd out of sync'"
    ) { context in
        var tested: [String] = []
        for state in [MigrationState.preCopy, .stopCopy] where context.capabilities.supports(state) {
            let device = try context.open()
            let stream = try openSession(device, in: state)
            _ = try stream.read(upTo: 64)
            try device.reset()
            try deadSessionRead(stream, "a reset in \(state)")
            tested.append(state.description)
        }
        return .pass("the data fd went dead on reset in \(tested.joined(separator: " and "))")
    }

    static let leavingSavingEndsSession = Check(
        id: "data.leaving-saving-ends-session",
        rule: "Leaving the saving states (STOP_COPY -> STOP, PRE_COPY -> RUNNING) ends the data session: migration data is no longer readable.",
        source: "\(uapi), enum vfio_device_mig_state comment: 'The STOP_COPY arc will terminate a data transfer session', 'The PRE_COPY arc will terminate a data transfer session'"
    ) { context in
        var tested: [String] = []
        var exits: [(MigrationState, MigrationState)] = [(.stopCopy, .stop)]
        if context.capabilities.supports(.preCopy) { exits.append((.preCopy, .running)) }
        for (saving, leaving) in exits {
            let device = try context.open()
            try move(device, to: saving == .stopCopy ? .stop : .running)
            let stream = try openSession(device, in: saving)
            _ = try stream.read(upTo: 64)
            try move(device, to: leaving)
            try deadSessionRead(stream, "\(saving) -> \(leaving)")
            tested.append("\(saving) -> \(leaving)")
        }
        return .pass("no data after \(tested.joined(separator: ", "))")
    }

    static let stopCopyReadToEnd = Check(
        id: "data.stop-copy-read-to-end",
        rule: "The STOP_COPY data fd reaches end of stream, and read() keeps returning 0 after it.",
        source: "\(uapi), VFIO_MIG_GET_PRECOPY_INFO comment: 'Once in STOP_COPY the migration data FD has a permanent end of stream signaled in the usual way by read() always returning 0'"
    ) { context in
        let device = try context.open()
        try move(device, to: .stop)
        let stream = try openSession(device, in: .stopCopy)
        let bytes = try readToEnd(stream, limit: context.target.maxStreamBytes)
        try expect(!bytes.isEmpty, "the STOP_COPY stream was empty")
        for attempt in 1...2 {
            let more = try stream.read(upTo: 4096)
            try expect(more.isEmpty, "read \(attempt) after end of stream returned \(more.count) bytes")
        }
        return .pass("\(bytes.count) bytes, then end of stream, twice")
    }

    static let stopCopySize = Check(
        id: "data.stop-copy-size",
        rule: "VFIO_DEVICE_FEATURE_MIG_DATA_SIZE gives a non-zero estimate for a device whose STOP_COPY stream is not empty.",
        source: "\(uapi), VFIO_DEVICE_FEATURE_MIG_DATA_SIZE: 'the estimated data length that will be required to complete stop copy'"
    ) { context in
        let device = try context.open()
        try move(device, to: .stop)
        let estimate = try device.stopCopySize()
        let bytes = try saveStopCopyStream(of: device, limit: context.target.maxStreamBytes)
        try expect(estimate > 0 || bytes.isEmpty, "the estimate is 0, the stream had \(bytes.count) bytes")
        return .pass("estimate \(estimate) bytes, stream \(bytes.count) bytes")
    }

    /// A source stream, after the device did some work so that its state differs from a fresh
    /// device's; and the source's state digest where the device shows one.
    static func sourceStream(_ context: CheckContext) throws -> (bytes: [UInt8], digest: UInt64?) {
        let source = try context.open()
        if let exerciser = source.exerciser {
            try exerciser.advanceInternalState(seed: 0x5eed)
        }
        let digest = source.exerciser?.internalStateDigest()
        return (try saveStopCopyStream(of: source, limit: context.target.maxStreamBytes), digest)
    }

    static let resumeRoundTrip = Check(
        id: "data.resume-round-trip",
        rule: "A whole STOP_COPY stream written to RESUMING, then STOP, succeeds and leaves the device in the source's state.",
        source: "\(uapi), enum vfio_device_mig_state comment: 'RESUMING -> STOP ... complete the incorporation of data written to the data transfer FD into the device internal state'"
    ) { context in
        let (bytes, sourceDigest) = try sourceStream(context)
        let destination = try context.open()
        let freshDigest = destination.exerciser?.internalStateDigest()
        if let error = try resume(bytes, into: destination) {
            return .fail("the device refused its own \(bytes.count)-byte stream: \(error)")
        }
        let after = try destination.migrationState()
        try expect(after == .stop, "RESUMING -> STOP succeeded but the device is in \(after)")
        try move(destination, to: .running)
        guard let exerciser = destination.exerciser, let sourceDigest else {
            return .pass("\(bytes.count) bytes resumed; device state not compared (not visible on this device)")
        }
        try expect(freshDigest != sourceDigest, "inconclusive: the source's state equals a fresh device's")
        try expect(exerciser.internalStateDigest() == sourceDigest, "the resumed device's state differs from the source's")
        return .pass("\(bytes.count) bytes resumed; device state equals the source's")
    }

    /// Every `variants` stream must be refused by a fresh destination.
    static func refuseAll(_ variants: [(String, [UInt8])], _ context: CheckContext) throws -> CheckOutcome {
        var refusals: [String] = []
        for (name, bytes) in variants {
            let destination = try context.open()
            guard let error = try resume(bytes, into: destination) else {
                return .fail("\(name) was accepted: RESUMING -> STOP succeeded (device now in \(try destination.migrationState()))")
            }
            refusals.append("\(name): \(error.errorName)")
        }
        return .pass("refused " + refusals.joined(separator: ", "))
    }

    static let resumeTruncated = Check(
        id: "data.resume-truncated",
        rule: "RESUMING -> STOP fails when the stream written was cut short.",
        source: "\(uapi), enum vfio_device_mig_state comment: 'If the user provided data is found to be incomplete ... the migration driver must fail the SET_STATE ioctl'"
    ) { context in
        let (bytes, _) = try sourceStream(context)
        try expect(bytes.count >= 2, "the stream has \(bytes.count) bytes: nothing to cut")
        return try refuseAll([
            ("the first half", Array(bytes.prefix(bytes.count / 2))),
            ("all but the last byte", Array(bytes.dropLast())),
        ], context)
    }

    static let resumeCorrupted = Check(
        id: "data.resume-corrupted",
        rule: "RESUMING -> STOP fails when bytes of the stream were altered.",
        source: "\(uapi), enum vfio_device_mig_state comment: 'If the user provided data is found to be ... inconsistent, or otherwise invalid, the migration driver must fail the SET_STATE ioctl'; seed 003: never trust the incoming stream"
    ) { context in
        let (bytes, _) = try sourceStream(context)
        try expect(bytes.count >= 64, "the stream has \(bytes.count) bytes: too short to corrupt in several places")
        let offsets = [0, bytes.count / 2, bytes.count * 3 / 4, bytes.count - 20]
        return try refuseAll(offsets.map { offset in
            var corrupted = bytes
            corrupted[offset] ^= 0xA5
            return ("a flipped byte at offset \(offset)", corrupted)
        }, context)
    }

    static let resumeForeign = Check(
        id: "data.resume-foreign",
        rule: "RESUMING -> STOP fails on a stream from another device or stream format version.",
        source: "\(uapi), enum vfio_device_mig_state comment: 'The data stream fed into the data_fd should be taken from the data transfer output of a single FD during saving from a compatible device'; seed 003: detect a migration to the wrong device or device version"
    ) { context in
        try refuseAll([("a foreign stream", try context.target.foreignStream())], context)
    }

    static let precopyInfoConsistent = Check(
        id: "precopy.info-consistent",
        rule: "VFIO_MIG_GET_PRECOPY_INFO matches the data read: initial_bytes starts non-zero and reaches 0 once that many bytes are read, dirty_bytes counts the changes since, and with both 0 read() fails with ENOMSG.",
        source: "\(uapi), VFIO_MIG_GET_PRECOPY_INFO comment ('This field should have a non-zero initial value and decrease as migration data is read', 'should return ENOMSG from read()')"
    ) { context in
        guard context.capabilities.supports(.preCopy) else { return .skip("the device offers no PRE_COPY (\(context.capabilities))") }
        let device = try context.open()
        let stream = try openSession(device, in: .preCopy)
        let start = try stream.precopyInfo()
        try expect(start.initialBytes > 0, "initial_bytes is 0 on entering PRE_COPY")
        _ = try readExactly(start.initialBytes, from: stream)
        let afterInitial = try stream.precopyInfo()
        try expect(afterInitial.initialBytes == 0, "initial_bytes is \(afterInitial.initialBytes) after reading the \(start.initialBytes) announced")
        guard let exerciser = device.exerciser else {
            return .pass("initial_bytes \(start.initialBytes) read to 0; dirty_bytes not checked (device activity cannot be controlled)")
        }
        try expect(afterInitial.dirtyBytes == 0, "dirty_bytes is \(afterInitial.dirtyBytes) on an idle device")
        let temporaryEnd = try refusal { () throws(VFIOError) in try stream.read(upTo: 4096) }
        try expect(temporaryEnd?.errorNumber == ENOMSG,
                   "read() with nothing to send " + (temporaryEnd.map { "failed with \($0.errorName), not ENOMSG" } ?? "returned data or end of stream, not ENOMSG"))
        try exerciser.advanceInternalState(seed: 7)
        let dirty = try stream.precopyInfo()
        try expect(dirty.dirtyBytes > 0 && dirty.initialBytes == 0, "after the device changed its state: initial_bytes \(dirty.initialBytes), dirty_bytes \(dirty.dirtyBytes)")
        _ = try readExactly(dirty.dirtyBytes, from: stream)
        let drained = try stream.precopyInfo()
        try expect(drained == PrecopyInfo(initialBytes: 0, dirtyBytes: 0), "after reading the dirty bytes: initial_bytes \(drained.initialBytes), dirty_bytes \(drained.dirtyBytes)")
        return .pass("initial_bytes \(start.initialBytes) read to 0, ENOMSG when idle, dirty_bytes \(dirty.dirtyBytes) read to 0")
    }

    static let precopyInfoOnlyInPreCopy = Check(
        id: "precopy.info-only-in-pre-copy",
        rule: "VFIO_MIG_GET_PRECOPY_INFO fails outside the PRE_COPY states, on the same data fd in STOP_COPY too.",
        source: "\(uapi), VFIO_MIG_GET_PRECOPY_INFO comment: 'This ioctl is valid only in PRE_COPY states and kernel driver should return -EINVAL from any other migration state'"
    ) { context in
        guard context.capabilities.supports(.preCopy) else { return .skip("the device offers no PRE_COPY (\(context.capabilities))") }
        // One device open at a time: a real device is one device (its group opens once).
        do {
            let device = try context.open()
            let stream = try openSession(device, in: .preCopy)
            _ = try stream.precopyInfo()
            try move(device, to: .stopCopy)
            if try refusal({ () throws(VFIOError) in try stream.precopyInfo() }) == nil {
                return .fail("VFIO_MIG_GET_PRECOPY_INFO answered in STOP_COPY (the session continued from PRE_COPY)")
            }
        }
        let stopCopyDevice = try context.open()
        try move(stopCopyDevice, to: .stop)
        let stopCopyStream = try openSession(stopCopyDevice, in: .stopCopy)
        if try refusal({ () throws(VFIOError) in try stopCopyStream.precopyInfo() }) == nil {
            return .fail("VFIO_MIG_GET_PRECOPY_INFO answered on a STOP_COPY session started from STOP")
        }
        return .pass("refused in STOP_COPY on both a continued and a fresh session")
    }
}
