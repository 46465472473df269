import Testing
@testable import Scenario

/// `host-flr` and `host-device-reset` (faults and steps on passthrough devices) and the
/// broken-device knobs of the emulated stand-ins.
@Suite struct HostResetParserTests {
    static let guest = """
    guest:
      devices: [{name: nic0, model: virtio-net}]
      passthrough:
        - {name: vf, kind: vfio-pci, driver: mlx5_vfio_pci, count: 2}
        - {name: tty, kind: mdev, type: mtty-2}
    """

    func parse(_ steps: String) throws(ScenarioErrors) -> Scenario {
        try ScenarioParser().parse("name: h\n\(Self.guest)\nsteps:\n\(steps)\n", file: "h.yaml")
    }

    func errors(_ text: String) -> [String] {
        do {
            _ = try ScenarioParser().parse(text, file: "h.yaml")
            return []
        } catch {
            return error.diagnostics.map(\.description)
        }
    }

    @Test func hostResetsAsFaultsAndSteps() throws {
        let s = try parse("""
          - boot: a
          - host-flr: vf
          - host-device-reset: {device: vf, timeout_s: 30}
          - migrate:
              from: a
              to: b
              faults:
                - host-flr: {device: vf, side: destination, at: {iteration: 2}}
                - host-device-reset: {device: vf}
        """)
        #expect(s.flattenedSteps[1].action.isEqual(to: FaultStep(HostFLR(device: "vf"))))
        #expect(s.flattenedSteps[2].action.isEqual(to: FaultStep(HostDeviceReset(device: "vf"))))
        #expect(s.flattenedSteps[2].timeoutSeconds == 30)
        guard let m = s.flattenedSteps[3].action(as: Step.Migrate.self) else { Issue.record("migrate"); return }
        #expect(m.faults[0].action.isEqual(to: HostFLR(device: "vf", side: .destination)))
        #expect(m.faults[1].action.isEqual(to: HostDeviceReset(device: "vf", side: .source)))
        #expect(m.faults.map(\.kind) == ["host-flr", "host-device-reset"])
        #expect(m.faults[0].trigger == .iteration(2))
    }

    @Test func onlyPassthroughFunctionsCanBeResetOnTheHost() {
        let base = "name: h\n\(Self.guest)\nsteps:\n  - boot: a\n"
        let emulated = errors(base + "  - host-flr: nic0\n")
        #expect(emulated.count == 1 && emulated[0].hasPrefix("h.yaml:9:") && emulated[0].contains("the guest has `vf`, not `nic0`"), "\(emulated)")
        let mdev = errors(base + "  - host-device-reset: {device: tty}\n")
        #expect(mdev.count == 1 && mdev[0].contains("mdev"), "\(mdev)")
        let missing = errors(base + "  - migrate: {from: a, to: b, faults: [{host-flr: {side: source}}]}\n")
        #expect(missing.contains { $0.contains("needs `device`") }, "\(missing)")
        let before = errors("name: h\n\(Self.guest)\nsteps:\n  - host-flr: vf\n  - boot: a\n")
        #expect(before.contains { $0.contains("before `boot`") }, "\(before)")
    }

    @Test func brokenStandInsAndTheirMistakes() throws {
        let s = try ScenarioParser().parse("""
        name: d
        guest:
          devices:
            - {name: nic0, model: virtio-net, link: down}
            - {name: nic1, model: e1000e, link: up}
            - {name: tty0, model: pci-serial, loopback: false}
            - {name: tty1, model: pci-serial}
        steps: [{boot: a}]
        """, file: "d.yaml")
        #expect(s.guest.devices.map(\.broken) == [true, false, true, false])
        let e = errors("""
        name: d
        guest:
          devices:
            - {name: nic0, model: virtio-net, loopback: false}
            - {name: tty0, model: pci-serial, link: down}
            - {name: nic1, model: e1000e, link: sideways}
        steps:
          - boot: a
          - migrate: {from: a, to: b, destination: {change_model: {device: tty0, model: e1000e}}}
          - migrate: {from: b, to: a, destination: {remove_device: tty0}}
        """)
        #expect(e.contains { $0.hasPrefix("h.yaml:4:") && $0.contains("`loopback` is for pci-serial") }, "\(e)")
        #expect(e.contains { $0.hasPrefix("h.yaml:5:") && $0.contains("`link` is for NICs") }, "\(e)")
        #expect(e.contains { $0.hasPrefix("h.yaml:6:") && $0.contains("`up` or `down`") }, "\(e)")
        #expect(e.contains { $0.hasPrefix("h.yaml:9:") && $0.contains("`change_model` swaps one NIC model") }, "\(e)")
        #expect(e.contains { $0.hasPrefix("h.yaml:10:") && $0.contains("`remove_device` removes a NIC") }, "\(e)")
    }
}

