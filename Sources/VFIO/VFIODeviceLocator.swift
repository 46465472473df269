#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Finds how to open the VFIO device of one PCI function, reading sysfs only: it never binds,
/// unbinds or otherwise touches a device, and looks at no device but the one named.
public struct VFIODeviceLocator: Sendable {
    /// Roots, replaceable so that tests can lay out a fake sysfs and /dev.
    public var sysfsRoot: String
    public var devRoot: String

    public init(sysfsRoot: String = "/sys", devRoot: String = "/dev") {
        self.sysfsRoot = sysfsRoot
        self.devRoot = devRoot
    }

    /// How the device fd is obtained.
    public enum Route: Hashable, Sendable, CustomStringConvertible {
        /// Linux 6.6+: the device's own cdev, bound to an iommufd.
        case deviceCdev(device: String, iommu: String)
        /// The legacy way: the IOMMU group in a type1 container.
        case group(group: String, container: String)

        public var description: String {
            switch self {
            case .deviceCdev(let device, _): "vfio cdev \(device) with iommufd"
            case .group(let group, _): "vfio group \(group)"
            }
        }
    }

    public func route(to address: PCIAddress) throws(VFIOOpenError) -> Route {
        try route(to: .pci(address))
    }

    public func route(to address: VFIODeviceName) throws(VFIOOpenError) -> Route {
        let device = "\(sysfsRoot)/bus/\(address.bus)/devices/\(address)"
        guard exists(device) else { throw .noSuchDevice(address) }
        // An mdev is a VFIO device by construction (its parent's driver serves it through VFIO).
        if case .pci = address {
            let driver = linkTarget("\(device)/driver").map(basename)
            guard let driver, Self.isVFIODriver(driver) else {
                throw .notBoundToVFIO(address, driver: driver, vfioPresent: vfioPresent)
            }
        }
        if let cdev = entries("\(device)/vfio-dev").first(where: { $0.hasPrefix("vfio") }),
           exists("\(devRoot)/vfio/devices/\(cdev)"), exists("\(devRoot)/iommu") {
            return .deviceCdev(device: "\(devRoot)/vfio/devices/\(cdev)", iommu: "\(devRoot)/iommu")
        }
        guard let group = linkTarget("\(device)/iommu_group").map(basename) else { throw .noIOMMUGroup(address) }
        let container = "\(devRoot)/vfio/vfio"
        guard exists(container) else {
            throw .vfioUnavailable(address, reason: "\(container) does not exist")
        }
        for name in [group, "noiommu-\(group)"] where exists("\(devRoot)/vfio/\(name)") {
            return .group(group: "\(devRoot)/vfio/\(name)", container: container)
        }
        throw .vfioUnavailable(address, reason: "neither \(devRoot)/vfio/devices/vfioN nor \(devRoot)/vfio/\(group) exists")
    }

    /// vfio-pci itself and the variant drivers (mlx5_vfio_pci, hisi_acc_vfio_pci, pds_vfio_pci,
    /// virtio_vfio_pci, qat_vfio_pci, nvgrace_gpu_vfio_pci, ...).
    public static func isVFIODriver(_ name: String) -> Bool {
        name == "vfio-pci" || name.hasSuffix("vfio_pci") || name.hasSuffix("vfio-pci")
    }

    var vfioPresent: Bool { exists("\(sysfsRoot)/module/vfio") || exists("\(devRoot)/vfio") }

    private func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    private func linkTarget(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink(path, &buffer, buffer.count - 1)
        guard count > 0 else { return nil }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private func basename(_ path: String) -> String { path.split(separator: "/").last.map(String.init) ?? path }

    private func entries(_ directory: String) -> [String] {
        guard let handle = opendir(directory) else { return [] }
        defer { closedir(handle) }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }
}

/// Why a PCI function could not be opened through VFIO, each with what to do about it.
public enum VFIOOpenError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidAddress(String)
    case noSuchDevice(VFIODeviceName)
    case notBoundToVFIO(VFIODeviceName, driver: String?, vfioPresent: Bool)
    case noIOMMUGroup(VFIODeviceName)
    case vfioUnavailable(VFIODeviceName, reason: String)
    case groupNotViable(VFIODeviceName, group: String)
    case system(VFIODeviceName, VFIOError)

    public var description: String {
        switch self {
        case .invalidAddress(let text):
            return "'\(text)' is not a PCI address or an mdev UUID: expected DDDD:BB:DD.F, for example 0000:3b:00.1 (lspci -D lists them), or a UUID such as 83b8f4f2-509f-382f-3c1e-e6bfe0fa1001 (mdevctl list shows the mdevs)"
        case .noSuchDevice(let address):
            if case .mdev = address {
                return "no mdev \(address) on this host (no /sys/bus/mdev/devices/\(address)); `mdevctl list` shows the mdevs, `mdevctl types` what can be created"
            }
            return "no PCI device \(address) on this host (no /sys/bus/pci/devices/\(address)); lspci -D lists the devices"
        case .notBoundToVFIO(let address, let driver, let vfioPresent):
            let bound = driver.map { "is bound to \($0), not to a VFIO driver" } ?? "is not bound to any driver"
            let noVFIO = vfioPresent ? "" : " This kernel has no VFIO loaded (no /sys/module/vfio, no /dev/vfio): run `modprobe vfio-pci` (or the variant driver's module) first."
            return "\(address) \(bound). miglab never rebinds devices: bind it to vfio-pci or its migration variant driver yourself, for example `driverctl set-override \(address) vfio-pci`.\(noVFIO)"
        case .noIOMMUGroup(let address):
            return "\(address) has no IOMMU group: enable the IOMMU (intel_iommu=on or amd_iommu=on on the kernel command line)"
        case .vfioUnavailable(let address, let reason):
            return "\(address) is bound to a VFIO driver but VFIO cannot be reached: \(reason). Load vfio-pci (`modprobe vfio-pci`) and check /dev/vfio."
        case .groupNotViable(let address, let group):
            return "IOMMU group \(group) of \(address) is not viable: every device in the group must be bound to a VFIO driver or to none"
        case .system(let address, let error):
            let hint: String
            switch error.errorNumber {
            case EACCES, EPERM: hint = " Run as root, or give this user access to the VFIO device nodes."
            case EBUSY: hint = " The device is open elsewhere (a running QEMU?)."
            case ENOTTY, EINVAL: hint = " The kernel does not know this request: is the device node really a VFIO node?"
            default: hint = ""
            }
            return "\(address): \(error).\(hint)"
        }
    }
}
