import Yams

/// A fault kind with a step form (`FaultKind.stepKeys`: guest FLR and resets, host-side
/// resets) used as a step, outside any migration: it acts where the guest runs, and each one
/// of its `count` must work. The same type as the fault, so that the two cannot differ.
public struct FaultStep<Fault: FaultKind>: StepKind, Equatable {
    public var fault: Fault

    public static func == (a: FaultStep, b: FaultStep) -> Bool { a.fault.isEqual(to: b.fault) }

    public init(_ fault: Fault) { self.fault = fault }

    public static var name: String { Fault.name }
    public static var summary: String { Fault.summary + " (a step: where the guest runs)" }
    /// `host-flr: vf` is `host-flr: {device: vf}`: a plain value is the first key's.
    public static var format: FormatType {
        let keys = Fault.stepKeys ?? []
        return .anyOf([keys[0].type, .object(FormatObject("`\(Fault.name)`", keys))])
    }
    public static var defaultTimeoutSeconds: Double { 120 }
    public static var phase: TimedPhase? { .faults }

    public static func read(_ f: inout StepFields) -> FaultStep? {
        guard let keys = Fault.stepKeys else { return nil }
        let value: Node = if case .scalar = f.value { .mapping(Node.Mapping([(Node(keys[0].name), f.value)])) } else { f.value }
        let original = f.value
        guard let m = f.reader.mapping(value, context: "`\(name)`", format: ScenarioFormat.steps.object(name), requireKeys: false) else { return nil }
        f.timeoutSeconds = f.reader.timeout(m)
        var fields = FaultFields(reader: f.reader, values: m, node: original, isStep: true, kind: name)
        let read = Fault.read(&fields)
        f.reader = fields.reader
        return read.map(FaultStep.init)
    }

    /// On every host the guest may run on.
    public func needs(visitedHosts: [String], at location: SourceLocation?) -> [Scenario.HostNeed] {
        fault.needs.sorted { $0.rawValue < $1.rawValue }.flatMap { c in
            visitedHosts.map { Scenario.HostNeed(what: Self.name, host: $0, capability: c, location: location) }
        }
    }

    public var description: String { "\(fault) where the guest runs" }
}

/// A step that injects a fault, whatever its kind (the runner's view of `FaultStep<K>`).
public protocol InjectedFaultStep: StepKind {
    var injected: any FaultKind { get }
}

extension FaultStep: InjectedFaultStep {
    public var injected: any FaultKind { fault }
}

extension FaultKind {
    /// This kind as a step.
    public static var stepKind: any StepKind.Type { FaultStep<Self>.self }
}
