import Journal
import Lab
import Scenario

/// A verifier's body: what the runner does for it where the guest runs. Each registered
/// `VerifierKind` (Scenario's `Verifiers.all`) has one, on the same type; a test requires it.
protocol RunnableVerifier: VerifierKind {
    static func run(in execution: ScenarioExecution, on host: LabHost, deadline: ContinuousClock.Instant) async throws -> VerificationRecord
}

extension MemoryCheck: RunnableVerifier {
    static func run(in execution: ScenarioExecution, on host: LabHost, deadline: ContinuousClock.Instant) async throws -> VerificationRecord {
        try await execution.verifyMemory(on: host, deadline: deadline)
    }
}

extension ConsoleCheck: RunnableVerifier {
    static func run(in execution: ScenarioExecution, on host: LabHost, deadline: ContinuousClock.Instant) async throws -> VerificationRecord {
        execution.verifyConsole(on: host)
    }
}

extension DeviceCheck: RunnableVerifier {
    static func run(in execution: ScenarioExecution, on host: LabHost, deadline: ContinuousClock.Instant) async throws -> VerificationRecord {
        try await execution.verifyDevices(on: host, deadline: deadline)
    }
}
