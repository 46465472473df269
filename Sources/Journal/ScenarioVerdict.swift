import Scenario

/// The verdict of one scenario, a pure function of its journal events: the runner's exit
/// status and `miglab report` both come from here, so they cannot disagree, and a report of a
/// killed run's journal judges what the journal holds.
///
/// Outcomes:
/// - `passed`: every expectation met (and at least one was checked);
/// - `failed`: the system under test misbehaved: an expectation not met;
/// - `error`: the lab could not do its job (an `error` event with outcome `error`);
/// - `interrupted`: Ctrl-C or SIGTERM ended it;
/// - `incomplete`: the journal ends before the scenario's end (the runner died).
public struct ScenarioVerdict: Sendable, Equatable {
    public enum Outcome: String, Sendable, Codable, CaseIterable {
        case passed, failed, error, interrupted, incomplete
    }

    public var outcome: Outcome
    /// Every expectation, in the order the run judged them; the scenario's memory, console and
    /// device verdicts last (from its verification events).
    public var expectations: [ExpectationRecord]
    /// Why it did not pass, in a line.
    public var message: String?

    /// The verdict of the scenario whose events (from its `scenario_started` on) these are.
    /// Events of other scenarios are ignored. `ended`: the runner, about to journal the
    /// scenario's end, says it ended (else the journal's `scenario_finished` does).
    public static func of(_ events: [JournalEvent], ended: Bool = false) -> ScenarioVerdict {
        let name = events.first { $0.kind == .scenarioStarted }?.scenario
        let mine = events.filter { $0.scenario == name || $0.scenario == nil }
        let expect = mine.first { $0.kind == .scenarioStarted }?.expect ?? Expectations()
        var expectations = mine.filter { $0.kind == .expectation }.flatMap { $0.expectations ?? [] }

        // The verification events of each verifier, judged against the scenario's `expect`.
        for kind in Verifiers.all {
            let verdicts = mine.compactMap { $0.kind == .verification && $0.verification?.kind == kind.name ? $0.verification?.verdict == .pass : nil }
            guard !verdicts.isEmpty else { continue }
            expectations.append(ExpectationRecord(what: kind.name, expected: kind.expected(in: expect),
                                                  observed: verdicts.allSatisfy { $0 } ? kind.observed.pass : kind.observed.fail))
        }

        let finished = mine.last { $0.kind == .scenarioFinished && $0.scenario == name }
        let stops = mine.filter { $0.kind == .error && $0.scenario == name }
        if stops.contains(where: { $0.outcome == .interrupted }) {
            return ScenarioVerdict(outcome: .interrupted, expectations: expectations, message: "interrupted")
        }
        if let error = stops.first(where: { $0.outcome == .error }) {
            let more = stops.filter { $0.outcome == .error }.dropFirst().compactMap(\.message)
            return ScenarioVerdict(outcome: .error, expectations: expectations,
                                   message: ([error.message ?? "lab error"] + more).joined(separator: "; "))
        }
        guard finished != nil || ended else {
            return ScenarioVerdict(outcome: .incomplete, expectations: expectations,
                                   message: "the journal ends before this scenario finished (the run died or was killed)")
        }
        if expectations.isEmpty {
            return ScenarioVerdict(outcome: .failed, expectations: [], message: "the scenario checked nothing (no migration, no verification)")
        }
        let failed = expectations.filter { $0.verdict != .pass }
        if !failed.isEmpty {
            return ScenarioVerdict(outcome: .failed, expectations: expectations,
                                   message: failed.prefix(3).map { "\($0.what): expected \($0.expected), got \($0.observed)" }.joined(separator: "; "))
        }
        return ScenarioVerdict(outcome: .passed, expectations: expectations, message: nil)
    }
}
