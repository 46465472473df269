/// SIGKILL to the libvirt daemon of one side (the destination by default). The lab restarts
/// it; once the migration has ended the runner waits for it and reconnects.
public struct KillLibvirtd: FaultKind, Equatable {
    public static let name = "kill-libvirtd"
    public static let summary = "SIGKILL to one side's libvirt daemon (the lab restarts it)"
    public static let faultKeys = [FaultKeys.side]

    public var side: MigrationSide
    public init(side: MigrationSide = .destination) { self.side = side }

    public static func read(_ f: inout FaultFields) -> KillLibvirtd? { KillLibvirtd(side: f.side(default: .destination)) }

    public var needs: Set<HostCapability> { [.processControl] }

    public var actsOn: MigrationSide { side }

    public func fire(_ target: any FaultTarget) async throws -> FaultEffect {
        let pid = try await target.killLibvirtd(on: side)
        let side = side
        return FaultEffect("killed libvirtd pid \(pid)", afterMigration: {
            try await target.reconnect(to: side)
            return "libvirtd of host \(target.hostName(side)) is back (restarted by the lab); reconnected"
        })
    }

    public var description: String { "kill the \(side.rawValue)'s libvirt daemon" }
}
