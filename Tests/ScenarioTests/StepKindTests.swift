import Testing
@testable import Scenario

/// The step kinds are one registry: the format, the schema and the parser take their kinds
/// from it, and each kind's declarations (deadline, timing phase, flow, hosts) hold.
struct StepRegistryTests {
    @Test func everyKindIsRegisteredOnceAndIsTheFormat() {
        let names = StepKinds.names
        #expect(Set(names).count == names.count)
        #expect(ScenarioFormat.steps.names == names)
        #expect(names == ["boot", "restart", "migrate", "verify", "repeat", "guest-flr", "guest-device-reset", "host-flr", "host-device-reset"])
        // The fault kinds that are steps are the same types, as steps.
        #expect(StepKinds.named("host-flr") == FaultStep<HostFLR>.self)
    }

    @Test func aStepTakesItsKindsDeadlineAndPhaseUnlessItSaysOne() throws {
        let s = try ScenarioParser().parse("""
        name: n
        steps:
          - boot: a
          - migrate: {from: a, to: b, timeout_s: 30}
          - verify: memory
          - guest-device-reset: nic0
          - restart: {on: a}
        """, file: "n.yaml")
        #expect(s.steps.map(\.effectiveTimeoutSeconds) == [180, 30, 180, 120, 180])
        #expect(s.steps.map { type(of: $0.action).phase } == [.boot, .migration, .verification, .faults, .boot])
        #expect(s.steps.map(\.action.description) == ["boot on a", "migrate a -> b", "verify memory",
                                                      "guest device reset (rebind) of nic0 x1 where the guest runs", "restart on a (destroyed where it runs, booted anew)"])
        #expect(s.visitedHosts == ["a", "b"])
    }

    @Test func anUnknownKindIsAnErrorThatListsTheRegistry() {
        #expect(throws: ScenarioErrors.self) { try ScenarioParser().parse("name: n\nsteps:\n  - reboot: a\n", file: "n.yaml") }
        do {
            _ = try ScenarioParser().parse("name: n\nsteps:\n  - reboot: a\n", file: "n.yaml")
        } catch {
            #expect(error.description == "n.yaml:3:5: error: unknown step kind `reboot`; known: " + StepKinds.names.joined(separator: ", "))
        }
    }

    @Test func aDestinationTakesOneChange() {
        do {
            _ = try ScenarioParser().parse("""
            name: n
            guest: {devices: [{name: nic0, model: virtio-net}, {name: nic1, model: e1000e}]}
            steps:
              - boot: a
              - migrate: {from: a, to: b, destination: {change_model: {device: nic0, model: e1000e}, remove_device: nic1}}
            """, file: "n.yaml")
            Issue.record("two changes were accepted")
        } catch {
            #expect(error.description.contains("`destination` takes one change; found `change_model` and `remove_device`"), "\(error)")
        }
    }
}
