import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import VFIO

/// The state machine model against the kernel's own rules, computed independently.
struct MigrationFSMTests {
    static let combinations = MigrationCapabilities.definedCombinations

    /// The uAPI's rule: "The path cannot have saving group states as interior arcs, only
    /// starting/end states". The saving group shares one session, so a path may move inside the
    /// group it starts in (PRE_COPY -> PRE_COPY_P2P -> STOP_COPY); once outside, a saving state
    /// can only be the last one.
    static func savingStatesOnlyAtTheEnds(_ states: [MigrationState]) -> Bool {
        states.indices.dropFirst().dropLast().allSatisfy { index in
            !states[index].isSaving || states[...index].allSatisfy(\.isSaving)
        }
    }

    /// Breadth-first shortest path over the arcs under that rule, without the kernel's table.
    static func shortestPathLength(from: MigrationState, to: MigrationState, arcs: Set<MigrationArc>) -> Int? {
        if from == to { return 0 }
        var frontier: [[MigrationState]] = [[from]]
        var seen: Set<MigrationState> = [from]
        while !frontier.isEmpty {
            var next: [[MigrationState]] = []
            for path in frontier {
                for arc in arcs where arc.from == path.last && !seen.contains(arc.to) {
                    let extended = path + [arc.to]
                    if arc.to == to { return extended.count - 1 }
                    guard savingStatesOnlyAtTheEnds(extended + [to]) else { continue }
                    seen.insert(arc.to)
                    next.append(extended)
                }
            }
            frontier = next
        }
        return nil
    }

    @Test(arguments: combinations)
    func everyStepOfEveryPathIsAnArcOfTheCombination(_ capabilities: MigrationCapabilities) {
        let arcs = MigrationFSM.arcs(for: capabilities)
        var used = Set<MigrationArc>()
        for from in MigrationState.allCases {
            for to in MigrationState.allCases {
                guard let transition = MigrationFSM.transition(from: from, to: to, capabilities: capabilities) else { continue }
                for arc in transition.arcs {
                    #expect(arcs.contains(arc), "\(from) -> \(to) steps over \(arc), not an arc of \(capabilities)")
                    used.insert(arc)
                }
                #expect(Self.savingStatesOnlyAtTheEnds([from] + transition.path), "\(from) -> \(to) passes a saving state: \(transition.path)")
            }
        }
        #expect(used == arcs, "arcs never used: \(arcs.subtracting(used))")
    }

    @Test(arguments: combinations)
    func pathsAreShortest(_ capabilities: MigrationCapabilities) {
        let arcs = MigrationFSM.arcs(for: capabilities)
        for from in MigrationState.allCases where capabilities.supports(from) {
            for to in MigrationState.allCases where capabilities.supports(to) && from != to {
                let transition = MigrationFSM.transition(from: from, to: to, capabilities: capabilities)
                let shortest = Self.shortestPathLength(from: from, to: to, arcs: arcs)
                if from == .stopCopy && (to == .preCopy || to == .preCopyP2P) {
                    #expect(transition == nil, "STOP_COPY -> \(to) must be refused")
                } else {
                    #expect(transition?.arcs.count == shortest, "\(from) -> \(to): \(transition?.arcs ?? []) vs shortest \(shortest ?? -1)")
                }
            }
        }
    }

    @Test(arguments: combinations)
    func refusals(_ capabilities: MigrationCapabilities) {
        for state in MigrationState.allCases where state != .error {
            #expect(MigrationFSM.transition(from: state, to: .error, capabilities: capabilities) == nil, "\(state) -> ERROR")
            #expect(MigrationFSM.transition(from: .error, to: state, capabilities: capabilities) == nil, "ERROR -> \(state)")
            if !capabilities.supports(state) {
                #expect(MigrationFSM.transition(from: .running, to: state, capabilities: capabilities) == nil, "RUNNING -> unsupported \(state)")
            }
        }
    }

    @Test func sameStateIsANoOpLikeTheDriversLoop() {
        for state in MigrationState.allCases {
            let transition = MigrationFSM.transition(from: state, to: state, capabilities: [.stopCopy, .p2p, .preCopy])
            #expect(transition?.path == [])
            #expect(transition?.opensDataStream == false)
        }
    }

