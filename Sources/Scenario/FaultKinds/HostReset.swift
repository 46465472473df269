/// How a host resets a passed-through PCI function.
public enum HostResetMethod: String, Sendable, Codable, CaseIterable {
    /// `virNodeDeviceReset`: libvirt picks FLR, else a power-management or bus reset.
    case nodeDevice = "node-device"
    /// A function-level reset through sysfs (`reset_method` flr, then `reset`).
    case flr

    /// The step and fault name.
    public var kind: String { self == .flr ? HostFLR.name : HostDeviceReset.name }
}

/// A sysfs FLR of every function of a passthrough device, on one host, under the running
/// guest (lab-file hosts; only devices of the lab file's pools). As a step it acts where the
/// guest runs; as a fault, on one side of the migration (the source by default).
public struct HostFLR: HostResetKind {
    public static let name = "host-flr"
    public static let summary = "sysfs FLR of a passthrough function on one host"
    public static let method = HostResetMethod.flr
    public var device: String
    public var side: MigrationSide
    public init(device: String, side: MigrationSide = .source) {
        self.device = device
        self.side = side
    }
}

/// virNodeDeviceReset of every function of a passthrough device, on one host (see `HostFLR`).
public struct HostDeviceReset: HostResetKind {
    public static let name = "host-device-reset"
    public static let summary = "virNodeDeviceReset of a passthrough function on one host"
    public static let method = HostResetMethod.nodeDevice
    public var device: String
    public var side: MigrationSide
    public init(device: String, side: MigrationSide = .source) {
        self.device = device
        self.side = side
    }
}

/// The two host-side resets differ only in their method.
public protocol HostResetKind: FaultKind, Equatable {
    static var method: HostResetMethod { get }
    var device: String { get }
    var side: MigrationSide { get }
    init(device: String, side: MigrationSide)
}

extension HostResetKind {
    public static var faultKeys: [FormatKey] { [FaultKeys.device, FaultKeys.side] }
    public static var stepKeys: [FormatKey]? { [FaultKeys.device, FaultKeys.timeout] }

    public static func read(_ f: inout FaultFields) -> Self? {
        let side = f.isStep ? .source : f.side(default: .source)
        return f.passthroughDevice(FaultKeys.device).map { Self(device: $0, side: side) }
    }

    public var actsOn: MigrationSide { side }

    public func fire(_ target: any FaultTarget) async throws -> FaultEffect {
        FaultEffect(try await target.resetPassthroughDevice(device, method: Self.method, on: side))
    }

    public var description: String { "\(Self.name) of \(device)" }
}
