/// A device's DMA write log between DMA_LOGGING_START and STOP (the uAPI comments of
/// VFIO_DEVICE_FEATURE_DMA_LOGGING_*): the pages written inside the tracked ranges, at the
/// tracking page size the device picked. A value type; the reference device keeps one.
struct DMALog: Hashable {
    let pageSize: UInt64
    let ranges: [IOVARange]
    private(set) var dirtyPages: Set<UInt64> = []

    /// The page sizes the reference device can track at: every power of two from 4 KiB to 1 GiB.
    static let smallestPageSize: UInt64 = 4096
    static let largestPageSize: UInt64 = 1 << 30

    /// "If the device cannot do the hinted page size then it should pick the next closest page
    /// size it supports."
    static func pageSize(closestTo hint: UInt64) -> UInt64 {
        min(max(hint, smallestPageSize), largestPageSize)
    }

    init(pageSize: UInt64, ranges: [IOVARange]) {
        self.pageSize = pageSize
        self.ranges = ranges
    }

    /// Logs a DMA write; `firstPageOnly` is the seeded loss of the other pages.
    mutating func record(_ write: IOVARange, firstPageOnly: Bool = false) {
        guard write.length > 0 else { return }
        let first = write.iova / pageSize
        let last = firstPageOnly ? first : (write.end - 1) / pageSize
        for page in first...last where ranges.contains(where: { $0.contains(max(page * pageSize, write.iova)) }) {
            dirtyPages.insert(page)
        }
    }

    /// ORs the logged pages into `bitmap` at the bitmap's page size, replicating bits where a
    /// tracking page spans several report pages, and forgets what it reported ("read back and
    /// clear the device DMA log").
    mutating func report(into bitmap: inout DirtyBitmap, atTrackingPageSize: Bool = false, clear: Bool = true) {
        let reportEnd = bitmap.iova + bitmap.length
        for page in dirtyPages.sorted() {
            let start = page * pageSize
            let end = start + pageSize
            let from = max(start, bitmap.iova)
            let to = min(end, reportEnd)
            guard from < to else { continue }
            if atTrackingPageSize {
                // The seeded bug: bit numbers counted in tracking pages.
                let index = start >= bitmap.iova ? Int((start - bitmap.iova) / pageSize) : 0
                if index < bitmap.pageCount { bitmap.setDirty(page: index) }
            } else {
                for index in Int((from - bitmap.iova) / bitmap.pageSize)...Int((to - 1 - bitmap.iova) / bitmap.pageSize) {
                    bitmap.setDirty(page: index)
                }
            }
            // A tracking page reaching outside the report keeps its bit for the rest of it.
            if clear && start >= bitmap.iova && end <= reportEnd { dirtyPages.remove(page) }
        }
    }
}

/// The pages a virtio member wrote while write recording runs (VIRTIO_ADMIN_CMD_DEV_WRITE_RECORDS_*).
struct WriteRecorder: Hashable {
    let pageSize: UInt64
    let ranges: [WriteRecordRange]
    private(set) var records: Set<UInt64> = []

    init(pageSize: UInt64, ranges: [WriteRecordRange]) {
        self.pageSize = pageSize
        self.ranges = ranges
    }

    mutating func record(_ write: IOVARange) {
        guard write.length > 0 else { return }
        for page in (write.iova / pageSize)...((write.end - 1) / pageSize) {
            let address = page * pageSize
            if ranges.contains(where: { address >= $0.pageAddress && (address - $0.pageAddress) / pageSize < $0.pageCount }) {
                records.insert(address)
            }
        }
    }

    /// The recorded pages in [pageAddress, pageAddress + length), which are then cleared ("The
    /// device MUST clear the write records which are returned").
    mutating func take(pageAddress: UInt64, length: UInt64) -> [UInt64] {
        let taken = records.filter { $0 >= pageAddress && $0 - pageAddress < length }.sorted()
        records.subtract(taken)
        return taken
    }
}
