import Testing
@testable import Scenario

/// A `migrate` step may carry its own `expect:`; the flow follows each step's outcome.
@Suite struct StepExpectationParserTests {
    static let head = """
        version: 2
        name: recovery
        guest: {memory_mib: 256, workload_mib: 64, devices: [{name: nic0, model: virtio-net}]}
        steps:
          - boot: a
        """

    func parse(_ steps: String, expect: String = "") throws -> Scenario {
        try ScenarioParser().parse(Self.head + "\n" + steps + (expect.isEmpty ? "" : "\n" + expect), file: "r.yaml")
    }

    @Test func abortThenRetryValidatesAndEachStepHasItsExpectation() throws {
        let s = try parse("""
              - migrate:
                  from: a
                  to: b
                  faults: [{abort: {side: source, at: {after_ms: 1500}}}]
                  expect: {outcome: aborted, error: {code: [78, 1], message: "canceled"}, failure_detected_within_s: 5, guest: {on: source, state: running}}
              - migrate: {from: a, to: b}
              - verify: [memory, console]
            """)
        guard let first = s.steps[1].action(as: Step.Migrate.self), let second = s.steps[2].action(as: Step.Migrate.self) else {
            Issue.record("not two migrations")
            return
        }
        #expect(s.expectation(for: first) == MigrationExpectation(outcome: .aborted, errorCodes: [78, 1], errorMessage: "canceled",
                                                                  failureDetectedWithinSeconds: 5, guestOn: .source, guestState: .running))
        // A step without its own takes the scenario's (default: completed).
        #expect(s.expectation(for: second) == MigrationExpectation(outcome: .completed))
    }

    @Test func theScenarioExpectationIsTheDefaultOfEveryMigration() throws {
        let s = try parse("  - migrate: {from: a, to: b}", expect: "expect: {migrations: failed, error: {code: 1}}")
        guard let m = s.steps[1].action(as: Step.Migrate.self) else { return }
        #expect(s.expectation(for: m) == MigrationExpectation(outcome: .failed, errorCodes: [1]))
    }

    @Test func withoutAStepExpectationTheSecondMigrationStartsWhereTheFirstFailedNot() {
        // The scenario-wide `failed` keeps the guest on a: a second migration from b is wrong...
        #expect {
            try parse("""
                  - migrate: {from: a, to: b}
                  - migrate: {from: b, to: a}
                """, expect: "expect: {migrations: failed}")
        } throws: { "\($0)".contains("r.yaml:7:") && "\($0)".contains("`migrate` from b, but the guest is on a at this point") }
        // ...and a step expected to complete moves it, whatever the scenario's default.
        #expect(throws: Never.self) {
            try parse("""
                  - migrate: {from: a, to: b, expect: {outcome: completed}}
                  - migrate: {from: b, to: a}
                """, expect: "expect: {migrations: failed}")
        }
    }

    @Test func badStepExpectationsNameTheLine() {
        #expect {
            try parse("  - migrate: {from: a, to: b, expect: {outcome: fine}}")
        } throws: { "\($0)".contains("r.yaml:6:") && "\($0)".contains("fine") }
        #expect {
            try parse("  - migrate: {from: a, to: b, expect: {error: {code: 1}}}")
        } throws: { "\($0)".contains("`expect.error` needs `outcome: failed` or `aborted`") }
        #expect {
            try parse("  - migrate: {from: a, to: b, expect: {memory: intact}}")
        } throws: { "\($0)".contains("memory") }
    }
}
