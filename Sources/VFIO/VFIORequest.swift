import CVFIO

/// One ioctl as data: its request number and the argument bytes, including the buffers that the
/// argument points to. The encoders below are pure, so every request the real backend sends is
/// checked by unit tests against the kernel header's structs; `FileDescriptor.perform(_:)` is the
/// only place that turns a request into a system call.
struct VFIORequest: Hashable {
    /// The ioctl as the uAPI names it, with the feature for VFIO_DEVICE_FEATURE.
    let name: String
    let number: UInt
    var argument: Argument

    enum Argument: Hashable {
        /// No argument (`VFIO_DEVICE_RESET`, `VFIO_GET_API_VERSION`).
        case none
        /// An integer passed by value (`VFIO_CHECK_EXTENSION`, `VFIO_SET_IOMMU`).
        case value(UInt)
        /// A struct passed by pointer; `pointers` are user buffers whose addresses go, as le64,
        /// at their offsets in `bytes` (DMA logging ranges and report bitmap).
        case buffer([UInt8], pointers: [EmbeddedBuffer])
    }

    struct EmbeddedBuffer: Hashable {
        let addressOffset: Int
        var bytes: [UInt8]
    }

    var bytes: [UInt8] {
        guard case .buffer(let bytes, _) = argument else { return [] }
        return bytes
    }

    var embedded: [EmbeddedBuffer] {
        guard case .buffer(_, let pointers) = argument else { return [] }
        return pointers
    }
}

/// Encoders and decoders for every request of the real backend.
enum VFIORequests {
    /// `sizeof(struct vfio_device_feature)`: argsz and flags, then the feature's data.
    static let featureHeaderSize = 8

    /// `struct vfio_device_feature` followed by `payload`.
    static func feature(_ name: String, flags: UInt32, feature: UInt32, payload: [UInt8], pointers: [VFIORequest.EmbeddedBuffer] = []) -> VFIORequest {
        var bytes: [UInt8] = []
        bytes.appendHostOrder(UInt32(featureHeaderSize + payload.count))
        bytes.appendHostOrder(flags | feature)
        bytes += payload
        return VFIORequest(name: name, number: CVFIO_IOCTL_DEVICE_FEATURE, argument: .buffer(bytes, pointers: pointers))
    }

    static func payload(of request: VFIORequest) -> [UInt8] { Array(request.bytes.dropFirst(featureHeaderSize)) }

    // MARK: Migration

    static func migrationFlags() -> VFIORequest {
        feature("VFIO_DEVICE_FEATURE(GET, MIGRATION)", flags: CVFIO_DEVICE_FEATURE_GET,
                feature: CVFIO_DEVICE_FEATURE_MIGRATION, payload: [UInt8](repeating: 0, count: 8))
    }

    static func decodeMigrationFlags(_ request: VFIORequest) -> MigrationCapabilities {
        MigrationCapabilities(rawValue: payload(of: request).loadHostOrder(UInt64.self, at: 0))
    }

    /// `struct vfio_device_feature_mig_state { u32 device_state; s32 data_fd; }`.
    static func migrationState() -> VFIORequest {
        var payload: [UInt8] = []
        payload.appendHostOrder(UInt32(0))
        payload.appendHostOrder(Int32(-1))
        return feature("VFIO_DEVICE_FEATURE(GET, MIG_DEVICE_STATE)", flags: CVFIO_DEVICE_FEATURE_GET,
                       feature: CVFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, payload: payload)
    }

    static func setMigrationState(_ state: MigrationState) -> VFIORequest {
        var payload: [UInt8] = []
        payload.appendHostOrder(state.rawValue)
        payload.appendHostOrder(Int32(-1))
        return feature("VFIO_DEVICE_FEATURE(SET, MIG_DEVICE_STATE)", flags: CVFIO_DEVICE_FEATURE_SET,
                       feature: CVFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, payload: payload)
    }

    /// The state the kernel wrote back (a raw value miglab may not know).
    static func decodeMigrationState(_ request: VFIORequest) -> UInt32 {
        payload(of: request).loadHostOrder(UInt32.self, at: 0)
    }

    /// The data fd the kernel wrote back: -1 where the arc opened no session.
    static func decodeDataFD(_ request: VFIORequest) -> Int32 {
        payload(of: request).loadHostOrder(Int32.self, at: 4)
    }

    /// `struct vfio_device_feature_mig_data_size { aligned_u64 stop_copy_length; }`.
    static func stopCopySize() -> VFIORequest {
        feature("VFIO_DEVICE_FEATURE(GET, MIG_DATA_SIZE)", flags: CVFIO_DEVICE_FEATURE_GET,
                feature: CVFIO_DEVICE_FEATURE_MIG_DATA_SIZE, payload: [UInt8](repeating: 0, count: 8))
    }