/// In-guest FLR and driver resets of passed-through functions (`vf` is `vf[0]`).
@Suite struct GuestActionOnPassthroughTests {
    @Test func passthroughFunctionsByRequirementAndIndex() throws {
        let s = try ScenarioParser().parse("""
        name: g
        \(HostResetParserTests.guest)
        steps:
          - boot: a
          - guest-flr: {device: vf, count: 2}
          - guest-device-reset: {device: "vf[1]"}
          - guest-device-reset: {device: tty, method: pci}
          - migrate: {from: a, to: b, faults: [{guest-flr: {device: "vf[1]", mode: bound, loop: true}}]}
        """, file: "g.yaml")
        let actions = s.flattenedSteps.map(\.action)
        #expect(actions[1].isEqual(to: FaultStep(GuestFLR(device: "vf[0]", mode: .rebind, repetitions: .times(2)))))
        #expect(actions[2].isEqual(to: FaultStep(GuestDeviceReset(device: "vf[1]", method: .rebind, repetitions: .times(1)))))
        #expect(actions[3].isEqual(to: FaultStep(GuestDeviceReset(device: "tty[0]", method: .pci, repetitions: .times(1)))))
        guard let m = actions[4] as? Step.Migrate else { Issue.record("migrate"); return }
        #expect(m.faults.first?.action.isEqual(to: GuestFLR(device: "vf[1]", mode: .bound, repetitions: .untilStopped)) == true)
    }

    @Test func anIndexPastTheCountOrAnUnknownNameIsAnError() {
        func errors(_ device: String) -> [String] {
            do {
                _ = try ScenarioParser().parse("name: g\n\(HostResetParserTests.guest)\nsteps:\n  - boot: a\n  - guest-flr: {device: \"\(device)\"}\n", file: "g.yaml")
                return []
            } catch {
                return error.diagnostics.map(\.description)
            }
        }
        #expect(errors("vf[2]").contains { $0.hasPrefix("g.yaml:9:") && $0.contains("`vf` has 2 functions (`vf[0]` to `vf[1]`)") })
        #expect(errors("gpu").contains { $0.contains("no device `gpu`") && $0.contains("`vf`") && $0.contains("`nic0`") })
    }
}

@Suite struct GuestResetMethodTests {
    @Test func aPCIResetInAStepOrAFaultAsksTheHostsToPassItOn() throws {
        func scenario(_ steps: String) throws -> Scenario {
            try ScenarioParser().parse("""
                version: 1
                name: r
                guest: {memory_mib: 256, workload_mib: 64, devices: [], passthrough: [{name: tty, kind: mdev, type: mtty-2}]}
                steps:
                  - boot: a
                \(steps)
                expect: {migrations: failed}
                """, file: "r.yaml")
        }
        #expect(try !scenario("  - guest-device-reset: {device: tty}").resetsDevicesFromTheGuest)
        #expect(try scenario("  - guest-device-reset: {device: tty, method: pci}").resetsDevicesFromTheGuest)
        let fault = try scenario("""
              - migrate: {from: a, to: b, faults: [{guest-device-reset: {device: tty, method: pci, at: {iteration: 1}}}]}
            """)
        #expect(fault.resetsDevicesFromTheGuest)
        #expect { try scenario("  - guest-device-reset: {device: tty, method: flr}") } throws: { "\($0)".contains("method") }
    }
}
