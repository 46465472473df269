import Foundation
import Yams

/// One problem in a scenario file, located at file:line:column.
public struct Diagnostic: Error, Sendable, Equatable, CustomStringConvertible {
    public var location: SourceLocation
    public var message: String
    /// The message is one line of bounded length whatever it quotes from the file (a scalar
    /// that is the whole file, control characters): `SafeText`.
    public init(location: SourceLocation, message: String) {
        self.location = location
        self.message = SafeText.line(message, limit: 1000)
    }
    public var description: String { "\(location): error: \(message)" }
}

/// All problems of one file; parsing goes on after the first so that a user sees them all.
public struct ScenarioErrors: Error, Sendable, CustomStringConvertible {
    public var diagnostics: [Diagnostic]

    /// The same problem found twice at one place (an alias read in several places) is said once.
    public init(diagnostics: [Diagnostic]) {
        var seen = Set<String>()
        self.diagnostics = diagnostics.filter { seen.insert($0.description).inserted }
    }
    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}

/// Reads scenario files (format v1) from YAML with Yams, keeping every node's line and column
/// so that unknown keys, wrong types and bad values are reported where they are written.
/// Yams' Codable decoder drops source positions, hence this walk over Yams' node tree.
public struct ScenarioParser {
    /// The format this miglab writes about; it reads every version in `readableVersions`.
    /// v2 added per-step `expect`, `matrix`/`exclude`, `set-bandwidth` and tags that select.
    public static let formatVersion = 2
    public static let readableVersions = 1...2

    public init() {}

    /// The one scenario of a file without a matrix.
    public func parse(file path: String) throws(ScenarioErrors) -> Scenario {
        try single(scenarios(file: path), file: path)
    }

    public func parse(_ text: String, file: String) throws(ScenarioErrors) -> Scenario {
        try single(scenarios(text, file: file), file: file)
    }

    func single(_ scenarios: [Scenario], file: String) throws(ScenarioErrors) -> Scenario {
        guard scenarios.count == 1 else {
            throw ScenarioErrors(diagnostics: [Diagnostic(location: SourceLocation(file: file, line: 1, column: 1),
                                                          message: "the file declares a matrix of \(scenarios.count) combinations, not one scenario")])
        }
        return scenarios[0]
    }

