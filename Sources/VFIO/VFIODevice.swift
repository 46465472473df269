import CVFIO

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A real VFIO device: its device fd, and the iommufd or group and container it was opened
/// through. Every operation is one ioctl (or read/write on the data fd) built by `VFIORequests`.
///
/// Not thread-safe: one user at a time, like the kernel's migration state mutex expects.
public final class VFIODevice {
    public let name: VFIODeviceName
    public let route: VFIODeviceLocator.Route
    private let device: FileDescriptor
    /// The iommufd, or the group and container: the device fd must close before them.
    private let holders: [FileDescriptor]
    private var cachedCapabilities: MigrationCapabilities?

    private init(name: VFIODeviceName, route: VFIODeviceLocator.Route, device: FileDescriptor, holders: [FileDescriptor]) {
        self.name = name
        self.route = route
        self.device = device
        self.holders = holders
    }

    deinit {
        device.close()
    }

    /// Opens the VFIO device of the PCI function at `text`, or of the mdev with that UUID (text
    /// as the user typed it).
    public static func open(_ text: String, locator: VFIODeviceLocator = VFIODeviceLocator()) throws(VFIOOpenError) -> VFIODevice {
        guard let parsed = VFIODeviceName(text) else { throw .invalidAddress(text) }
        return try open(parsed, locator: locator)
    }

    public static func open(_ address: PCIAddress, locator: VFIODeviceLocator = VFIODeviceLocator()) throws(VFIOOpenError) -> VFIODevice {
        try open(.pci(address), locator: locator)
    }

    public static func open(_ address: VFIODeviceName, locator: VFIODeviceLocator = VFIODeviceLocator()) throws(VFIOOpenError) -> VFIODevice {
        let route = try locator.route(to: address)
        do {
            switch route {
            case .deviceCdev(let devicePath, let iommuPath):
                let device = try FileDescriptor.open(devicePath)
                let iommu = try FileDescriptor.open(iommuPath)
                var bind = VFIORequests.bindIOMMUFD(iommu.rawValue)
                try device.perform(&bind)
                // A fresh, empty address space: the device can reach no memory of this process.
                var allocate = VFIORequests.allocateIOAS()
                try iommu.perform(&allocate)
                var attach = VFIORequests.attachIOMMUFDPageTable(VFIORequests.decodeIOASID(allocate))
                try device.perform(&attach)
                return VFIODevice(name: address, route: route, device: device, holders: [iommu])
            case .group(let groupPath, let containerPath):
                let container = try FileDescriptor.open(containerPath)
                var version = VFIORequests.apiVersion()
                let api = try container.perform(&version)
                guard api == CVFIO_API_VERSION else {
                    throw VFIOError("VFIO_GET_API_VERSION", errorNumber: EINVAL, detail: "API version \(api), miglab speaks \(CVFIO_API_VERSION)")
                }
                var type1 = VFIORequests.checkExtension(CVFIO_TYPE1v2_IOMMU)
                guard try container.perform(&type1) > 0 else {
                    throw VFIOError("VFIO_CHECK_EXTENSION", errorNumber: EINVAL, detail: "no VFIO_TYPE1v2_IOMMU")
                }
                let group = try FileDescriptor.open(groupPath)
                var status = VFIORequests.groupStatus()
                try group.perform(&status)
                guard VFIORequests.decodeGroupViable(status) else {
                    throw VFIOOpenError.groupNotViable(address, group: groupPath)
                }
                var setContainer = VFIORequests.setContainer(container.rawValue)
                try group.perform(&setContainer)
                var setIOMMU = VFIORequests.setIOMMU(CVFIO_TYPE1v2_IOMMU)
                try container.perform(&setIOMMU)
                var getDevice = VFIORequests.groupDeviceFD(address)
                let fd = try group.perform(&getDevice)
                let device = FileDescriptor.adopting(fd, path: "\(groupPath):\(address)")
                return VFIODevice(name: address, route: route, device: device, holders: [group, container])
            }
        } catch let error as VFIOOpenError {
            throw error
        } catch let error as VFIOError {
            throw .system(address, error)
        } catch {
            throw .system(address, VFIOError("open", errorNumber: EIO, detail: "\(error)"))
        }
    }
}