    static func decodeStopCopySize(_ request: VFIORequest) -> UInt64 { payload(of: request).loadHostOrder(UInt64.self, at: 0) }

    static func reset() -> VFIORequest {
        VFIORequest(name: "VFIO_DEVICE_RESET", number: CVFIO_IOCTL_DEVICE_RESET, argument: .none)
    }

    /// `struct vfio_precopy_info { u32 argsz; u32 flags; aligned_u64 initial_bytes, dirty_bytes; }`
    /// on the data fd.
    static func precopyInfo() -> VFIORequest {
        var bytes: [UInt8] = []
        bytes.appendHostOrder(UInt32(24))
        bytes.appendHostOrder(UInt32(0))
        bytes.appendHostOrder(UInt64(0))
        bytes.appendHostOrder(UInt64(0))
        return VFIORequest(name: "VFIO_MIG_GET_PRECOPY_INFO", number: CVFIO_IOCTL_MIG_GET_PRECOPY_INFO, argument: .buffer(bytes, pointers: []))
    }

    static func decodePrecopyInfo(_ request: VFIORequest) -> PrecopyInfo {
        PrecopyInfo(initialBytes: request.bytes.loadHostOrder(UInt64.self, at: 8), dirtyBytes: request.bytes.loadHostOrder(UInt64.self, at: 16))
    }

    // MARK: DMA logging

    /// `struct vfio_device_feature_dma_logging_control { aligned_u64 page_size; u32 num_ranges;
    /// u32 __reserved; aligned_u64 ranges; }` pointing at `struct
    /// vfio_device_feature_dma_logging_range { aligned_u64 iova, length; }[num_ranges]`.
    static func startDMALogging(pageSizeHint: UInt64, ranges: [IOVARange]) -> VFIORequest {
        var payload: [UInt8] = []
        payload.appendHostOrder(pageSizeHint)
        payload.appendHostOrder(UInt32(ranges.count))
        payload.appendHostOrder(UInt32(0))
        payload.appendHostOrder(UInt64(0))  // ranges: patched in by perform(_:)
        var rangeBytes: [UInt8] = []
        for range in ranges {
            rangeBytes.appendHostOrder(range.iova)
            rangeBytes.appendHostOrder(range.length)
        }
        return feature("VFIO_DEVICE_FEATURE(SET, DMA_LOGGING_START)", flags: CVFIO_DEVICE_FEATURE_SET,
                       feature: CVFIO_DEVICE_FEATURE_DMA_LOGGING_START, payload: payload,
                       pointers: [VFIORequest.EmbeddedBuffer(addressOffset: featureHeaderSize + 16, bytes: rangeBytes)])
    }

    /// "On output the device will return the page size it selected."
    static func decodeLoggingPageSize(_ request: VFIORequest) -> UInt64 { payload(of: request).loadHostOrder(UInt64.self, at: 0) }

    static func stopDMALogging() -> VFIORequest {
        feature("VFIO_DEVICE_FEATURE(SET, DMA_LOGGING_STOP)", flags: CVFIO_DEVICE_FEATURE_SET,
                feature: CVFIO_DEVICE_FEATURE_DMA_LOGGING_STOP, payload: [])
    }

    /// `struct vfio_device_feature_dma_logging_report { aligned_u64 iova, length, page_size,
    /// bitmap; }`; the bitmap goes in as the caller has it, since the kernel only ORs bits in.
    static func reportDMALog(_ bitmap: DirtyBitmap) -> VFIORequest {
        var payload: [UInt8] = []
        payload.appendHostOrder(bitmap.iova)
        payload.appendHostOrder(bitmap.length)
        payload.appendHostOrder(bitmap.pageSize)
        payload.appendHostOrder(UInt64(0))  // bitmap: patched in by perform(_:)
        var words: [UInt8] = []
        for word in bitmap.words { words.appendHostOrder(word) }
        return feature("VFIO_DEVICE_FEATURE(GET, DMA_LOGGING_REPORT)", flags: CVFIO_DEVICE_FEATURE_GET,
                       feature: CVFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT, payload: payload,
                       pointers: [VFIORequest.EmbeddedBuffer(addressOffset: featureHeaderSize + 24, bytes: words)])
    }

    static func decodeReportBitmap(_ request: VFIORequest, into bitmap: inout DirtyBitmap) {
        guard let words = request.embedded.first?.bytes else { return }
        for index in bitmap.words.indices {
            bitmap.words[index] = words.loadHostOrder(UInt64.self, at: index * 8)
        }
    }

    // MARK: Opening: device cdev with iommufd

