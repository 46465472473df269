import Foundation
import Scenario
import Testing

/// A lab in memory for fault kinds: records what each kind asks of it, in order, and answers
/// with fixed pids, so every kind's action, effect and judgement is tested without a host.
final class FaultTargetTwin: FaultTarget, @unchecked Sendable {
    private let lock = NSLock()
    private var log: [String] = []
    var scratch: (address: String, values: [UInt8])?
    var guestOutput = "ok"

    var calls: [String] { lock.withLock { log } }
    func note(_ s: String) { lock.withLock { log.append(s) } }

    func hostName(_ side: MigrationSide) -> String { side == .source ? "a" : "b" }
    func abortMigration(on side: MigrationSide) async throws { note("abort \(side)") }
    func setMaxDowntime(milliseconds: Int) async throws { note("max-downtime \(milliseconds)") }
    func setBandwidth(mibPerSecond: Int) async throws { note("bandwidth \(mibPerSecond)") }
    func killQEMU(on side: MigrationSide) async throws -> Int32 { note("kill-qemu \(side)"); return 4242 }
    func killLibvirtd(on side: MigrationSide) async throws -> Int32 { note("kill-libvirtd \(side)"); return 77 }
    func reconnect(to side: MigrationSide) async throws { note("reconnect \(side)") }
    func cutLink(lossOnly: Bool) async throws { note("cut loss=\(lossOnly)") }
    func restoreLink(lossOnly: Bool) async throws { note("restore loss=\(lossOnly)") }
    func guestSelector(of device: String) throws -> String { "sel-\(device)" }
    func startInGuest(_ tool: GuestTool, _ arguments: [String]) async throws -> Int {
        note("start \(tool) \(arguments.joined(separator: " "))")
        return 31
    }
    func runInGuest(_ tool: GuestTool, _ arguments: [String], until deadline: ContinuousClock.Instant) async throws -> (exitCode: Int, output: String) {
        note("run \(tool) \(arguments.joined(separator: " "))")
        return (0, guestOutput)
    }
    func scratchRegisters(of device: String) throws -> (address: String, values: [UInt8])? { scratch }
    func resetPassthroughDevice(_ device: String, method: HostResetMethod, on side: MigrationSide) async throws -> String {
        note("host-reset \(device) \(method.rawValue) \(side)")
        return "\(method.kind) of 0000:03:00.1 on \(hostName(side))"
    }
}

struct FaultRegistryTests {
    @Test func everyKindIsRegisteredOnceAndIsInTheFormat() {
        let names = FaultKinds.all.map { $0.name }
        #expect(Set(names).count == names.count)
        #expect(ScenarioFormat.faults.names == names)
        // Kinds with a step form are steps of the format too.
        #expect(Set(FaultKinds.steps.map { $0.name }).isSubset(of: Set(ScenarioFormat.steps.names)))
        #expect(FaultKinds.steps.map { $0.name } == ["guest-flr", "guest-device-reset", "host-flr", "host-device-reset"])
    }

    @Test func aScenarioSaysWhatItsFaultsNeedOfTheHosts() throws {
        let s = try ScenarioParser().parse("""
        name: n
        steps:
          - boot: a
          - migrate: {from: a, to: b, faults: [{kill-qemu: }, {network-partition: {mode: loss}}], expect: {outcome: failed}}
        """, file: "n.yaml")
        #expect(s.hostNeeds == [.processControl, .linkControl])
        #expect(!s.resetsDevicesFromTheGuest)
    }
}

struct FaultKindEffectTests {
    let twin = FaultTargetTwin()

    @Test func killLibvirtdKillsThenReconnectsOnceTheMigrationEnded() async throws {
        let e = try await KillLibvirtd(side: .destination).fire(twin)
        #expect(e.result == "killed libvirtd pid 77")
        #expect(twin.calls == ["kill-libvirtd destination"])
        let note = try await e.afterMigration?()
        #expect(twin.calls == ["kill-libvirtd destination", "reconnect destination"])
        #expect(note?.contains("libvirtd of host b is back") == true)
    }

