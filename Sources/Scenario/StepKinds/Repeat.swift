import Yams

/// `repeat: {times: 10, steps: [...]}`: its steps, `times` over (unrolled before the run;
/// counted without unrolling, so that nested repeats cannot multiply past memory).
extension Step.Repeat: StepKind {
    public static let name = "repeat"
    public static let summary = "repeat steps"
    public static let format = FormatType.object(FormatObject("`repeat`", [
        FormatKey("times", .integer(1...10_000), required: true, "how many times"),
        FormatKey("steps", .steps, required: true, "the steps repeated")]))
    public static let defaultTimeoutSeconds = Double.infinity
    public static let phase: TimedPhase? = nil

    public static func read(_ f: inout StepFields) -> Step.Repeat? {
        guard let m = f.mapping(self) else { return nil }
        let times = m["times"].flatMap { f.reader.int($0, key: "times", range: 1...10_000) }
        let inner = m["steps"].map { f.reader.stepList($0, context: "`repeat.steps`") } ?? []
        return times.map { Step.Repeat(times: $0, steps: inner) }
    }

    /// Its steps are checked where they are unrolled.
    public func follow(guestOn: inout String?, in scenario: Scenario, problem: (String) -> Void) {}

    public var repetition: (times: Int, steps: [Step])? { (times, steps) }
    public var description: String { "repeat \(times)x" }
}
