import Yams

/// `boot: a` or `boot: {on: a, timeout_s: 120}`: the guest is defined and started on a host.
extension Step.Boot: StepKind {
    public static let name = "boot"
    public static let summary = "start the guest on a host"
    public static let format = ScenarioFormat.onHost
    public static let defaultTimeoutSeconds = 180.0
    public static let phase: TimedPhase? = .boot

    public static func read(_ f: inout StepFields) -> Step.Boot? {
        f.host(of: self).map(Step.Boot.init)
    }

    public func follow(guestOn: inout String?, in scenario: Scenario, problem: (String) -> Void) {
        if let h = guestOn { problem("`boot` on \(host), but the guest already runs on \(h)") }
        guestOn = host
    }

    public var hosts: [String] { [host] }
    public var description: String { "boot on \(host)" }
}

/// `restart: b` or `restart: {on: b}`: the guest is destroyed where it runs and booted anew on
/// a host, with that host's devices (a cold move: the devices' next user is a fresh VM).
extension Step.Restart: StepKind {
    public static let name = "restart"
    public static let summary = "destroy the guest where it runs and boot it on a host"
    public static let format = ScenarioFormat.onHost
    public static let defaultTimeoutSeconds = 180.0
    public static let phase: TimedPhase? = .boot

    public static func read(_ f: inout StepFields) -> Step.Restart? {
        f.host(of: self).map(Step.Restart.init)
    }

    public func follow(guestOn: inout String?, in scenario: Scenario, problem: (String) -> Void) {
        if guestOn == nil { problem("`restart` before `boot`: boot the guest first") }
        guestOn = host
    }

    public var hosts: [String] { [host] }
    public var description: String { "restart on \(host) (destroyed where it runs, booted anew)" }
}

extension StepFields {
    /// A host written as the plain value or as `on:` of a mapping.
    mutating func host(of kind: any StepKind.Type) -> String? {
        if case .scalar = value { return reader.host(value, key: kind.name) }
        return mapping(kind)?["on"].flatMap { reader.host($0, key: "on") }
    }
}
