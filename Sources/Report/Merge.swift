import Foundation
import Journal
import Scenario

extension RunResult {
    /// The results of runs made apart (`--shard K/N` jobs, each on its own host pair) as one
    /// run: every scenario run, every environment, the shards named. It passed only when every
    /// part passed; a part that died makes it incomplete, an interrupted one interrupted.
    public static func merged(_ parts: [(source: String, result: RunResult)]) -> RunResult {
        let results = parts.map(\.result)
        let scenarios = results.flatMap(\.scenarios)
        var environment: [HostEnvironment] = []
        for h in results.flatMap(\.environment) where !environment.contains(h) { environment.append(h) }
        let outcome: ScenarioVerdict.Outcome =
            results.contains { $0.outcome == .incomplete } ? .incomplete
            : results.contains { $0.outcome == .interrupted } ? .interrupted
            : (!scenarios.isEmpty && results.allSatisfy { $0.outcome == .passed }) ? .passed : .failed
        var notes = parts.compactMap { p in p.result.message.map { "\(p.source): \($0)" } }
        notes += parts.filter { $0.result.outcome != .passed }.map { "\($0.source): run \($0.result.outcome.rawValue)" }
        // Shards never share a scenario; two parts that ran one each ran it twice (a shard
        // given twice, or runs that are not shards of one selection).
        var seen: [String: String] = [:]
        for p in parts {
            for name in Set(p.result.scenarios.filter { $0.attempt == nil }.map(\.name)).sorted() {
                if let other = seen[name] { notes.append("scenario \(name) is in both \(other) and \(p.source)") }
                seen[name] = p.source
            }
        }
        let repeats = Set(results.map(\.repeatCount))
        return RunResult(outcome: outcome, message: notes.isEmpty ? nil : notes.joined(separator: "; "),
                         startedAt: results.compactMap(\.startedAt).min(),
                         // Shards run side by side: the merged run took as long as its longest part.
                         durationSeconds: results.map(\.durationSeconds).max() ?? 0,
                         scenarios: scenarios, environment: environment,
                         repeatCount: repeats.count == 1 ? repeats.first! : nil,
                         shards: results.flatMap(\.shards))
    }

    /// A run's results from its folder: rebuilt from `journal.jsonl` when it has one (the
    /// timelines need its progress samples), else read from `results.json` (a merged run's).
    public static func load(directory: String) throws -> RunResult {
        let journal = "\(directory)/journal.jsonl"
        if FileManager.default.fileExists(atPath: journal) {
            return RunResult(journal: try Journal.read(path: journal))
        }
        let path = "\(directory)/results.json"
        guard let data = FileManager.default.contents(atPath: path) else {
            throw JournalError("\(directory) holds neither journal.jsonl nor results.json: give a run's artifacts folder (--artifacts)")
        }
        do {
            return try JSONDecoder().decode(RunResult.self, from: data)
        } catch {
            throw JournalError("\(path): not a miglab results.json (\(error))")
        }
    }
}
