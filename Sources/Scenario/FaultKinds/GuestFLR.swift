/// FLR of a guest device from inside the guest: miglab-guestctl writes the device's sysfs
/// `reset` with reset_method `flr`. A step (`count` FLRs) or a fault of a migration (one, or a
/// loop until the migration ends).
public struct GuestFLR: FaultKind, Equatable {
    public enum Mode: String, Sendable, CaseIterable {
        /// FLR with the driver bound.
        case bound
        /// Unbind, FLR, bind.
        case rebind
    }

    public static let name = "guest-flr"
    public static let summary = "in-guest FLR of a device"
    static let mode = FormatKey("mode", .choice(Mode.self), "driver bound, or unbind-FLR-bind")
    static let count = FaultKeys.count("FLRs")
    public static let faultKeys = [FaultKeys.device, mode, FaultKeys.loop]
    public static let stepKeys: [FormatKey]? = [FaultKeys.device, mode, count, FaultKeys.timeout]

    public var device: String
    public var mode: Mode
    public var repetitions: Repetitions

    public init(device: String, mode: Mode = .rebind, repetitions: Repetitions = .once) {
        self.device = device
        self.mode = mode
        self.repetitions = repetitions
    }

    public static func read(_ f: inout FaultFields) -> GuestFLR? {
        let device = f.flrDevice(FaultKeys.device)
        let mode = f.choice(Self.mode, default: Mode.rebind)
        let repetitions = f.repetitions(count: count)
        guard let device, let mode, let repetitions else { return nil }
        return GuestFLR(device: device, mode: mode, repetitions: repetitions)
    }

    public func fire(_ target: any FaultTarget) async throws -> FaultEffect {
        let args = ["flr", try target.guestSelector(of: device), mode.rawValue, "\(repetitions.guestctlCount)"]
        let pid = try await target.startInGuest(.guestctl, args)
        let strict = repetitions.isCounted
        return FaultEffect(repetitions == .untilStopped ? "FLR loop started (guest pid \(pid))" : "FLR started (guest pid \(pid))",
                           guestProcess: GuestProcess(pid: pid) { GuestctlReport($0)?.happened(strict: strict) ?? false })
    }

    public var description: String { "guest FLR of \(device) (\(mode.rawValue))\(repetitions)" }
}
