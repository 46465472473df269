import Foundation
import Yams

/// One problem in a scenario file, located at file:line:column.
public struct Diagnostic: Error, Sendable, Equatable, CustomStringConvertible {
    public var location: SourceLocation
    public var message: String
    public init(location: SourceLocation, message: String) {
        self.location = location
        self.message = message
    }
    public var description: String { "\(location): error: \(message)" }
}

/// All problems of one file; parsing goes on after the first so that a user sees them all.
public struct ScenarioErrors: Error, Sendable, CustomStringConvertible {
    public var diagnostics: [Diagnostic]
    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}

/// Reads scenario files (format v1) from YAML with Yams, keeping every node's line and column
/// so that unknown keys, wrong types and bad values are reported where they are written.
/// Yams' Codable decoder drops source positions, hence this walk over Yams' node tree.
public struct ScenarioParser {
    public static let formatVersion = 1

    public init() {}

    public func parse(file path: String) throws(ScenarioErrors) -> Scenario {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ScenarioErrors(diagnostics: [Diagnostic(location: SourceLocation(file: path, line: 0, column: 0),
                                                          message: "cannot read the file (does it exist, is it readable?)")])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ScenarioErrors(diagnostics: [Diagnostic(location: SourceLocation(file: path, line: 1, column: 1),
                                                          message: "the file is not UTF-8 text")])
        }
        return try parse(text, file: path)
    }

    public func parse(_ text: String, file: String) throws(ScenarioErrors) -> Scenario {
        var reader = NodeReader(file: file)
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: text) else {
                throw ScenarioErrors(diagnostics: [Diagnostic(location: SourceLocation(file: file, line: 1, column: 1),
                                                              message: "the file is empty; a scenario needs at least `name` and `steps`")])
            }
            root = node
        } catch let e as ScenarioErrors {
            throw e
        } catch {
            throw ScenarioErrors(diagnostics: [reader.yamlDiagnostic(error)])
        }
        let scenario = reader.scenario(root)
        if !reader.diagnostics.isEmpty || scenario == nil {
            throw ScenarioErrors(diagnostics: reader.diagnostics)
        }
        return scenario!
    }
}

/// Walks the node tree, collecting diagnostics.
struct NodeReader {
    let file: String
    var diagnostics: [Diagnostic] = []

    func location(_ node: Node) -> SourceLocation {
        let m = node.mark
        return SourceLocation(file: file, line: m?.line ?? 0, column: m?.column ?? 0)
    }

    mutating func error(_ node: Node, _ message: String) {
        diagnostics.append(Diagnostic(location: location(node), message: message))
    }

    func yamlDiagnostic(_ error: Error) -> Diagnostic {
        if let y = error as? YamlError {
            switch y {
            case let .scanner(context, problem, mark, _), let .parser(context, problem, mark, _), let .composer(context, problem, mark, _):
                let ctx = context.map { "\($0.text) " } ?? ""
                return Diagnostic(location: SourceLocation(file: file, line: mark.line, column: mark.column),
                                  message: "YAML syntax: \(ctx)\(problem)")
            case let .reader(problem, offset, _, _):
                return Diagnostic(location: SourceLocation(file: file, line: 1, column: 1),
                                  message: "YAML: \(problem) at byte \(offset ?? 0)")
            default: break
            }
        }
        return Diagnostic(location: SourceLocation(file: file, line: 1, column: 1), message: "YAML: \(error)")
    }

