/// One kind of check a `verify` step runs, declared once: its name (the parser, the schema and
/// the docs read it), what a scenario needs to use it, and how its verdicts are judged against
/// the scenario's `expect` (by `ScenarioVerdict`, from the journal). Registered in
/// `Verifiers.all`. Its body is the runner's (`RunnableVerifier`, in the Runner module, on the
/// same type), since it works the runner's hosts and guest; a test requires one for every
/// registered kind.
public protocol VerifierKind: Sendable {
    /// Its name in `verify:` and in `expect` (`memory`).
    static var name: String { get }
    /// One line for the schema and the docs.
    static var summary: String { get }
    /// The scenario-level observation when every verdict passed, and when one failed.
    static var observed: (pass: String, fail: String) { get }
    /// What the scenario expects of it (its `expect` key of the same name).
    static func expected(in expect: Expectations) -> String
    /// Why `scenario` cannot use it; nil when it can.
    static func refusal(in scenario: Scenario) -> String?
}

extension VerifierKind {
    public static func refusal(in scenario: Scenario) -> String? { nil }
}

/// Every verifier, in the order a `verify` step runs them. One line per kind.
public enum Verifiers {
    public static let all: [any VerifierKind.Type] = [
        MemoryCheck.self,
        ConsoleCheck.self,
        DeviceCheck.self,
    ]

    public static var names: [String] { all.map { $0.name } }
    public static func named(_ name: String) -> (any VerifierKind.Type)? { all.first { $0.name == name } }
}

/// The memory oracle: every page of the guest's workload intact (header, frame, counter, body).
public enum MemoryCheck: VerifierKind {
    public static let name = "memory"
    public static let summary = "the memory oracle: every page of the workload intact"
    public static let observed = (pass: "intact", fail: "corrupted")
    public static func expected(in expect: Expectations) -> String { expect.memory.rawValue }
    public static func refusal(in scenario: Scenario) -> String? {
        scenario.guest.workloadMiB == 0 ? "`verify: memory` needs the memory workload; `guest.workload_mib` is 0" : nil
    }
}

/// The guest console: no oops, panic, trap or error report of the workload.
public enum ConsoleCheck: VerifierKind {
    public static let name = "console"
    public static let summary = "the guest console: no oops, panic, trap or workload error"
    public static let observed = (pass: "clean", fail: "errors")
    public static func expected(in expect: Expectations) -> String { expect.console.rawValue }
}

/// Every guest device present with the identity it had, its driver bound, working, and in the
/// PCI state it had on the source before the migration.
public enum DeviceCheck: VerifierKind {
    public static let name = "devices"
    public static let summary = "the device checks: identity, driver, PCI state, a functional check"
    public static let observed = (pass: "working", fail: "broken")
    public static func expected(in expect: Expectations) -> String { expect.devices.rawValue }
    public static func refusal(in scenario: Scenario) -> String? {
        scenario.guest.devices.isEmpty && scenario.guest.passthrough.isEmpty
            ? "`verify: devices` needs a device; the guest has none (`guest.devices` and `guest.passthrough` are empty)" : nil
    }
}
