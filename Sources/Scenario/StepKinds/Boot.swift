import Yams

/// A step that brings the guest to one host: `boot: a` or `boot: {on: a, timeout_s: 120}`, and
/// `restart` of the same shape. Its value, deadline, timing phase, reading and hosts are the
/// same; what it asks of the steps before it and how it is described are each kind's own.
public protocol HostStep: StepKind {
    var host: String { get }
    init(host: String)
}

extension HostStep {
    public static var format: FormatType { ScenarioFormat.onHost }
    public static var defaultTimeoutSeconds: Double { 180 }
    public static var phase: TimedPhase? { .boot }

    /// The host written as the plain value or as `on:` of a mapping.
    public static func read(_ f: inout StepFields) -> Self? {
        if case .scalar = f.value { return f.reader.host(f.value, key: name).map(Self.init) }
        return f.mapping(self)?["on"].flatMap { f.reader.host($0, key: "on") }.map(Self.init)
    }

    public var hosts: [String] { [host] }
}

/// `boot`: the guest is defined and started on a host.
extension Step.Boot: HostStep {
    public static let name = "boot"
    public static let summary = "start the guest on a host"

    public func follow(guestOn: inout String?, in scenario: Scenario, problem: (String) -> Void) {
        if let h = guestOn { problem("`boot` on \(host), but the guest already runs on \(h)") }
        guestOn = host
    }

    public var description: String { "boot on \(host)" }
}

/// `restart`: the guest is destroyed where it runs and booted anew on a host, with that host's
/// devices (a cold move: the devices' next user is a fresh VM).
extension Step.Restart: HostStep {
    public static let name = "restart"
    public static let summary = "destroy the guest where it runs and boot it on a host"

    public func follow(guestOn: inout String?, in scenario: Scenario, problem: (String) -> Void) {
        if guestOn == nil { problem("`restart` before `boot`: boot the guest first") }
        guestOn = host
    }

    public var description: String { "restart on \(host) (destroyed where it runs, booted anew)" }
}
