import Yams

/// A scenario's `matrix:`: named axes, each a list of values, and `exclude:` combinations. Every
/// other combination is a scenario of its own, named `name[axis=value,...]`, in which `${axis}`
/// in the guest, the steps and the expectations is replaced by the combination's value.
///
/// ```yaml
/// matrix:
///   bandwidth: [20, 100]
///   model: [virtio-net, e1000e]
/// exclude:
///   - {bandwidth: 20, model: e1000e}
/// ```
///
/// Expanded on Yams' node tree, before the scenario is read, so a value is read where it is
/// used exactly as if it were written there (`${bandwidth}` in `bandwidth_mib_s` is a number),
/// and an error names the place of the use and the combination.
struct ScenarioMatrix {
    struct Axis {
        let name: String
        let values: [Node]
    }

    /// At most this many combinations per file: a matrix is a plan, not a fuzzer.
    static let maxCombinations = 256
    /// Keys of the scenario that `${axis}` is replaced in.
    static let substitutedKeys: Set<String> = ["description", "guest", "steps", "expect"]

    let axes: [Axis]
    /// Excluded combinations: axis name to the value's text, each a partial combination.
    let excluded: [[String: String]]

    /// One combination: an index into each axis' values.
    struct Combination {
        let values: [(axis: String, value: Node)]

        /// `[bandwidth=20,model=e1000e]`
        var suffix: String {
            "[" + values.map { "\($0.axis)=\($0.value.scalar?.string ?? "?")" }.joined(separator: ",") + "]"
        }
    }

    /// Reads `matrix` and `exclude`; nil (with diagnostics) when they are wrong.
    static func read(matrix: Node, exclude: Node?, reader: inout NodeReader) -> ScenarioMatrix? {
        guard let pairs = matrix.mapping, !pairs.isEmpty else {
            reader.error(matrix, "`matrix` must be a mapping of axes to lists of values, like `bandwidth: [20, 100]`; found \(reader.describe(matrix))")
            return nil
        }
        var axes: [Axis] = []
        var ok = true
        for (k, v) in pairs {
            guard let name = k.scalar?.string, name.wholeMatch(of: #/[a-z][a-z0-9_]{0,31}/#) != nil else {
                reader.error(k, "a matrix axis is named with lower-case letters, digits and _ (it is used as `${name}`); found \(reader.describe(k))")
                ok = false
                continue
            }
            if axes.contains(where: { $0.name == name }) {
                reader.error(k, "axis `\(name)` appears twice in `matrix`")
                ok = false
            }
            guard case let .sequence(seq) = v, !seq.isEmpty else {
                reader.error(v, "axis `\(name)` must be a non-empty list of values, like [20, 100]; found \(reader.describe(v))")
                ok = false
                continue
            }
            var values: [Node] = []
            for value in seq {
                guard case .scalar = value else {
                    reader.error(value, "axis `\(name)`: each value must be a single value (a number or a word); found \(reader.describe(value))")
                    ok = false
                    continue
                }
                if values.contains(where: { $0.scalar?.string == value.scalar?.string }) {
                    reader.error(value, "axis `\(name)` lists `\(value.scalar?.string ?? "")` twice")
                    ok = false
                }
                values.append(value)
            }
            axes.append(Axis(name: name, values: values))
        }
        // Counted before anything is expanded: a product past the bound is refused at once.
        var count = 1
        for a in axes {
            let (product, overflow) = count.multipliedReportingOverflow(by: a.values.count)
            count = overflow ? Int.max : product
        }
        if count > maxCombinations {
            reader.error(matrix, "the matrix has \(count == Int.max ? "too many" : String(count)) combinations; at most \(maxCombinations) per file")
            ok = false
        }
        var excluded: [[String: String]] = []
        if let exclude {
            if case let .sequence(seq) = exclude {
                for entry in seq {
                    guard let m = entry.mapping, !m.isEmpty else {
                        reader.error(entry, "each `exclude` entry is a mapping of axes to values, like {bandwidth: 20, model: e1000e}; found \(reader.describe(entry))")
                        ok = false
                        continue
                    }
                    var combo: [String: String] = [:]
                    for (k, v) in m {
                        let name = k.scalar?.string ?? ""
                        guard let axis = axes.first(where: { $0.name == name }) else {
                            reader.error(k, "`exclude` names `\(name)`, which is not an axis; the axes: \(axes.map(\.name).joined(separator: ", "))")
                            ok = false
                            continue
                        }
                        let text = v.scalar?.string ?? ""
                        guard axis.values.contains(where: { $0.scalar?.string == text }) else {
                            reader.error(v, "`exclude`: `\(text)` is not a value of axis `\(name)` (\(axis.values.compactMap { $0.scalar?.string }.joined(separator: ", ")))")
                            ok = false
                            continue
                        }
                        combo[name] = text
                    }
                    excluded.append(combo)
                }
            } else {
                reader.error(exclude, "`exclude` must be a list of combinations, like [{bandwidth: 20, model: e1000e}]; found \(reader.describe(exclude))")
                ok = false
            }
        }
        return ok ? ScenarioMatrix(axes: axes, excluded: excluded) : nil
    }

