#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A software device that follows every rule of the VFIO migration protocol v2, DMA logging and
/// the virtio owner-device commands: the in-process twin of `VFIODevice`, the way NIOEmbedded
/// twins a real transport. It has device memory and a virtio member state (what it migrates),
/// DMAs into a guest-memory model, and keeps a DMA log and write records.
///
/// `bug` makes it break one rule on purpose (see `SeededBug`).
///
/// Not thread-safe, like a device fd used from one thread; not Sendable.
public final class ReferenceDevice {
    /// What the device is: its identity in the stream and the size of what it migrates.
    public struct Model: Hashable, Sendable {
        public var formatVersion: UInt16
        public var deviceID: UInt16
        public var memorySize: Int
        public var chunkSize: Int
        public var virtqueueCount: Int

        /// A virtio-net member (device id 0x1041) with 16 KiB of device memory.
        public static let standard = Model(formatVersion: 1, deviceID: 0x1041, memorySize: 16 * 1024, chunkSize: 1024, virtqueueCount: 2)

        /// The same device after a firmware update changed its stream format: its streams are
        /// foreign to `standard`.
        public static let nextFormatVersion = Model(formatVersion: 2, deviceID: 0x1041, memorySize: 16 * 1024, chunkSize: 1024, virtqueueCount: 2)
    }

    public let model: Model
    public let capabilities: MigrationCapabilities
    public let bug: SeededBug?
    /// Where the device's DMA writes land.
    public private(set) var guestMemory = GuestMemory(size: 1 << 30)

    var state: MigrationState = .running
    var memory: [UInt8]
    var virtio: VirtioMemberState
    var session: (generation: UInt64, kind: DataSession)?
    var nextGeneration: UInt64 = 1
    var executedArcs: [MigrationArc] = []
    var dmaLog: DMALog?
    var dmaWrites: UInt64 = 0

    // The virtio owner-device view.
    var mode: VirtioMigrationMode = .active
    var contextRead: ContextRead = .notStarted
    var contextWriteBuffer: [UInt8] = []
    var writtenContext: DeviceContext?
    var writeRecorder: WriteRecorder?

    enum DataSession {
        case saving(SavingSession)
        case resuming(ResumingSession)
    }

    enum ContextRead: Hashable {
        case notStarted
        case reading(bytes: [UInt8], cursor: Int)
        case complete
    }

    /// `initialState` is RUNNING for a freshly opened device; another state models a driver
    /// whose close keeps the migration state (seeded bug `state-survives-close`), with no data
    /// session (the close disabled the files).
    public init(capabilities: MigrationCapabilities = [.stopCopy, .p2p, .preCopy], model: Model = .standard, bug: SeededBug? = nil,
                initialState: MigrationState = .running) {
        self.capabilities = capabilities
        self.model = model
        self.bug = bug
        self.state = initialState
        // Deterministic, non-trivial device memory: two fresh devices are equal.
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15 ^ UInt64(model.deviceID)
        memory = (0..<model.memorySize).map { _ in
            seed ^= seed << 13
            seed ^= seed >> 7
            seed ^= seed << 17
            return UInt8(truncatingIfNeeded: seed)
        }
        virtio = VirtioMemberState.initial(virtqueueCount: model.virtqueueCount)
    }

    // MARK: The migrated image

    /// Everything the device migrates: device memory, then its virtio device context.
    var image: [UInt8] { memory + DeviceContextCodec.encode(virtio.context) }

    var streamHeader: ReferenceStreamFormat.Header {
        ReferenceStreamFormat.Header(
            formatVersion: model.formatVersion, deviceID: model.deviceID,
            imageLength: UInt32(image.count), chunkSize: UInt32(model.chunkSize))
    }

    var chunkCount: Int { (image.count + model.chunkSize - 1) / model.chunkSize }

    func chunk(_ index: Int, of image: [UInt8]) -> ArraySlice<UInt8> {
        image[index * model.chunkSize..<min((index + 1) * model.chunkSize, image.count)]
    }

    func load(_ image: [UInt8]) {
        memory = Array(image[0..<model.memorySize])
        if let context = try? DeviceContextCodec.decode(Array(image[model.memorySize...])) {
            virtio.apply(context)
        }
    }

