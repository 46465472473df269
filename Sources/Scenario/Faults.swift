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
