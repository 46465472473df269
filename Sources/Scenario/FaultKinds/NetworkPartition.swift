/// Cuts the destination's link for a while: link down, or 100% loss with tc netem.
public struct NetworkPartition: FaultKind, Equatable {
    public enum Mode: String, Sendable, CaseIterable {
        /// The destination's link goes down.
        case linkDown = "link-down"
        /// 100% packet loss with tc netem.
        case loss
    }

    public static let name = "network-partition"
    public static let summary = "cut the link between the hosts"
    static let mode = FormatKey("mode", .choice(Mode.self), "link down or 100% loss")
    static let duration = FormatKey("duration_ms", .integer(1...3_600_000), "how long (default 5000)")
    public static let faultKeys = [mode, duration]

    public var mode: Mode
    public var durationMs: Int
    public init(mode: Mode = .linkDown, durationMs: Int = 5000) {
        self.mode = mode
        self.durationMs = durationMs
    }

    public static func read(_ f: inout FaultFields) -> NetworkPartition? {
        let mode = f.choice(Self.mode, default: Mode.linkDown)
        let duration = f.integer(Self.duration, default: 5000)
        guard let mode, let duration else { return nil }
        return NetworkPartition(mode: mode, durationMs: duration)
    }

    public var needs: Set<HostCapability> { [.linkControl] }

    /// The destination's link is cut.
    public var actsOn: MigrationSide { .destination }

    public func fire(_ target: any FaultTarget) async throws -> FaultEffect {
        let loss = mode == .loss
        try await target.cutLink(lossOnly: loss)
        return FaultEffect("link cut (\(mode.rawValue)) for \(durationMs) ms",
                           undo: (after: .milliseconds(durationMs), action: { try await target.restoreLink(lossOnly: loss) }))
    }

    public var description: String { "cut the link (\(mode.rawValue)) for \(durationMs) ms" }
}
