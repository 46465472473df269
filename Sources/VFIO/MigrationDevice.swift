/// A device that migrates through the VFIO migration protocol v2: the operations of a VFIO device
/// fd (`VFIO_DEVICE_FEATURE` migration and DMA logging features, `VFIO_DEVICE_RESET`).
///
/// Two implementations: `VFIODevice` drives a real device through the kernel; `ReferenceDevice`
/// is its in-process twin that follows every rule (or breaks one on purpose). Checks are written
/// against this protocol only.
public protocol MigrationDevice: AnyObject {
    /// `VFIO_DEVICE_FEATURE_MIGRATION` (GET): the migration flags.
    func migrationCapabilities() throws(VFIOError) -> MigrationCapabilities

    /// `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE` (GET).
    func migrationState() throws(VFIOError) -> MigrationState

    /// `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE` (SET): moves to `state`, through the arcs the kernel
    /// composes. Returns the new data transfer session when an arc on the way opens one.
    func setMigrationState(_ state: MigrationState) throws(VFIOError) -> (any MigrationDataStream)?

    /// `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE` (GET): the estimated STOP_COPY stream length.
    func stopCopySize() throws(VFIOError) -> UInt64

    /// `VFIO_DEVICE_RESET`: back to RUNNING, ending any data session.
    func reset() throws(VFIOError)

    /// `VFIO_DEVICE_FEATURE_DMA_LOGGING_START` (SET) over `ranges`, with a tracking page size
    /// hint. Returns the page size the device picked.
    func startDMALogging(pageSizeHint: UInt64, ranges: [IOVARange]) throws(VFIOError) -> UInt64

    /// `VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP` (SET).
    func stopDMALogging() throws(VFIOError)

    /// `VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT` (GET) for the bitmap's range and page size: ORs in
    /// the pages written since the last report and clears them from the device's log.
    func reportDMALog(into bitmap: inout DirtyBitmap) throws(VFIOError)

    /// Test hooks, where the device offers them (the reference device does; hardware does not).
    var exerciser: (any DeviceExerciser)? { get }

    /// The virtio owner-device view of this device, where it is a virtio member device.
    var virtioMember: (any VirtioMemberAdministration)? { get }
}

/// A migration data transfer session: the data fd a state change returned.
public protocol MigrationDataStream: AnyObject {
    /// `read()` of up to `count` bytes; empty at end of stream.
    func read(upTo count: Int) throws(VFIOError) -> [UInt8]

    /// `write()`; returns how many bytes the device took.
    func write(_ bytes: [UInt8]) throws(VFIOError) -> Int

    /// `VFIO_MIG_GET_PRECOPY_INFO` on the data fd.
    func precopyInfo() throws(VFIOError) -> PrecopyInfo
}

/// Hooks a check uses to make a device do work and to look inside it. A real device has none:
/// the checks that need them skip, saying so.
public protocol DeviceExerciser: AnyObject {
    /// Makes the device write `length` bytes of guest memory at `iova`, as its DMA would.
    func performDMAWrite(iova: UInt64, length: UInt64) throws(VFIOError)

    /// Makes the running device change its internal (migratable) state.
    func advanceInternalState(seed: UInt64) throws(VFIOError)

    /// A digest of the migratable state: equal digests, equal device state.
    func internalStateDigest() -> UInt64

    /// The single arcs executed since the last call, oldest first (a combination request's path
    /// is invisible through the uAPI).
    func takeExecutedArcs() -> [MigrationArc]
}

/// `struct vfio_precopy_info`.
public struct PrecopyInfo: Hashable, Sendable, Codable {
    public var initialBytes: UInt64
    public var dirtyBytes: UInt64
    public init(initialBytes: UInt64, dirtyBytes: UInt64) {
        self.initialBytes = initialBytes
        self.dirtyBytes = dirtyBytes
    }
}

/// `struct vfio_device_feature_dma_logging_range`.
public struct IOVARange: Hashable, Sendable, Codable {
    public var iova: UInt64
    public var length: UInt64
    public init(iova: UInt64, length: UInt64) {
        self.iova = iova
        self.length = length
    }
    public var end: UInt64 { iova + length }
    public func contains(_ address: UInt64) -> Bool { address >= iova && address - iova < length }
}

/// The user bitmap of a DMA logging report: one bit per `pageSize` unit from `iova`, the bit for
/// address a at `words[(a - iova) / pageSize / 64]`, bit `(a - iova) / pageSize % 64`.
public struct DirtyBitmap: Hashable, Sendable {
    public let iova: UInt64
    public let length: UInt64
    public let pageSize: UInt64
    public var words: [UInt64]

    public init(iova: UInt64, length: UInt64, pageSize: UInt64) {
        precondition(pageSize > 0, "page size must be positive")
        self.iova = iova
        self.length = length
        self.pageSize = pageSize
        let pages = (length + pageSize - 1) / pageSize
        self.words = Array(repeating: 0, count: Int((pages + 63) / 64))
    }

    public var pageCount: Int { Int((length + pageSize - 1) / pageSize) }

    public func isDirty(page index: Int) -> Bool { words[index / 64] & (1 << UInt64(index % 64)) != 0 }

    public mutating func setDirty(page index: Int) { words[index / 64] |= 1 << UInt64(index % 64) }

    /// The start address of every page whose bit is set.
    public var dirtyPageAddresses: [UInt64] {
        (0..<pageCount).filter(isDirty(page:)).map { iova + UInt64($0) * pageSize }
    }

    /// The bitmap a correct report shows after `writes` (byte ranges written by DMA): every page
    /// of the report's page size that a write touches, within the bitmap's range.
    public static func expected(iova: UInt64, length: UInt64, pageSize: UInt64, writes: [IOVARange]) -> DirtyBitmap {
        var bitmap = DirtyBitmap(iova: iova, length: length, pageSize: pageSize)
        for write in writes where write.length > 0 {
            let start = max(write.iova, iova)
            let end = min(write.end, iova + length)
            guard start < end else { continue }
            for page in Int((start - iova) / pageSize)...Int((end - 1 - iova) / pageSize) {
                bitmap.setDirty(page: page)
            }
        }
        return bitmap
    }
}
