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