    /// The file's scenarios: one, or one per combination of its matrix.
    public func scenarios(file path: String) throws(ScenarioErrors) -> [Scenario] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ScenarioErrors(diagnostics: [Diagnostic(location: SourceLocation(file: path, line: 0, column: 0),
                                                          message: "cannot read the file (does it exist, is it readable?)")])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ScenarioErrors(diagnostics: [Diagnostic(location: SourceLocation(file: path, line: 1, column: 1),
                                                          message: "the file is not UTF-8 text")])
        }
        return try scenarios(text, file: path)
    }

    /// At most this many YAML values (aliases expanded) in one file; the largest library file
    /// has a few hundred.
    public static let maxNodes = 50_000

    /// At most this many steps, repeats unrolled, in all the scenarios of one file.
    public static let maxStepsPerFile = 20_000

    public func scenarios(_ text: String, file: String) throws(ScenarioErrors) -> [Scenario] {
        var reader = NodeReader(file: file)
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: text) else {
                throw ScenarioErrors(diagnostics: [Diagnostic(location: SourceLocation(file: file, line: 1, column: 1),
                                                              message: "the file is empty; a scenario needs at least `name` and `steps`")])
            }
            root = node
        } catch let e as ScenarioErrors {
            throw e
        } catch {
            throw ScenarioErrors(diagnostics: [reader.yamlDiagnostic(error, text: text)])
        }
        if expandedNodeCount(root, limit: Self.maxNodes) > Self.maxNodes {
            throw ScenarioErrors(diagnostics: [Diagnostic(location: SourceLocation(file: file, line: 1, column: 1),
                message: "the file stands for more than \(Self.maxNodes) YAML values once its aliases (`*name`) are expanded; write repetition with `repeat: {times: N}`, not aliases of aliases")])
        }
        guard let matrixNode = root.mapping?["matrix"] else {
            if let exclude = root.mapping?["exclude"] {
                reader.error(exclude, "`exclude` removes combinations of a `matrix`; the scenario has none")
            }
            let scenario = reader.scenario(root)
            if !reader.diagnostics.isEmpty || scenario == nil {
                throw ScenarioErrors(diagnostics: reader.diagnostics)
            }
            return [scenario!]
        }
        if let v = root.mapping?["version"], v.int == 1 {
            reader.error(matrixNode, "`matrix` is format v2: write `version: 2` at \(reader.location(v))")
        }
        guard let matrix = ScenarioMatrix.read(matrix: matrixNode, exclude: root.mapping?["exclude"], reader: &reader) else {
            throw ScenarioErrors(diagnostics: reader.diagnostics)
        }
        let combinations = matrix.combinations
        if !reader.diagnostics.isEmpty { throw ScenarioErrors(diagnostics: reader.diagnostics) }
        if combinations.isEmpty {
            reader.error(matrixNode, "`exclude` removes every combination of the matrix")
            throw ScenarioErrors(diagnostics: reader.diagnostics)
        }
        // Each combination is read on its own; an error that every combination has is
        // reported once, under the first.
        var out: [Scenario] = []
        var diagnostics: [Diagnostic] = []
        var seen = Set<String>()
        var steps = 0
        for combo in combinations {
            var r = NodeReader(file: file)
            r.nameSuffix = combo.suffix
            let expanded = ScenarioMatrix.expand(root, with: combo, axes: matrix.axes.map(\.name), reader: &r)
            let scenario = r.scenario(expanded)
            for d in r.diagnostics where seen.insert("\(d.location)|\(d.message)").inserted {
                diagnostics.append(Diagnostic(location: d.location, message: "in combination \(combo.suffix): \(d.message)"))
            }
            if let s = scenario, r.diagnostics.isEmpty {
                out.append(s)
                steps += s.unrolledStepCount
            }
        }
        if steps > Self.maxStepsPerFile {
            diagnostics.append(Diagnostic(location: reader.location(matrixNode),
                                          message: "the matrix's \(combinations.count) combinations have \(steps) steps in all (repeats unrolled); at most \(Self.maxStepsPerFile) per file"))
        }
        if !diagnostics.isEmpty { throw ScenarioErrors(diagnostics: diagnostics) }
        return out
    }
}

/// Walks a scenario's node tree, collecting diagnostics.
struct NodeReader: YAMLNodeReading {
    let file: String
    var diagnostics: [Diagnostic] = []
    /// A matrix combination's `[axis=value,...]`, appended to the scenario's name.
    var nameSuffix = ""
    /// The file's `version` (the current one when it says none).
    var formatVersion = ScenarioParser.formatVersion

    /// A file that says v1 uses nothing of v2 (an older miglab would refuse it): each use is
    /// named at its place.
    mutating func checkVersion1(_ steps: [Step], version: Node) {
        for step in steps {
            guard let m = step.action(as: Step.Migrate.self) else { continue }
            let at = step.location ?? location(version)
            if m.expect != nil {
                diagnostics.append(Diagnostic(location: at, message: "a `migrate` step's own `expect` is format v2: write `version: 2` at \(location(version))"))
            }
            for f in m.faults where f.kind == SetBandwidth.name {
                diagnostics.append(Diagnostic(location: f.location ?? at, message: "`set-bandwidth` is format v2: write `version: 2` at \(location(version))"))
            }
        }
    }

    mutating func host(_ node: Node, key: String) -> String? {
        guard let s = string(node, key: key) else { return nil }
        guard s.wholeMatch(of: #/[a-z][a-z0-9_-]{0,31}/#) != nil else {
            error(node, "`\(key)` must name a host (lower-case letters, digits, - and _, like `a` or `b`); found `\(s)`")
            return nil
        }
        return s
    }

