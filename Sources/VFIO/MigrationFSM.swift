/// The VFIO migration state machine as data: which arcs exist for each capability combination,
/// and how the kernel breaks a combination request into arcs.
///
/// Sources: the state machine comment above `enum vfio_device_mig_state` in
/// include/uapi/linux/vfio.h, and `vfio_mig_get_next_state()` in drivers/vfio/vfio_main.c, whose
/// tables `nextStateTable` and `MigrationCapabilities.supports(_:)` mirror entry for entry.
public enum MigrationFSM {
    /// The arcs a driver implements, by the capabilities they need and the ones whose presence
    /// replaces them (the list in the comment of `vfio_mig_get_next_state()`).
    static let arcTable: [(needs: MigrationCapabilities, unlessAlso: MigrationCapabilities, arcs: [MigrationArc])] = [
        ([.stopCopy], [], [
            MigrationArc(.stop, .stopCopy), MigrationArc(.stopCopy, .stop),
            MigrationArc(.stop, .resuming), MigrationArc(.resuming, .stop),
        ]),
        // "Without P2P ... the driver must implement RUNNING -> STOP, STOP -> RUNNING".
        ([.stopCopy], [.p2p], [MigrationArc(.running, .stop), MigrationArc(.stop, .running)]),
        ([.stopCopy, .p2p], [], [
            MigrationArc(.running, .runningP2P), MigrationArc(.runningP2P, .running),
            MigrationArc(.runningP2P, .stop), MigrationArc(.stop, .runningP2P),
        ]),
        ([.stopCopy, .preCopy], [], [MigrationArc(.running, .preCopy), MigrationArc(.preCopy, .running)]),
        // With P2P the way from PRE_COPY to STOP_COPY leads through PRE_COPY_P2P instead.
        ([.stopCopy, .preCopy], [.p2p], [MigrationArc(.preCopy, .stopCopy)]),
        ([.stopCopy, .p2p, .preCopy], [], [
            MigrationArc(.preCopy, .preCopyP2P), MigrationArc(.preCopyP2P, .preCopy),
            MigrationArc(.preCopyP2P, .runningP2P), MigrationArc(.preCopyP2P, .stopCopy),
            MigrationArc(.runningP2P, .preCopyP2P),
        ]),
    ]

    /// The arcs a device with `capabilities` implements.
    public static func arcs(for capabilities: MigrationCapabilities) -> Set<MigrationArc> {
        Set(arcTable.filter { capabilities.contains($0.needs) && capabilities.isDisjoint(with: $0.unlessAlso) }
            .flatMap(\.arcs))
    }

    /// Arcs that start a data transfer session and return a new data fd ("These arcs begin the
    /// process of saving the device state and will return a new data_fd"; "Entering the RESUMING
    /// state ... will return a new data_fd").
    public static let sessionOpeningArcs: Set<MigrationArc> = [
        MigrationArc(.running, .preCopy), MigrationArc(.runningP2P, .preCopyP2P),
        MigrationArc(.stop, .stopCopy), MigrationArc(.stop, .resuming),
    ]

    /// Arcs that end the data transfer session ("The STOP_COPY arc will terminate a data transfer
    /// session", "Leaving RESUMING terminates a data transfer session", and the PRE_COPY arcs).
    public static let sessionClosingArcs: Set<MigrationArc> = [
        MigrationArc(.stopCopy, .stop), MigrationArc(.resuming, .stop),
        MigrationArc(.preCopy, .running), MigrationArc(.preCopyP2P, .runningP2P),
    ]

    /// `vfio_from_fsm_table`: for [current][requested], the next state to step to, before
    /// skipping states the device does not support. ERROR means refused.
    static let nextStateTable: [MigrationState: [MigrationState: MigrationState]] = [
        .stop: [
            .stop: .stop, .running: .runningP2P, .preCopy: .runningP2P, .preCopyP2P: .runningP2P,
            .stopCopy: .stopCopy, .resuming: .resuming, .runningP2P: .runningP2P, .error: .error,
        ],
        .running: [
            .stop: .runningP2P, .running: .running, .preCopy: .preCopy, .preCopyP2P: .runningP2P,
            .stopCopy: .runningP2P, .resuming: .runningP2P, .runningP2P: .runningP2P, .error: .error,
        ],
        .preCopy: [
            .stop: .running, .running: .running, .preCopy: .preCopy, .preCopyP2P: .preCopyP2P,
            .stopCopy: .preCopyP2P, .resuming: .running, .runningP2P: .running, .error: .error,
        ],
        .preCopyP2P: [
            .stop: .runningP2P, .running: .runningP2P, .preCopy: .preCopy, .preCopyP2P: .preCopyP2P,
            .stopCopy: .stopCopy, .resuming: .runningP2P, .runningP2P: .runningP2P, .error: .error,
        ],
        .stopCopy: [
            .stop: .stop, .running: .stop, .preCopy: .error, .preCopyP2P: .error,
            .stopCopy: .stopCopy, .resuming: .stop, .runningP2P: .stop, .error: .error,
        ],
        .resuming: [
            .stop: .stop, .running: .stop, .preCopy: .stop, .preCopyP2P: .stop,
            .stopCopy: .stop, .resuming: .resuming, .runningP2P: .stop, .error: .error,
        ],
        .runningP2P: [
            .stop: .stop, .running: .running, .preCopy: .running, .preCopyP2P: .preCopyP2P,
            .stopCopy: .stop, .resuming: .stop, .runningP2P: .runningP2P, .error: .error,
        ],
        .error: [
            .stop: .error, .running: .error, .preCopy: .error, .preCopyP2P: .error,
            .stopCopy: .error, .resuming: .error, .runningP2P: .error, .error: .error,
        ],
    ]

