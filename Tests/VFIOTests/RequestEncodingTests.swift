import CVFIO
import Testing
@testable import VFIO

/// Every request of the real backend, byte for byte against the kernel header's structs and the
/// ioctl numbers _IO(';', 100 + n) gives.
struct RequestEncodingTests {
    /// `_IO(VFIO_TYPE, VFIO_BASE + n)`: type ';' (0x3b) in bits 8-15, no size, no direction.
    static func vfioIoctl(_ n: UInt) -> UInt { 0x3B << 8 | (100 + n) }

    static func bytes<T>(of value: T) -> [UInt8] {
        var copy = value
        return withUnsafeBytes(of: &copy) { Array($0) }
    }

    @Test func ioctlNumbers() {
        #expect(VFIORequests.apiVersion().number == Self.vfioIoctl(0))
        #expect(VFIORequests.checkExtension(3).number == Self.vfioIoctl(1))
        #expect(VFIORequests.setIOMMU(3).number == Self.vfioIoctl(2))
        #expect(VFIORequests.groupStatus().number == Self.vfioIoctl(3))
        #expect(VFIORequests.setContainer(5).number == Self.vfioIoctl(4))
        #expect(VFIORequests.groupDeviceFD(.pci(PCIAddress("0000:3b:00.1")!)).number == Self.vfioIoctl(6))
        #expect(VFIORequests.reset().number == Self.vfioIoctl(11))
        #expect(VFIORequests.migrationFlags().number == Self.vfioIoctl(17))
        #expect(VFIORequests.bindIOMMUFD(3).number == Self.vfioIoctl(18))
        #expect(VFIORequests.attachIOMMUFDPageTable(1).number == Self.vfioIoctl(19))
        #expect(VFIORequests.precopyInfo().number == Self.vfioIoctl(21))
        #expect(VFIORequests.allocateIOAS().number == 0x3B81)  // _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOC)
    }