    static let setStateOperation = "VFIO_DEVICE_FEATURE(SET, MIG_DEVICE_STATE)"
}

// MARK: - Data sessions

/// A saving session (PRE_COPY, PRE_COPY_P2P, STOP_COPY share one).
final class SavingSession {
    enum Kind { case initial, dirty, final }
    var headerSent = false
    var initialChunks: [Int]
    var pending: ArraySlice<UInt8> = []
    var pendingKind: Kind = .initial
    /// What each chunk looked like when it was last sent: a chunk differing from it is dirty.
    /// (Copies, not slices of the image: a slice would keep each sent image alive, and comparing
    /// optional slices crashed once in CI inside ArraySlice's ==.)
    var sent: [Int: [UInt8]] = [:]
    var endSent = false

    init(chunkCount: Int) { initialChunks = Array(0..<chunkCount) }
}

final class ResumingSession {
    var received: [UInt8] = []
}

/// The data fd of a reference device session: forwards to the device, which knows whether the
/// session is still the current one.
final class ReferenceDataStream: MigrationDataStream {
    let device: ReferenceDevice
    let generation: UInt64

    init(device: ReferenceDevice, generation: UInt64) {
        self.device = device
        self.generation = generation
    }

    func read(upTo count: Int) throws(VFIOError) -> [UInt8] { try device.readData(generation: generation, count: count) }
    func write(_ bytes: [UInt8]) throws(VFIOError) -> Int { try device.writeData(generation: generation, bytes: bytes) }
    func precopyInfo() throws(VFIOError) -> PrecopyInfo { try device.precopyInfo(generation: generation) }
}

extension ReferenceDevice {
    static let readOperation = "read(migration data fd)"
    static let writeOperation = "write(migration data fd)"
    static let precopyInfoOperation = "VFIO_MIG_GET_PRECOPY_INFO"

    private func openSession(_ kind: DataSession) -> ReferenceDataStream {
        let generation = nextGeneration
        nextGeneration += 1
        session = (generation, kind)
        return ReferenceDataStream(device: self, generation: generation)
    }

    private func savingSession(_ generation: UInt64, operation: String) throws(VFIOError) -> SavingSession {
        guard let session, session.generation == generation else {
            // A session ended by an arc or a reset: the fd is dead (mlx5: -ENODEV).
            throw VFIOError(operation, errorNumber: ENODEV, detail: "the data session has ended")
        }
        guard case .saving(let saving) = session.kind else {
            throw VFIOError(operation, errorNumber: EINVAL, detail: "not a saving session")
        }
        return saving
    }

    func recordLength(_ index: Int) -> Int {
        ReferenceStreamFormat.chunkRecordOverhead + chunk(index, of: image).count
    }

    func dirtyChunks(_ saving: SavingSession, image: [UInt8]) -> [Int] {
        (0..<chunkCount).filter { index in
            guard !saving.initialChunks.contains(index) else { return false }
            guard let last = saving.sent[index] else { return true }
            return !last.elementsEqual(chunk(index, of: image))
        }
    }

    func readData(generation: UInt64, count: Int) throws(VFIOError) -> [UInt8] {
        let saving = try savingSession(generation, operation: Self.readOperation)
        let precopy = state == .preCopy || state == .preCopyP2P
        let image = self.image
        if saving.pending.isEmpty {
            if !saving.headerSent {
                saving.headerSent = true
                (saving.pending, saving.pendingKind) = (ArraySlice(ReferenceStreamFormat.encode(streamHeader)), .initial)
            } else if !saving.initialChunks.isEmpty {
                let index = saving.initialChunks.removeFirst()
                saving.sent[index] = Array(chunk(index, of: image))
                (saving.pending, saving.pendingKind) = (ArraySlice(ReferenceStreamFormat.encodeChunk(index: index, bytes: chunk(index, of: image))), .initial)
            } else if let index = dirtyChunks(saving, image: image).first {
                saving.sent[index] = Array(chunk(index, of: image))
                (saving.pending, saving.pendingKind) = (ArraySlice(ReferenceStreamFormat.encodeChunk(index: index, bytes: chunk(index, of: image))), .dirty)
            } else if precopy {
                // "During pre-copy the migration data FD has a temporary end of stream ... the
                // kernel driver should return ENOMSG from read()."
                throw VFIOError(Self.readOperation, errorNumber: ENOMSG, detail: "no pre-copy data right now")
            } else if !saving.endSent {
                saving.endSent = true
                (saving.pending, saving.pendingKind) = (ArraySlice(ReferenceStreamFormat.encodeEnd(digest: fnv1a(image))), .final)
            } else {
                return []  // end of stream, for good
            }
        }
        let taken = saving.pending.prefix(count)
        saving.pending = saving.pending.dropFirst(taken.count)
        return Array(taken)
    }

