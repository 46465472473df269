/// The owner-device view of a virtio member device: the group administration commands of the
/// virtio device migration proposal (admin-cmds-device-migration.tex, seed 002). Errors carry the
/// admin command's name and the status as an errno (VIRTIO_ADMIN_STATUS_EINVAL is 22, and so on).
public protocol VirtioMemberAdministration: AnyObject {
    /// VIRTIO_ADMIN_CMD_DEV_MODE_GET (0x7).
    func deviceMode() throws(VFIOError) -> VirtioMigrationMode

    /// VIRTIO_ADMIN_CMD_DEV_MODE_SET (0x8). Takes the raw byte so that undefined modes can be
    /// sent too.
    func setDeviceMode(_ mode: UInt8) throws(VFIOError)

    /// VIRTIO_ADMIN_CMD_DEV_CTX_SIZE_GET (0x9): the remaining estimated context size, for the
    /// current mode or for Freeze.
    func deviceContextSize(forFreezeMode: Bool) throws(VFIOError) -> UInt64

    /// VIRTIO_ADMIN_CMD_DEV_CTX_READ (0xa): up to `maxLength` bytes; fewer, or none, at the end.
    func readDeviceContext(maxLength: Int) throws(VFIOError) -> [UInt8]

    /// VIRTIO_ADMIN_CMD_DEV_CTX_WRITE (0xb): the next bytes of a context, only in Freeze.
    func writeDeviceContext(_ bytes: [UInt8]) throws(VFIOError)

    /// VIRTIO_ADMIN_CMD_DEV_CTX_FIELDS_QUERY (0xc).
    func deviceContextSupportedFields() throws(VFIOError) -> [DeviceContextFieldDescriptor]

    /// VIRTIO_ADMIN_CMD_DEV_CTX_DISCARD (0xd): forget a partial read or write.
    func discardDeviceContext() throws(VFIOError)

    /// VIRTIO_ADMIN_CMD_DEV_WRITE_RECORD_CAP_QUERY.
    func writeRecordCapabilities() throws(VFIOError) -> WriteRecordCapabilities

    /// VIRTIO_ADMIN_CMD_DEV_WRITE_RECORDS_START over page ranges of `pageSize`.
    func startWriteRecording(pageSize: UInt64, ranges: [WriteRecordRange]) throws(VFIOError)

    /// VIRTIO_ADMIN_CMD_DEV_WRITE_RECORDS_STOP: succeeds even when not started.
    func stopWriteRecording() throws(VFIOError)

    /// VIRTIO_ADMIN_CMD_DEV_WRITE_RECORDS_READ: the addresses of the pages written in
    /// [pageAddress, pageAddress + length), which the device then forgets.
    func readWriteRecords(pageAddress: UInt64, length: UInt64) throws(VFIOError) -> [UInt64]

    /// A function level reset of the member, as its own (guest) driver may start at any time.
    func functionLevelReset() throws(VFIOError)
}

/// Member device migration modes ("struct virtio_admin_cmd_dev_mode_set_data").
public enum VirtioMigrationMode: UInt8, CaseIterable, Sendable, Codable, CustomStringConvertible {
    case active = 0
    case stop = 1
    case freeze = 2

    public var description: String {
        switch self {
        case .active: "Active"
        case .stop: "Stop"
        case .freeze: "Freeze"
        }
    }
}

/// `struct virtio_admin_cmd_dev_write_record_cap_result`.
public struct WriteRecordCapabilities: Hashable, Sendable {
    /// Bit n: pages of 4 KiB << n.
    public var supportedPageSizeBitmap: UInt32
    public var supportedRanges: UInt32
    public init(supportedPageSizeBitmap: UInt32, supportedRanges: UInt32) {
        self.supportedPageSizeBitmap = supportedPageSizeBitmap
        self.supportedRanges = supportedRanges
    }

    public var supportedPageSizes: [UInt64] {
        (0..<32).filter { supportedPageSizeBitmap & (1 << UInt32($0)) != 0 }.map { UInt64(4096) << UInt64($0) }
    }
}

/// `struct virtio_admin_cmd_write_record_start_entry`.
public struct WriteRecordRange: Hashable, Sendable {
    public var pageAddress: UInt64
    public var pageCount: UInt64
    public init(pageAddress: UInt64, pageCount: UInt64) {
        self.pageAddress = pageAddress
        self.pageCount = pageCount
    }
}