    /// Every combination not excluded, the first axis varying slowest.
    var combinations: [Combination] {
        var out: [[(axis: String, value: Node)]] = [[]]
        for a in axes {
            out = out.flatMap { prefix in a.values.map { prefix + [(a.name, $0)] } }
        }
        return out.filter { combo in
            !excluded.contains { ex in ex.allSatisfy { k, v in combo.contains { $0.axis == k && $0.value.scalar?.string == v } } }
        }.map(Combination.init)
    }

    /// `root` with `${axis}` replaced in the substituted keys, `matrix` and `exclude` removed.
    /// An unknown `${name}` is an error at its place.
    static func expand(_ root: Node, with combo: Combination, axes: [String], reader: inout NodeReader) -> Node {
        guard let map = root.mapping else { return root }
        var pairs: [(Node, Node)] = []
        for (k, v) in map {
            let key = k.scalar?.string ?? ""
            if key == "matrix" || key == "exclude" { continue }
            pairs.append((k, substitutedKeys.contains(key) ? substitute(v, combo, axes: axes, reader: &reader) : v))
        }
        return .mapping(Node.Mapping(pairs, map.tag, map.style, map.mark))
    }

    static func substitute(_ node: Node, _ combo: Combination, axes: [String], reader: inout NodeReader) -> Node {
        switch node {
        case let .scalar(s):
            guard s.string.contains("${") else { return node }
            // The whole scalar is one reference: the value itself, read as if written here.
            if let ref = s.string.wholeMatch(of: #/\$\{([a-z][a-z0-9_]*)\}/#)?.1,
               let value = combo.values.first(where: { $0.axis == ref })?.value.scalar {
                return .scalar(Node.Scalar(value.string, value.tag, value.style, s.mark))
            }
            // Inside text: replaced as text.
            var text = s.string
            for match in s.string.matches(of: #/\$\{([^}]*)\}/#) {
                let name = String(match.1)
                guard let value = combo.values.first(where: { $0.axis == name })?.value.scalar?.string else {
                    reader.error(node, "`${\(name)}` is not an axis of the matrix (\(axes.joined(separator: ", ")))")
                    continue
                }
                text = text.replacingOccurrences(of: "${\(name)}", with: value)
            }
            return .scalar(Node.Scalar(text, .implicit, .plain, s.mark))
        case let .mapping(m):
            return .mapping(Node.Mapping(m.map { ($0.key, substitute($0.value, combo, axes: axes, reader: &reader)) }, m.tag, m.style, m.mark))
        case let .sequence(seq):
            return .sequence(Node.Sequence(seq.map { substitute($0, combo, axes: axes, reader: &reader) }, seq.tag, seq.style, seq.mark))
        case .alias:
            return node
        }
    }
}