    @Test func uapiConstants() {
        #expect(MigrationState.allCases.map(\.rawValue) == [
            CVFIO_DEVICE_STATE_ERROR, CVFIO_DEVICE_STATE_STOP, CVFIO_DEVICE_STATE_RUNNING, CVFIO_DEVICE_STATE_STOP_COPY,
            CVFIO_DEVICE_STATE_RESUMING, CVFIO_DEVICE_STATE_RUNNING_P2P, CVFIO_DEVICE_STATE_PRE_COPY, CVFIO_DEVICE_STATE_PRE_COPY_P2P,
        ])
        #expect(MigrationCapabilities.stopCopy.rawValue == CVFIO_MIGRATION_STOP_COPY)
        #expect(MigrationCapabilities.p2p.rawValue == CVFIO_MIGRATION_P2P)
        #expect(MigrationCapabilities.preCopy.rawValue == CVFIO_MIGRATION_PRE_COPY)
        // Upstream values, whether the installed header has them or the shim supplied them.
        #expect(CVFIO_DEVICE_STATE_PRE_COPY == 6 && CVFIO_DEVICE_STATE_PRE_COPY_P2P == 7)
        #expect(CVFIO_MIGRATION_PRE_COPY == 1 << 2)
        #expect(CVFIO_DEVICE_FEATURE_MIGRATION == 1 && CVFIO_DEVICE_FEATURE_MIG_DEVICE_STATE == 2)
        #expect(CVFIO_DEVICE_FEATURE_DMA_LOGGING_START == 6 && CVFIO_DEVICE_FEATURE_DMA_LOGGING_STOP == 7)
        #expect(CVFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT == 8 && CVFIO_DEVICE_FEATURE_MIG_DATA_SIZE == 9)
        #expect(CVFIO_DEVICE_FEATURE_GET == 1 << 16 && CVFIO_DEVICE_FEATURE_SET == 1 << 17)
        #expect(cvfio_sizeof_device_feature() == VFIORequests.featureHeaderSize)
    }

    /// The `struct vfio_device_feature` header every VFIO_DEVICE_FEATURE request starts with.
    static func header(_ request: VFIORequest) -> (argsz: UInt32, flags: UInt32) {
        (request.bytes.loadHostOrder(UInt32.self, at: 0), request.bytes.loadHostOrder(UInt32.self, at: 4))
    }

    @Test func migrationFeatureRequests() {
        let flags = VFIORequests.migrationFlags()
        #expect(Self.header(flags) == (UInt32(8 + MemoryLayout<vfio_device_feature_migration>.size), CVFIO_DEVICE_FEATURE_GET | 1))
        #expect(VFIORequests.payload(of: flags) == Self.bytes(of: vfio_device_feature_migration(flags: 0)))

        let get = VFIORequests.migrationState()
        #expect(Self.header(get) == (UInt32(8 + MemoryLayout<vfio_device_feature_mig_state>.size), CVFIO_DEVICE_FEATURE_GET | 2))
        #expect(VFIORequests.payload(of: get) == Self.bytes(of: vfio_device_feature_mig_state(device_state: 0, data_fd: -1)))

        for state in MigrationState.allCases {
            let set = VFIORequests.setMigrationState(state)
            #expect(Self.header(set) == (16, CVFIO_DEVICE_FEATURE_SET | 2))
            #expect(VFIORequests.payload(of: set) == Self.bytes(of: vfio_device_feature_mig_state(device_state: state.rawValue, data_fd: -1)))
        }

        let size = VFIORequests.stopCopySize()
        #expect(Self.header(size) == (UInt32(8 + MemoryLayout<vfio_device_feature_mig_data_size>.size), CVFIO_DEVICE_FEATURE_GET | 9))
        #expect(VFIORequests.payload(of: size) == Self.bytes(of: vfio_device_feature_mig_data_size(stop_copy_length: 0)))

        #expect(VFIORequests.reset().argument == .none)
    }

    @Test func migrationFeatureReplies() {
        var reply = VFIORequests.setMigrationState(.stopCopy)
        reply.argument = .buffer(reply.bytes.prefix(8) + Self.bytes(of: vfio_device_feature_mig_state(device_state: 3, data_fd: 42)), pointers: [])
        #expect(VFIORequests.decodeMigrationState(reply) == 3)
        #expect(VFIORequests.decodeDataFD(reply) == 42)

        var flags = VFIORequests.migrationFlags()
        flags.argument = .buffer(flags.bytes.prefix(8) + Self.bytes(of: vfio_device_feature_migration(flags: 7)), pointers: [])
        #expect(VFIORequests.decodeMigrationFlags(flags) == [.stopCopy, .p2p, .preCopy])

        var info = VFIORequests.precopyInfo()
        #expect(info.bytes == Self.bytes(of: vfio_precopy_info(argsz: 24, flags: 0, initial_bytes: 0, dirty_bytes: 0)))
        info.argument = .buffer(Self.bytes(of: vfio_precopy_info(argsz: 24, flags: 0, initial_bytes: 1000, dirty_bytes: 24)), pointers: [])
        #expect(VFIORequests.decodePrecopyInfo(info) == PrecopyInfo(initialBytes: 1000, dirtyBytes: 24))
    }

    @Test func dmaLoggingRequests() {
        let ranges = [IOVARange(iova: 0x1000_0000, length: 0x40_0000), IOVARange(iova: 0x8000_0000, length: 0x1000)]
        let start = VFIORequests.startDMALogging(pageSizeHint: 4096, ranges: ranges)
        #expect(Self.header(start) == (UInt32(8 + MemoryLayout<vfio_device_feature_dma_logging_control>.size), CVFIO_DEVICE_FEATURE_SET | 6))
        #expect(VFIORequests.payload(of: start) == Self.bytes(of: vfio_device_feature_dma_logging_control(page_size: 4096, num_ranges: 2, __reserved: 0, ranges: 0)))
        #expect(start.embedded.map(\.addressOffset) == [8 + cvfio_offsetof_dma_logging_control_ranges()])
        let rangeBytes = ranges.flatMap { Self.bytes(of: vfio_device_feature_dma_logging_range(iova: $0.iova, length: $0.length)) }
        #expect(start.embedded.first?.bytes == rangeBytes)

        let stop = VFIORequests.stopDMALogging()
        #expect(Self.header(stop) == (8, CVFIO_DEVICE_FEATURE_SET | 7))
        #expect(VFIORequests.payload(of: stop).isEmpty)

        var bitmap = DirtyBitmap(iova: 0x1000_0000, length: 0x40_0000, pageSize: 4096)
        bitmap.setDirty(page: 3)
        let report = VFIORequests.reportDMALog(bitmap)
        #expect(Self.header(report) == (UInt32(8 + MemoryLayout<vfio_device_feature_dma_logging_report>.size), CVFIO_DEVICE_FEATURE_GET | 8))
        #expect(VFIORequests.payload(of: report) == Self.bytes(of: vfio_device_feature_dma_logging_report(iova: 0x1000_0000, length: 0x40_0000, page_size: 4096, bitmap: 0)))
        #expect(report.embedded.map(\.addressOffset) == [8 + cvfio_offsetof_dma_logging_report_bitmap()])
        #expect(report.embedded.first?.bytes.count == 1024 / 64 * 8, "one bit per page, in u64 words")
        #expect(report.embedded.first?.bytes.first == 0b1000, "the caller's bits go in: the kernel only ORs")

        var reply = report
        var words = report.embedded[0].bytes
        words[8] = 0x81  // pages 64 and 71
        reply.argument = .buffer(report.bytes, pointers: [VFIORequest.EmbeddedBuffer(addressOffset: report.embedded[0].addressOffset, bytes: words)])
        VFIORequests.decodeReportBitmap(reply, into: &bitmap)
        let base: UInt64 = 0x1000_0000
        let expectedPages: [UInt64] = [base + 3 * 4096, base + 64 * 4096, base + 71 * 4096]
        #expect(bitmap.dirtyPageAddresses == expectedPages)
    }

    @Test func openingRequests() {
        #expect(VFIORequests.bindIOMMUFD(7).bytes == Self.bytes(of: vfio_device_bind_iommufd(argsz: 16, flags: 0, iommufd: 7, out_devid: 0)))
        #expect(MemoryLayout<vfio_device_bind_iommufd>.size == 16)
        #expect(VFIORequests.attachIOMMUFDPageTable(9).bytes == Self.bytes(of: vfio_device_attach_iommufd_pt(argsz: 12, flags: 0, pt_id: 9)))
        #expect(VFIORequests.allocateIOAS().bytes == Self.bytes(of: iommu_ioas_alloc(size: 12, flags: 0, out_ioas_id: 0)))
        var allocated = VFIORequests.allocateIOAS()
        allocated.argument = .buffer(Self.bytes(of: iommu_ioas_alloc(size: 12, flags: 0, out_ioas_id: 5)), pointers: [])
        #expect(VFIORequests.decodeIOASID(allocated) == 5)

        #expect(VFIORequests.groupStatus().bytes == Self.bytes(of: vfio_group_status(argsz: 8, flags: 0)))
        var status = VFIORequests.groupStatus()
        status.argument = .buffer(Self.bytes(of: vfio_group_status(argsz: 8, flags: CVFIO_GROUP_FLAGS_VIABLE)), pointers: [])
        #expect(VFIORequests.decodeGroupViable(status))
        #expect(!VFIORequests.decodeGroupViable(VFIORequests.groupStatus()))

        #expect(VFIORequests.setContainer(11).bytes == Self.bytes(of: Int32(11)))
        #expect(VFIORequests.checkExtension(CVFIO_TYPE1v2_IOMMU).argument == .value(3))
        #expect(VFIORequests.setIOMMU(CVFIO_TYPE1v2_IOMMU).argument == .value(3))
        #expect(VFIORequests.apiVersion().argument == .none)
        #expect(VFIORequests.groupDeviceFD(.pci(PCIAddress("3b:00.1")!)).bytes == Array("0000:3b:00.1".utf8) + [0])
        // An mdev is asked for by its UUID, in lower case as sysfs writes it.
        #expect(VFIORequests.groupDeviceFD(VFIODeviceName("83B8F4F2-509F-382F-3C1E-E6BFE0FA1001")!).bytes
                == Array("83b8f4f2-509f-382f-3c1e-e6bfe0fa1001".utf8) + [0])
    }
}
