import CVFIO
import Foundation
import VFIO

/// The migration flags `VFIO_DEVICE_FEATURE_MIGRATION` reports (`VFIO_MIGRATION_*`).
/// Encoded in JSON as the list of flag names.
public struct VFIOMigrationFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// Mandatory: STOP, STOP_COPY and RESUMING are implemented.
    public static let stopCopy = VFIOMigrationFlags(rawValue: UInt64(VFIO_MIGRATION_STOP_COPY))
    /// RUNNING_P2P is implemented (quiesce peer-to-peer DMA before STOP).
    public static let p2p = VFIOMigrationFlags(rawValue: UInt64(VFIO_MIGRATION_P2P))
    /// PRE_COPY (and PRE_COPY_P2P with `.p2p`) is implemented.
    public static let preCopy = VFIOMigrationFlags(rawValue: UInt64(VFIO_MIGRATION_PRE_COPY))

    static let named: [(VFIOMigrationFlags, String)] = [(.stopCopy, "STOP_COPY"), (.p2p, "P2P"), (.preCopy, "PRE_COPY")]

    /// The flag names, unknown bits as hexadecimal.
    public var names: [String] {
        var names = Self.named.filter { contains($0.0) }.map(\.1)
        let unknown = rawValue & ~Self.named.reduce(0) { $0 | $1.0.rawValue }
        if unknown != 0 { names.append("0x" + String(unknown, radix: 16)) }
        return names
    }
}

extension VFIOMigrationFlags: Codable {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        var flags = VFIOMigrationFlags()
        for name in try container.decode([String].self) {
            if let known = Self.named.first(where: { $0.1 == name }) {
                flags.insert(known.0)
            } else if name.hasPrefix("0x"), let bits = UInt64(name.dropFirst(2), radix: 16) {
                flags.insert(VFIOMigrationFlags(rawValue: bits))
            } else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "unknown VFIO migration flag \(name)")
            }
        }
        self = flags
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(names)
    }
}

/// What VFIO says about a function's migration support, or why miglab did not ask.
public struct VFIOMigrationSupport: Codable, Sendable, Equatable {
    public enum Status: String, Codable, Sendable {
        /// `VFIO_DEVICE_FEATURE_MIGRATION` answered; `flags` holds its answer.
        case supported
        /// The vfio driver has no migration support (the feature is ENOTTY).
        case unsupported
        /// The group or the device is open elsewhere (EBUSY): a guest or another tool owns it.
        case inUse = "in-use"
        /// miglab did not open the device; `reason` says why.
        case notProbed = "not-probed"
        /// Opening the device or the ioctl failed; `reason` has the error.
        case failed
    }

    public var status: Status
    public var flags: VFIOMigrationFlags?
    public var reason: String?

    public init(status: Status, flags: VFIOMigrationFlags? = nil, reason: String? = nil) {
        self.status = status
        self.flags = flags
        self.reason = reason
    }

    public static func supported(_ flags: VFIOMigrationFlags) -> Self { Self(status: .supported, flags: flags) }
    public static func unsupported(_ reason: String) -> Self { Self(status: .unsupported, reason: reason) }
    public static func inUse(_ reason: String) -> Self { Self(status: .inUse, reason: reason) }
    public static func notProbed(_ reason: String) -> Self { Self(status: .notProbed, reason: reason) }
    public static func failed(_ reason: String) -> Self { Self(status: .failed, reason: reason) }
}

/// Asks VFIO for the migration flags of one vfio-bound PCI function.
///
/// The inventory calls it only for functions bound to vfio-pci or a variant driver, once per
/// function. An implementation must leave the device as it found it: a GET of
/// `VFIO_DEVICE_FEATURE_MIGRATION` and nothing else, and no open at all when someone else
/// holds the device.
public protocol VFIOMigrationProbe: Sendable {
    func migrationSupport(of address: PCIAddress, iommuGroup: Int) -> VFIOMigrationSupport
}

/// The probe through the VFIO target: `VFIODevice.open` (the device's cdev with an empty iommufd
/// address space on Linux 6.6+, else its group in a fresh type-1 container), one
/// `migrationCapabilities()` (a GET of `VFIO_DEVICE_FEATURE_MIGRATION`), then close.
///
/// A group or device someone else holds answers EBUSY and is reported as in use, untouched.
/// vfio-pci resets a function when its device is first opened and when it is closed, so the
/// probe leaves migration state alone but is not invisible to an idle device; that is why it
/// runs only on vfio-bound functions, and why `miglab inventory --no-vfio-probe` exists.
public struct VFIODeviceMigrationProbe: VFIOMigrationProbe {
    public var locator: VFIODeviceLocator

    public init(locator: VFIODeviceLocator = VFIODeviceLocator()) {
        self.locator = locator
    }

    /// The locator for the sysfs tree whose PCI directory is `pciRoot` (`/sys/bus/pci` gives `/sys`).
    public init(pciRoot: String, devRoot: String = "/dev") {
        let suffix = "/bus/pci"
        let sysfs = pciRoot.hasSuffix(suffix) ? String(pciRoot.dropLast(suffix.count)) : pciRoot
        self.init(locator: VFIODeviceLocator(sysfsRoot: sysfs.isEmpty ? "/" : sysfs, devRoot: devRoot))
    }

    public func migrationSupport(of address: PCIAddress, iommuGroup: Int) -> VFIOMigrationSupport {
        // VFIO has its own address type; both print and parse the sysfs form.
        guard let vfioAddress = VFIO.PCIAddress(address.description) else {
            return .failed("VFIO cannot parse the address \(address)")
        }
        let device: VFIODevice
        do {
            device = try VFIODevice.open(vfioAddress, locator: locator)
        } catch {
            return Self.support(whenOpenFailed: error)
        }
        do {
            let capabilities = try device.migrationCapabilities()
            return .supported(VFIOMigrationFlags(rawValue: capabilities.rawValue))
        } catch {
            if error.errorNumber == ENOTTY { return .unsupported("the driver does not implement VFIO_DEVICE_FEATURE_MIGRATION") }
            return .failed(error.description)
        }
    }

    /// Short reasons for the table; the VFIO error's own text (with its advice) for failures.
    static func support(whenOpenFailed error: VFIOOpenError) -> VFIOMigrationSupport {
        if case .system(_, let cause) = error, cause.errorNumber == EBUSY {
            return .inUse("open elsewhere (\(cause.operation): EBUSY)")
        }
        if case .vfioUnavailable(_, let reason) = error { return .notProbed("VFIO unavailable: \(reason)") }
        if case .noIOMMUGroup = error { return .notProbed("no IOMMU group") }
        if case .groupNotViable(_, let group) = error {
            return .notProbed("\(group) not viable: another member is bound to a host driver")
        }
        if case .notBoundToVFIO(_, let driver, _) = error { return .notProbed("\(driver ?? "no driver") is not a vfio driver") }
        return .failed(error.description)
    }
}
