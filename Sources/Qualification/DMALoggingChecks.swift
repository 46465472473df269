#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import VFIO

/// Checks of device DMA logging (include/uapi/linux/vfio.h, VFIO_DEVICE_FEATURE_DMA_LOGGING_*;
/// seed 001).
enum DMALoggingChecks {
    static let uapi = "include/uapi/linux/vfio.h"

    static var all: [Check] {
        [secondStartRefused, reportExact, reportClears, reportOrsBits, stopIdempotent, reportNeedsStart]
    }

    /// 4 MiB of IOVA at 256 MiB: the tracked region of every check.
    static let region = IOVARange(iova: 0x1000_0000, length: 4 << 20)
    static let pageSizes: [UInt64] = [4096, 8192, 64 << 10, 2 << 20]

    /// DMA_LOGGING_START over `region`; a skip where the device has no DMA logging.
    @discardableResult
    static func start(_ device: any MigrationDevice) throws -> UInt64 {
        do {
            return try device.startDMALogging(pageSizeHint: 4096, ranges: [region])
        } catch where error.errorNumber == ENOTTY || error.errorNumber == EOPNOTSUPP {
            throw CheckSkipped(reason: "the device has no DMA logging (\(error.errorName))")
        } catch {
            throw CheckFailure(detail: "DMA_LOGGING_START failed: \(error)")
        }
    }

    static func report(_ device: any MigrationDevice, pageSize: UInt64, preset: [Int] = []) throws -> DirtyBitmap {
        var bitmap = DirtyBitmap(iova: region.iova, length: region.length, pageSize: pageSize)
        preset.forEach { bitmap.setDirty(page: $0) }
        do {
            try device.reportDMALog(into: &bitmap)
        } catch {
            throw CheckFailure(detail: "DMA_LOGGING_REPORT at \(pageSize)-byte pages failed: \(error)")
        }
        return bitmap
    }

    static func pages(_ bitmap: DirtyBitmap) -> String {
        let dirty = bitmap.dirtyPageAddresses
        return dirty.isEmpty ? "none" : dirty.prefix(8).map(hex).joined(separator: " ") + (dirty.count > 8 ? " (\(dirty.count) pages)" : "")
    }

    static func write(_ exerciser: any DeviceExerciser, _ writes: [IOVARange]) throws {
        for write in writes { try exerciser.performDMAWrite(iova: write.iova, length: write.length) }
    }

    static let secondStartRefused = Check(
        id: "dma.second-start-refused",
        rule: "A second DMA_LOGGING_START fails while logging runs.",
        source: "\(uapi), DMA logging uAPI: only one START may be active until STOP (seed 001; background.md section 2)"
    ) { context in
        let device = try context.open()
        let pageSize = try start(device)
        if try refusal({ () throws(VFIOError) in try device.startDMALogging(pageSizeHint: 4096, ranges: [region]) }) == nil {
            return .fail("the second DMA_LOGGING_START succeeded")
        }
        try device.stopDMALogging()
        return .pass("second START refused (first one picked \(pageSize)-byte pages)")
    }

    /// Single bytes, writes crossing a page boundary, a write spanning several pages, and one in
    /// another 2 MiB page.
    static let writes = [
        IOVARange(iova: region.iova, length: 8),
        IOVARange(iova: region.iova + 0x3000 - 4, length: 8),
        IOVARange(iova: region.iova + 0x21000, length: 3 * 4096 + 1),
        IOVARange(iova: region.iova + (2 << 20) + 0x5000, length: 1),
    ]

    static let reportExact = Check(
        id: "dma.report-exact",
        rule: "A DMA_LOGGING_REPORT sets exactly the bits of the pages written, at whatever page size it asks for (4 KiB, 8 KiB, 64 KiB, 2 MiB).",
        source: "\(uapi), VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT: 'The input page_size can be any power of two value ... The driver will format its internal logging to match the reporting page size, possibly by replicating bits'"
    ) { context in
        let device = try context.open()
        let exerciser = try exerciser(of: device, for: "making the device DMA")
        var checked: [String] = []
        for pageSize in pageSizes {
            let tracking = try start(device)
            try write(exerciser, writes)
            let reported = try report(device, pageSize: pageSize)
            // A device tracking at coarser pages dirties the whole tracking page.
            let expected = DirtyBitmap.expected(
                iova: region.iova, length: region.length, pageSize: pageSize,
                writes: writes.map { write in
                    let first = write.iova / tracking * tracking
                    return IOVARange(iova: first, length: (write.end + tracking - 1) / tracking * tracking - first)
                })
            try device.stopDMALogging()
            try expect(reported == expected, "at \(pageSize)-byte pages the report shows \(pages(reported)); the writes touched \(pages(expected))")
            checked.append("\(pageSize >> 10) KiB")
        }
        return .pass("exact at \(checked.joined(separator: ", ")) pages")
    }

