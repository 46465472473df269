import Foundation
import Journal
import Plot
import Scenario

/// `report.html`: one self-contained page a person reads after a nightly run: the run and what
/// its hosts ran, the scenarios (with rates when repeated), and per run of a scenario its
/// migrations as timelines (`TimelinePlot`) with the faults where they fired and the downtime,
/// the memory checks with their bad pages, the device checks' findings, the expectations and
/// links to the logs. No script, no stylesheet or font from elsewhere: it works offline and
/// from a CI's artifact store.
public struct HTMLReport {
    public var result: RunResult
    /// The run's artifacts folder, for links to each scenario's logs (relative to it, so the
    /// folder can be moved or downloaded whole); nil: no links.
    public var artifactsDirectory: String?
    public var title: String

    public init(result: RunResult, artifactsDirectory: String?, title: String = "miglab run") {
        self.result = result
        self.artifactsDirectory = artifactsDirectory
        self.title = title
    }

    static let css = """
    body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
    table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
    th{background:#f2f2f2}.passed{color:#176f2c;font-weight:bold}.failed{color:#b00020;font-weight:bold}
    .error,.incomplete,.interrupted{color:#a15c00;font-weight:bold}section.scenario{border-top:2px solid #ddd;margin-top:28px}
    .fail{background:#fde7ea}.pass{background:#eaf7ee}code,pre{font:12px ui-monospace,monospace}pre{background:#f6f6f6;padding:6px;white-space:pre-wrap}
    svg.timeline{display:block;margin:6px 0;border:1px solid #eee}.note{color:#555}
    """

    public func render() -> String {
        let r = result
        let html = HTML(
            .lang(.english),
            .head(
                .meta(.charset(.utf8)),
                .title(title),
                .style(Self.css)
            ),
            .body(
                .h1(.text("\(title): "), .span(.class(r.outcome.rawValue), .text(r.outcome.rawValue))),
                .p(.text(runLine)),
                .unwrap(r.message) { .p(.class("failed"), .text($0)) },
                environmentTable,
                .h2("Scenarios"),
                scenarioTable,
                .group(r.scenarios.enumerated().map { scenarioSection($0.offset, $0.element) })
            )
        )
        return html.render(indentedBy: .spaces(1))
    }

    var runLine: String {
        let r = result
        var parts = ["\(r.scenarios.filter { $0.outcome == .passed }.count) of \(r.scenarios.count) scenario runs passed",
                     String(format: "%.1f s", r.durationSeconds)]
        if let s = r.startedAt { parts.append("started \(s)") }
        if let n = r.repeatCount { parts.append("--repeat \(n)") }
        if !r.shards.isEmpty { parts.append("shards \(r.shards.joined(separator: ", "))") }
        return parts.joined(separator: " · ")
    }

    var environmentTable: Node<HTML.BodyContext> {
        guard !result.environment.isEmpty else { return .p(.class("note"), .text("The journal records no host versions (a run of miglab before 0.19).")) }
        return .group(
            .h2("Environment"),
            .table(
                .tr(.th("host"), .th("QEMU"), .th("libvirt"), .th("kernel")),
                .forEach(result.environment) { h in
                    .tr(.td(.text(h.host)),
                        .td(.text((h.qemu ?? "?") + (h.qemuBinary.map { " (\($0))" } ?? ""))),
                        .td(.text((h.libvirt ?? "?") + (h.libvirtd.map { " (\($0))" } ?? ""))),
                        .td(.text(h.kernel ?? "?")))
                }
            )
        )
    }

