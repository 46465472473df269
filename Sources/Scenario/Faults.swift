/// Emulated PCIe devices a scenario gives its guest. On the built-in lab they stand in for
/// passthrough devices; each has a name that steps and faults use.
public struct GuestDevice: Sendable, Equatable, Codable {
    public enum Model: String, Sendable, Codable, CaseIterable {
        /// virtio-net-pci behind a pcie-root-port: advertises FLR (`FLReset+`, reset_method "flr pm bus").
        case virtioNet = "virtio-net"
        /// Intel 82574L: no FLR (reset_method "pm bus").
        case e1000e
        /// QEMU's PCI 16550A UART whose line loops back to itself: the stand-in for the kernel's
        /// mtty mdev (a PCI serial device that returns what is written to it).
        case pciSerial = "pci-serial"

        public var supportsFLR: Bool { self == .virtioNet }
        public var isNetwork: Bool { self != .pciSerial }
        /// libvirt's `<model type=...>` for a NIC.
        public var libvirtModel: String { self == .virtioNet ? "virtio" : "e1000e" }
    }
    public var name: String
    public var model: Model
    /// A device broken on purpose, the negative control of the device checks: a NIC whose link
    /// is down (`link: down`), a pci-serial whose line goes nowhere (`loopback: false`).
    public var broken: Bool
    public init(name: String, model: Model, broken: Bool = false) {
        self.name = name
        self.model = model
        self.broken = broken
    }
}

/// When a fault fires, evaluated from the migration's job statistics.
public enum Trigger: Sendable, Equatable, Codable, CustomStringConvertible {
    /// Milliseconds after the migration started.
    case afterMs(Int)
    /// When libvirt reports memory iteration `n` (1 = the bulk pass).
    case iteration(Int)
    /// When the data still to send falls below this many MiB (after the bulk pass began).
    case remainingBelowMiB(Double)
    /// When the data still to send falls below this fraction of the total.
    case remainingBelowFraction(Double)

    public var description: String {
        switch self {
        case let .afterMs(n): "after \(n) ms"
        case let .iteration(n): "at iteration \(n)"
        case let .remainingBelowMiB(m): "remaining < \(m) MiB"
        case let .remainingBelowFraction(f): "remaining < \(f) of total"
        }
    }
}

/// Which side of a migration a host-side fault hits.
public enum MigrationSide: String, Sendable, Codable, CaseIterable {
    case source, destination
}

/// A fault that fires while a migration step is in flight.
public struct Fault: Sendable, Equatable, Codable {
    public enum Action: Sendable, Equatable, Codable {
        /// FLR of a guest device from inside the guest (sysfs reset with reset_method flr).
        case guestFLR(device: String, mode: FLRMode, loop: Bool)
        /// A device reset from inside the guest (see `DeviceResetMethod`).
        case guestDeviceReset(device: String, method: DeviceResetMethod, loop: Bool)
        /// The guest writes other values into a serial device's scratch registers after the
        /// runner's snapshot: the negative control of the scratch-register check, which must
        /// then fail (the device state that arrives is not the one the snapshot holds).
        case guestScratchWrite(device: String)
        /// virDomainAbortJob on the source (or the destination, where libvirt allows it).
        case abort(side: MigrationSide)
        /// SIGKILL to the QEMU of the guest on one side.
        case killQEMU(side: MigrationSide)
        /// SIGKILL to the libvirt daemon of one side; the lab restarts it.
        case killLibvirtd(side: MigrationSide)
        /// Cut the link between the hosts for `durationMs`.
        case networkPartition(mode: PartitionMode, durationMs: Int)
        /// Raise the maximum downtime so that a migration that does not converge can finish.
        case setMaxDowntime(ms: Int)
        /// A host-side reset of a passthrough device (every function of the requirement) on one
        /// side, under the running guest (hardware labs; only devices of the lab file's pools).
        case hostReset(device: String, method: HostResetMethod, side: MigrationSide)
    }

    /// How a host resets a passed-through PCI function.
    public enum HostResetMethod: String, Sendable, Codable, CaseIterable {
        /// `virNodeDeviceReset`: libvirt picks FLR, else a power-management or bus reset.
        case nodeDevice = "node-device"
        /// A function-level reset through sysfs (`reset_method` flr, then `reset`).
        case flr

        /// The step and fault name.
        public var kind: String { self == .flr ? "host-flr" : "host-device-reset" }
    }

    /// How the guest resets a device in `guest-device-reset`.
    public enum DeviceResetMethod: String, Sendable, Codable, CaseIterable {
        /// Driver unbind and bind (a virtio device reset; nothing reaches a passed-through
        /// device's host driver).
        case rebind
        /// The guest kernel's PCI reset (sysfs `reset`, the driver bound): the first of the
        /// device's reset_method list that works (FLR, PM, or a bus reset through its port). QEMU
        /// passes it to the host driver as VFIO_DEVICE_RESET when the device reports one: during
        /// a migration that is the asynchronous reset of QEMU's "data_fd out of sync".
        case pci
    }

    public enum FLRMode: String, Sendable, Codable, CaseIterable {
        /// FLR with the driver bound.
        case bound
        /// Unbind, FLR, bind.
        case rebind
    }

    public enum PartitionMode: String, Sendable, Codable, CaseIterable {
        /// The destination's link goes down.
        case linkDown = "link-down"
        /// 100% packet loss with tc netem.
        case loss
    }

    public var action: Action
    public var trigger: Trigger
    /// Fire again every this many ms while the migration runs.
    public var everyMs: Int?
    public var location: SourceLocation?

    public init(_ action: Action, trigger: Trigger = .afterMs(0), everyMs: Int? = nil, location: SourceLocation? = nil) {
        self.action = action
        self.trigger = trigger
        self.everyMs = everyMs
        self.location = location
    }

    public var kind: String {
        switch action {
        case .guestFLR: "guest-flr"
        case .guestDeviceReset: "guest-device-reset"
        case .guestScratchWrite: "guest-scratch-write"
        case .abort: "abort"
        case .killQEMU: "kill-qemu"
        case .killLibvirtd: "kill-libvirtd"
        case .networkPartition: "network-partition"
        case .setMaxDowntime: "set-max-downtime"
        case let .hostReset(_, method, _): method.kind
        }
    }
}

/// Damage done to the migration stream by a proxy between the two QEMUs.
public enum StreamCorruption: String, Sendable, Equatable, Codable, CaseIterable {
    /// Flip the first bytes of the stream (its magic): the destination must refuse it.
    case header
    /// Flip one byte in the body of every workload page the stream carries: QEMU accepts the
    /// stream, so only the memory oracle can catch it (the negative control).
    case payload
    /// Flip one byte every `every_mib` MiB, wherever it falls.
    case flipEvery = "flip-every"
    /// Flip the first byte of every chunk of VFIO device state the stream carries (the data
    /// after QEMU's VFIO_MIG_FLAG_DEV_DATA_STATE marker and its length): QEMU passes it to the
    /// destination's driver unread, so the driver itself must refuse it (mtty checks its magic).
    case deviceState = "device-state"
}

/// A destination whose guest definition differs from the source's.
public enum DestinationChange: Sendable, Equatable, Codable {
    case changeModel(device: String, model: GuestDevice.Model)
    case removeDevice(String)
    /// The destination gives passthrough device `device` an mdev of another type than the
    /// source's (e.g. mtty-1 for mtty-2): the device state cannot fit, the destination must refuse it.
    case mdevType(device: String, type: String)
}