    /// `struct iommu_ioas_alloc { u32 size; u32 flags; u32 out_ioas_id; }` on /dev/iommu.
    static func allocateIOAS() -> VFIORequest {
        var bytes: [UInt8] = []
        bytes.appendHostOrder(UInt32(12))
        bytes.appendHostOrder(UInt32(0))
        bytes.appendHostOrder(UInt32(0))
        return VFIORequest(name: "IOMMU_IOAS_ALLOC", number: CVFIO_IOCTL_IOMMU_IOAS_ALLOC, argument: .buffer(bytes, pointers: []))
    }

    static func decodeIOASID(_ request: VFIORequest) -> UInt32 { request.bytes.loadHostOrder(UInt32.self, at: 8) }

    /// `struct vfio_device_bind_iommufd { u32 argsz; u32 flags; s32 iommufd; u32 out_devid; }`.
    static func bindIOMMUFD(_ iommufd: Int32) -> VFIORequest {
        var bytes: [UInt8] = []
        bytes.appendHostOrder(UInt32(16))
        bytes.appendHostOrder(UInt32(0))
        bytes.appendHostOrder(iommufd)
        bytes.appendHostOrder(UInt32(0))
        return VFIORequest(name: "VFIO_DEVICE_BIND_IOMMUFD", number: CVFIO_IOCTL_DEVICE_BIND_IOMMUFD, argument: .buffer(bytes, pointers: []))
    }

    /// `struct vfio_device_attach_iommufd_pt { u32 argsz; u32 flags; u32 pt_id; }`.
    static func attachIOMMUFDPageTable(_ id: UInt32) -> VFIORequest {
        var bytes: [UInt8] = []
        bytes.appendHostOrder(UInt32(12))
        bytes.appendHostOrder(UInt32(0))
        bytes.appendHostOrder(id)
        return VFIORequest(name: "VFIO_DEVICE_ATTACH_IOMMUFD_PT", number: CVFIO_IOCTL_DEVICE_ATTACH_IOMMUFD_PT, argument: .buffer(bytes, pointers: []))
    }

    // MARK: Opening: IOMMU group and container

    static func apiVersion() -> VFIORequest {
        VFIORequest(name: "VFIO_GET_API_VERSION", number: CVFIO_IOCTL_GET_API_VERSION, argument: .none)
    }

    static func checkExtension(_ extensionID: UInt) -> VFIORequest {
        VFIORequest(name: "VFIO_CHECK_EXTENSION", number: CVFIO_IOCTL_CHECK_EXTENSION, argument: .value(extensionID))
    }

    static func setIOMMU(_ type: UInt) -> VFIORequest {
        VFIORequest(name: "VFIO_SET_IOMMU", number: CVFIO_IOCTL_SET_IOMMU, argument: .value(type))
    }

    /// `struct vfio_group_status { u32 argsz; u32 flags; }`.
    static func groupStatus() -> VFIORequest {
        var bytes: [UInt8] = []
        bytes.appendHostOrder(UInt32(8))
        bytes.appendHostOrder(UInt32(0))
        return VFIORequest(name: "VFIO_GROUP_GET_STATUS", number: CVFIO_IOCTL_GROUP_GET_STATUS, argument: .buffer(bytes, pointers: []))
    }

    static func decodeGroupViable(_ request: VFIORequest) -> Bool {
        request.bytes.loadHostOrder(UInt32.self, at: 4) & CVFIO_GROUP_FLAGS_VIABLE != 0
    }

    /// `int32_t *` to the container fd.
    static func setContainer(_ containerFD: Int32) -> VFIORequest {
        var bytes: [UInt8] = []
        bytes.appendHostOrder(containerFD)
        return VFIORequest(name: "VFIO_GROUP_SET_CONTAINER", number: CVFIO_IOCTL_GROUP_SET_CONTAINER, argument: .buffer(bytes, pointers: []))
    }

    /// `char *` naming the device: its PCI address, NUL terminated.
    static func groupDeviceFD(_ address: VFIODeviceName) -> VFIORequest {
        VFIORequest(name: "VFIO_GROUP_GET_DEVICE_FD", number: CVFIO_IOCTL_GROUP_GET_DEVICE_FD,
                    argument: .buffer(Array(address.description.utf8) + [0], pointers: []))
    }
}

extension Array where Element == UInt8 {
    /// uAPI structs are in the host's byte order.
    mutating func appendHostOrder<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value) { append(contentsOf: $0) }
    }

    func loadHostOrder<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        var value: T = 0
        Swift.withUnsafeMutableBytes(of: &value) { destination in
            for index in 0..<MemoryLayout<T>.size { destination[index] = self[offset + index] }
        }
        return value
    }
}
