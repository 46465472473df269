import Foundation

/// The scenario format as data: every mapping's keys with their types, which are required, and
/// what they mean. The parser takes its allowed and required keys from here, and the JSON
/// Schema (`miglab schema`, committed as scenarios/schema.json) is generated from it, so the
/// two cannot drift. (What the parser checks beyond shapes, such as a device that must exist or
/// the order of steps, stays in the parser.)
public indirect enum FormatType: Sendable {
    /// Text, optionally matching a regular expression (ECMA-262 and Swift alike).
    case text(pattern: String?)
    case integer(ClosedRange<Int>)
    case number(ClosedRange<Double>)
    case boolean
    case choice([String])
    case list(FormatType)
    case object(FormatObject)
    /// One of several shapes (`boot: a` or `boot: {on: a}`).
    case anyOf([FormatType])
    /// A list of steps (`steps`, `repeat.steps`).
    case steps
    /// A matrix: axis names to lists of single values.
    case axes
    /// A mapping of axis names to single values (one `exclude` entry).
    case axisValues
    /// No value (`- kill-qemu:`).
    case empty

    static let text = FormatType.text(pattern: nil)
    static func choice<T: CaseIterable & RawRepresentable>(_: T.Type) -> FormatType where T.RawValue == String {
        .choice(T.allCases.map(\.rawValue))
    }
}

public struct FormatKey: Sendable {
    public let name: String
    public let type: FormatType
    public let required: Bool
    public let help: String

    init(_ name: String, _ type: FormatType, required: Bool = false, _ help: String) {
        self.name = name
        self.type = type
        self.required = required
        self.help = help
    }
}

/// One mapping of the format: its keys, and at least and at most how many of them it holds.
public struct FormatObject: Sendable {
    public let title: String
    public let keys: [FormatKey]
    public var exactlyOne = false

    init(_ title: String, _ keys: [FormatKey], exactlyOne: Bool = false) {
        self.title = title
        self.keys = keys
        self.exactlyOne = exactlyOne
    }

    public var allowed: [String] { keys.map(\.name) }
    public var required: [String] { keys.filter(\.required).map(\.name) }

    /// The mapping a key holds (the object among its shapes).
    public func object(_ key: String) -> FormatObject {
        func find(_ t: FormatType) -> FormatObject? {
            switch t {
            case let .object(o): o
            case let .anyOf(ts): ts.lazy.compactMap(find).first
            case let .list(t): find(t)
            default: nil
            }
        }
        return keys.first { $0.name == key }.flatMap { find($0.type) } ?? FormatObject("`\(key)`", [])
    }
}

extension [FormatKind] {
    public var names: [String] { map(\.name) }

    /// The mapping kind `name` takes (the object among its shapes).
    public func object(_ name: String) -> FormatObject {
        FormatObject("", first { $0.name == name }.map { [FormatKey(name, $0.value, "")] } ?? []).object(name)
    }
}

/// A kind of step or fault: its name in a scenario and the shape of its value.
public struct FormatKind: Sendable {
    public let name: String
    public let value: FormatType
    public let help: String
}

public enum ScenarioFormat {
    static let hostName = FormatType.text(pattern: "^[a-z][a-z0-9_-]{0,31}$")
    static let timeout = FormatKey("timeout_s", .number(0.1...86_400), "the step's deadline in seconds")

    public static let guestDevice = FormatObject("an emulated device", [
        FormatKey("name", hostName, required: true, "the device's name, used by steps and faults"),
        FormatKey("model", .choice(GuestDevice.Model.self), required: true, "the emulated PCIe device"),
        FormatKey("link", .choice(["up", "down"]), "a NIC whose link is down: the device check's negative control"),
        FormatKey("loopback", .boolean, "false: a pci-serial whose line goes nowhere (the negative control)"),
    ])

    public static let passthrough = FormatObject("a passthrough requirement", [
        FormatKey("name", hostName, required: true, "the requirement's name, used by steps and faults"),
        FormatKey("kind", .choice(PassthroughRequirement.Kind.self), required: true, "a PCI function through vfio-pci, or an mdev"),
        FormatKey("driver", .text(pattern: "^[A-Za-z0-9_-]{1,64}$"), "vfio-pci: the vfio driver, vfio-pci or a variant driver"),
        FormatKey("vendor_device", .text(pattern: "^[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}$"), "vfio-pci: vendor:device in hex"),
        FormatKey("type", .text(pattern: "^[A-Za-z0-9_.:-]{1,64}$"), "mdev: the mdev type, like mtty-2"),
        FormatKey("count", .integer(1...PassthroughRequirement.maximumCount), "how many functions or mdevs"),
        FormatKey("managed", .boolean, "vfio-pci: libvirt binds and unbinds the driver (default true)"),
    ])

    public static let guest = FormatObject("`guest`", [
        FormatKey("memory_mib", .integer(64...65536), "guest RAM"),
        FormatKey("vcpus", .integer(1...64), "virtual CPUs"),
        FormatKey("workload_mib", .integer(0...65536), "memory the oracle's workload dirties (0: none)"),
        FormatKey("devices", .list(.object(guestDevice)), "emulated PCIe devices"),
        FormatKey("passthrough", .list(.object(passthrough)), "passthrough devices by kind (lab files' pools)"),
    ])

