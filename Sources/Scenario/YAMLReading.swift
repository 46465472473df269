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

    /// A diagnostic for what Yams refused, in one line at the place it names. `text` is the
    /// file's text, to find a duplicated key's second place (Yams names the first).
    public func yamlDiagnostic(_ error: Error, text: String = "") -> Diagnostic {
        if let y = error as? YamlError {
            switch y {
            case let .duplicatedKeysInMapping(duplicates, context):
                let key = duplicates.first ?? "?"
                let first = "\(context.mark.line):\(context.mark.column)"
                let at = Self.secondOccurrence(of: key, after: context.mark, in: text) ?? (context.mark.line, context.mark.column)
                return Diagnostic(location: SourceLocation(file: file, line: at.line, column: at.column),
                                  message: "key `\(Self.visible(key))` appears twice in one mapping (first at \(first)); remove one of them")
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

    /// Where key `key` is written again after its first place `mark` (a block key starts its
    /// line at the first one's column; a flow key follows `{` or `,`). nil when not found.
    static func secondOccurrence(of key: String, after mark: Mark, in text: String) -> (line: Int, column: Int)? {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard mark.line >= 1, mark.line <= lines.count else { return nil }
        let k = Array(key)
        guard !k.isEmpty else { return nil }
        let delimiters: Set<Character> = ["{", ",", "-"]
        let quotes: Set<Character> = [" ", "\"", "'"]
        for (i, line) in lines.enumerated().dropFirst(mark.line - 1) {
            let chars = Array(line)
            var col = i == mark.line - 1 ? mark.column : 0
            while col + k.count <= chars.count {
                defer { col += 1 }
                guard Array(chars[col..<(col + k.count)]) == k else { continue }
                let before: Character? = chars[..<col].last { !quotes.contains($0) }
                let after: Character? = chars[(col + k.count)...].first { !quotes.contains($0) }
                guard after == ":" else { continue }
                if before == nil || delimiters.contains(before!) { return (i + 1, col + 1) }
            }
        }
        return nil
    }

    /// Text from a file as it can be shown on one line (`SafeText.line`).
    public static func visible(_ s: String) -> String { SafeText.line(s) }

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
        case .scalar(let s): return s.string.isEmpty ? "an empty value" : "`\(SafeText.line(s.string, limit: 80))`"
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
        guard case let .scalar(s) = node, s.style == .plain || s.style == .any, let v = CoreNumber.int(s.string) else {
            let plain = node.scalar.map { $0.style == .plain || $0.style == .any } ?? false
            error(node, "`\(key)` must be a whole number in decimal; " + (plain && node.int != nil ? CoreNumber.why(node.scalar?.string ?? "") : "found \(describe(node))"))
            return nil
        }
        guard range.contains(v) else {
            error(node, "`\(key)` must be between \(range.lowerBound) and \(range.upperBound); found \(v)")
            return nil
        }
        return v
    }

    public mutating func double(_ node: Node, key: String, range: ClosedRange<Double>) -> Double? {
        guard case let .scalar(s) = node, s.style == .plain || s.style == .any, let v = CoreNumber.double(s.string) else {
            let plain = node.scalar.map { $0.style == .plain || $0.style == .any } ?? false
            error(node, "`\(key)` must be a decimal number; " + (plain && (node.float ?? node.int.map(Double.init)) != nil ? CoreNumber.why(node.scalar?.string ?? "") : "found \(describe(node))"))
            return nil
        }
        guard range.contains(v) else {
            error(node, "`\(key)` must be between \(range.lowerBound) and \(range.upperBound); found \(v)")
            return nil
        }
        return v
    }

    public mutating func bool(_ node: Node, key: String) -> Bool? {
        // YAML 1.2 core: true and false (YAML 1.1's yes, no, on, off mean text to other tools).
        guard case let .scalar(s) = node, s.style == .plain || s.style == .any, ["true", "True", "TRUE", "false", "False", "FALSE"].contains(s.string) else {
            error(node, "`\(key)` must be true or false; found \(describe(node))")
            return nil
        }
        return s.string.lowercased() == "true"
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

/// How many nodes `node` has with every alias expanded, counted up to `limit + 1` only: seven
/// lines of anchors and aliases can stand for billions of nodes, and every walk over the tree
/// (the readers') pays for each. A file above the limit is refused before anything walks it.
public func expandedNodeCount(_ node: Node, limit: Int) -> Int {
    var count = 0
    var stack = [node]
    while let n = stack.popLast() {
        count += 1
        if count > limit { return count }
        switch n {
        case let .mapping(m): for (k, v) in m { stack.append(k); stack.append(v) }
        case let .sequence(s): stack.append(contentsOf: s)
        case .scalar, .alias: break
        }
    }
    return count
}

/// YAML 1.2 core schema numbers (what every YAML 1.2 reader agrees on). YAML 1.1 forms that
/// Yams also reads (`010` octal, `4:16` base 60, `0b1000000`, `1_000`) mean other numbers to
/// other tools, so they are refused rather than guessed.
enum CoreNumber {
    static func int(_ text: String) -> Int? {
        guard text.wholeMatch(of: #/[-+]?(0|[1-9][0-9]*)/#) != nil else { return nil }
        return Int(text.hasPrefix("+") ? String(text.dropFirst()) : text)
    }

    static func double(_ text: String) -> Double? {
        guard text.wholeMatch(of: #/[-+]?((0|[1-9][0-9]*)(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?/#) != nil else { return nil }
        return Double(text).flatMap { $0.isFinite ? $0 : nil }
    }

    /// Why `text` is not a core number, when it is a YAML 1.1 form.
    static func why(_ text: String) -> String {
        if text.contains(":") { return "`\(text)` is a YAML 1.1 base-60 number" }
        if text.contains("_") { return "`\(text)` has `_` (a YAML 1.1 digit separator)" }
        if text.lowercased().hasPrefix("0b") || text.lowercased().hasPrefix("0x") || text.lowercased().hasPrefix("0o") { return "`\(text)` is not a decimal number" }
        if text.wholeMatch(of: #/[-+]?0[0-9]+(\.[0-9]*)?/#) != nil { return "`\(text)` has a leading zero (YAML 1.1 reads it as octal)" }
        return "found `\(text)`"
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
