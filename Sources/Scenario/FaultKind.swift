import Yams

/// One kind of fault, declared once: its name and keys (the parser and the JSON Schema read
/// them), how it is read and checked, which host capabilities it needs, how it acts on the lab
/// and how it is undone. Registered once in `FaultKinds.all`, and iterated by the parser, the
/// schema, the runner's capability check and the docs (`Qualification/Check.swift` is the model).
///
/// Adding a fault kind: one file in FaultKinds/, one line in `FaultKinds.all`, a scenario
/// that uses it and a test. A kind that needs a capability the lab does not offer yet also adds
/// that capability to `FaultTarget` and its implementations.
public protocol FaultKind: Sendable, CustomStringConvertible {
    /// Its name in a scenario (`kill-qemu`).
    static var name: String { get }
    /// One line for `miglab schema` and the docs.
    static var summary: String { get }
    /// The keys of its fault form (`migrate.faults`), besides `at` and `every_ms`.
    static var faultKeys: [FormatKey] { get }
    /// The keys of its step form, or nil when it is not a step. A kind written as a plain
    /// value in a step (`host-flr: vf`) takes it as its first key.
    static var stepKeys: [FormatKey]? { get }
    /// Reads one from its mapping; reports problems through `fields` and returns nil then.
    static func read(_ fields: inout FaultFields) -> Self?

    /// What the lab's hosts must offer (checked before anything boots).
    var needs: Set<HostCapability> { get }
    /// The side whose host it acts on, for the journal (the guest's faults: the source).
    var actsOn: MigrationSide { get }
    /// Once it fired, the migration cannot complete (a killed QEMU, an abort): a step that
    /// expects `completed` with it is refused. nil: the migration may still complete.
    var endsMigration: Bool { get }
    /// Acts on the lab; what it did, and how it is undone.
    func fire(_ target: any FaultTarget) async throws -> FaultEffect
    /// Equality with another kind's value (false across kinds).
    func isEqual(to other: any FaultKind) -> Bool
}

extension FaultKind {
    public static var stepKeys: [FormatKey]? { nil }
    public var needs: Set<HostCapability> { [] }
    public var actsOn: MigrationSide { .source }
    public var endsMigration: Bool { false }
    public var kind: String { Self.name }
}

extension FaultKind where Self: Equatable {
    public func isEqual(to other: any FaultKind) -> Bool { (other as? Self) == self }
}

/// Every fault kind, in the order the docs list them. One line per kind.
public enum FaultKinds {
    public static let all: [any FaultKind.Type] = [
        GuestFLR.self,
        GuestDeviceReset.self,
        GuestScratchWrite.self,
        AbortMigration.self,
        KillQEMU.self,
        KillLibvirtd.self,
        NetworkPartition.self,
        SetMaxDowntime.self,
        SetBandwidth.self,
        HostFLR.self,
        HostDeviceReset.self,
    ]

    public static func named(_ name: String) -> (any FaultKind.Type)? { all.first { $0.name == name } }
    /// The kinds that are also steps.
    public static var steps: [any FaultKind.Type] { all.filter { $0.stepKeys != nil } }
}

/// What a fault needs of a lab's hosts, beyond a libvirt connection.
public enum HostCapability: String, Sendable, CaseIterable, CustomStringConvertible {
    /// Find and kill a host's processes (a domain's QEMU, the libvirt daemon).
    case processControl = "process control"
    /// Cut and restore the path between the hosts.
    case linkControl = "link control"
    /// A reset the guest's kernel does reaches the host driver of a passed-through device.
    case guestResetsReachDevices = "guest resets passed to devices"
    /// A proxy in front of the destination's QEMU damages the migration stream (`corrupt_stream`).
    case streamProxy = "stream proxy"
    public var description: String { rawValue }
}

/// How many times a device action repeats: a fault's once or `loop`, or a step's `count`.
public enum Repetitions: Sendable, Equatable, CustomStringConvertible {
    /// A fault without `loop`.
    case once
    /// A step's `count`: each one must work.
    case times(Int)
    /// Until the migration ends (the runner tells the guest to stop).
    case untilStopped

    /// miglab-guestctl's count argument (0: until told to stop).
    public var guestctlCount: Int {
        switch self {
        case .once: 1
        case let .times(n): n
        case .untilStopped: 0
        }
    }

    /// A step's count, where a single failure fails the step.
    public var isCounted: Bool { if case .times = self { true } else { false } }

    public var description: String {
        switch self {
        case .once: ""
        case let .times(n): " x\(n)"
        case .untilStopped: " in a loop"
        }
    }
}