    /// `vfio_mig_get_next_state()`: the next arc's target on the way from `current` to
    /// `requested`, or nil where the kernel returns -EINVAL (ERROR requested, a state the device
    /// does not implement, STOP_COPY -> PRE_COPY*, anything from ERROR).
    public static func nextState(
        from current: MigrationState, to requested: MigrationState, capabilities: MigrationCapabilities
    ) -> MigrationState? {
        guard capabilities.supports(current), capabilities.supports(requested),
              var next = nextStateTable[current]?[requested] else { return nil }
        // "Arcs touching optional and unsupported states are skipped over."
        while next != .error && !capabilities.supports(next) {
            guard let skipped = nextStateTable[next]?[requested] else { return nil }
            next = skipped
        }
        return next == .error ? nil : next
    }

    /// Why a real device is never asked for an arc `vfio_from_fsm_table` sends to ERROR.
    public static let kernelLoopReason = "Linux's vfio_mig_get_next_state() (drivers/vfio/vfio_main.c, 6.12.95: lines 847-850) never returns for an arc its table sends to ERROR: state_flags_table[ERROR] is ~0U, which no device's flags match, so the loop that skips unsupported states steps from ERROR to ERROR forever, holding the driver's state mutex; the host's CPU hangs (seen with mtty on a virtual VFIO host: soft lockup)"

    /// Requests the kernel does not return from (`kernelLoopReason`): from a state to one the
    /// device supports, where the table's first step, or a later one, is ERROR. On 6.12 these are
    /// STOP_COPY -> PRE_COPY and STOP_COPY -> PRE_COPY_P2P; the uAPI says they must fail.
    public static func hangsKernel(from current: MigrationState, to requested: MigrationState, capabilities: MigrationCapabilities) -> Bool {
        // vfio_mig_get_next_state() returns -EINVAL before its loop for these.
        guard current != requested, capabilities.supports(current), capabilities.supports(requested),
              current != .error, requested != .error else { return false }
        var state = current
        for _ in 0..<nextStateTable.count {
            guard var next = nextStateTable[state]?[requested] else { return false }
            while !capabilities.supports(next) || next == .error {
                if next == .error { return true }
                guard let skipped = nextStateTable[next]?[requested] else { return false }
                next = skipped
            }
            if next == requested { return false }
            state = next
        }
        return false
    }

    /// What a request does: the arcs taken, and whether it returns a data fd. Nil: refused, and
    /// the state stays as it was.
    ///
    /// A request for the current state takes no arc and succeeds, ERROR included: every upstream
    /// driver loops `while (new_state != cur_state)` around `vfio_mig_get_next_state()`, so an
    /// equal state never reaches the table.
    public static func transition(
        from current: MigrationState, to requested: MigrationState, capabilities: MigrationCapabilities
    ) -> MigrationTransition? {
        var path: [MigrationState] = []
        var state = current
        // The longest combination path is 4 arcs; the bound only guards a malformed table.
        while state != requested && path.count < nextStateTable.count {
            guard let next = nextState(from: state, to: requested, capabilities: capabilities) else { return nil }
            path.append(next)
            state = next
        }
        guard state == requested else { return nil }
        return MigrationTransition(from: current, path: path)
    }
}

/// The arcs one state request takes.
public struct MigrationTransition: Hashable, Sendable {
    public let from: MigrationState
    /// The state after each arc; empty when the request names the current state.
    public let path: [MigrationState]

    public var to: MigrationState { path.last ?? from }

    public var arcs: [MigrationArc] {
        zip([from] + path, path).map { MigrationArc($0, $1) }
    }

    /// Whether the request returns a new data fd: exactly when one of its arcs opens a session
    /// (a path enters the saving group only at its end, so that can only be the last arc).
    public var opensDataStream: Bool { arcs.contains { MigrationFSM.sessionOpeningArcs.contains($0) } }
}
