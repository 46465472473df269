/// virDomainAbortJob on one side (the source by default; the destination where libvirt allows it).
public struct AbortMigration: FaultKind, Equatable {
    public static let name = "abort"
    public static let summary = "virDomainAbortJob"
    public static let faultKeys = [FaultKeys.side]

    public var side: MigrationSide
    public init(side: MigrationSide = .source) { self.side = side }

    public static func read(_ f: inout FaultFields) -> AbortMigration? { AbortMigration(side: f.side(default: .source)) }

    public var actsOn: MigrationSide { side }

    public var endsMigration: Bool { true }

    public func fire(_ target: any FaultTarget) async throws -> FaultEffect {
        try await target.abortMigration(on: side)
        return FaultEffect("ok", cancelledMigration: true)
    }

    public var description: String { "abort the migration on the \(side.rawValue)" }
}
