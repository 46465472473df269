import Foundation
import Journal
import Scenario

/// `miglab compare A B`: did run B (a new QEMU, libvirt or kernel) make migration worse than
/// run A? Per scenario both pass rates with their intervals, Fisher's exact test on the
/// pass/fail counts, the medians of migration time and downtime, and what differs between the
/// runs' environments.
public struct Comparison: Codable, Sendable, Equatable {
    /// A scenario is called worse or better when Fisher's one-sided p-value is below this.
    public static let significance = 0.05

    public enum Verdict: String, Codable, Sendable {
        case worse, better
        case noEvidence = "no evidence"
        /// In one run only.
        case onlyInA = "only in A"
        case onlyInB = "only in B"
    }

    public struct Side: Codable, Sendable, Equatable {
        public var runs: Int
        public var passed: Int
        public var decided: Int
        public var failureRate: Double?
        public var failureRateInterval: [Double]?
        public var migrationTimeMedianMs: Double?
        public var downtimeMedianMs: Double?

        init(_ s: ScenarioSummary) {
            runs = s.runs
            passed = s.passed
            decided = s.decided
            failureRate = s.failureRate
            failureRateInterval = s.failureRateInterval
            migrationTimeMedianMs = s.migrationTimeMs?.median
            downtimeMedianMs = s.downtimeMs?.median
        }

        enum CodingKeys: String, CodingKey {
            case runs, passed, decided
            case failureRate = "failure_rate"
            case failureRateInterval = "failure_rate_ci95"
            case migrationTimeMedianMs = "migration_time_median_ms"
            case downtimeMedianMs = "downtime_median_ms"
        }
    }

    public struct Row: Codable, Sendable, Equatable {
        public var scenario: String
        public var a: Side?
        public var b: Side?
        public var verdict: Verdict
        /// Fisher's exact test, one-sided in the direction of the verdict (for "no evidence":
        /// the smaller of the two one-sided values), and two-sided.
        public var pValue: Double?
        public var pValueTwoSided: Double?
        /// B's median against A's, as a fraction (0.1: 10% longer).
        public var migrationTimeChange: Double?
        public var downtimeChange: Double?

        enum CodingKeys: String, CodingKey {
            case scenario, a, b, verdict
            case pValue = "p_value"
            case pValueTwoSided = "p_value_two_sided"
            case migrationTimeChange = "migration_time_change"
            case downtimeChange = "downtime_change"
        }
    }

    /// One difference of what the runs' hosts ran.
    public struct EnvironmentChange: Codable, Sendable, Equatable {
        public var host: String
        public var what: String
        public var a: String
        public var b: String
    }

    public var a: String
    public var b: String
    public var rows: [Row]
    public var environment: [EnvironmentChange]

    /// Some scenario is significantly worse in B.
    public var bIsWorse: Bool { rows.contains { $0.verdict == .worse } }

    public init(a: RunResult, named nameA: String, b: RunResult, named nameB: String) {
        self.a = nameA
        self.b = nameB
        let sa = Dictionary(a.summary.map { ($0.name, $0) }, uniquingKeysWith: { x, _ in x })
        let sb = Dictionary(b.summary.map { ($0.name, $0) }, uniquingKeysWith: { x, _ in x })
        var names = a.summary.map(\.name)
        names += b.summary.map(\.name).filter { sa[$0] == nil }
        rows = names.map { name in
            Self.row(name, sa[name], sb[name])
        }
        environment = Self.changes(a.environment, b.environment)
    }

