import Foundation

/// Which scenarios a run or a listing takes: `--tags EXPR` and `-k PATTERN`.
///
/// A tag expression is a comma-separated list of terms that must all hold; a term is a tag, a
/// tag prefixed with `!` (the scenario must not have it), or alternatives joined by `|`:
/// `faults,!slow` is "tagged faults and not slow", `vfio|hardware` "tagged vfio or hardware".
/// `-k` patterns match a scenario's name case-insensitively as substrings; several are
/// alternatives.
public struct ScenarioSelection: Sendable, Equatable {
    /// One term: any of `anyOf` present, or `tag` absent.
    public enum Term: Sendable, Equatable {
        case anyOf([String])
        case not(String)

        func holds(for tags: Set<String>) -> Bool {
            switch self {
            case let .anyOf(names): names.contains { tags.contains($0) }
            case let .not(name): !tags.contains(name)
            }
        }
    }

    public var terms: [Term]
    public var namePatterns: [String]

    public struct SelectionError: Error, CustomStringConvertible, Equatable {
        public let description: String
    }

    /// Everything.
    public init() {
        terms = []
        namePatterns = []
    }

    public init(tags expression: String?, namePatterns: [String] = []) throws(SelectionError) {
        self.namePatterns = namePatterns.map { $0.lowercased() }
        terms = []
        guard let expression else { return }
        let tag = /[A-Za-z0-9][A-Za-z0-9_.-]*/
        for raw in expression.split(separator: ",", omittingEmptySubsequences: false) {
            let text = raw.trimmingCharacters(in: .whitespaces)
            if text.hasPrefix("!") {
                let name = String(text.dropFirst())
                guard name.wholeMatch(of: tag) != nil else {
                    throw SelectionError(description: "--tags `\(expression)`: `\(text)` is not `!TAG`")
                }
                terms.append(.not(name))
            } else {
                let names = text.split(separator: "|", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
                guard names.allSatisfy({ $0.wholeMatch(of: tag) != nil }) else {
                    throw SelectionError(description: "--tags `\(expression)`: `\(text)` is not a tag, `!TAG` or `TAG|TAG` (terms are separated by commas)")
                }
                terms.append(.anyOf(names))
            }
        }
    }

    public func selects(name: String, tags: [String]) -> Bool {
        let set = Set(tags)
        let lower = name.lowercased()
        return terms.allSatisfy { $0.holds(for: set) }
            && (namePatterns.isEmpty || namePatterns.contains { lower.contains($0) })
    }

    public func selects(_ s: Scenario) -> Bool { selects(name: s.name, tags: s.tags) }
}

/// `--shard K/N`: the share of a selection one of N CI jobs runs. A scenario's shard is a hash
/// of its name (FNV-1a, 64 bits), so it stays where it is when files are added or removed,
/// and every job computes the same split without talking to the others; the N shards of a
/// selection are disjoint and together are all of it.
public struct Shard: Sendable, Equatable, CustomStringConvertible {
    /// 1...count.
    public let index: Int
    public let count: Int

    /// Parses "K/N" with 1 <= K <= N.
    public init(_ text: String) throws(ScenarioSelection.SelectionError) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let k = Int(parts[0]), let n = Int(parts[1]), n >= 1, n <= 10_000, k >= 1, k <= n else {
            throw ScenarioSelection.SelectionError(description: "--shard \(text): write K/N with 1 <= K <= N (e.g. 2/4: the second of four shares)")
        }
        index = k
        count = n
    }

    public init(index: Int, count: Int) {
        precondition(count >= 1 && (1...count).contains(index))
        self.index = index
        self.count = count
    }

    public var description: String { "\(index)/\(count)" }

    /// Whether the scenario (a matrix combination by its own name) is in this shard.
    public func takes(name: String) -> Bool {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in name.utf8 {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01b3
        }
        return Int(h % UInt64(count)) == index - 1
    }
}