    // MARK: the format

    mutating func scenario(_ root: Node) -> Scenario? {
        guard let m = mapping(root, format: ScenarioFormat.scenario) else { return nil }
        var version = ScenarioParser.formatVersion
        if let v = m["version"], let n = int(v, key: "version", range: 1...1000) {
            if ScenarioParser.readableVersions.contains(n) { version = n } else {
                error(v, "this miglab reads scenario format versions \(ScenarioParser.readableVersions.lowerBound) to \(ScenarioParser.readableVersions.upperBound); the file says \(n)")
            }
        }
        formatVersion = version
        let name = m["name"].flatMap { string($0, key: "name") }
        if let n = m["name"], let s = name, s.wholeMatch(of: #/[A-Za-z0-9][A-Za-z0-9._-]{0,63}/#) == nil {
            error(n, "`name` may use letters, digits, '.', '_' and '-' (at most 64); found `\(s)`")
        }
        let description = m["description"].flatMap { string($0, key: "description") } ?? ""
        var tags: [String] = []
        if let t = m["tags"] {
            if case let .sequence(seq) = t {
                tags = seq.compactMap { string($0, key: "tags[]") }
            } else {
                error(t, "`tags` must be a list of words, like [smoke, nightly]; found \(describe(t))")
            }
        }
        var guest = GuestSpec()
        if let g = m["guest"], let gm = mapping(g, format: ScenarioFormat.guest) {
            if let d = gm["devices"] { guest.devices = devices(d) }
            if let p = gm["passthrough"] {
                guest.passthrough = passthrough(p)
                // Steps name devices by name: one name is one device.
                for r in guest.passthrough where guest.devices.contains(where: { $0.name == r.name }) {
                    error(p, "`\(r.name)` names both an emulated device and a passthrough device; give each its own name")
                }
            }
            if let v = gm["memory_mib"], let n = int(v, key: "memory_mib", range: 64...65536) { guest.memoryMiB = n }
            if let v = gm["vcpus"], let n = int(v, key: "vcpus", range: 1...64) { guest.vcpus = n }
            if let v = gm["workload_mib"], let n = int(v, key: "workload_mib", range: 0...65536) { guest.workloadMiB = n }
            if guest.workloadMiB > 0 && guest.workloadMiB + 96 > guest.memoryMiB {
                error(g, "`workload_mib` (\(guest.workloadMiB)) must leave at least 96 MiB of `memory_mib` (\(guest.memoryMiB)) to the guest kernel")
            }
        }
        var steps: [Step] = []
        deviceModels = Dictionary(guest.devices.map { ($0.name, $0.model) }, uniquingKeysWith: { a, _ in a })
        passthroughKinds = Dictionary(guest.passthrough.map { ($0.name, $0.kind) }, uniquingKeysWith: { a, _ in a })
        passthroughCount = Dictionary(guest.passthrough.map { ($0.name, $0.count) }, uniquingKeysWith: { a, _ in a })
        passthroughByName = Dictionary(guest.passthrough.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        if let s = m["steps"] { steps = stepList(s, context: "`steps`") }
        checkMdevTypeChanges(steps)
        var expect = Expectations()
        if let e = m["expect"], let em = mapping(e, format: ScenarioFormat.expect) {
            if let v = em["vfio_precopy"], let c = choice(v, key: "vfio_precopy", as: Expectations.VFIOPrecopyVerdict.self) { expect.vfioPrecopy = c }
            if let v = em["host_kernel"], let c = choice(v, key: "host_kernel", as: Expectations.HostKernelVerdict.self) {
                expect.hostKernel = c
                if c == .crashes, let other = ["memory", "console", "devices"].first(where: { em[$0] != nil }) {
                    error(v, "`host_kernel: crashes` ends the scenario at the crash, so nothing checks `\(other)` after it; remove `\(other)`")
                }
            }
            if let v = em["destination_after_failure"], let c = choice(v, key: "destination_after_failure", as: Expectations.DestinationAfterFailure.self) {
                expect.destinationAfterFailure = c
            }
            if let v = em["migrations"], let c = choice(v, key: "migrations", as: Expectations.MigrationOutcome.self) { expect.migrations = c }
            if let v = em["memory"], let c = choice(v, key: "memory", as: Expectations.MemoryVerdict.self) { expect.memory = c }
            if let v = em["console"], let c = choice(v, key: "console", as: Expectations.ConsoleVerdict.self) { expect.console = c }
            if let v = em["devices"], let c = choice(v, key: "devices", as: Expectations.DeviceVerdict.self) { expect.devices = c }
            var m = MigrationExpectation(outcome: expect.migrations)
            migrationExpectation(em, outcomeKey: "migrations", into: &m)
            (expect.errorCodes, expect.errorMessage, expect.failureDetectedWithinSeconds) = (m.errorCodes, m.errorMessage, m.failureDetectedWithinSeconds)
            (expect.guestOn, expect.guestState) = (m.guestOn, m.guestState)
        }
        let scenario = Scenario(name: (name ?? "") + nameSuffix, description: description, tags: tags, guest: guest, steps: steps,
                                expect: expect, file: file)
        // Counted without unrolling: nested repeats can multiply past any memory.
        let count = scenario.unrolledStepCount
        if count > Scenario.maxSteps {
            error(m["steps"] ?? root, "the steps unroll to \(count == Int.max ? "too many" : String(count)) steps (repeats multiplied out); at most \(Scenario.maxSteps)")
            return nil
        }
        // Unrolled once (at most `Scenario.maxSteps`, checked above) for the checks that follow.
        let flat = scenario.flattenedSteps
        checkFlow(scenario, steps: flat, root: m["steps"] ?? root)
        if let e = m["expect"]?.mapping { checkExpectationsAreChecked(scenario, steps: flat, expect: e) }
        if formatVersion == 1, let v = m["version"] { checkVersion1(flat, version: v) }
        return name == nil ? nil : scenario
    }

    /// The keys of an expectation about migrations, in a scenario's `expect` (outcome key
    /// `migrations`, the default of every migration) and in a `migrate` step's (`outcome`).
    mutating func migrationExpectation(_ em: [String: Node], outcomeKey: String, into ex: inout MigrationExpectation) {
        if let v = em[outcomeKey], let c = choice(v, key: outcomeKey, as: Expectations.MigrationOutcome.self) { ex.outcome = c }
        if let v = em["failure_detected_within_s"] { ex.failureDetectedWithinSeconds = double(v, key: "failure_detected_within_s", range: 0.1...3600) }
        if let v = em["error"], let err = mapping(v, format: ScenarioFormat.expect.object("error")) {
            // `code: 9`, or `code: [1, 9]` where libvirt reports the same fault either way
            // depending on which side notices it first.
            if let c = err["code"] {
                if case let .sequence(seq) = c {
                    ex.errorCodes = seq.compactMap { int($0, key: "code", range: 0...1000).map(Int32.init) }
                } else if let n = int(c, key: "code", range: 0...1000) {
                    ex.errorCodes = [Int32(n)]
                }
            }
            if let msg = err["message"], let text = string(msg, key: "message") {
                if (try? Regex(text)) == nil { error(msg, "`message` is not a valid regular expression: `\(text)`") } else { ex.errorMessage = text }
            }
            if ex.outcome == .completed { error(v, "`expect.error` needs `\(outcomeKey): failed` or `aborted`") }
        }
        if let v = em["guest"], let gm = mapping(v, format: ScenarioFormat.expect.object("guest")) {
            if let on = gm["on"] { ex.guestOn = choice(on, key: "on", as: MigrationSide.self) }
            if let st = gm["state"] { ex.guestState = choice(st, key: "state", as: Expectations.GuestState.self) }
        }
    }

    mutating func stepList(_ node: Node, context: String) -> [Step] {
        guard case let .sequence(seq) = node else {
            error(node, "\(context) must be a list of steps (`- boot: {on: a}`, `- migrate: {from: a, to: b}`, `- verify: [memory, console]`); found \(describe(node))")
            return []
        }
        if seq.isEmpty { error(node, "\(context) is empty") }
        return seq.compactMap { step($0) }
    }

    static let faultKinds = ScenarioFormat.faults.names

    /// One step: its kind from the registry (`StepKinds`), read by that kind.
    mutating func step(_ node: Node) -> Step? {
        let known = StepKinds.names.joined(separator: ", ")
        guard let map = node.mapping, map.count == 1, let (k, v) = map.first.map({ ($0.key, $0.value) }) else {
            error(node, "a step is a mapping with one key, the step kind (\(known)); found \(describe(node))")
            return nil
        }
        guard let name = k.scalar?.string, let kind = StepKinds.named(name) else {
            error(k, "unknown step kind \(describe(k)); known: \(known)")
            return nil
        }
        var fields = StepFields(reader: self, value: v)
        let action = kind.read(&fields)
        self = fields.reader
        return action.map { Step($0, timeoutSeconds: fields.timeoutSeconds, location: location(k)) }
    }

    mutating func timeout(_ m: [String: Node]) -> Double? {
        m["timeout_s"].flatMap { double($0, key: "timeout_s", range: 0.1...86_400) }
    }

    /// Checks that the steps make sense in order (each kind's `follow`): boot before anything
    /// else, a migration starts where the guest is.
    mutating func checkFlow(_ scenario: Scenario, steps: [Step], root: Node) {
        var at: String?
        for step in steps {
            let loc = step.location ?? location(root)
            step.action.follow(guestOn: &at, in: scenario) { msg in
                if !diagnostics.contains(where: { $0.location == loc && $0.message == msg }) {
                    diagnostics.append(Diagnostic(location: loc, message: msg))
                }
            }
        }
    }

    /// An expectation no step checks would pass unchecked: `expect.memory` needs a step that
    /// verifies memory (or a migration expected to fail, after which the source's memory is
    /// checked), `expect.console` and `expect.devices` a step that verifies them.
    mutating func checkExpectationsAreChecked(_ scenario: Scenario, steps: [Step], expect: Node.Mapping) {
        let verifies = steps.compactMap { $0.action(as: Step.Verify.self) }
        let failingMigration = steps.contains { s in
            s.action(as: Step.Migrate.self).map { scenario.expectation(for: $0).outcome != .completed } ?? false
        }
        for (k, _) in expect {
            guard let name = k.scalar?.string, let kind = Verifiers.named(name) else { continue }
            if verifies.contains(where: { $0.runs(kind) }) { continue }
            if kind == MemoryCheck.self && failingMigration && scenario.guest.workloadMiB > 0 { continue }
            error(k, "`expect.\(name)` is checked by `verify: \(name)`, which no step runs; add that step or remove `\(name)`")
        }
    }

    // MARK: devices and faults

    /// Device names the steps may use (set from `guest.devices` before the steps are read).
    var deviceModels: [String: GuestDevice.Model] = [:]

    /// A host holds one mdev per passthrough device for the whole scenario, so a host that gets
    /// another mdev type (`destination: {mdev_type}`) is that migration's destination only: the
    /// guest boots elsewhere and no other migration goes there.
    mutating func checkMdevTypeChanges(_ steps: [Step]) {
        var arrivals: [String: Int] = [:]   // host -> boots and migrations that bring the guest there
        for s in steps {
            // The host a boot, restart or migration brings the guest to: the last it names.
            if s.action.repetition == nil, let to = s.action.hosts.last { arrivals[to, default: 0] += 1 }
        }
        for s in steps {
            guard let m = s.action(as: Step.Migrate.self), case let .mdevType(device, type)? = m.destinationChange,
                  arrivals[m.to, default: 0] > 1 else { continue }
            diagnostics.append(Diagnostic(location: s.location ?? SourceLocation(file: file, line: 0, column: 0),
                                          message: "`mdev_type` makes `\(device)` a \(type) on host `\(m.to)` for the whole scenario, so the guest may come to `\(m.to)` by this migration only; use a host no other step boots on or migrates to"))
        }
    }
    var passthroughByName: [String: PassthroughRequirement] = [:]
    /// Passthrough requirements by name (set from `guest.passthrough` before the steps are read).
    var passthroughKinds: [String: PassthroughRequirement.Kind] = [:]
    /// How many functions each passthrough requirement has.
    var passthroughCount: [String: Int] = [:]

    /// A passthrough requirement a host-side reset can act on: a PCI function (an mdev has no
    /// function of its own to reset).
    mutating func passthroughDevice(_ node: Node, key: String) -> String? {
        guard let name = string(node, key: key) else { return nil }
        guard let kind = passthroughKinds[name] else {
            let known = passthroughKinds.filter { $0.value == .vfioPCI }.keys.sorted()
            error(node, "`\(key)`: host-side resets act on passthrough PCI functions (`guest.passthrough` of kind vfio-pci); the guest has "
                  + (known.isEmpty ? "none" : known.map { "`\($0)`" }.joined(separator: ", ")) + ", not `\(name)`")
            return nil
        }
        guard kind == .vfioPCI else {
            error(node, "`\(name)` is an mdev: it has no PCI function of its own to reset on the host; host-side resets take `kind: vfio-pci` devices")
            return nil
        }
        return name
    }

    mutating func devices(_ node: Node) -> [GuestDevice] {
        guard case let .sequence(seq) = node else {
            error(node, "`devices` must be a list like `[{name: nic0, model: virtio-net}]`; found \(describe(node))")
            return []
        }
        var out: [GuestDevice] = []
        for item in seq {
            guard let m = mapping(item, format: ScenarioFormat.guestDevice),
                  let name = m["name"].flatMap({ host($0, key: "name") }),
                  let model = m["model"].flatMap({ choice($0, key: "model", as: GuestDevice.Model.self) }) else { continue }
            if out.contains(where: { $0.name == name }) { error(item, "device name `\(name)` is used twice") }
            var broken = false
            if let l = m["link"] {
                if !model.isNetwork { error(l, "`link` is for NICs; `\(name)` is a \(model.rawValue)") }
                switch l.scalar?.string {
                case "up": break
                case "down": broken = true
                default: error(l, "`link` is `up` or `down` (a NIC whose link is down, the negative control of the device check); found \(describe(l))")
                }
            }
            if let l = m["loopback"] {
                if model != .pciSerial { error(l, "`loopback` is for pci-serial devices; `\(name)` is a \(model.rawValue)") }
                if let b = bool(l, key: "loopback"), !b { broken = true }
            }
            out.append(GuestDevice(name: name, model: model, broken: broken))
        }
        if out.count > 8 { error(node, "at most 8 devices") }
        return out
    }

    /// A device name the guest has.
    mutating func device(_ node: Node, key: String) -> String? {
        guard let name = string(node, key: key) else { return nil }
        guard deviceModels[name] != nil else {
            error(node, "`\(key)`: the guest has no device `\(name)`; it has \(deviceModels.keys.sorted().joined(separator: ", "))")
            return nil
        }
        return name
    }

    /// A device an in-guest action (FLR, driver reset) acts on: an emulated device, or a
    /// function of a passthrough requirement: `vf` (its first function) or `vf[1]`. Returned
    /// as the runner names it: `nic0`, `vf[0]`, `vf[1]`.
    mutating func guestActionDevice(_ node: Node, key: String) -> String? {
        guard let name = string(node, key: key) else { return nil }
        if deviceModels[name] != nil { return name }
        let parts = name.wholeMatch(of: #/([a-z][a-z0-9_-]*)(?:\[([0-9]{1,2})\])?/#)
        if let parts, let count = passthroughCount[String(parts.1)] {
            let index = parts.2.flatMap { Int($0) } ?? 0
            guard index < count else {
                error(node, "`\(key)`: `\(parts.1)` has \(count) function\(count == 1 ? "" : "s") (`\(parts.1)[0]`\(count > 1 ? " to `\(parts.1)[\(count - 1)]`" : "")); found `\(name)`")
                return nil
            }
            return "\(parts.1)[\(index)]"
        }
        let known = deviceModels.keys.sorted() + passthroughCount.keys.sorted()
        error(node, "`\(key)`: the guest has no device `\(name)`; it has \(known.map { "`\($0)`" }.joined(separator: ", "))")
        return nil
    }

    /// A device that can take an FLR (a PCIe function advertising FLReset+). Whether a
    /// passed-through function has FLR is known only on the host; the guest tool says.
    mutating func flrDevice(_ node: Node) -> String? {
        guard let name = guestActionDevice(node, key: "device") else { return nil }
        if let model = deviceModels[name], !model.supportsFLR {
            error(node, "device `\(name)` is an \(model.rawValue), which has no FLR (its reset_method is \"pm bus\"); use a virtio-net device, or `guest-device-reset`")
            return nil
        }
        return name
    }

    mutating func faultList(_ node: Node) -> [Fault] {
        guard case let .sequence(seq) = node else {
            error(node, "`faults` must be a list like `[{abort: {at: {after_ms: 1000}}}]`; found \(describe(node))")
            return []
        }
        return seq.compactMap { fault($0) }
    }

    mutating func fault(_ node: Node) -> Fault? {
        guard let map = node.mapping, map.count == 1, let (k, v) = map.first.map({ ($0.key, $0.value) }) else {
            error(node, "a fault is a mapping with one key, the fault kind (\(Self.faultKinds.joined(separator: ", "))); found \(describe(node))")
            return nil
        }
        guard let kind = k.scalar?.string, Self.faultKinds.contains(kind) else {
            error(k, "unknown fault kind \(describe(k)); known: \(Self.faultKinds.joined(separator: ", "))")
            return nil
        }
        let empty = Node.mapping(Node.Mapping([]))
        // Each fault says below what it misses, in its own words.
        guard let m = mapping(v.scalar?.string.isEmpty == true ? empty : v, format: ScenarioFormat.faults.object(kind), requireKeys: false) else { return nil }
        let trigger = m["at"].flatMap { self.trigger($0) } ?? .afterMs(0)
        let every = m["every_ms"].flatMap { int($0, key: "every_ms", range: ScenarioFormat.everyMs) }
        guard let faultKind = FaultKinds.named(kind) else { return nil }
        var fields = FaultFields(reader: self, values: m, node: v, isStep: false, kind: kind)
        let read = faultKind.read(&fields)
        diagnostics = fields.reader.diagnostics
        guard let action = read else { return nil }
        return Fault(action, trigger: trigger, everyMs: every, location: location(k))
    }

    mutating func trigger(_ node: Node) -> Trigger? {
        guard let m = mapping(node, format: ScenarioFormat.trigger) else { return nil }
        guard m.count == 1 else {
            error(node, "`at` takes exactly one condition: after_ms, iteration, remaining_below_mib or remaining_below_fraction")
            return nil
        }
        // The ranges are the format's (ScenarioFormat.trigger), written once.
        for key in ScenarioFormat.trigger.keys {
            guard let v = m[key.name] else { continue }
            switch (key.name, key.type) {
            case let ("after_ms", .integer(r)): return int(v, key: key.name, range: r).map { .afterMs($0) }
            case let ("iteration", .integer(r)): return int(v, key: key.name, range: r).map { .iteration($0) }
            case let ("remaining_below_mib", .number(r)): return double(v, key: key.name, range: r).map { .remainingBelowMiB($0) }
            case let ("remaining_below_fraction", .number(r)): return double(v, key: key.name, range: r).map { .remainingBelowFraction($0) }
            default: break
            }
        }
        return nil
    }
}