    var scenarioTable: Node<HTML.BodyContext> {
        let repeated = result.scenarios.contains { $0.attempt != nil } || result.summary.contains { $0.runs > 1 }
        return .group(
            .if(repeated, .table(
                .tr(.th("scenario"), .th("runs"), .th("passed"), .th("failure rate (95% CI)"), .th("flaky"),
                    .th("migration ms (median / p90 / max)"), .th("downtime ms (median / p90 / max)")),
                .forEach(result.summary) { s in
                    .tr(.td(.text(s.name)), .td(.text("\(s.runs)")), .td(.text("\(s.passed)")),
                        .td(.text(s.failureRate.map { r in String(format: "%.0f%% (%.0f-%.0f%%)", r * 100, (s.failureRateInterval?[0] ?? 0) * 100, (s.failureRateInterval?[1] ?? 1) * 100) } ?? "-")),
                        .td(.text(s.flaky ? "flaky" : "")),
                        .td(.text(Self.distribution(s.migrationTimeMs))), .td(.text(Self.distribution(s.downtimeMs))))
                }
            )),
            .table(
                .tr(.th("scenario"), .th("outcome"), .th("time"), .th("migrations"), .th("faults"), .th("checks")),
                .forEach(result.scenarios.enumerated()) { i, s in
                    .tr(.td(.a(.href("#run-\(i)"), .text(s.name + (s.attempt.map { " (run \($0))" } ?? "")))),
                        .td(.span(.class(s.outcome.rawValue), .text(s.outcome.rawValue))),
                        .td(.text(String(format: "%.1f s", s.durationSeconds))),
                        .td(.text(s.migrations.map { "\($0.from)→\($0.to) \($0.outcome.rawValue)" }.joined(separator: ", "))),
                        .td(.text(s.faults.map(\.kind).joined(separator: ", "))),
                        .td(.text(s.verifications.map { "\($0.kind) \($0.verdict.rawValue)" }.joined(separator: ", "))))
                }
            )
        )
    }

    static func distribution(_ d: Distribution?) -> String {
        d.map { String(format: "%.0f / %.0f / %.0f", $0.median, $0.p90, $0.max) } ?? "-"
    }

    func scenarioSection(_ index: Int, _ s: ScenarioResult) -> Node<HTML.BodyContext> {
        .section(
            .class("scenario"), .id("run-\(index)"),
            .h2(.text(s.name + (s.attempt.map { " (run \($0))" } ?? "") + ": "), .span(.class(s.outcome.rawValue), .text(s.outcome.rawValue))),
            .unwrap(s.file) { .p(.class("note"), .text("\($0) · " + String(format: "%.1f s", s.durationSeconds))) },
            .unwrap(s.message) { .p(.text($0)) },
            .h3("Expectations"),
            .if(s.expectations.isEmpty, .p(.class("note"), .text("none judged"))),
            .if(!s.expectations.isEmpty, .table(
                .tr(.th("what"), .th("expected"), .th("observed"), .th("verdict")),
                .forEach(s.expectations) { e in
                    .tr(.class(e.verdict.rawValue), .td(.text(e.what)), .td(.text(e.expected)), .td(.text(e.observed)), .td(.text(e.verdict.rawValue)))
                }
            )),
            .group(s.migrations.enumerated().map { migrationBlock($0.offset, $0.element) }),
            .if(!s.faults.isEmpty, .group(
                .h3("Faults"),
                .table(
                    .tr(.th("kind"), .th("host"), .th("trigger"), .th("fired at"), .th("result")),
                    .forEach(s.faults) { f in
                        .tr(.td(.text(f.kind)), .td(.text(f.host ?? "")), .td(.text(f.trigger)),
                            .td(.text(String(format: "%.0f ms", f.firedAtMs))), .td(.text(f.error.map { "error: \($0)" } ?? f.result ?? "")))
                    }
                )
            )),
            .if(!s.verifications.isEmpty, .group(
                .h3("Checks"),
                .table(
                    .tr(.th("check"), .th("host"), .th("verdict"), .th("pages"), .th("bad pages"), .th("findings")),
                    .forEach(s.verifications) { v in
                        .tr(.class(v.verdict.rawValue), .td(.text(v.kind)), .td(.text(v.host ?? "")), .td(.text(v.verdict.rawValue)),
                            .td(.text(v.pagesChecked.map(String.init) ?? "")),
                            .td(.text(v.badPages.map(String.init) ?? "")),
                            .td(.unwrap(v.detail) { .p(.text($0)) },
                                .if(!(v.firstBadPages ?? []).isEmpty, .pre(.text((v.firstBadPages ?? []).joined(separator: "\n")))),
                                .if(!(v.findings ?? []).isEmpty, .ul(.forEach(v.findings ?? []) { .li(.text($0)) }))))
                    }
                )
            )),
            logLinks(s)
        )
    }

