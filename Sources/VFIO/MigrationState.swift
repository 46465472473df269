/// The device states of the VFIO migration protocol v2 (`enum vfio_device_mig_state` in
/// include/uapi/linux/vfio.h). Raw values are the uAPI's.
public enum MigrationState: UInt32, CaseIterable, Sendable, Codable, CustomStringConvertible {
    case error = 0
    case stop = 1
    case running = 2
    case stopCopy = 3
    case resuming = 4
    case runningP2P = 5
    case preCopy = 6
    case preCopyP2P = 7

    /// The uAPI's name, as the kernel header and QEMU traces spell it.
    public var description: String {
        switch self {
        case .error: "ERROR"
        case .stop: "STOP"
        case .running: "RUNNING"
        case .stopCopy: "STOP_COPY"
        case .resuming: "RESUMING"
        case .runningP2P: "RUNNING_P2P"
        case .preCopy: "PRE_COPY"
        case .preCopyP2P: "PRE_COPY_P2P"
        }
    }

    /// PRE_COPY, PRE_COPY_P2P and STOP_COPY form the "saving group": they share one data
    /// transfer session, and a combination path may not enter one on the way ("The path cannot
    /// have saving group states as interior arcs, only starting/end states").
    public var isSaving: Bool { self == .preCopy || self == .preCopyP2P || self == .stopCopy }

    /// States in which the device operates and may DMA (everything but the stopped ones).
    public var isRunning: Bool {
        self == .running || self == .runningP2P || self == .preCopy || self == .preCopyP2P
    }
}

/// `struct vfio_device_feature_migration.flags`: which optional parts of the state machine a
/// device implements.
public struct MigrationCapabilities: OptionSet, Hashable, Sendable, Codable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// `VFIO_MIGRATION_STOP_COPY`: STOP, STOP_COPY and RESUMING. Mandatory.
    public static let stopCopy = MigrationCapabilities(rawValue: 1 << 0)
    /// `VFIO_MIGRATION_P2P`: RUNNING_P2P (and PRE_COPY_P2P with PRE_COPY).
    public static let p2p = MigrationCapabilities(rawValue: 1 << 1)
    /// `VFIO_MIGRATION_PRE_COPY`: PRE_COPY (and PRE_COPY_P2P with P2P).
    public static let preCopy = MigrationCapabilities(rawValue: 1 << 2)

    public static let known: MigrationCapabilities = [.stopCopy, .p2p, .preCopy]

    /// The combinations the uAPI defines ("Other combinations of flags have behavior to be
    /// defined in the future").
    public static let definedCombinations: [MigrationCapabilities] = [
        [.stopCopy], [.stopCopy, .p2p], [.stopCopy, .preCopy], [.stopCopy, .p2p, .preCopy],
    ]

    /// Whether a device with these flags implements `state` (the kernel's `state_flags_table`).
    /// ERROR is never implemented in this sense: it can be entered, never requested.
    public func supports(_ state: MigrationState) -> Bool {
        switch state {
        case .error: false
        case .stop, .running, .stopCopy, .resuming: contains(.stopCopy)
        case .runningP2P: contains([.stopCopy, .p2p])
        case .preCopy: contains([.stopCopy, .preCopy])
        case .preCopyP2P: contains([.stopCopy, .p2p, .preCopy])
        }
    }

    /// "STOP_COPY|P2P|PRE_COPY", as the uAPI names the flags.
    public var description: String {
        var names: [String] = []
        if contains(.stopCopy) { names.append("STOP_COPY") }
        if contains(.p2p) { names.append("P2P") }
        if contains(.preCopy) { names.append("PRE_COPY") }
        let unknown = rawValue & ~Self.known.rawValue
        if unknown != 0 { names.append("0x" + String(unknown, radix: 16)) }
        return names.isEmpty ? "none" : names.joined(separator: "|")
    }

    /// A stable lower-case slug for identifiers ("stop-copy-p2p-pre-copy").
    public var slug: String {
        String(description.lowercased().map { $0 == "_" || $0 == "|" ? "-" : $0 })
    }
}

/// One step of the state machine that a driver implements.
public struct MigrationArc: Hashable, Sendable, Codable, CustomStringConvertible {
    public let from: MigrationState
    public let to: MigrationState
    public init(_ from: MigrationState, _ to: MigrationState) {
        self.from = from
        self.to = to
    }
    public var description: String { "\(from)->\(to)" }
}