/// miglab-guestctl's last line, `MIGLAB-GUESTCTL resets=N failures=M ...`.
public struct GuestctlReport: Sendable, Equatable {
    public var resets: Int
    public var failures: Int

    /// nil when the line is not a report (no line, or text of another program).
    public init?(_ line: String?) {
        guard let line, let resets = Self.count("resets", in: line) else { return nil }
        self.resets = resets
        failures = Self.count("failures", in: line) ?? 0
    }

    static func count(_ key: String, in line: String) -> Int? {
        line.split(separator: " ").first { $0.hasPrefix(key + "=") }.flatMap { Int($0.dropFirst(key.count + 1)) }
    }

    /// Whether the action happened: at least one reset, and with `strict`, none that failed.
    public func happened(strict: Bool) -> Bool { resets > 0 && (!strict || failures == 0) }
}

/// A fault that could not act, in words for the journal.
public struct FaultError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ message: String) { description = message }
}

/// What a fault did.
public struct FaultEffect: Sendable {
    /// One line for the journal.
    public var result: String
    /// Undone this long after it fired, whatever the migration does (a network partition).
    public var undo: (after: Duration, action: @Sendable () async throws -> Void)?
    /// Done once the migration has ended (reconnect to a restarted daemon); returns a note.
    public var afterMigration: (@Sendable () async throws -> String)?
    /// A program the fault left running in the guest, stopped and judged when the migration ends.
    public var guestProcess: GuestProcess?
    /// The migration job was cancelled by it (virDomainAbortJob succeeded).
    public var cancelledMigration = false

    public init(_ result: String, undo: (after: Duration, action: @Sendable () async throws -> Void)? = nil,
                afterMigration: (@Sendable () async throws -> String)? = nil, guestProcess: GuestProcess? = nil,
                cancelledMigration: Bool = false) {
        self.result = result
        self.undo = undo
        self.afterMigration = afterMigration
        self.guestProcess = guestProcess
        self.cancelledMigration = cancelledMigration
    }
}

/// A program running in the guest on behalf of a fault, and how its last line is judged.
public struct GuestProcess: Sendable {
    public var pid: Int
    /// Whether its report (its output's last line; nil when it reported nothing) says the fault happened.
    public var happened: @Sendable (String?) -> Bool
    public init(pid: Int, happened: @escaping @Sendable (String?) -> Bool) {
        self.pid = pid
        self.happened = happened
    }
}

/// Programs of the guest image a fault may run.
public enum GuestTool: Sendable {
    /// miglab-guestctl: device FLR and reset loops, device info.
    case guestctl
    /// miglab-uart: register-level access to 16550 ports.
    case uart
}

/// What a fault may ask of the lab while it acts, one group per capability: the runner
/// implements it over its lab's hosts and the guest (and a twin can, in memory). A side is a
/// side of the migration in flight; for a fault used as a step both sides are the host the
/// guest runs on.
public protocol FaultTarget: Sendable {
    /// The name of the host on `side`, for the journal.
    func hostName(_ side: MigrationSide) -> String

    // The migration job (libvirt).
    /// virDomainAbortJob on the guest's domain on `side`.
    func abortMigration(on side: MigrationSide) async throws
    /// virDomainMigrateSetMaxDowntime on the source.
    func setMaxDowntime(milliseconds: Int) async throws
    /// virDomainMigrateSetMaxSpeed on the source.
    func setBandwidth(mibPerSecond: Int) async throws

    // Process control.
    /// SIGKILL to the QEMU of the guest on `side`; its pid.
    func killQEMU(on side: MigrationSide) async throws -> Int32
    /// SIGKILL to the libvirt daemon on `side` (the lab restarts it); its pid.
    func killLibvirtd(on side: MigrationSide) async throws -> Int32
    /// Waits for the libvirt daemon on `side` to answer again and reconnects.
    func reconnect(to side: MigrationSide) async throws

    // Link control (the destination's link).
    func cutLink(lossOnly: Bool) async throws
    func restoreLink(lossOnly: Bool) async throws

    // The guest.
    /// The guest's name for one of its devices (`nic0`, `vf[1]`), as its tools take it.
    func guestSelector(of device: String) throws -> String
    /// Starts a guest tool in the background (qemu-guest-agent); its pid.
    func startInGuest(_ tool: GuestTool, _ arguments: [String]) async throws -> Int
    /// Runs a guest tool to its end; its exit code and output.
    func runInGuest(_ tool: GuestTool, _ arguments: [String], until deadline: ContinuousClock.Instant) async throws -> (exitCode: Int, output: String)
    /// The guest's PCI address of a serial device and the scratch-register values the runner
    /// wrote before the migration (nil when it has none).
    func scratchRegisters(of device: String) throws -> (address: String, values: [UInt8])?