    func writeData(generation: UInt64, bytes: [UInt8]) throws(VFIOError) -> Int {
        guard let session, session.generation == generation else {
            throw VFIOError(Self.writeOperation, errorNumber: ENODEV, detail: "the data session has ended")
        }
        guard case .resuming(let resuming) = session.kind, state == .resuming else {
            throw VFIOError(Self.writeOperation, errorNumber: EINVAL, detail: "a saving session is not writable")
        }
        // A stream several times the device's size is not one of its streams.
        guard resuming.received.count + bytes.count <= 4 * fullStreamLength + 4096 else {
            throw VFIOError(Self.writeOperation, errorNumber: EFBIG, detail: "more data than any stream of this device")
        }
        resuming.received += bytes
        return bytes.count
    }

    func precopyInfo(generation: UInt64) throws(VFIOError) -> PrecopyInfo {
        let saving = try savingSession(generation, operation: Self.precopyInfoOperation)
        // "This ioctl is valid only in PRE_COPY states and kernel driver should return -EINVAL
        // from any other migration state."
        guard state == .preCopy || state == .preCopyP2P else {
            throw VFIOError(Self.precopyInfoOperation, errorNumber: EINVAL, detail: "the device is in \(state)")
        }
        if bug == .precopyInfoStale {
            return PrecopyInfo(initialBytes: UInt64(initialStreamLength), dirtyBytes: 0)
        }
        let image = self.image
        let initial = (saving.pendingKind == .initial ? saving.pending.count : 0)
            + (saving.headerSent ? 0 : ReferenceStreamFormat.headerLength)
            + saving.initialChunks.map(recordLength).reduce(0, +)
        let dirty = (saving.pendingKind == .dirty ? saving.pending.count : 0)
            + dirtyChunks(saving, image: image).map(recordLength).reduce(0, +)
        return PrecopyInfo(initialBytes: UInt64(initial), dirtyBytes: UInt64(dirty))
    }

    /// Header and every chunk once: what a pre-copy offers first.
    var initialStreamLength: Int {
        ReferenceStreamFormat.headerLength + (0..<chunkCount).map(recordLength).reduce(0, +)
    }

    var fullStreamLength: Int { initialStreamLength + ReferenceStreamFormat.endRecordLength }
}

// MARK: - MigrationDevice

extension ReferenceDevice: MigrationDevice {
    public var exerciser: (any DeviceExerciser)? { self }
    public var virtioMember: (any VirtioMemberAdministration)? { self }

    public func migrationCapabilities() throws(VFIOError) -> MigrationCapabilities { capabilities }

    public func migrationState() throws(VFIOError) -> MigrationState { state }

    public func setMigrationState(_ requested: MigrationState) throws(VFIOError) -> (any MigrationDataStream)? {
        if requested == state { return nil }
        let path: [MigrationState]
        if let seeded = seededPath(to: requested) {
            path = seeded
        } else if let transition = MigrationFSM.transition(from: state, to: requested, capabilities: capabilities) {
            path = transition.path
        } else {
            throw VFIOError(Self.setStateOperation, errorNumber: EINVAL, detail: "\(state) -> \(requested) is not a valid request")
        }
        var stream: ReferenceDataStream?
        for next in path {
            do {
                if let opened = try execute(MigrationArc(state, next)) { stream = opened }
            } catch {
                // "the device was unable to execute the requested arc and was also unable to
                // restore the device to any valid device_state."
                state = .error
                session = nil
                throw error
            }
        }
        return stream
    }

