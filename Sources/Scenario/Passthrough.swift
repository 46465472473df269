import Yams

/// A passthrough device a scenario needs, by kind, never by address: the runner allocates
/// matching devices from the lab file's pools on both hosts. (Stub: issue 4.)
public struct PassthroughRequirement: Sendable, Equatable, Codable {
    public init() {}
}

extension NodeReader {
    /// `guest.passthrough`. (Stub: issue 4.)
    mutating func passthrough(_ node: Node) -> [PassthroughRequirement] {
        error(node, "`passthrough` is not supported yet")
        return []
    }
}