    func migrationBlock(_ i: Int, _ m: MigrationResult) -> Node<HTML.BodyContext> {
        var line = "\(m.outcome.rawValue)"
        if let t = m.stats.timeElapsedMs { line += ", \(t) ms" }
        // A job that did not complete reports the downtime it expected, not one it had.
        if let d = m.stats.downtimeMs { line += m.outcome == .completed ? ", downtime \(d) ms" : ", expected downtime \(d) ms" }
        if let b = m.stats.dataTotalBytes { line += String(format: ", %.1f MiB", Double(b) / 1_048_576) }
        if let n = m.stats.memoryIterations { line += ", \(n) iterations" }
        if let v = m.stats.vfioDataBytes { line += ", VFIO device state \(v) bytes" }
        return .group(
            .h3(.text("Migration \(i + 1): \(m.from) → \(m.to)")),
            .p(.text(line)),
            .unwrap(m.error) { .p(.class("failed"), .text($0.message)) },
            .raw(TimelinePlot(migration: m).svg())
        )
    }

    /// The scenario run's files (domain XML, QEMU and libvirtd logs, console), relative to the
    /// report, which lives in the artifacts folder.
    func logLinks(_ s: ScenarioResult) -> Node<HTML.BodyContext> {
        guard let root = artifactsDirectory else { return .group() }
        let folder = s.name + (s.attempt.map { "/run-\($0)" } ?? "")
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: "\(root)/\(folder)")) ?? []).sorted()
            .filter { name in
                var dir: ObjCBool = false
                return FileManager.default.fileExists(atPath: "\(root)/\(folder)/\(name)", isDirectory: &dir) && !dir.boolValue
            }
        guard !files.isEmpty else { return .group() }
        return .group(
            .h3("Logs"),
            .ul(.forEach(files) { f in .li(.a(.href(Self.relativeLink(folder + "/" + f)), .text(f))) })
        )
    }

    /// A path as a relative URL: each segment percent-encoded (scenario names of a matrix hold
    /// `[`, `=` and `,`).
    static func relativeLink(_ path: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return path.split(separator: "/").map { String($0).addingPercentEncoding(withAllowedCharacters: allowed) ?? "" }.joined(separator: "/")
    }
}

extension Comparison {
    /// The comparison as one self-contained page.
    public func html() -> String {
        func pct(_ v: Double?) -> String { v.map { String(format: "%+.0f%%", $0 * 100) } ?? "" }
        let page = HTML(
            .lang(.english),
            .head(.meta(.charset(.utf8)), .title("miglab compare"), .style(HTMLReport.css)),
            .body(
                .h1(.text("miglab compare: "), .span(.class(bIsWorse ? "failed" : "passed"), .text(bIsWorse ? "B is worse" : "no scenario worse"))),
                .p(.text("A: \(a)")), .p(.text("B: \(b)")),
                .table(
                    .tr(.th("scenario"), .th("A"), .th("B"), .th("verdict"), .th("Fisher p (one-sided)"), .th("p (two-sided)"),
                        .th("migration median A → B"), .th("downtime median A → B")),
                    .forEach(rows) { r in
                        .tr(.class(r.verdict == .worse ? "fail" : (r.verdict == .better ? "pass" : "")),
                            .td(.text(r.scenario)), .td(.text(Comparison.rateText(r.a))), .td(.text(Comparison.rateText(r.b))),
                            .td(.text(r.verdict.rawValue)),
                            .td(.text(r.pValue.map { String(format: "%.3g", $0) } ?? "")),
                            .td(.text(r.pValueTwoSided.map { String(format: "%.3g", $0) } ?? "")),
                            .td(.text("\(r.a?.migrationTimeMedianMs.map { String(format: "%.0f", $0) } ?? "-") → \(r.b?.migrationTimeMedianMs.map { String(format: "%.0f ms", $0) } ?? "-") \(pct(r.migrationTimeChange))")),
                            .td(.text("\(r.a?.downtimeMedianMs.map { String(format: "%.0f", $0) } ?? "-") → \(r.b?.downtimeMedianMs.map { String(format: "%.0f ms", $0) } ?? "-") \(pct(r.downtimeChange))")))
                    }
                ),
                .h2("Environment"),
                .if(environment.isEmpty, .p(.text("The same QEMU, libvirt and kernels."))),
                .if(!environment.isEmpty, .table(
                    .tr(.th("host"), .th("what"), .th("A"), .th("B")),
                    .forEach(environment) { e in .tr(.td(.text(e.host)), .td(.text(e.what)), .td(.text(e.a)), .td(.text(e.b))) }
                ))
            )
        )
        return page.render(indentedBy: .spaces(1))
    }
}