    static let errorExpectation = FormatObject("`expect.error`", [
        FormatKey("code", .anyOf([.integer(0...1000), .list(.integer(0...1000))]), "libvirt's error code, or any of a list"),
        FormatKey("message", .text, "a regular expression libvirt's message matches"),
    ])

    static let guestExpectation = FormatObject("`expect.guest`", [
        FormatKey("on", .choice(MigrationSide.self), "the host the guest runs on"),
        FormatKey("state", .choice(Expectations.GuestState.self), "its state"),
    ])

    static let outcome = FormatType.choice(Expectations.MigrationOutcome.self)

    public static let expect = FormatObject("`expect`", [
        FormatKey("migrations", outcome, "every migration's outcome, unless its step says otherwise"),
        FormatKey("memory", .choice(Expectations.MemoryVerdict.self), "the memory oracle's verdicts"),
        FormatKey("console", .choice(Expectations.ConsoleVerdict.self), "the guest console"),
        FormatKey("devices", .choice(Expectations.DeviceVerdict.self), "the device checks"),
        FormatKey("error", .object(errorExpectation), "the error of failed or aborted migrations"),
        FormatKey("guest", .object(guestExpectation), "where the guest is at the end"),
        FormatKey("failure_detected_within_s", .number(0.1...3600), "a failing migration ends this soon after its first fault"),
        FormatKey("destination_after_failure", .choice(Expectations.DestinationAfterFailure.self), "a leftover on the destination fails (clean) or is reported (any)"),
        FormatKey("host_kernel", .choice(Expectations.HostKernelVerdict.self), "a host's kernel crash is expected and must be reported"),
        FormatKey("vfio_precopy", .choice(Expectations.VFIOPrecopyVerdict.self), "VFIO device state sent before the source stopped"),
    ])

    public static let migrationExpectation = FormatObject("`migrate.expect`", [
        FormatKey("outcome", outcome, "this migration's outcome"),
        FormatKey("error", .object(errorExpectation), "its error, when it fails or is aborted"),
        FormatKey("failure_detected_within_s", .number(0.1...3600), "it ends this soon after its first fault"),
        FormatKey("guest", .object(guestExpectation), "where the guest is right after it"),
    ])

    public static let trigger = FormatObject("`at`", [
        FormatKey("after_ms", .integer(0...86_400_000), "milliseconds after the migration started"),
        // A migration that needs more than 1000 passes never converges (the runner's deadline
        // ends it first), and nothing remains below 0: such triggers could never fire.
        FormatKey("iteration", .integer(1...1000), "when libvirt reports this memory iteration"),
        FormatKey("remaining_below_mib", .number(0.001...1_000_000), "when the data still to send falls below this"),
        FormatKey("remaining_below_fraction", .number(0.001...1), "when the data still to send falls below this fraction"),
    ], exactlyOne: true)

    /// Every fault kind, with the keys it takes besides `at` and `every_ms`: from the registry.
    public static let faults: [FormatKind] = FaultKinds.all.map { fault($0.name, $0.summary, $0.faultKeys) }

    static let everyMs = 10...3_600_000

    static func fault(_ name: String, _ help: String, _ keys: [FormatKey]) -> FormatKind {
        let object = FormatObject("`\(name)`", [FormatKey("at", .object(trigger), "when it fires (default: at once)"),
                                                FormatKey("every_ms", .integer(everyMs), "fire again this often")] + keys)
        // A fault with no required key may be written with an empty value (`- kill-qemu:`).
        return FormatKind(name: name, value: object.required.isEmpty ? .anyOf([.object(object), .empty]) : .object(object), help: help)
    }

    public static let corruptStream = FormatObject("`corrupt_stream`", [
        FormatKey("mode", .choice(StreamCorruption.self), required: true, "what the proxy damages"),
        FormatKey("every_mib", .integer(1...100_000), "flip-every: one byte per this many MiB"),
    ])

    public static let destination = FormatObject("`destination`", [
        FormatKey("change_model", .object(FormatObject("`change_model`", [
            FormatKey("device", .text, required: true, "a NIC of the guest"),
            FormatKey("model", .choice(GuestDevice.Model.self), required: true, "its model on the destination"),
        ])), "the destination's definition has another NIC model"),
        FormatKey("remove_device", .text, "the destination's definition lacks this NIC"),
        FormatKey("mdev_type", .object(FormatObject("`mdev_type`", [
            FormatKey("device", .text, required: true, "an mdev passthrough requirement"),
            FormatKey("type", .text, required: true, "the destination's mdev type"),
        ])), "the destination's mdev is of another type"),
    ])