    /// The combination paths listed in the comment of vfio_mig_get_next_state() (all features).
    @Test(arguments: [
        [MigrationState.preCopy, .preCopyP2P, .stopCopy],
        [.preCopy, .running, .runningP2P, .stop, .resuming],
        [.preCopyP2P, .runningP2P, .running],
        [.resuming, .stop, .runningP2P, .running, .preCopy],
        [.resuming, .stop, .stopCopy],
        [.running, .runningP2P, .stop, .stopCopy],
        [.runningP2P, .running, .preCopy],
        [.stop, .runningP2P, .preCopyP2P],
        [.stopCopy, .stop, .runningP2P, .running],
    ])
    func kernelCommentPaths(_ path: [MigrationState]) {
        let transition = MigrationFSM.transition(from: path[0], to: path[path.count - 1], capabilities: [.stopCopy, .p2p, .preCopy])
        #expect(transition.map { [$0.from] + $0.path } == path)
    }

    @Test func withoutP2PRunningAndStopAreAdjacent() {
        for capabilities: MigrationCapabilities in [[.stopCopy], [.stopCopy, .preCopy]] {
            #expect(MigrationFSM.transition(from: .running, to: .stop, capabilities: capabilities)?.path == [.stop])
            #expect(MigrationFSM.transition(from: .stop, to: .running, capabilities: capabilities)?.path == [.running])
        }
        #expect(MigrationFSM.transition(from: .preCopy, to: .stopCopy, capabilities: [.stopCopy, .preCopy])?.path == [.stopCopy])
    }

    @Test func dataStreamExactlyWhenASessionStarts() {
        let all: MigrationCapabilities = [.stopCopy, .p2p, .preCopy]
        let opening: [(MigrationState, MigrationState)] = [(.running, .stopCopy), (.resuming, .stopCopy), (.running, .preCopy), (.stop, .preCopyP2P), (.running, .resuming)]
        for (from, to) in opening {
            #expect(MigrationFSM.transition(from: from, to: to, capabilities: all)?.opensDataStream == true, "\(from) -> \(to)")
        }
        // The saving group shares one session: no new fd inside it.
        let continuing: [(MigrationState, MigrationState)] = [(.preCopy, .stopCopy), (.preCopy, .preCopyP2P), (.preCopyP2P, .stopCopy), (.stopCopy, .stop), (.resuming, .running)]
        for (from, to) in continuing {
            #expect(MigrationFSM.transition(from: from, to: to, capabilities: all)?.opensDataStream == false, "\(from) -> \(to)")
        }
    }

    @Test func capabilityNamesAndSlugs() {
        #expect(MigrationCapabilities([.stopCopy, .p2p, .preCopy]).description == "STOP_COPY|P2P|PRE_COPY")
        #expect(MigrationCapabilities([.stopCopy, .p2p, .preCopy]).slug == "stop-copy-p2p-pre-copy")
        #expect(MigrationCapabilities(rawValue: 1 | 1 << 7).description == "STOP_COPY|0x80")
        #expect(MigrationState.allCases.map(\.rawValue) == Array(0...7))
    }
}

/// The requests a real kernel does not return from (vfio_mig_get_next_state() loops from ERROR
/// to ERROR), which miglab never sends to a real device.
@Suite struct KernelLoopTests {
    @Test func onlyStopCopyToPreCopyHangsTheKernel() {
        var hanging: [String] = []
        for caps in MigrationCapabilities.definedCombinations {
            for from in MigrationState.allCases {
                for to in MigrationState.allCases where MigrationFSM.hangsKernel(from: from, to: to, capabilities: caps) {
                    hanging.append("\(caps.slug): \(from)->\(to)")
                }
            }
        }
        #expect(Set(hanging) == [
            "stop-copy-pre-copy: STOP_COPY->PRE_COPY",
            "stop-copy-p2p-pre-copy: STOP_COPY->PRE_COPY", "stop-copy-p2p-pre-copy: STOP_COPY->PRE_COPY_P2P",
        ], "\(hanging)")
        // The model of a conforming kernel still refuses them.
        #expect(MigrationFSM.transition(from: .stopCopy, to: .preCopy, capabilities: [.stopCopy, .preCopy]) == nil)
    }

    @Test func aHangingRequestIsNotARefusal() {
        let e = VFIOError.notSent("VFIO_DEVICE_FEATURE(SET, MIG_DEVICE_STATE) PRE_COPY", because: MigrationFSM.kernelLoopReason)
        #expect(e.wasNotSent && !VFIOError("x", errorNumber: ECANCELED).wasNotSent)
        #expect(e.description.contains("ECANCELED") && e.description.contains("vfio_mig_get_next_state"))
    }
}
