import Yams

/// One kind of step, declared once: its name and the shape of its value (the parser and the
/// JSON Schema read them), how it is read, where it leaves the guest (the flow check), which
/// hosts it uses and what it needs of them, its default deadline and the part of a scenario's
/// time it counts to. Registered once in `StepKinds.all` and iterated by the parser, the
/// schema, the flow check, `validate --lab` and the runner. Its body is the runner's
/// (`RunnableStep`, in the Runner module, on the same type); a test requires one for every
/// registered kind. `Qualification/Check.swift` and `FaultKind` are the models.
///
/// Adding a step kind: one file in StepKinds/, one line in `StepKinds.all`, its body in the
/// runner, a scenario and a test.
public protocol StepKind: Sendable, CustomStringConvertible {
    /// Its name in a scenario (`migrate`).
    static var name: String { get }
    /// One line for `miglab schema` and the docs.
    static var summary: String { get }
    /// The shapes its value may take.
    static var format: FormatType { get }
    /// Its deadline when the step says no `timeout_s`.
    static var defaultTimeoutSeconds: Double { get }
    /// The part of a scenario's time it counts to; nil when it has none of its own (`repeat`).
    static var phase: TimedPhase? { get }
    /// Reads one from its value; reports problems through `fields` and returns nil then.
    static func read(_ fields: inout StepFields) -> Self?

    /// Where the guest runs after the step, given where it ran before (nil: not booted yet);
    /// each problem with the order of the steps goes to `problem`, in words.
    func follow(guestOn: inout String?, in scenario: Scenario, problem: (String) -> Void)
    /// The hosts it brings the guest to or uses, in order.
    var hosts: [String] { get }
    /// What it needs of the hosts; `visitedHosts` are all hosts the guest may run on.
    func needs(visitedHosts: [String], at location: SourceLocation?) -> [Scenario.HostNeed]
    /// The steps it stands for, `times` over, when repeats are unrolled (nil: itself).
    var repetition: (times: Int, steps: [Step])? { get }
    /// Equality with another kind's value (false across kinds).
    func isEqual(to other: any StepKind) -> Bool
}

extension StepKind {
    public var kind: String { Self.name }
    public var hosts: [String] { [] }
    public func needs(visitedHosts: [String], at location: SourceLocation?) -> [Scenario.HostNeed] { [] }
    public var repetition: (times: Int, steps: [Step])? { nil }

    /// The usual rule of a step that acts where the guest runs: the guest must be booted.
    public func follow(guestOn: inout String?, in scenario: Scenario, problem: (String) -> Void) {
        if guestOn == nil { problem("`\(Self.name)` before `boot`: boot the guest first") }
    }
}

extension StepKind where Self: Equatable {
    public func isEqual(to other: any StepKind) -> Bool { (other as? Self) == self }
}

/// The part of a scenario's time a step or phase counts to (results.json's `timing`).
public enum TimedPhase: String, Sendable, Codable, CaseIterable {
    case labSetup = "lab_setup"
    case boot
    case migration
    case verification
    case faults
}

/// Every step kind, in the order the docs list them: one line per kind, and the fault kinds
/// that are also steps (`FaultKind.stepKeys`), each as a `FaultStep`.
public enum StepKinds {
    public static let all: [any StepKind.Type] = [
        Step.Boot.self,
        Step.Restart.self,
        Step.Migrate.self,
        Step.Verify.self,
        Step.Repeat.self,
    ] + FaultKinds.steps.map { $0.stepKind }

    public static var names: [String] { all.map { $0.name } }
    public static func named(_ name: String) -> (any StepKind.Type)? { all.first { $0.name == name } }
}

/// The reader's view of one step's value, for `StepKind.read`. Problems go to the scenario's
/// diagnostics at the value's line and column.
public struct StepFields {
    var reader: NodeReader
    /// The step's value (`a` in `boot: a`).
    let value: Node
    /// The step's own deadline (`timeout_s`), when its value says one.
    public var timeoutSeconds: Double?

    /// The value as a mapping of the kind's format; nil (reported) when it is not one.
    mutating func mapping(_ kind: any StepKind.Type, requireKeys: Bool = true) -> [String: Node]? {
        let m = reader.mapping(value, format: ScenarioFormat.steps.object(kind.name), requireKeys: requireKeys)
        if let m { timeoutSeconds = reader.timeout(m) }
        return m
    }
}
