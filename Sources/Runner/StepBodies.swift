import Scenario

/// A step's body: what the runner does for it. Each registered `StepKind` (Scenario's
/// `StepKinds.all`) has one, on the same type; a test requires it.
protocol RunnableStep: StepKind {
    /// Runs the step; false when the remaining steps are to be skipped (a migration did not
    /// end as its expectation says, so later steps would start from the wrong place).
    func run(in execution: ScenarioExecution, kind: String, deadline: ContinuousClock.Instant) async throws -> Bool
}

extension Step.Boot: RunnableStep {
    func run(in execution: ScenarioExecution, kind: String, deadline: ContinuousClock.Instant) async throws -> Bool {
        try await execution.boot(self, deadline: deadline)
        return true
    }
}

extension Step.Restart: RunnableStep {
    func run(in execution: ScenarioExecution, kind: String, deadline: ContinuousClock.Instant) async throws -> Bool {
        try await execution.restart(self, deadline: deadline)
        return true
    }
}

extension Step.Migrate: RunnableStep {
    func run(in execution: ScenarioExecution, kind: String, deadline: ContinuousClock.Instant) async throws -> Bool {
        try await execution.migrate(self, deadline: deadline)
    }
}

extension Step.Verify: RunnableStep {
    func run(in execution: ScenarioExecution, kind: String, deadline: ContinuousClock.Instant) async throws -> Bool {
        try await execution.verify(self, deadline: deadline)
        return true
    }
}

/// Its steps run unrolled (`Scenario.flattenedSteps`): nothing of its own.
extension Step.Repeat: RunnableStep {
    func run(in execution: ScenarioExecution, kind: String, deadline: ContinuousClock.Instant) async throws -> Bool { true }
}

extension FaultStep: RunnableStep {
    func run(in execution: ScenarioExecution, kind: String, deadline: ContinuousClock.Instant) async throws -> Bool {
        try await execution.inject(fault, kind: kind, deadline: deadline)
        return true
    }
}
