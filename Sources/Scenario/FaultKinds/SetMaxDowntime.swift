/// Raises the maximum downtime while the migration runs, so that one that does not converge
/// can finish.
public struct SetMaxDowntime: FaultKind, Equatable {
    public static let name = "set-max-downtime"
    public static let summary = "raise the maximum downtime"
    static let milliseconds = FormatKey("max_downtime_ms", .integer(1...3_600_000), required: true, "milliseconds")
    public static let faultKeys = [milliseconds]

    public var milliseconds: Int
    public init(milliseconds: Int) { self.milliseconds = milliseconds }

    public static func read(_ f: inout FaultFields) -> SetMaxDowntime? {
        guard f.required(Self.milliseconds, "") != nil else { return nil }
        return f.integer(Self.milliseconds).map(SetMaxDowntime.init)
    }

    public func fire(_ target: any FaultTarget) async throws -> FaultEffect {
        try await target.setMaxDowntime(milliseconds: milliseconds)
        return FaultEffect("max downtime \(milliseconds) ms")
    }

    public var description: String { "max downtime \(milliseconds) ms" }
}