    /// The paths the seeded state machine bugs take instead of the kernel's.
    private func seededPath(to requested: MigrationState) -> [MigrationState]? {
        switch bug {
        case .errorRequestable where requested == .error:
            [.error]
        case .stopCopyToPreCopyAccepted where state == .stopCopy && capabilities.supports(requested) && requested.isSaving:
            [requested]
        case .pathThroughSavingState where state == .running && requested == .stopCopy && capabilities.contains(.preCopy):
            [.preCopy, .stopCopy]
        default:
            nil
        }
    }

    /// One arc, as a driver's step function does it.
    private func execute(_ arc: MigrationArc) throws(VFIOError) -> ReferenceDataStream? {
        var opened: ReferenceDataStream?
        switch (arc.from, arc.to) {
        case (.stop, .stopCopy), (.running, .preCopy), (.runningP2P, .preCopyP2P):
            opened = openSession(.saving(SavingSession(chunkCount: chunkCount)))
        case (.stop, .resuming):
            opened = openSession(.resuming(ResumingSession()))
        case (.resuming, .stop):
            try finishResuming()
            session = nil
        case (.stopCopy, .stop):
            if bug != .dataReadableInStop { session = nil }
        case (.preCopy, .running), (.preCopyP2P, .runningP2P):
            session = nil
        default:
            // PRE_COPY <-> PRE_COPY_P2P and PRE_COPY* -> STOP_COPY continue the session; the
            // RUNNING/RUNNING_P2P/STOP arcs only start or stop the device.
            break
        }
        if bug == .streamOnNonSavingArc && arc.to == .stop && opened == nil {
            // A data fd for no session: nothing reads from it.
            opened = ReferenceDataStream(device: self, generation: .max)
        }
        state = arc.to
        executedArcs.append(arc)
        return opened
    }

    private func finishResuming() throws(VFIOError) {
        guard let session, case .resuming(let resuming) = session.kind else { return }
        let leniency = ReferenceStreamFormat.Leniency(
            skipsDigest: bug == .resumeAcceptsCorrupted, acceptsTruncation: bug == .resumeAcceptsTruncated,
            skipsVersion: bug == .resumeAcceptsForeignVersion)
        switch ReferenceStreamFormat.load(resuming.received, expecting: streamHeader, leniency: leniency) {
        case .success(let image):
            if bug != .resumeDoesNotRestore { load(image) }
        case .failure(let error):
            throw VFIOError(Self.setStateOperation, errorNumber: EINVAL, detail: "RESUMING -> STOP: \(error)")
        }
    }

    public func stopCopySize() throws(VFIOError) -> UInt64 {
        guard let session, case .saving(let saving) = session.kind else { return UInt64(fullStreamLength) }
        let image = self.image
        let remaining = saving.pending.count + (saving.headerSent ? 0 : ReferenceStreamFormat.headerLength)
            + saving.initialChunks.map(recordLength).reduce(0, +) + dirtyChunks(saving, image: image).map(recordLength).reduce(0, +)
            + (saving.endSent ? 0 : ReferenceStreamFormat.endRecordLength)
        return UInt64(remaining)
    }

    public func reset() throws(VFIOError) {
        // "To recover from ERROR VFIO_DEVICE_RESET must be used to return the device_state back
        // to RUNNING"; the reset also ends the data session (mlx5vf_disable_fds on reset_done).
        state = bug == .resetNotRunning ? .stop : .running
        if bug != .resetKeepsSession { session = nil }
        functionLevelResetOfMember()
    }

    static let loggingStartOperation = "VFIO_DEVICE_FEATURE(SET, DMA_LOGGING_START)"
    static let loggingStopOperation = "VFIO_DEVICE_FEATURE(SET, DMA_LOGGING_STOP)"
    static let loggingReportOperation = "VFIO_DEVICE_FEATURE(GET, DMA_LOGGING_REPORT)"