    // Passthrough control.
    /// A host-side reset of every function of passthrough device `device` on `side`; one line.
    func resetPassthroughDevice(_ device: String, method: HostResetMethod, on side: MigrationSide) async throws -> String
}

/// A fault of a migration step: what, when, how often, and where it was written.
public struct Fault: Sendable, Equatable {
    public var action: any FaultKind
    public var trigger: Trigger
    /// Fire again every this many ms while the migration runs.
    public var everyMs: Int?
    public var location: SourceLocation?

    public init(_ action: any FaultKind, trigger: Trigger = .afterMs(0), everyMs: Int? = nil, location: SourceLocation? = nil) {
        self.action = action
        self.trigger = trigger
        self.everyMs = everyMs
        self.location = location
    }

    public var kind: String { type(of: action).name }
    public var needs: Set<HostCapability> { action.needs }

    public static func == (a: Fault, b: Fault) -> Bool {
        a.action.isEqual(to: b.action) && a.trigger == b.trigger && a.everyMs == b.everyMs && a.location == b.location
    }
}

/// The reader's view of one fault's mapping, for `FaultKind.read`: typed values by their
/// `FormatKey` (the range or choices come from the key, written once), and the guest's
/// device names. Problems go to the scenario's diagnostics at the value's line and column.
public struct FaultFields {
    var reader: NodeReader
    let values: [String: Node]
    /// The node of the whole fault, for a problem with no value of its own.
    let node: Node
    /// Read as a step (`count`) or as a fault of a migration (`loop`, `side`).
    public let isStep: Bool

    public var kind: String

    public func has(_ key: FormatKey) -> Bool { values[key.name] != nil }

    /// Reports a problem at the fault.
    public mutating func error(_ message: String) { reader.error(node, message) }

    /// An integer key, within its key's range; `default` when absent.
    public mutating func integer(_ key: FormatKey, default d: Int? = nil) -> Int? {
        guard let v = values[key.name] else { return d }
        guard case let .integer(range) = key.type else { return nil }
        return reader.int(v, key: key.name, range: range)
    }

    public mutating func flag(_ key: FormatKey, default d: Bool = false) -> Bool {
        values[key.name].flatMap { reader.bool($0, key: key.name) } ?? d
    }

    public mutating func choice<T: RawRepresentable & CaseIterable>(_ key: FormatKey, default d: T) -> T? where T.RawValue == String {
        guard let v = values[key.name] else { return d }
        return reader.choice(v, key: key.name, as: T.self)
    }

    /// The side of the migration it acts on.
    public mutating func side(default d: MigrationSide) -> MigrationSide {
        values["side"].flatMap { reader.choice($0, key: "side", as: MigrationSide.self) } ?? d
    }

    /// A required key that is missing: said in the kind's own words.
    mutating func required(_ key: FormatKey, _ what: String) -> Node? {
        if let v = values[key.name] { return v }
        error("`\(kind)` needs `\(key.name)`\(what.isEmpty ? "" : ", \(what)")")
        return nil
    }

    /// A step's `count` (default 1), or a fault's `loop`.
    public mutating func repetitions(count: FormatKey) -> Repetitions? {
        if isStep { return integer(count, default: 1).map { .times($0) } }
        return flag(FaultKeys.loop) ? .untilStopped : .once
    }

    /// A device an in-guest action acts on (an emulated device, `vf`, `vf[1]`).
    public mutating func guestDevice(_ key: FormatKey, _ what: String = "") -> String? {
        required(key, what).flatMap { reader.guestActionDevice($0, key: key.name) }
    }

    /// A device that can take an FLR.
    public mutating func flrDevice(_ key: FormatKey) -> String? {
        required(key, "").flatMap { reader.flrDevice($0) }
    }

    /// A passthrough PCI function (host-side resets).
    public mutating func passthroughDevice(_ key: FormatKey) -> String? {
        required(key, "a passthrough device of the guest").flatMap { reader.passthroughDevice($0, key: key.name) }
    }
}

/// Keys several fault kinds share.
public enum FaultKeys {
    public static let device = FormatKey("device", .text, required: true, "a guest device: an emulated device's name, or a passthrough requirement's (`vf`, `vf[1]`)")
    public static let side = FormatKey("side", .choice(MigrationSide.self), "which side of the migration")
    public static let loop = FormatKey("loop", .boolean, "repeat until the migration ends")
    public static func count(_ what: String) -> FormatKey { FormatKey("count", .integer(1...100_000), "how many \(what)") }
    public static let timeout = FormatKey("timeout_s", .number(0.1...86_400), "the step's deadline in seconds")
}