    public static let migrate = FormatObject("`migrate`", [
        FormatKey("from", hostName, required: true, "the source host"),
        FormatKey("to", hostName, required: true, "the destination host"),
        FormatKey("bandwidth_mib_s", .integer(0...1_000_000), "bandwidth limit (MiB/s)"),
        FormatKey("max_downtime_ms", .integer(1...3_600_000), "maximum downtime"),
        FormatKey("suspend", .boolean, "leave the guest paused on the destination"),
        timeout,
        FormatKey("faults", .list(.object(FormatObject("a fault", faults.map { FormatKey($0.name, $0.value, $0.help) }, exactlyOne: true))),
                  "faults fired while the migration runs"),
        FormatKey("corrupt_stream", .object(corruptStream), "a proxy between the QEMUs damages the stream"),
        FormatKey("destination", .object(destination), "a destination that differs from the source"),
        FormatKey("reuse_mdevs_after_failure", .boolean, "on purpose, a failed resume's mdevs are not recreated"),
        FormatKey("expect", .object(migrationExpectation), "this migration's own expectation"),
    ])

    static let onHost = FormatType.anyOf([hostName, .object(FormatObject("a host", [FormatKey("on", hostName, required: true, "the host"), timeout]))])

    /// Every step kind and the shape of its value: from the registry.
    public static let steps: [FormatKind] = StepKinds.all.map { FormatKind(name: $0.name, value: $0.format, help: $0.summary) }

    public static let scenario = FormatObject("the scenario", [
        FormatKey("version", .integer(ScenarioParser.readableVersions), "the format version (1 or 2; default 2)"),
        FormatKey("name", .text(pattern: "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"), required: true, "the scenario's name"),
        FormatKey("description", .text, "one line on what it shows"),
        FormatKey("tags", .list(.text(pattern: "^[A-Za-z0-9][A-Za-z0-9_.-]*$")), "words `--tags` selects by"),
        FormatKey("guest", .object(guest), "the guest"),
        FormatKey("steps", .steps, required: true, "what happens, in order"),
        FormatKey("expect", .object(expect), "what the scenario must show to pass"),
        FormatKey("matrix", .axes, "named axes; each combination is a scenario of its own"),
        FormatKey("exclude", .list(.axisValues), "combinations of the matrix left out"),
    ])
}

// MARK: JSON Schema

extension ScenarioFormat {
    /// The JSON Schema (draft 2020-12) of the format, as `scenarios/schema.json` holds it.
    /// Every value that is not text may also be a matrix reference, `${axis}`.
    public static func jsonSchema() -> String {
        let stepDefinition = object(FormatObject("a step", steps.map { FormatKey($0.name, $0.value, $0.help) }, exactlyOne: true))
        var root = object(scenario)
        root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        root["$id"] = "https://github.com/miglab/miglab/scenarios/schema.json"
        root["title"] = "miglab scenario (format v\(ScenarioParser.formatVersion))"
        root["$defs"] = [
            "step": stepDefinition,
            "axisReference": ["type": "string", "pattern": #"^\$\{[a-z][a-z0-9_]{0,31}\}$"#,
                              "description": "a matrix axis, replaced by each combination's value"] as [String: Any],
        ]
        // Plain dictionaries, arrays, strings and numbers: nothing JSONSerialization refuses.
        let data = (try? JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    static func object(_ o: FormatObject) -> [String: Any] {
        var properties: [String: Any] = [:]
        for k in o.keys {
            var p = schema(k.type)
            p["description"] = k.help
            properties[k.name] = p
        }
        var out: [String: Any] = ["type": "object", "title": o.title, "properties": properties, "additionalProperties": false]
        if !o.required.isEmpty { out["required"] = o.required }
        if o.exactlyOne { out["minProperties"] = 1; out["maxProperties"] = 1 }
        return out
    }

    /// A scalar that may also be `${axis}`.
    static func orAxis(_ s: [String: Any]) -> [String: Any] {
        ["anyOf": [s, ["$ref": "#/$defs/axisReference"]]]
    }

    static func schema(_ t: FormatType) -> [String: Any] {
        switch t {
        case let .text(pattern):
            return pattern.map { orAxis(["type": "string", "pattern": $0]) } ?? ["type": "string"]
        case let .integer(r):
            return orAxis(["type": "integer", "minimum": r.lowerBound, "maximum": r.upperBound])
        case let .number(r):
            return orAxis(["type": "number", "minimum": r.lowerBound, "maximum": r.upperBound])
        case .boolean:
            return orAxis(["type": "boolean"])
        case let .choice(values):
            return orAxis(["enum": values])
        case let .list(item):
            return ["type": "array", "items": schema(item)]
        case let .object(o):
            return object(o)
        case let .anyOf(types):
            return ["anyOf": types.map(schema)]
        case .steps:
            return ["type": "array", "minItems": 1, "items": ["$ref": "#/$defs/step"]]
        case .axes:
            return ["type": "object", "minProperties": 1, "propertyNames": ["pattern": "^[a-z][a-z0-9_]{0,31}$"],
                    "additionalProperties": ["type": "array", "minItems": 1, "items": ["type": ["string", "number", "boolean"]]]]
        case .axisValues:
            return ["type": "object", "minProperties": 1, "additionalProperties": ["type": ["string", "number", "boolean"]]]
        case .empty:
            return ["type": "null"]
        }
    }
}
