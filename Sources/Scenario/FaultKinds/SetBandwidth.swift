/// Changes the migration's bandwidth limit while it runs (virDomainMigrateSetMaxSpeed on the
/// source): a throttled migration that cannot converge is let go, or a running one is starved.
public struct SetBandwidth: FaultKind, Equatable {
    public static let name = "set-bandwidth"
    public static let summary = "change the migration's bandwidth limit"
    static let bandwidth = FormatKey("bandwidth_mib_s", .integer(1...1_000_000), required: true, "the new limit in MiB/s")
    public static let faultKeys = [bandwidth]

    public var mibPerSecond: Int
    public init(mibPerSecond: Int) { self.mibPerSecond = mibPerSecond }

    public static func read(_ f: inout FaultFields) -> SetBandwidth? {
        guard f.required(Self.bandwidth, "") != nil else { return nil }
        return f.integer(Self.bandwidth).map(SetBandwidth.init)
    }

    public func fire(_ target: any FaultTarget) async throws -> FaultEffect {
        try await target.setBandwidth(mibPerSecond: mibPerSecond)
        return FaultEffect("bandwidth \(mibPerSecond) MiB/s")
    }

    public var description: String { "bandwidth \(mibPerSecond) MiB/s" }
}
