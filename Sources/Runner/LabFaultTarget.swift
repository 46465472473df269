import Foundation
import Lab
import Libvirt
import Scenario

/// The lab as a fault kind sees it (`FaultTarget`): the two hosts of the migration in flight
/// (for a fault used as a step, the host the guest runs on, both sides), the guest's domain
/// and its agent, and the lab's host actions.
struct LabFaultTarget: FaultTarget {
    let execution: ScenarioExecution
    let source: LabHost
    let destination: LabHost
    /// The guest's domain the fault acts through: the migration's source, or where it runs.
    let domain: any GuestDomain

    func host(_ side: MigrationSide) -> LabHost { side == .source ? source : destination }
    func hostName(_ side: MigrationSide) -> String { host(side).name }

    func actions(_ side: MigrationSide) throws -> any HostActions {
        guard let a = host(side).actions else {
            throw FaultError("the lab cannot control host \(host(side).name)'s processes and network")
        }
        return a
    }

    func abortMigration(on side: MigrationSide) async throws {
        guard let d = try host(side).hypervisor.guest(named: execution.domainName) else {
            throw FaultError("no guest on \(host(side).name)")
        }
        try d.abortJob()
    }

    func setMaxDowntime(milliseconds: Int) async throws {
        try domain.setMaxDowntime(milliseconds: UInt64(milliseconds))
    }

    func setBandwidth(mibPerSecond: Int) async throws {
        try domain.setMaxSpeed(mibPerSecond: UInt(mibPerSecond))
    }

    func killQEMU(on side: MigrationSide) async throws -> Int32 {
        try actions(side).killQEMU(domain: execution.domainName)
    }

    func killLibvirtd(on side: MigrationSide) async throws -> Int32 {
        try actions(side).killLibvirtd()
    }

    func reconnect(to side: MigrationSide) async throws {
        try await host(side).reconnect(until: .now + .seconds(60))
    }

    func cutLink(lossOnly: Bool) async throws { try actions(.destination).cutLink(lossOnly: lossOnly) }
    func restoreLink(lossOnly: Bool) async throws { try actions(.destination).restoreLink(lossOnly: lossOnly) }

    func guestSelector(of device: String) throws -> String { try execution.selector(of: device) }

    static func path(_ tool: GuestTool) -> String {
        switch tool {
        case .guestctl: ScenarioExecution.guestctl
        case .uart: ScenarioExecution.uart
        }
    }

    func startInGuest(_ tool: GuestTool, _ arguments: [String]) async throws -> Int {
        try await GuestAgent(domain: domain).exec(Self.path(tool), arguments)
    }

    func runInGuest(_ tool: GuestTool, _ arguments: [String], until deadline: ContinuousClock.Instant) async throws -> (exitCode: Int, output: String) {
        let s = try await GuestAgent(domain: domain).run(Self.path(tool), arguments, until: deadline)
        return (s.exitCode ?? -1, s.output)
    }

    func scratchRegisters(of device: String) throws -> (address: String, values: [UInt8])? {
        guard let address = execution.guestAddresses[try execution.selector(of: device)],
              execution.devicesBeforeMigration[device]?.uartScratch != nil else { return nil }
        return (address, ScenarioExecution.scratchValues(generation: execution.scratchGeneration))
    }

    func resetPassthroughDevice(_ device: String, method: HostResetMethod, on side: MigrationSide) async throws -> String {
        try await execution.hostReset(device: device, method: method, on: host(side).name)
    }
}