    static func row(_ name: String, _ a: ScenarioSummary?, _ b: ScenarioSummary?) -> Row {
        var row = Row(scenario: name, a: a.map(Side.init), b: b.map(Side.init), verdict: .noEvidence)
        guard let a, let b else {
            row.verdict = a == nil ? .onlyInB : .onlyInA
            return row
        }
        let p = Statistics.fisherExact(a: a.notPassed, b: a.passed, c: b.notPassed, d: b.passed)
        row.pValueTwoSided = p.twoSided
        if p.greater < significance {
            row.verdict = .worse
            row.pValue = p.greater
        } else if p.less < significance {
            row.verdict = .better
            row.pValue = p.less
        } else {
            row.pValue = min(p.greater, p.less)
        }
        func change(_ x: Double?, _ y: Double?) -> Double? {
            guard let x, let y, x > 0 else { return nil }
            return (y - x) / x
        }
        row.migrationTimeChange = change(row.a?.migrationTimeMedianMs, row.b?.migrationTimeMedianMs)
        row.downtimeChange = change(row.a?.downtimeMedianMs, row.b?.downtimeMedianMs)
        return row
    }

    static func changes(_ a: [HostEnvironment], _ b: [HostEnvironment]) -> [EnvironmentChange] {
        var out: [EnvironmentChange] = []
        let hosts = (a.map(\.host) + b.map(\.host)).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        for host in hosts {
            // A host prepared twice (a crashed host's replacement) counts by its set of values.
            func values(_ env: [HostEnvironment], _ f: (HostEnvironment) -> String?) -> String {
                let v = env.filter { $0.host == host }.map { f($0) ?? "?" }
                return v.isEmpty ? "absent" : v.reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }.joined(separator: ", ")
            }
            let fields: [(String, (HostEnvironment) -> String?)] = [
                ("QEMU", \.qemu), ("QEMU binary", \.qemuBinary), ("libvirt", \.libvirt), ("libvirtd binary", \.libvirtd), ("kernel", \.kernel),
            ]
            for (what, f) in fields {
                let x = values(a, f), y = values(b, f)
                if x != y { out.append(EnvironmentChange(host: host, what: what, a: x, b: y)) }
            }
        }
        return out
    }

    public func json() throws -> Data {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return try enc.encode(self)
    }

    static func rateText(_ s: Side?) -> String {
        guard let s else { return "-" }
        guard let r = s.failureRate, let ci = s.failureRateInterval else { return "\(s.runs) runs, none ended" }
        return String(format: "%d/%d passed, fails %.0f%% [%.0f-%.0f%%]", s.passed, s.decided, r * 100, ci[0] * 100, ci[1] * 100)
    }

    static func medianText(_ a: Double?, _ b: Double?, _ change: Double?) -> String {
        guard let b else { return "-" }
        return String(format: "%.0f ms", b) + (a.map { String(format: " (A %.0f", $0) + (change.map { String(format: ", %+.0f%%)", $0 * 100) } ?? ")") } ?? "")
    }

    /// The terminal table.
    public func text() -> String {
        var out = ["A: \(a)", "B: \(b)"]
        let header = ["scenario", "A", "B", "verdict (Fisher p)", "migration median B", "downtime median B"]
        var table = [header]
        for r in rows {
            table.append([r.scenario, Self.rateText(r.a), Self.rateText(r.b),
                          r.verdict.rawValue + (r.pValue.map { String(format: " (p=%.3g)", $0) } ?? ""),
                          Self.medianText(r.a?.migrationTimeMedianMs, r.b?.migrationTimeMedianMs, r.migrationTimeChange),
                          Self.medianText(r.a?.downtimeMedianMs, r.b?.downtimeMedianMs, r.downtimeChange)])
        }
        let widths = (0..<header.count).map { c in table.map { $0[c].count }.max() ?? 0 }
        for line in table {
            out.append(zip(line, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  "))
        }
        if environment.isEmpty {
            out.append("environment: the same (QEMU, libvirt, kernel)")
        } else {
            for e in environment { out.append("environment: host \(e.host) \(e.what): \(e.a) -> \(e.b)") }
        }
        let worse = rows.filter { $0.verdict == .worse }.map(\.scenario)
        out.append(worse.isEmpty ? "B is not significantly worse than A on any scenario (Fisher's exact test, p < \(Self.significance))"
                                 : "B is worse than A on \(worse.joined(separator: ", ")) (Fisher's exact test, p < \(Self.significance))")
        return SafeText.lines(out.joined(separator: "\n"), limit: 1_000_000)
    }
}
