import Yams

/// `migrate: {from: a, to: b, ...}`: a live migration, with its faults, stream damage, a
/// destination that differs, and its own expectation.
extension Step.Migrate: StepKind {
    public static let name = "migrate"
    public static let summary = "a live migration"
    public static let format = FormatType.object(ScenarioFormat.migrate)
    public static let defaultTimeoutSeconds = 300.0
    public static let phase: TimedPhase? = .migration

    public static func read(_ f: inout StepFields) -> Step.Migrate? {
        guard let m = f.mapping(self) else { return nil }
        var r = f.reader
        defer { f.reader = r }
        let from = m["from"].flatMap { r.host($0, key: "from") }
        let to = m["to"].flatMap { r.host($0, key: "to") }
        var mig = Step.Migrate(from: from ?? "", to: to ?? "")
        if let b = m["bandwidth_mib_s"] { mig.bandwidthMiBps = r.int(b, key: "bandwidth_mib_s", range: 0...1_000_000) }
        if let d = m["max_downtime_ms"] { mig.maxDowntimeMs = r.int(d, key: "max_downtime_ms", range: 1...3_600_000) }
        if let s = m["suspend"] { mig.suspend = r.bool(s, key: "suspend") ?? false }
        if let x = m["reuse_mdevs_after_failure"] { mig.reuseMdevsAfterFailure = r.bool(x, key: "reuse_mdevs_after_failure") ?? false }
        if let fl = m["faults"] { mig.faults = r.faultList(fl) }
        // The step's own expectation: `outcome` (default completed), `error`,
        // `failure_detected_within_s`, `guest` (where it is right after this migration).
        if let e = m["expect"], let em = r.mapping(e, format: ScenarioFormat.migrationExpectation) {
            var ex = MigrationExpectation()
            r.migrationExpectation(em, outcomeKey: "outcome", into: &ex)
            mig.expect = ex
        }
        if let c = m["corrupt_stream"], let cm = r.mapping(c, format: ScenarioFormat.corruptStream) {
            mig.corruptStream = cm["mode"].flatMap { r.choice($0, key: "mode", as: StreamCorruption.self) }
            if let e = cm["every_mib"], let n = r.int(e, key: "every_mib", range: 1...100_000) { mig.corruptEveryMiB = n }
        }
        if let d = m["destination"] { mig.destinationChange = r.destinationChange(d) }
        // A fault timed after the step's deadline can never fire: the runner aborts the
        // migration at the deadline.
        let deadline = f.timeoutSeconds ?? defaultTimeoutSeconds
        for fault in mig.faults {
            if case let .afterMs(ms) = fault.trigger, Double(ms) >= deadline * 1000 {
                r.diagnostics.append(Diagnostic(location: fault.location ?? r.location(f.value),
                    message: "`\(fault.kind)` fires \(ms) ms after the migration started, but the step's deadline is \(deadline) s: it could never fire; fire it earlier or raise `timeout_s`"))
            }
        }
        if let a = from, let b = to, a == b { r.error(f.value, "`migrate` needs two different hosts; from and to are both `\(a)`") }
        guard from != nil, to != nil else { return nil }
        return mig
    }

    public func follow(guestOn: inout String?, in scenario: Scenario, problem: (String) -> Void) {
        let outcome = scenario.expectation(for: self).outcome
        if outcome == .completed, let f = faults.first(where: { $0.action.endsMigration }) {
            problem("`\(f.kind)` ends the migration, so it cannot complete as expected: expect `outcome: \(f.kind == AbortMigration.name ? "aborted" : "failed")` in the step's `expect` (or the scenario's `expect.migrations`)")
        }
        guard let h = guestOn else { return problem("`migrate` before `boot`: boot the guest first") }
        if h != from { problem("`migrate` from \(from), but the guest is on \(h) at this point") }
        // After a failed or aborted migration the guest is still on the source.
        if outcome == .completed { guestOn = to }
    }

    public var hosts: [String] { [from, to] }

    /// A fault's needs on both hosts of the migration, `corrupt_stream`'s on the destination.
    public func needs(visitedHosts: [String], at location: SourceLocation?) -> [Scenario.HostNeed] {
        var out: [Scenario.HostNeed] = []
        for f in faults {
            for c in f.needs.sorted(by: { $0.rawValue < $1.rawValue }) {
                for h in [from, to] { out.append(Scenario.HostNeed(what: f.kind, host: h, capability: c, location: f.location ?? location)) }
            }
        }
        if corruptStream != nil {
            out.append(Scenario.HostNeed(what: "corrupt_stream", host: to, capability: .streamProxy, location: location))
        }
        return out
    }

    public var description: String {
        var s = "migrate \(from) -> \(to)"
        if let b = bandwidthMiBps { s += ", \(b) MiB/s" }
        if let d = maxDowntimeMs { s += ", max downtime \(d) ms" }
        if suspend { s += ", suspend" }
        return s
    }
}

extension NodeReader {
    /// `destination: {change_model | remove_device | mdev_type}` of a `migrate` step.
    mutating func destinationChange(_ d: Node) -> DestinationChange? {
        guard let dm = mapping(d, format: ScenarioFormat.destination) else { return nil }
        var change: DestinationChange?
        if let cm = dm["change_model"], let c = mapping(cm, format: ScenarioFormat.destination.object("change_model")),
           let dev = c["device"].flatMap({ device($0, key: "device") }),
           let model = c["model"].flatMap({ choice($0, key: "model", as: GuestDevice.Model.self) }) {
            if deviceModels[dev] == model {
                error(cm, "`change_model` gives `\(dev)` the model it already has (\(model.rawValue)); name another NIC model")
            } else if deviceModels[dev]?.isNetwork == true && model.isNetwork {
                change = .changeModel(device: dev, model: model)
            } else {
                error(cm, "`change_model` swaps one NIC model for another (virtio-net, e1000e); `\(dev)` is \(deviceModels[dev]?.rawValue ?? "?") and the new model \(model.rawValue)")
            }
        }
        if let r = dm["remove_device"], let dev = device(r, key: "remove_device") {
            if deviceModels[dev]?.isNetwork == true { change = .removeDevice(dev) } else {
                error(r, "`remove_device` removes a NIC from the destination's definition; `\(dev)` is a \(deviceModels[dev]?.rawValue ?? "?")")
            }
        }
        if let cm = dm["mdev_type"], let c = mapping(cm, format: ScenarioFormat.destination.object("mdev_type")),
           let dev = c["device"].flatMap({ string($0, key: "device") }), let type = c["type"].flatMap({ string($0, key: "type") }) {
            if let r = passthroughByName[dev], r.kind == .mdev {
                if r.mdevType == type {
                    error(cm, "`mdev_type` gives the destination another mdev type than the source's; `\(dev)` already is \(type)")
                } else {
                    change = .mdevType(device: dev, type: type)
                }
            } else {
                error(cm, "`mdev_type` names a passthrough device of kind mdev; the guest's are \(passthroughByName.filter { $0.value.kind == .mdev }.keys.sorted().map { "`\($0)`" }.joined(separator: ", "))")
            }
        }
        if dm.count > 1 {
            error(d, "`destination` takes one change; found \(dm.keys.sorted().map { "`\($0)`" }.joined(separator: " and ")) (write one migration per change)")
        }
        if dm.isEmpty { error(d, "`destination` names a change: `change_model: {device, model}`, `remove_device: NAME` or `mdev_type: {device, type}`") }
        return change
    }
}
