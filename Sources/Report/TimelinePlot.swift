import Foundation
import Journal
import Scenario

/// A migration's timeline as an SVG picture, drawn from the journal's progress samples: data
/// still to send and data sent (MiB) above, the guest's dirty rate against the bandwidth
/// (MiB/s) below, each pre-copy iteration's start as a tick, every fault as a red line where it
/// fired, and the downtime as a band at the end. Self-contained: no script, no font or file
/// from elsewhere, so the report works offline.
public struct TimelinePlot: Sendable {
    public var migration: MigrationResult
    public var width = 760.0
    /// The guest page size libvirt's dirty rate counts in (pages/s).
    public var pageSize = 4096.0

    public init(migration: MigrationResult) { self.migration = migration }

    struct Point { var t: Double; var v: Double }

    static let mib = 1024.0 * 1024.0
    let left = 64.0, right = 16.0, panelHeight = 150.0, top = 24.0, gap = 46.0

    /// The picture's SVG markup.
    public func svg() -> String {
        let samples = migration.samples.filter { $0.timeElapsedMs != nil }
        let end = Double(migration.stats.timeElapsedMs ?? samples.last?.timeElapsedMs ?? 0)
        let faultEnd = migration.faults.map(\.firedAtMs).max() ?? 0
        let span = Swift.max(end, faultEnd, Double(samples.last?.timeElapsedMs ?? 0), 1) / 1000   // seconds
        func series(_ f: (MigrationStats) -> UInt64?, scale: Double) -> [Point] {
            samples.compactMap { s in f(s).map { Point(t: Double(s.timeElapsedMs!) / 1000, v: Double($0) * scale) } }
        }
        var remaining = series(\.dataRemainingBytes, scale: 1 / Self.mib)
        var sent = series(\.dataProcessedBytes, scale: 1 / Self.mib)
        // The final statistics close the curves: everything sent, nothing left.
        if migration.outcome == .completed, end > 0 {
            if let total = migration.stats.dataProcessedBytes ?? migration.stats.dataTotalBytes { sent.append(Point(t: end / 1000, v: Double(total) / Self.mib)) }
            if !remaining.isEmpty { remaining.append(Point(t: end / 1000, v: 0)) }
        }
        let dirty = samples.compactMap { s in s.memoryDirtyRatePagesPerSecond.map { Point(t: Double(s.timeElapsedMs!) / 1000, v: Double($0) * pageSize / Self.mib) } }
        let bandwidth = series(\.memoryBytesPerSecond, scale: 1 / Self.mib)
        var iterations: [(t: Double, n: UInt64)] = []
        var last: UInt64 = 0
        for s in samples {
            if let n = s.memoryIterations, n > last {
                if n > 1 { iterations.append((Double(s.timeElapsedMs!) / 1000, n)) }
                last = n
            }
        }

        let plotWidth = width - left - right
        let height = top + 2 * panelHeight + gap + 34
        func x(_ t: Double) -> Double { left + t / span * plotWidth }
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" width=\"\(Self.f(width))\" height=\"\(Self.f(height))\" viewBox=\"0 0 \(Self.f(width)) \(Self.f(height))\" role=\"img\" aria-label=\"migration timeline\">\n"
        out += "<rect x=\"0\" y=\"0\" width=\"\(Self.f(width))\" height=\"\(Self.f(height))\" fill=\"#fff\"/>\n"
        let panels: [(title: String, unit: String, lines: [(name: String, color: String, points: [Point])])] = [
            ("data", "MiB", [("remaining", "#1f77b4", remaining), ("sent", "#2ca02c", sent)]),
            ("rates", "MiB/s", [("dirty rate", "#ff7f0e", dirty), ("bandwidth", "#9467bd", bandwidth)]),
        ]
        for (p, panel) in panels.enumerated() {
            let y0 = top + Double(p) * (panelHeight + gap)
            let maxV = Swift.max(panel.lines.flatMap(\.points).map(\.v).max() ?? 0, 1)
            let yMax = Self.niceCeiling(maxV)
            func y(_ v: Double) -> Double { y0 + panelHeight - v / yMax * panelHeight }
            out += "<g class=\"panel\">\n"
            out += "<rect x=\"\(Self.f(left))\" y=\"\(Self.f(y0))\" width=\"\(Self.f(plotWidth))\" height=\"\(Self.f(panelHeight))\" fill=\"#fafafa\" stroke=\"#bbb\"/>\n"
            for k in 0...4 {
                let v = yMax * Double(k) / 4
                out += "<line x1=\"\(Self.f(left))\" x2=\"\(Self.f(left + plotWidth))\" y1=\"\(Self.f(y(v)))\" y2=\"\(Self.f(y(v)))\" stroke=\"#e3e3e3\"/>"
                out += "<text x=\"\(Self.f(left - 6))\" y=\"\(Self.f(y(v) + 4))\" text-anchor=\"end\" font-size=\"11\">\(Self.number(v))</text>\n"
            }
            out += "<text x=\"\(Self.f(left))\" y=\"\(Self.f(y0 - 8))\" font-size=\"12\" font-weight=\"bold\">\(Self.escape(panel.title)) (\(Self.escape(panel.unit)))</text>\n"
            var legendX = left + 120
            for line in panel.lines {
                out += "<rect x=\"\(Self.f(legendX))\" y=\"\(Self.f(y0 - 17))\" width=\"12\" height=\"3\" fill=\"\(line.color)\"/>"
                out += "<text x=\"\(Self.f(legendX + 16))\" y=\"\(Self.f(y0 - 12))\" font-size=\"11\">\(Self.escape(line.name))</text>\n"
                legendX += 110
                guard !line.points.isEmpty else { continue }
                let d = line.points.enumerated().map { i, pt in "\(i == 0 ? "M" : "L")\(Self.f(x(pt.t))),\(Self.f(y(pt.v)))" }.joined(separator: " ")
                out += "<path class=\"series\" d=\"\(d)\" fill=\"none\" stroke=\"\(line.color)\" stroke-width=\"1.8\"/>\n"
            }
            for it in iterations {
                out += "<line class=\"iteration\" x1=\"\(Self.f(x(it.t)))\" x2=\"\(Self.f(x(it.t)))\" y1=\"\(Self.f(y0))\" y2=\"\(Self.f(y0 + panelHeight))\" stroke=\"#999\" stroke-dasharray=\"2,3\"/>"
                if p == 0 { out += "<text x=\"\(Self.f(x(it.t) + 2))\" y=\"\(Self.f(y0 + 10))\" font-size=\"9\" fill=\"#777\">i\(it.n)</text>" }
                out += "\n"
            }
            out += "</g>\n"
        }
        let plotsBottom = top + 2 * panelHeight + gap
        // The downtime: the guest was paused for the last `downtime_ms` of the job.
        if migration.outcome == .completed, let down = migration.stats.downtimeMs, end > 0 {
            let from = x(Swift.max(0, end - Double(down)) / 1000), to = x(end / 1000)
            out += "<rect class=\"downtime\" x=\"\(Self.f(from))\" y=\"\(Self.f(top))\" width=\"\(Self.f(Swift.max(2, to - from)))\" height=\"\(Self.f(plotsBottom - top))\" fill=\"#d62728\" fill-opacity=\"0.15\"><title>downtime \(down) ms</title></rect>\n"
            out += "<text x=\"\(Self.f(to - 2))\" y=\"\(Self.f(top + panelHeight + 14))\" text-anchor=\"end\" font-size=\"10\" fill=\"#a00\">downtime \(down) ms</text>\n"
        }
        for (i, fault) in migration.faults.enumerated() {
            let fx = x(fault.firedAtMs / 1000)
            let label = "\(fault.kind) at \(Self.number(fault.firedAtMs)) ms"
            out += "<g class=\"fault-marker\"><line x1=\"\(Self.f(fx))\" x2=\"\(Self.f(fx))\" y1=\"\(Self.f(top - 4))\" y2=\"\(Self.f(plotsBottom))\" stroke=\"#d62728\" stroke-width=\"2\"/>"
            // Near the right edge the label goes to the line's left, so it is never cut off.
            let leftOfLine = fx > left + plotWidth * 0.7
            out += "<text x=\"\(Self.f(leftOfLine ? fx - 3 : fx + 3))\" y=\"\(Self.f(top + 12 + Double(i % 4) * 12))\"\(leftOfLine ? " text-anchor=\"end\"" : "") font-size=\"11\" fill=\"#d62728\">\(Self.escape(label))</text>"
            out += "<title>\(Self.escape(label) + (fault.error.map { ": " + Self.escape($0) } ?? ""))</title></g>\n"
        }
        // Time axis.
        let step = Self.niceStep(span / 6)
        var t = 0.0
        while t <= span + 1e-9 {
            out += "<line x1=\"\(Self.f(x(t)))\" x2=\"\(Self.f(x(t)))\" y1=\"\(Self.f(plotsBottom))\" y2=\"\(Self.f(plotsBottom + 4))\" stroke=\"#555\"/>"
            out += "<text x=\"\(Self.f(x(t)))\" y=\"\(Self.f(plotsBottom + 16))\" text-anchor=\"middle\" font-size=\"11\">\(Self.number(t))</text>\n"
            t += step
        }
        out += "<text x=\"\(Self.f(left + plotWidth))\" y=\"\(Self.f(plotsBottom + 30))\" text-anchor=\"end\" font-size=\"11\">seconds since the migration started"
        out += samples.isEmpty ? " (no progress sample: the job ended within one sampling interval)" : " (\(samples.count) samples)"
        out += "</text>\n</svg>"
        return out
    }

    static func f(_ v: Double) -> String { String(format: "%.1f", v.isFinite ? v : 0) }

    static func number(_ v: Double) -> String {
        v == v.rounded() && abs(v) < 1e12 ? String(Int(v)) : String(format: "%.2g", v)
    }

    /// 1, 2 or 5 times a power of ten, at least `v`.
    static func niceStep(_ v: Double) -> Double {
        guard v > 0, v.isFinite else { return 1 }
        let p = pow(10, (log10(v)).rounded(.down))
        for m in [1.0, 2, 5, 10] where m * p >= v { return m * p }
        return 10 * p
    }

    static func niceCeiling(_ v: Double) -> Double { niceStep(v / 4) * 4 }

    /// Text for XML: bounded, control characters shown escaped (`SafeText`), markup escaped.
    static func escape(_ s: String) -> String {
        var o = ""
        for ch in SafeText.line(s, limit: 300).unicodeScalars {
            switch ch {
            case "&": o += "&amp;"
            case "<": o += "&lt;"
            case ">": o += "&gt;"
            case "\"": o += "&quot;"
            default: o.unicodeScalars.append(ch)
            }
        }
        return o
    }
}
