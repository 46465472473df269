/// What a scenario's steps and faults need of the lab's hosts, checked against what a lab
/// offers before anything boots: by `miglab validate --lab` from the lab file, and by the runner
/// from the hosts' actions. One function for both, so they cannot disagree.
extension Scenario {
    /// One need of one step: a capability of a host.
    public struct HostNeed: Sendable, Equatable {
        public var what: String
        public var host: String
        public var capability: HostCapability
        public var location: SourceLocation?
    }

    /// Every host a step sends the guest to.
    public var visitedHosts: [String] {
        var out: [String] = []
        for step in flattenedSteps {
            for h in step.action.hosts where !out.contains(h) { out.append(h) }
        }
        return out
    }

    /// Each step's needs (`StepKind.needs`): a fault's on both hosts of its migration,
    /// `corrupt_stream`'s on the destination, a fault used as a step on every host the guest
    /// may run on.
    public var stepNeeds: [HostNeed] {
        let hosts = visitedHosts
        return flattenedSteps.flatMap { $0.action.needs(visitedHosts: hosts, at: $0.location) }
    }

    /// The needs a lab does not meet, one message each, at the step or fault that has it.
    /// `offers(host, capability)` is nil for a host the lab does not have (a step on it fails
    /// on its own).
    public func unmetNeeds(lab: String, offers: (String, HostCapability) -> Bool?) -> [Diagnostic] {
        var out: [Diagnostic] = []
        for n in stepNeeds where offers(n.host, n.capability) == false {
            let hint = switch n.capability {
            case .processControl: "give the host `ssh:` in the lab file (the built-in lab and the virtual VFIO hosts offer it)"
            case .linkControl: "give the host `ssh:` and `link: {interface: ...}` in the lab file (the built-in lab offers it)"
            case .streamProxy: "give the lab file `stream_proxy: {listen: ADDRESS}` (an address of this machine the hosts reach) and the host a `migration_address` (the built-in lab and the virtual VFIO hosts run a proxy of their own)"
            case .guestResetsReachDevices: "run it on hosts whose devices take the guest's resets"
            }
            let d = Diagnostic(location: n.location ?? SourceLocation(file: file, line: 0, column: 0),
                               message: "`\(n.what)` needs host-side control of host \(n.host) (\(n.capability)), which \(lab) does not offer: \(hint)")
            if !out.contains(d) { out.append(d) }
        }
        return out
    }
}