    /// The mapping's entries after checking that it is a mapping with only `allowed` keys and
    /// every `required` key. Unknown keys are errors (a typo must not be silently ignored).
    mutating func mapping(_ node: Node, context: String, allowed: [String], required: [String] = []) -> [String: Node]? {
        guard let map = node.mapping else {
            error(node, "\(context) must be a mapping with keys \(allowed.joined(separator: ", ")); found \(describe(node))")
            return nil
        }
        var out: [String: Node] = [:]
        for (k, v) in map {
            guard let key = k.scalar?.string else {
                error(k, "\(context): keys must be plain names")
                continue
            }
            if !allowed.contains(key) {
                let hint = allowed.min { editDistance($0, key) < editDistance($1, key) }.flatMap { editDistance($0, key) <= 2 ? " (did you mean `\($0)`?)" : nil } ?? ""
                error(k, "unknown key `\(key)` in \(context)\(hint); allowed: \(allowed.joined(separator: ", "))")
                continue
            }
            if out[key] != nil { error(k, "key `\(key)` appears twice in \(context)") }
            out[key] = v
        }
        for r in required where out[r] == nil {
            error(node, "\(context) needs the key `\(r)`")
        }
        return out
    }

    func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let s): return s.string.isEmpty ? "an empty value" : "`\(s.string)`"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    mutating func string(_ node: Node, key: String) -> String? {
        guard case let .scalar(s) = node, !s.string.isEmpty else {
            error(node, "`\(key)` must be text; found \(describe(node))")
            return nil
        }
        return s.string
    }

    mutating func int(_ node: Node, key: String, range: ClosedRange<Int>) -> Int? {
        guard case .scalar = node, let v = node.int else {
            error(node, "`\(key)` must be a whole number; found \(describe(node))")
            return nil
        }
        guard range.contains(v) else {
            error(node, "`\(key)` must be between \(range.lowerBound) and \(range.upperBound); found \(v)")
            return nil
        }
        return v
    }

    mutating func double(_ node: Node, key: String, range: ClosedRange<Double>) -> Double? {
        guard case .scalar = node, let v = node.float ?? node.int.map(Double.init) else {
            error(node, "`\(key)` must be a number; found \(describe(node))")
            return nil
        }
        guard range.contains(v) else {
            error(node, "`\(key)` must be between \(range.lowerBound) and \(range.upperBound); found \(v)")
            return nil
        }
        return v
    }

    mutating func bool(_ node: Node, key: String) -> Bool? {
        guard case .scalar = node, let v = node.bool else {
            error(node, "`\(key)` must be true or false; found \(describe(node))")
            return nil
        }
        return v
    }

    mutating func choice<T: RawRepresentable & CaseIterable>(_ node: Node, key: String, as: T.Type) -> T? where T.RawValue == String {
        guard let s = string(node, key: key) else { return nil }
        guard let v = T(rawValue: s) else {
            error(node, "`\(key)` must be one of \(T.allCases.map(\.rawValue).joined(separator: ", ")); found `\(s)`")
            return nil
        }
        return v
    }

    mutating func host(_ node: Node, key: String) -> String? {
        guard let s = string(node, key: key) else { return nil }
        guard s.wholeMatch(of: #/[a-z][a-z0-9_-]{0,31}/#) != nil else {
            error(node, "`\(key)` must name a host (lower-case letters, digits, - and _, like `a` or `b`); found `\(s)`")
            return nil
        }
        return s
    }

    // MARK: the format

    mutating func scenario(_ root: Node) -> Scenario? {
        guard let m = mapping(root, context: "the scenario", allowed: ["version", "name", "description", "tags", "guest", "steps", "expect"],
                              required: ["name", "steps"]) else { return nil }
        if let v = m["version"], let n = int(v, key: "version", range: 1...1000), n != ScenarioParser.formatVersion {
            error(v, "this miglab reads scenario format version \(ScenarioParser.formatVersion); the file says \(n)")
        }
        let name = m["name"].flatMap { string($0, key: "name") }
        if let n = m["name"], let s = name, s.wholeMatch(of: #/[A-Za-z0-9][A-Za-z0-9._-]{0,63}/#) == nil {
            error(n, "`name` may use letters, digits, '.', '_' and '-' (at most 64); found `\(s)`")
        }
        let description = m["description"].flatMap { string($0, key: "description") } ?? ""
        var tags: [String] = []
        if let t = m["tags"] {
            if case let .sequence(seq) = t {
                tags = seq.compactMap { string($0, key: "tags[]") }
            } else {
                error(t, "`tags` must be a list of words, like [smoke, nightly]; found \(describe(t))")
            }
        }
        var guest = GuestSpec()
        if let g = m["guest"], let gm = mapping(g, context: "`guest`", allowed: ["memory_mib", "vcpus", "workload_mib"]) {
            if let v = gm["memory_mib"], let n = int(v, key: "memory_mib", range: 64...65536) { guest.memoryMiB = n }
            if let v = gm["vcpus"], let n = int(v, key: "vcpus", range: 1...64) { guest.vcpus = n }
            if let v = gm["workload_mib"], let n = int(v, key: "workload_mib", range: 0...65536) { guest.workloadMiB = n }
            if guest.workloadMiB > 0 && guest.workloadMiB + 96 > guest.memoryMiB {
                error(g, "`workload_mib` (\(guest.workloadMiB)) must leave at least 96 MiB of `memory_mib` (\(guest.memoryMiB)) to the guest kernel")
            }
        }
        var steps: [Step] = []
        if let s = m["steps"] { steps = stepList(s, context: "`steps`") }
        var expect = Expectations()
        if let e = m["expect"], let em = mapping(e, context: "`expect`", allowed: ["migrations", "memory", "console"]) {
            if let v = em["migrations"], let c = choice(v, key: "migrations", as: Expectations.MigrationOutcome.self) { expect.migrations = c }
            if let v = em["memory"], let c = choice(v, key: "memory", as: Expectations.MemoryVerdict.self) { expect.memory = c }
            if let v = em["console"], let c = choice(v, key: "console", as: Expectations.ConsoleVerdict.self) { expect.console = c }
        }
        let scenario = Scenario(name: name ?? "", description: description, tags: tags, guest: guest, steps: steps,
                                expect: expect, file: file)
        checkFlow(scenario, root: m["steps"] ?? root)
        return name == nil ? nil : scenario
    }

    mutating func stepList(_ node: Node, context: String) -> [Step] {
        guard case let .sequence(seq) = node else {
            error(node, "\(context) must be a list of steps (`- boot: {on: a}`, `- migrate: {from: a, to: b}`, `- verify: [memory, console]`); found \(describe(node))")
            return []
        }
        if seq.isEmpty { error(node, "\(context) is empty") }
        return seq.compactMap { step($0) }
    }

    static let stepKinds = ["boot", "migrate", "verify", "repeat"]

    mutating func step(_ node: Node) -> Step? {
        guard let map = node.mapping, map.count == 1, let (k, v) = map.first.map({ ($0.key, $0.value) }) else {
            error(node, "a step is a mapping with one key, the step kind (\(Self.stepKinds.joined(separator: ", "))); found \(describe(node))")
            return nil
        }
        guard let kind = k.scalar?.string, Self.stepKinds.contains(kind) else {
            error(k, "unknown step kind \(describe(k)); known: \(Self.stepKinds.joined(separator: ", "))")
            return nil
        }
        let loc = location(k)
        switch kind {
        case "boot":
            // `boot: a` or `boot: {on: a, timeout_s: 120}`
            if case .scalar = v { return host(v, key: "boot").map { Step(.boot(.init(host: $0)), location: loc) } }
            guard let m = mapping(v, context: "`boot`", allowed: ["on", "timeout_s"], required: ["on"]) else { return nil }
            guard let h = m["on"].flatMap({ host($0, key: "on") }) else { return nil }
            return Step(.boot(.init(host: h)), timeoutSeconds: timeout(m), location: loc)
        case "migrate":
            guard let m = mapping(v, context: "`migrate`", allowed: ["from", "to", "bandwidth_mib_s", "max_downtime_ms", "suspend", "timeout_s"],
                                  required: ["from", "to"]) else { return nil }
            let from = m["from"].flatMap { host($0, key: "from") }
            let to = m["to"].flatMap { host($0, key: "to") }
            var mig = Step.Migrate(from: from ?? "", to: to ?? "")
            if let b = m["bandwidth_mib_s"] { mig.bandwidthMiBps = int(b, key: "bandwidth_mib_s", range: 0...1_000_000) }
            if let d = m["max_downtime_ms"] { mig.maxDowntimeMs = int(d, key: "max_downtime_ms", range: 1...3_600_000) }
            if let s = m["suspend"] { mig.suspend = bool(s, key: "suspend") ?? false }
            if let f = from, let t = to, f == t { error(v, "`migrate` needs two different hosts; from and to are both `\(f)`") }
            guard from != nil, to != nil else { return nil }
            return Step(.migrate(mig), timeoutSeconds: timeout(m), location: loc)
        case "verify":
            // `verify: [memory, console]`, `verify: memory` or `verify: {memory: true, console: false}`
            var ver = Step.Verify(memory: false, console: false)
            var stepTimeout: Double?
            let names: [Node]
            switch v {
            case .scalar: names = [v]
            case let .sequence(s): names = Array(s)
            default:
                guard let m = mapping(v, context: "`verify`", allowed: ["memory", "console", "timeout_s"]) else { return nil }
                ver.memory = m["memory"].flatMap { bool($0, key: "memory") } ?? false
                ver.console = m["console"].flatMap { bool($0, key: "console") } ?? false
                stepTimeout = timeout(m)
                names = []
            }
            for n in names {
                switch n.scalar?.string {
                case "memory": ver.memory = true
                case "console": ver.console = true
                default: error(n, "`verify` checks `memory` and `console`; found \(describe(n))")
                }
            }
            if !ver.memory && !ver.console { error(v, "`verify` checks nothing; name `memory`, `console` or both") }
            return Step(.verify(ver), timeoutSeconds: stepTimeout, location: loc)
        default: // repeat
            guard let m = mapping(v, context: "`repeat`", allowed: ["times", "steps"], required: ["times", "steps"]) else { return nil }
            let times = m["times"].flatMap { int($0, key: "times", range: 1...10_000) }
            let inner = m["steps"].map { stepList($0, context: "`repeat.steps`") } ?? []
            guard let times else { return nil }
            return Step(.repeat(.init(times: times, steps: inner)), location: loc)
        }
    }

    mutating func timeout(_ m: [String: Node]) -> Double? {
        m["timeout_s"].flatMap { double($0, key: "timeout_s", range: 0.1...86_400) }
    }

    /// Checks that the steps make sense in order: boot before anything else, a migration
    /// starts where the guest is.
    mutating func checkFlow(_ scenario: Scenario, root: Node) {
        var at: String?
        for step in scenario.flattenedSteps {
            let loc = step.location ?? location(root)
            func flowError(_ msg: String) {
                if !diagnostics.contains(where: { $0.location == loc && $0.message == msg }) {
                    diagnostics.append(Diagnostic(location: loc, message: msg))
                }
            }
            switch step.action {
            case let .boot(b):
                if let h = at { flowError("`boot` on \(b.host), but the guest already runs on \(h)") }
                at = b.host
            case let .migrate(m):
                guard let h = at else { flowError("`migrate` before `boot`: boot the guest first"); continue }
                if h != m.from { flowError("`migrate` from \(m.from), but the guest is on \(h) at this point") }
                if scenario.expect.migrations == .completed { at = m.to }
            case .verify:
                if at == nil { flowError("`verify` before `boot`: boot the guest first") }
                if case let .verify(v) = step.action, v.memory, scenario.guest.workloadMiB == 0 {
                    flowError("`verify: memory` needs the memory workload; `guest.workload_mib` is 0")
                }
            case .repeat: break
            }
        }
    }
}

func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    var prev = Array(0...b.count)
    for i in 1...max(a.count, 1) where !a.isEmpty {
        var cur = [i] + Array(repeating: 0, count: b.count)
        for j in 1...max(b.count, 1) where !b.isEmpty {
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        prev = cur
    }
    return a.isEmpty ? b.count : prev[b.count]
}
