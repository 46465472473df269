#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import VFIO

/// The reference device's own machinery; the conformance suite covers its behaviour as a device.
struct ReferenceDeviceTests {
    static func stopCopyStream(_ device: ReferenceDevice) throws -> [UInt8] {
        _ = try device.setMigrationState(.stop)
        let stream = try #require(try device.setMigrationState(.stopCopy))
        var bytes: [UInt8] = []
        while case let chunk = try stream.read(upTo: 1000), !chunk.isEmpty { bytes += chunk }
        return bytes
    }

    @Test func streamFormatRefusesWhatIsNotAWholeStreamOfThisDevice() throws {
        let device = ReferenceDevice()
        let header = device.streamHeader
        let bytes = try Self.stopCopyStream(device)
        #expect(try ReferenceStreamFormat.load(bytes, expecting: header).get() == device.image)
        #expect(ReferenceStreamFormat.load(Array(bytes.dropLast(9)), expecting: header) == .failure(.missingEnd))
        var corrupted = bytes
        corrupted[100] ^= 1
        #expect(ReferenceStreamFormat.load(corrupted, expecting: header) == .failure(.digestMismatch))
        var foreign = header
        foreign.formatVersion = 2
        #expect(ReferenceStreamFormat.load(bytes, expecting: foreign) == .failure(.foreignVersion(found: 1, expected: 2)))
        #expect(ReferenceStreamFormat.load(bytes + [0], expecting: header) == .failure(.trailingBytes(count: 1)))
        #expect(ReferenceStreamFormat.load(Array("junk".utf8) + bytes.dropFirst(4), expecting: header) == .failure(.badMagic))
    }

    @Test func failedResumeEntersErrorAndResetLeavesIt() throws {
        let device = ReferenceDevice()
        let stream = try #require(try device.setMigrationState(.resuming))
        _ = try stream.write([1, 2, 3])
        #expect(throws: VFIOError.self) { try device.setMigrationState(.stop) }
        #expect(try device.migrationState() == .error)
        try device.reset()
        #expect(try device.migrationState() == .running)
        #expect(throws: VFIOError.self) { try stream.write([4]) }
    }

    @Test func dmaLandsInGuestMemoryAndTheLog() throws {
        let device = ReferenceDevice()
        _ = try device.startDMALogging(pageSizeHint: 4096, ranges: [IOVARange(iova: 0x10000, length: 0x10000)])
        try device.performDMAWrite(iova: 0x10FFE, length: 4)
        #expect(device.guestMemory.read(IOVARange(iova: 0x10FFE, length: 4)) == [1, 2, 3, 4])
        var bitmap = DirtyBitmap(iova: 0x10000, length: 0x10000, pageSize: 4096)
        try device.reportDMALog(into: &bitmap)
        #expect(bitmap.dirtyPageAddresses == [0x10000, 0x11000])
        _ = try device.setMigrationState(.stop)
        #expect(throws: VFIOError.self, "a stopped device does not DMA") { try device.performDMAWrite(iova: 0x10000, length: 1) }
    }

    @Test func dmaLogReplicatesCoarseTrackingPages() {
        var log = DMALog(pageSize: 64 << 10, ranges: [IOVARange(iova: 0, length: 1 << 20)])
        log.record(IOVARange(iova: 0x10010, length: 1))
        var bitmap = DirtyBitmap(iova: 0, length: 1 << 20, pageSize: 4096)
        log.report(into: &bitmap)
        #expect(bitmap.dirtyPageAddresses == (0..<16).map { 0x10000 + UInt64($0) * 4096 })
        #expect(log.dirtyPages.isEmpty)
    }

    @Test func dirtyBitmapBitPositions() {
        // bitmap[(a - iova) / page_size / 64] & (1 << ((a - iova) / page_size % 64))
        var bitmap = DirtyBitmap(iova: 0x1000, length: 130 * 4096, pageSize: 4096)
        #expect(bitmap.words.count == 3)
        bitmap.setDirty(page: 65)
        #expect(bitmap.words == [0, 2, 0])
        let expected = DirtyBitmap.expected(iova: 0, length: 1 << 21, pageSize: 8192, writes: [IOVARange(iova: 8191, length: 2)])
        #expect(expected.dirtyPageAddresses == [0, 8192])
    }

    @Test func contextReadsAreIncrementalAndEnd() throws {
        let device = ReferenceDevice()
        let whole = DeviceContextCodec.encode(device.virtio.context)
        #expect(try device.deviceContextSize(forFreezeMode: false) == UInt64(whole.count))
        let first = try device.readDeviceContext(maxLength: 100)
        #expect(try device.deviceContextSize(forFreezeMode: false) == UInt64(whole.count - 100))
        var rest: [UInt8] = []
        while case let part = try device.readDeviceContext(maxLength: 100), !part.isEmpty { rest += part }
        #expect(first + rest == whole)
        #expect(try device.readDeviceContext(maxLength: 100) == [])
    }

    @Test func writtenContextTakesEffectOnLeavingFreeze() throws {
        let source = ReferenceDevice()
        try source.advanceInternalState(seed: 3)
        let destination = ReferenceDevice()
        #expect(source.virtio != destination.virtio)
        try destination.setDeviceMode(VirtioMigrationMode.freeze.rawValue)
        try destination.writeDeviceContext(DeviceContextCodec.encode(source.virtio.context))
        #expect(source.virtio != destination.virtio, "not before leaving Freeze")
        try destination.setDeviceMode(VirtioMigrationMode.active.rawValue)
        #expect(source.virtio == destination.virtio)
    }

    @Test(arguments: SeededBug.allCases)
    func everyBugHasANameAndASummary(_ bug: SeededBug) {
        #expect(SeededBug(rawValue: bug.rawValue) == bug)
        #expect(!bug.summary.isEmpty && !bug.summary.contains("\n"))
    }

    @Test func atLeastTwelveBugClasses() {
        #expect(SeededBug.allCases.count >= 12)
    }
}
