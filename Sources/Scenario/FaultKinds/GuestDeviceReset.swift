/// A device reset from inside the guest: a driver unbind and bind, or the guest kernel's own
/// PCI reset (see `Method`). A step or a fault of a migration.
public struct GuestDeviceReset: FaultKind, Equatable {
    public enum Method: String, Sendable, CaseIterable {
        /// Driver unbind and bind (a virtio device reset; nothing reaches a passed-through
        /// device's host driver).
        case rebind
        /// The guest kernel's PCI reset (sysfs `reset`, the driver bound): the first of the
        /// device's reset_method list that works (FLR, PM, or a bus reset through its port). QEMU
        /// passes it to the host driver as VFIO_DEVICE_RESET when the device reports one: during
        /// a migration that is the asynchronous reset of QEMU's "data_fd out of sync".
        case pci
    }

    public static let name = "guest-device-reset"
    public static let summary = "a device reset from inside the guest"
    static let method = FormatKey("method", .choice(Method.self), "driver rebind, or the kernel's PCI reset")
    static let count = FaultKeys.count("resets")
    public static let faultKeys = [FaultKeys.device, method, FaultKeys.loop]
    public static let stepKeys: [FormatKey]? = [FaultKeys.device, method, count, FaultKeys.timeout]

    public var device: String
    public var method: Method
    public var repetitions: Repetitions

    public init(device: String, method: Method = .rebind, repetitions: Repetitions = .once) {
        self.device = device
        self.method = method
        self.repetitions = repetitions
    }

    public static func read(_ f: inout FaultFields) -> GuestDeviceReset? {
        let device = f.guestDevice(FaultKeys.device)
        let method = f.choice(Self.method, default: Method.rebind)
        let repetitions = f.repetitions(count: count)
        guard let device, let method, let repetitions else { return nil }
        return GuestDeviceReset(device: device, method: method, repetitions: repetitions)
    }

    /// A PCI reset of a passed-through device reaches its host driver only when the host lets it.
    public var needs: Set<HostCapability> { method == .pci ? [.guestResetsReachDevices] : [] }

    public func fire(_ target: any FaultTarget) async throws -> FaultEffect {
        let args = ["reset", try target.guestSelector(of: device), "\(repetitions.guestctlCount)", method.rawValue]
        let pid = try await target.startInGuest(.guestctl, args)
        // A PCI reset the guest's kernel refused did not happen, loop or not.
        let strict = repetitions.isCounted || method == .pci
        return FaultEffect((repetitions == .untilStopped ? "reset loop started" : "reset started") + " (\(method.rawValue), guest pid \(pid))",
                           guestProcess: GuestProcess(pid: pid) { GuestctlReport($0)?.happened(strict: strict) ?? false })
    }

    public var description: String { "guest device reset (\(method.rawValue)) of \(device)\(repetitions)" }
}