extension VFIODevice: MigrationDevice {
    public var exerciser: (any DeviceExerciser)? { nil }
    public var virtioMember: (any VirtioMemberAdministration)? { nil }

    /// The flags, read once.
    private func knownCapabilities() throws(VFIOError) -> MigrationCapabilities {
        if let c = cachedCapabilities { return c }
        let c = try migrationCapabilities()
        cachedCapabilities = c
        return c
    }

    public func migrationCapabilities() throws(VFIOError) -> MigrationCapabilities {
        var request = VFIORequests.migrationFlags()
        try device.perform(&request)
        return VFIORequests.decodeMigrationFlags(request)
    }

    public func migrationState() throws(VFIOError) -> MigrationState {
        var request = VFIORequests.migrationState()
        try device.perform(&request)
        let raw = VFIORequests.decodeMigrationState(request)
        guard let state = MigrationState(rawValue: raw) else {
            throw VFIOError(request.name, errorNumber: ERANGE, detail: "device state \(raw) is not in the uAPI miglab knows")
        }
        return state
    }

    public func setMigrationState(_ state: MigrationState) throws(VFIOError) -> (any MigrationDataStream)? {
        vfioTrace("\(name): set migration state \(state)")
        var request = VFIORequests.setMigrationState(state)
        // A request the kernel never returns from is not sent (hardware nodes are shared: a
        // hung CPU with the device's mutex held takes the node down).
        let capabilities = try knownCapabilities()
        if MigrationFSM.hangsKernel(from: try migrationState(), to: state, capabilities: capabilities) {
            throw VFIOError.notSent(request.name + " \(state)", because: MigrationFSM.kernelLoopReason)
        }
        try device.perform(&request)
        let fd = VFIORequests.decodeDataFD(request)
        guard fd >= 0 else { return nil }
        return VFIODataStream(file: FileDescriptor.adopting(fd, path: "migration data fd of \(name)"))
    }

    public func stopCopySize() throws(VFIOError) -> UInt64 {
        var request = VFIORequests.stopCopySize()
        try device.perform(&request)
        return VFIORequests.decodeStopCopySize(request)
    }

    public func reset() throws(VFIOError) {
        var request = VFIORequests.reset()
        try device.perform(&request)
    }

    public func startDMALogging(pageSizeHint: UInt64, ranges: [IOVARange]) throws(VFIOError) -> UInt64 {
        var request = VFIORequests.startDMALogging(pageSizeHint: pageSizeHint, ranges: ranges)
        try device.perform(&request)
        return VFIORequests.decodeLoggingPageSize(request)
    }

    public func stopDMALogging() throws(VFIOError) {
        var request = VFIORequests.stopDMALogging()
        try device.perform(&request)
    }

    public func reportDMALog(into bitmap: inout DirtyBitmap) throws(VFIOError) {
        var request = VFIORequests.reportDMALog(bitmap)
        try device.perform(&request)
        VFIORequests.decodeReportBitmap(request, into: &bitmap)
    }
}

/// The data fd of a real migration session.
final class VFIODataStream: MigrationDataStream {
    let file: FileDescriptor

    init(file: FileDescriptor) { self.file = file }

    func read(upTo count: Int) throws(VFIOError) -> [UInt8] {
        try file.read(upTo: count, operation: "read(migration data fd)")
    }

    func write(_ bytes: [UInt8]) throws(VFIOError) -> Int {
        try file.write(bytes, operation: "write(migration data fd)")
    }

    func precopyInfo() throws(VFIOError) -> PrecopyInfo {
        var request = VFIORequests.precopyInfo()
        try file.perform(&request)
        return VFIORequests.decodePrecopyInfo(request)
    }
}
