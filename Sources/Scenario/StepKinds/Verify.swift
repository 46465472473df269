import Yams

/// `verify: [memory, console]`, `verify: memory` or `verify: {memory: true, timeout_s: 60}`:
/// the registered verifiers (`Verifiers`) run where the guest is.
extension Step.Verify: StepKind {
    public static let name = "verify"
    public static let summary = "checks where the guest runs"
    static let check = FormatType.choice(Verifiers.names)
    public static let format = FormatType.anyOf([check, .list(check), .object(FormatObject("`verify`",
        Verifiers.all.map { FormatKey($0.name, .boolean, $0.summary) } + [ScenarioFormat.timeout]))])
    public static let defaultTimeoutSeconds = 180.0
    public static let phase: TimedPhase? = .verification

    public static func read(_ f: inout StepFields) -> Step.Verify? {
        var checks: [String] = []
        let names: [Node]
        let known = Verifiers.names.map { "`\($0)`" }.joined(separator: ", ")
        switch f.value {
        case .scalar: names = [f.value]
        case let .sequence(s): names = Array(s)
        default:
            guard let m = f.mapping(self) else { return nil }
            for name in Verifiers.names where m[name].flatMap({ f.reader.bool($0, key: name) }) == true { checks.append(name) }
            names = []
        }
        for n in names {
            if let name = n.scalar?.string, Verifiers.named(name) != nil { checks.append(name) } else {
                f.reader.error(n, "`verify` checks \(known); found \(f.reader.describe(n))")
            }
        }
        if checks.isEmpty {
            f.reader.error(f.value, "`verify` checks nothing; name \(known)")
            return nil
        }
        return Step.Verify(checks: checks)
    }

    public func follow(guestOn: inout String?, in scenario: Scenario, problem: (String) -> Void) {
        if guestOn == nil { problem("`verify` before `boot`: boot the guest first") }
        for kind in Verifiers.all where runs(kind) {
            if let why = kind.refusal(in: scenario) { problem(why) }
        }
    }

    public var description: String { "verify " + checks.joined(separator: ", ") }
}
