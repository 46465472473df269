import Yams

/// Reading YAML with source positions: helpers shared by every miglab input file (scenarios,
/// lab files) so that unknown keys, wrong types and bad values are reported the same way,
/// at file:line:column. Yams' Codable decoder drops source positions, hence the node walk.
public protocol YAMLNodeReading {
    var file: String { get }
    var diagnostics: [Diagnostic] { get set }
}

extension YAMLNodeReading {
    public func location(_ node: Node) -> SourceLocation {
        let m = node.mark
        return SourceLocation(file: file, line: m?.line ?? 0, column: m?.column ?? 0)
    }

    public mutating func error(_ node: Node, _ message: String) {
        diagnostics.append(Diagnostic(location: location(node), message: message))
    }

    public func yamlDiagnostic(_ error: Error) -> Diagnostic {
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
    public mutating func mapping(_ node: Node, context: String, allowed: [String], required: [String] = []) -> [String: Node]? {
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

    /// `mapping` with the keys of a format object (its title names it in messages);
    /// `requireKeys: false` leaves missing keys to the caller's own message.
    mutating func mapping(_ node: Node, context: String? = nil, format: FormatObject, requireKeys: Bool = true) -> [String: Node]? {
        mapping(node, context: context ?? format.title, allowed: format.allowed, required: requireKeys ? format.required : [])
    }

    public func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let s): return s.string.isEmpty ? "an empty value" : "`\(s.string)`"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    public mutating func string(_ node: Node, key: String) -> String? {
        guard case let .scalar(s) = node, !s.string.isEmpty else {
            error(node, "`\(key)` must be text; found \(describe(node))")
            return nil
        }
        return s.string
    }

    public mutating func int(_ node: Node, key: String, range: ClosedRange<Int>) -> Int? {
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

    public mutating func double(_ node: Node, key: String, range: ClosedRange<Double>) -> Double? {
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

    public mutating func bool(_ node: Node, key: String) -> Bool? {
        guard case .scalar = node, let v = node.bool else {
            error(node, "`\(key)` must be true or false; found \(describe(node))")
            return nil
        }
        return v
    }

    public mutating func choice<T: RawRepresentable & CaseIterable>(_ node: Node, key: String, as: T.Type) -> T? where T.RawValue == String {
        guard let s = string(node, key: key) else { return nil }
        guard let v = T(rawValue: s) else {
            error(node, "`\(key)` must be one of \(T.allCases.map(\.rawValue).joined(separator: ", ")); found `\(s)`")
            return nil
        }
        return v
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