    static let reportClears = Check(
        id: "dma.report-clears",
        rule: "A DMA_LOGGING_REPORT clears what it reported: the next report shows only pages written since.",
        source: "\(uapi), VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT: 'read back and clear the device DMA log ... During querying the log is cleared for the IOVA range'"
    ) { context in
        let device = try context.open()
        let exerciser = try exerciser(of: device, for: "making the device DMA")
        try start(device)
        let first = IOVARange(iova: region.iova + 0x4000, length: 16)
        let second = IOVARange(iova: region.iova + 0x9000, length: 16)
        try write(exerciser, [first])
        let report1 = try report(device, pageSize: 4096)
        try expect(report1.dirtyPageAddresses == [first.iova], "first report shows \(pages(report1)), expected \(hex(first.iova))")
        let report2 = try report(device, pageSize: 4096)
        try expect(report2.dirtyPageAddresses.isEmpty, "a second report with no writes in between shows \(pages(report2))")
        try write(exerciser, [second])
        let report3 = try report(device, pageSize: 4096)
        try expect(report3.dirtyPageAddresses == [second.iova], "after one more write the report shows \(pages(report3)), expected \(hex(second.iova))")
        try device.stopDMALogging()
        return .pass("each report showed only the pages written since the previous one")
    }

    static let reportOrsBits = Check(
        id: "dma.report-ors-bits",
        rule: "A DMA_LOGGING_REPORT only sets bits: bits already set in the caller's bitmap stay set.",
        source: "\(uapi), VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT: 'Bits will be updated in bitmap using atomic or to allow userspace to combine bitmaps from multiple trackers together'"
    ) { context in
        let device = try context.open()
        let exerciser = try exerciser(of: device, for: "making the device DMA")
        try start(device)
        let written = IOVARange(iova: region.iova + 0x7000, length: 4)
        try write(exerciser, [written])
        let preset = [1, 100, 1000]
        let reported = try report(device, pageSize: 4096, preset: preset)
        try device.stopDMALogging()
        var expected = DirtyBitmap(iova: region.iova, length: region.length, pageSize: 4096)
        (preset + [7]).forEach { expected.setDirty(page: $0) }
        try expect(reported == expected, "the bitmap holds \(pages(reported)) after the report; expected the preset pages plus \(hex(written.iova)): \(pages(expected))")
        return .pass("preset bits kept, written page added")
    }

    static let stopIdempotent = Check(
        id: "dma.stop-idempotent",
        rule: "DMA_LOGGING_STOP succeeds when logging is not running, and twice in a row.",
        source: "\(uapi), VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP; drivers' log_stop return 0 when not logging (mlx5vf_stop_page_tracker)"
    ) { context in
        let device = try context.open()
        if let error = try refusal({ () throws(VFIOError) in try device.stopDMALogging() }) {
            return .fail("STOP before any START failed: \(error)")
        }
        try start(device)
        try device.stopDMALogging()
        if let error = try refusal({ () throws(VFIOError) in try device.stopDMALogging() }) {
            return .fail("a second STOP failed: \(error)")
        }
        return .pass("STOP succeeded before START and twice after it")
    }

    static let reportNeedsStart = Check(
        id: "dma.report-needs-start",
        rule: "DMA_LOGGING_REPORT fails when logging was never started, and after STOP.",
        source: "\(uapi), VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT: 'If DMA logging is not enabled, an error will be returned'"
    ) { context in
        let device = try context.open()
        var bitmap = DirtyBitmap(iova: region.iova, length: region.length, pageSize: 4096)
        if try refusal({ () throws(VFIOError) in try device.reportDMALog(into: &bitmap) }) == nil {
            return .fail("REPORT without START succeeded")
        }
        try start(device)
        try device.stopDMALogging()
        if try refusal({ () throws(VFIOError) in try device.reportDMALog(into: &bitmap) }) == nil {
            return .fail("REPORT after STOP succeeded")
        }
        return .pass("refused before START and after STOP")
    }
}