    @Test func aPartitionIsUndoneWithItsOwnMode() async throws {
        let e = try await NetworkPartition(mode: .loss, durationMs: 1500).fire(twin)
        #expect(e.undo?.after == .milliseconds(1500))
        try await e.undo?.action()
        #expect(twin.calls == ["cut loss=true", "restore loss=true"])
        #expect(NetworkPartition().actsOn == .destination)
    }

    @Test func anAbortCancelsTheMigration() async throws {
        let e = try await AbortMigration().fire(twin)
        #expect(e.cancelledMigration)
        #expect(twin.calls == ["abort source"])
        #expect(try await !KillQEMU().fire(twin).cancelledMigration)
    }

    @Test func theBandwidthIsSetOnTheSource() async throws {
        let e = try await SetBandwidth(mibPerSecond: 1000).fire(twin)
        #expect(e.result == "bandwidth 1000 MiB/s")
        #expect(twin.calls == ["bandwidth 1000"])
    }

    @Test func hostResetsActOnTheirSide() async throws {
        _ = try await HostFLR(device: "vf", side: .destination).fire(twin)
        _ = try await HostDeviceReset(device: "vf").fire(twin)
        #expect(twin.calls == ["host-reset vf flr destination", "host-reset vf node-device source"])
    }

    @Test func theScratchWriteFlipsEveryPortsValueOrRefusesWithoutASnapshot() async throws {
        await #expect(throws: FaultError.self) { try await GuestScratchWrite(device: "tty").fire(self.twin) }
        twin.scratch = ("00:05.0", [0x96, 0x04])
        let e = try await GuestScratchWrite(device: "tty").fire(twin)
        #expect(twin.calls == ["run uart 00:05.0 scr 0x69 0xfb"])
        #expect(e.result.hasPrefix("guest wrote scr 0x69,0xfb"))
    }

    /// A guest-side fault is judged by what miglab-guestctl reported: none, or a PCI reset the
    /// guest's kernel refused, is a fault that did not happen; a step's count must all work.
    @Test func guestActionsAreJudgedByTheirReport() async throws {
        let pci = try await GuestDeviceReset(device: "tty[0]", method: .pci).fire(twin)
        let loop = try await GuestDeviceReset(device: "nic0", repetitions: .untilStopped).fire(twin)
        let step = try await GuestFLR(device: "nic0", mode: .bound, repetitions: .times(3)).fire(twin)
        #expect(twin.calls == ["start guestctl reset sel-tty[0] 1 pci", "start guestctl reset sel-nic0 0 rebind",
                               "start guestctl flr sel-nic0 bound 3"])
        let judge = { (e: FaultEffect, report: String?) in e.guestProcess?.happened(report) ?? false }
        #expect(judge(pci, "MIGLAB-GUESTCTL resets=1 failures=0 driver=serial reset_method=bus"))
        #expect(!judge(pci, "MIGLAB-GUESTCTL resets=1 failures=1 driver=serial reset_method="))
        #expect(!judge(pci, nil))
        #expect(!judge(pci, "sh: setpci: not found"))
        #expect(judge(loop, "MIGLAB-GUESTCTL resets=412 failures=3 driver=virtio-pci"))
        #expect(!judge(loop, "MIGLAB-GUESTCTL resets=0 failures=0 driver=virtio-pci"))
        #expect(judge(step, "MIGLAB-GUESTCTL resets=3 failures=0"))
        #expect(!judge(step, "MIGLAB-GUESTCTL resets=3 failures=1"))
    }

    @Test func onlyAPCIResetFromTheGuestNeedsTheHostsToPassItOn() {
        #expect(GuestDeviceReset(device: "t", method: .pci).needs == [.guestResetsReachDevices])
        #expect(GuestDeviceReset(device: "t").needs.isEmpty)
        #expect(KillQEMU().needs == [.processControl])
    }
}
