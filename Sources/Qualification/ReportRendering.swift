import Foundation

extension QualificationReport {
    /// A table: verdict, check id and what the verdict rests on, then a summary line.
    public func renderTable() -> String {
        let idWidth = max(5, results.map(\.id.count).max() ?? 0)
        func row(_ verdict: String, _ id: String, _ detail: String) -> String {
            verdict.padding(toLength: 7, withPad: " ", startingAt: 0) + "  "
                + id.padding(toLength: idWidth, withPad: " ", startingAt: 0) + "  " + detail
        }
        var lines = [row("VERDICT", "CHECK", "DETAIL")]
        for result in results {
            lines.append(row(result.verdict == .fail ? "FAIL" : result.verdict.rawValue, result.id, result.detail))
        }
        lines.append("")
        lines.append(summaryLine)
        return lines.joined(separator: "\n")
    }

    public var summaryLine: String {
        "\(summary.checks) checks: \(summary.passed) passed, \(summary.failed) failed, \(summary.skipped) skipped"
            + " (\(target), \(String(format: "%.2f", seconds)) s)"
    }

    /// Every check with id, rule, source, verdict and detail, as stable pretty JSON.
    public func jsonData() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }
}
