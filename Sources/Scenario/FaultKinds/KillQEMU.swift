/// SIGKILL to the QEMU of the guest on one side (the destination by default).
public struct KillQEMU: FaultKind, Equatable {
    public static let name = "kill-qemu"
    public static let summary = "SIGKILL to one side's QEMU"
    public static let faultKeys = [FaultKeys.side]

    public var side: MigrationSide
    public init(side: MigrationSide = .destination) { self.side = side }

    public static func read(_ f: inout FaultFields) -> KillQEMU? { KillQEMU(side: f.side(default: .destination)) }

    public var needs: Set<HostCapability> { [.processControl] }

    public var actsOn: MigrationSide { side }

    /// Either side's QEMU gone ends the migration: it fails.
    public var endsMigration: Bool { true }

    public func fire(_ target: any FaultTarget) async throws -> FaultEffect {
        FaultEffect("killed QEMU pid \(try await target.killQEMU(on: side))")
    }

    public var description: String { "kill the \(side.rawValue)'s QEMU" }
}