    public func startDMALogging(pageSizeHint: UInt64, ranges: [IOVARange]) throws(VFIOError) -> UInt64 {
        let operation = Self.loggingStartOperation
        if dmaLog != nil && bug != .dmaSecondStartAccepted {
            throw VFIOError(operation, errorNumber: EBUSY, detail: "DMA logging already runs")
        }
        // The vfio core's checks (vfio_ioctl_device_feature_logging_start).
        guard !ranges.isEmpty, pageSizeHint > 0, pageSizeHint & (pageSizeHint - 1) == 0 else {
            throw VFIOError(operation, errorNumber: EINVAL, detail: "no ranges, or a page size that is not a power of two")
        }
        for (index, range) in ranges.enumerated() {
            guard range.length > 0, range.iova % pageSizeHint == 0, range.length % pageSizeHint == 0 else {
                throw VFIOError(operation, errorNumber: EINVAL, detail: "range \(index) is empty or not page aligned")
            }
            guard range.iova.addingReportingOverflow(range.length).overflow == false else {
                throw VFIOError(operation, errorNumber: EOVERFLOW, detail: "range \(index) wraps around")
            }
            if ranges[..<index].contains(where: { $0.iova < range.end && range.iova < $0.end }) {
                throw VFIOError(operation, errorNumber: EINVAL, detail: "range \(index) overlaps another")
            }
        }
        let pageSize = DMALog.pageSize(closestTo: pageSizeHint)
        dmaLog = DMALog(pageSize: pageSize, ranges: ranges)
        return pageSize
    }

    public func stopDMALogging() throws(VFIOError) {
        if dmaLog == nil && bug == .dmaStopNotIdempotent {
            throw VFIOError(Self.loggingStopOperation, errorNumber: EINVAL, detail: "DMA logging is not running")
        }
        dmaLog = nil
    }

    public func reportDMALog(into bitmap: inout DirtyBitmap) throws(VFIOError) {
        let operation = Self.loggingReportOperation
        let pageSize = bitmap.pageSize
        guard pageSize >= 4096, pageSize & (pageSize - 1) == 0 else {
            throw VFIOError(operation, errorNumber: EINVAL, detail: "report page size \(pageSize) is not a power of two >= 4096")
        }
        guard var log = dmaLog else {
            if bug == .dmaReportWithoutStart { return }
            // "If DMA logging is not enabled, an error will be returned."
            throw VFIOError(operation, errorNumber: EINVAL, detail: "DMA logging is not running")
        }
        if bug == .dmaReportOverwritesBitmap {
            bitmap.words = Array(repeating: 0, count: bitmap.words.count)
        }
        log.report(into: &bitmap, atTrackingPageSize: bug == .dmaReportIgnoresPageSize, clear: bug != .dmaLogNotCleared)
        dmaLog = log
    }
}

// MARK: - DeviceExerciser

extension ReferenceDevice: DeviceExerciser {
    public func performDMAWrite(iova: UInt64, length: UInt64) throws(VFIOError) {
        let operation = "DMA write"
        let range = IOVARange(iova: iova, length: length)
        // STOP: "The device must not generate interrupts, DMA, or any other change to external
        // state"; virtio Stop/Freeze: "does not access any driver memory".
        guard state.isRunning, mode == .active else {
            throw VFIOError(operation, errorNumber: EBUSY, detail: "the device does not DMA in \(state) / \(mode)")
        }
        guard guestMemory.contains(range) else {
            throw VFIOError(operation, errorNumber: EFAULT, detail: "outside guest memory")
        }
        dmaWrites += 1
        guestMemory.write((0..<length).map { UInt8(truncatingIfNeeded: dmaWrites &+ $0) }, at: iova)
        dmaLog?.record(range, firstPageOnly: bug == .dmaMultiPageWriteLost)
        writeRecorder?.record(range)
    }

    public func advanceInternalState(seed: UInt64) throws(VFIOError) {
        // STOP: "It must not change its internal state."
        guard state.isRunning else {
            throw VFIOError("device activity", errorNumber: EBUSY, detail: "the device does not run in \(state)")
        }
        for step in 0..<3 {
            let position = Int((seed &* 0x9E37_79B9 &+ UInt64(step) &* 5_303) % UInt64(memory.count))
            memory[position] &+= UInt8(step + 1)
        }
        // Freeze: "the device do not have any changes in the device context".
        if mode != .freeze && !virtio.virtqueues.isEmpty {
            virtio.virtqueues[0].availableIndex &+= 1
        }
    }

    public func internalStateDigest() -> UInt64 { fnv1a(image) }

    public func takeExecutedArcs() -> [MigrationArc] {
        defer { executedArcs.removeAll() }
        return executedArcs
    }
}
