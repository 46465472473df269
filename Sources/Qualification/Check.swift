import Synchronization
import VFIO

/// One conformance check: the rule it checks in one sentence, where the rule is written down,
/// and the code that checks it against a target.
public struct Check: Sendable, Identifiable {
    public let id: String
    public let rule: String
    /// The uAPI header comment, kernel function or virtio spec text the rule comes from.
    public let source: String
    let body: @Sendable (CheckContext) throws -> CheckOutcome

    init(id: String, rule: String, source: String, body: @escaping @Sendable (CheckContext) throws -> CheckOutcome) {
        self.id = id
        self.rule = rule
        self.source = source
        self.body = body
    }
}

public enum Verdict: String, Codable, Sendable, CaseIterable {
    case pass, fail, skip
}

/// A verdict and what it rests on: for a pass what was seen, for a fail what went wrong, for a
/// skip why the check could not run.
public struct CheckOutcome: Sendable, Equatable {
    public let verdict: Verdict
    public let detail: String

    public static func pass(_ detail: String) -> CheckOutcome { CheckOutcome(verdict: .pass, detail: detail) }
    public static func fail(_ detail: String) -> CheckOutcome { CheckOutcome(verdict: .fail, detail: detail) }
    public static func skip(_ reason: String) -> CheckOutcome { CheckOutcome(verdict: .skip, detail: reason) }
}

/// Thrown inside a check to end it with a failure.
struct CheckFailure: Error {
    let detail: String
}

/// Thrown inside a check that cannot run on this target.
struct CheckSkipped: Error {
    let reason: String
}

/// What a check may use: fresh devices from the target, and facts about it.
public struct CheckContext: Sendable {
    public let target: QualificationTarget
    /// Opens that found the device in another state than RUNNING, for `fsm.open-starts-running`.
    let openings = OpeningLog()

    /// A freshly opened device (RUNNING, no session) with `capabilities`, or the target's own.
    ///
    /// A device that opens in another state (its driver kept what the last check left) is
    /// returned to RUNNING with VFIO_DEVICE_RESET, the uAPI's way back, and logged: moving it
    /// any other way can crash the host (mtty on Linux 6.12 dereferences its freed resume file
    /// when it leaves RESUMING), and the checks after it would test leftovers.
    func open(_ capabilities: MigrationCapabilities? = nil) throws -> any MigrationDevice {
        let wanted = capabilities ?? target.capabilities
        guard target.capabilityCombinations.contains(wanted) else {
            throw CheckSkipped(reason: "the device offers \(target.capabilities), not \(wanted)")
        }
        let device = try target.openDevice(wanted)
        let state = try device.migrationState()
        if state != .running {
            try device.reset()
            let after = try device.migrationState()
            openings.record("\(openings.currentCheck): opened in \(state)" + (after == .running ? ", reset to RUNNING" : ", and VFIO_DEVICE_RESET left it in \(after)"))
            try expect(after == .running, "the device opened in \(state) and VFIO_DEVICE_RESET left it in \(after), not RUNNING")
        }
        return device
    }

    var capabilities: MigrationCapabilities { target.capabilities }

    /// The states the target's device implements, ERROR aside.
    var supportedStates: [MigrationState] { MigrationState.allCases.filter(capabilities.supports) }
}

/// What the harness saw when it opened devices during a run.
final class OpeningLog: Sendable {
    private let state = Mutex<(check: String, entries: [String])>(("", []))
    var currentCheck: String {
        get { state.withLock { $0.check } }
        set { state.withLock { $0.check = newValue } }
    }
    var entries: [String] { state.withLock { $0.entries } }
    func record(_ entry: String) { state.withLock { $0.entries.append(entry) } }
}

/// What is qualified: how to open it, with which capability combinations, and a stream it must
/// refuse as foreign.
public struct QualificationTarget: Sendable {
    public let name: String
    /// The migration flags the device reports.
    public let capabilities: MigrationCapabilities
    /// Every combination the target can open a device with (the reference device: all four).
    public let capabilityCombinations: [MigrationCapabilities]
    /// Longest STOP_COPY stream a check reads into memory.
    public let maxStreamBytes: Int
    let openDevice: @Sendable (MigrationCapabilities) throws -> any MigrationDevice
    let foreignStream: @Sendable () throws -> [UInt8]

    public init(
        name: String, capabilities: MigrationCapabilities, capabilityCombinations: [MigrationCapabilities], maxStreamBytes: Int,
        openDevice: @escaping @Sendable (MigrationCapabilities) throws -> any MigrationDevice,
        foreignStream: @escaping @Sendable () throws -> [UInt8]
    ) {
        self.name = name
        self.capabilities = capabilities
        self.capabilityCombinations = capabilityCombinations
        self.maxStreamBytes = maxStreamBytes
        self.openDevice = openDevice
        self.foreignStream = foreignStream
    }

    /// The reference device, clean or with one seeded bug. Its foreign stream comes from the same
    /// device model at the next stream format version.
    public static func reference(bug: SeededBug? = nil) -> QualificationTarget {
        let open: @Sendable (MigrationCapabilities) throws -> any MigrationDevice
        if bug == .stateSurvivesClose {
            open = stateKeepingOpen()
        } else {
            open = { capabilities in ReferenceDevice(capabilities: capabilities, bug: bug) }
        }
        return QualificationTarget(
            name: "reference device" + (bug.map { " with seeded bug \($0)" } ?? ""),
            capabilities: [.stopCopy, .p2p, .preCopy], capabilityCombinations: MigrationCapabilities.definedCombinations,
            maxStreamBytes: 16 << 20,
            openDevice: open,
            foreignStream: {
                try saveStopCopyStream(of: ReferenceDevice(model: .nextFormatVersion), limit: 16 << 20)
            })
    }

    /// Opens reference devices that start in the state the previously opened one is in, as if
    /// closing had kept it (mtty's close on Linux 6.12 keeps RESUMING, for one).
    static func stateKeepingOpen() -> @Sendable (MigrationCapabilities) throws -> any MigrationDevice {
        let last = Mutex<ReferenceDevice?>(nil)
        return { capabilities in
            last.withLock { previous in
                let state = (try? previous?.migrationState()) ?? .running
                let device = ReferenceDevice(capabilities: capabilities, bug: .stateSurvivesClose, initialState: state)
                previous = device
                return device
            }
        }
    }

    /// The VFIO device at a PCI address. Opens it once to learn its flags (and to fail early and
    /// clearly); every check then opens it again. Its foreign stream is the reference device's.
    public static func hardware(address: String, locator: VFIODeviceLocator = VFIODeviceLocator()) throws(VFIOOpenError) -> QualificationTarget {
        let probe = try VFIODevice.open(address, locator: locator)
        let capabilities: MigrationCapabilities
        do {
            capabilities = try probe.migrationCapabilities()
        } catch {
            throw .system(probe.name, error)
        }
        let deviceName = probe.name
        return QualificationTarget(
            name: "\(deviceName) (\(probe.route))", capabilities: capabilities, capabilityCombinations: [capabilities],
            maxStreamBytes: 4 << 30,
            openDevice: { _ in try VFIODevice.open(deviceName, locator: locator) },
            foreignStream: { try saveStopCopyStream(of: ReferenceDevice(), limit: 16 << 20) })
    }
}
