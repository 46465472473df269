import Foundation
import Journal
import Scenario

/// One scenario over all its runs in a result (`--repeat N`, or shards merged): how often it
/// passed, its failure rate with a 95% Wilson interval, and the spread of its migrations.
public struct ScenarioSummary: Codable, Sendable, Equatable {
    public var name: String
    public var runs: Int
    public var passed: Int
    /// The system under test misbehaved.
    public var failed: Int
    /// The lab could not do its job.
    public var errors: Int
    /// Interrupted, or cut off (incomplete): these runs say nothing either way and are left
    /// out of the rate.
    public var unfinished: Int
    /// Runs that ended and did not pass, over runs that ended (nil when none ended).
    public var failureRate: Double?
    /// The 95% Wilson interval of the failure rate: [low, high].
    public var failureRateInterval: [Double]?
    /// Some runs passed and some did not.
    public var flaky: Bool
    /// Over the completed migrations of every run.
    public var migrationTimeMs: Distribution?
    public var downtimeMs: Distribution?
    public var memoryIterations: Distribution?
    public var dataTotalBytes: Distribution?

    enum CodingKeys: String, CodingKey {
        case name, runs, passed, failed, errors, unfinished, flaky
        case failureRate = "failure_rate"
        case failureRateInterval = "failure_rate_ci95"
        case migrationTimeMs = "migration_time_ms"
        case downtimeMs = "downtime_ms"
        case memoryIterations = "memory_iterations"
        case dataTotalBytes = "data_total_bytes"
    }

    /// Runs that ended (passed, failed or error).
    public var decided: Int { passed + failed + errors }
    /// Runs that ended and did not pass.
    public var notPassed: Int { failed + errors }

    /// One summary per scenario name, in the order the names first ran.
    public static func of(_ results: [ScenarioResult]) -> [ScenarioSummary] {
        var order: [String] = []
        var runs: [String: [ScenarioResult]] = [:]
        for r in results {
            if runs[r.name] == nil { order.append(r.name) }
            runs[r.name, default: []].append(r)
        }
        return order.map { ScenarioSummary(name: $0, runs: runs[$0]!) }
    }

    public init(name: String, runs: [ScenarioResult]) {
        self.name = name
        self.runs = runs.count
        passed = runs.filter { $0.outcome == .passed }.count
        failed = runs.filter { $0.outcome == .failed }.count
        errors = runs.filter { $0.outcome == .error }.count
        unfinished = runs.count - passed - failed - errors
        let decided = passed + failed + errors
        if decided > 0 {
            failureRate = Double(failed + errors) / Double(decided)
            let ci = Statistics.wilson(failed + errors, of: decided)
            failureRateInterval = [ci.lowerBound, ci.upperBound]
        }
        flaky = passed > 0 && failed + errors > 0
        let completed = runs.flatMap(\.migrations).filter { $0.outcome == .completed }
        func figure(_ f: (MigrationStats) -> UInt64?) -> Distribution? {
            Distribution(completed.compactMap { f($0.stats).map { Double($0) } })
        }
        migrationTimeMs = figure(\.timeElapsedMs)
        downtimeMs = figure(\.downtimeMs)
        memoryIterations = figure(\.memoryIterations)
        dataTotalBytes = figure(\.dataTotalBytes)
    }

    /// "failed 3 of 4 runs (75%, 95% CI 30-95%), flaky".
    public var rateText: String {
        guard let rate = failureRate, let ci = failureRateInterval else {
            return "no run of \(runs) ended"
        }
        func pct(_ v: Double) -> String { String(format: "%.0f", v * 100) }
        var t = "\(notPassed == 0 ? "passed" : "did not pass") \(notPassed == 0 ? decided : notPassed) of \(decided) run\(decided == 1 ? "" : "s")"
            + " (failure rate \(pct(rate))%, 95% CI \(pct(ci[0]))-\(pct(ci[1]))%)"
        if flaky { t += ", flaky" }
        if unfinished > 0 { t += ", \(unfinished) unfinished" }
        return t
    }
}
