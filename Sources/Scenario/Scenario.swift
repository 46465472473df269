/// A scenario: a guest, the steps run against it, and what the run must show.
/// Built from YAML by `ScenarioParser` (format v1, see scenarios/README.md).
public struct Scenario: Sendable, Equatable {
    public var name: String
    public var description: String
    public var tags: [String]
    public var guest: GuestSpec
    public var steps: [Step]
    public var expect: Expectations
    /// Where it came from, for messages.
    public var file: String

    public init(name: String, description: String = "", tags: [String] = [], guest: GuestSpec = GuestSpec(),
                steps: [Step], expect: Expectations = Expectations(), file: String = "<memory>") {
        self.name = name
        self.description = description
        self.tags = tags
        self.guest = guest
        self.steps = steps
        self.expect = expect
        self.file = file
    }

    /// At most this many steps, repeats unrolled, in one scenario.
    public static let maxSteps = 10_000

    /// How many steps `flattenedSteps` has (a repeat of nothing counts as one step a round),
    /// counted without unrolling (saturating at Int.max).
    public var unrolledStepCount: Int {
        func count(_ steps: [Step]) -> Int {
            steps.reduce(0) { total, step in
                var n = 1
                if let r = step.action.repetition {
                    // At least one per round, so that repeats of nothing (an empty `steps:`,
                    // already an error) still count for the rounds unrolling walks through.
                    let (p, o) = r.times.multipliedReportingOverflow(by: max(1, count(r.steps)))
                    n = o ? Int.max : p
                }
                let (sum, o) = total.addingReportingOverflow(n)
                return o ? Int.max : sum
            }
        }
        return count(steps)
    }

    /// Steps with every `repeat` unrolled, in the order they run.
    public var flattenedSteps: [Step] {
        func flatten(_ steps: [Step]) -> [Step] {
            steps.flatMap { step -> [Step] in
                if let r = step.action.repetition {
                    return (0..<r.times).flatMap { _ in flatten(r.steps) }
                }
                return [step]
            }
        }
        return flatten(steps)
    }

    /// What the steps and faults need of the hosts, beyond libvirt.
    public var hostNeeds: Set<HostCapability> { Set(stepNeeds.map(\.capability)) }

    /// Whether a step or fault resets a device through the guest kernel's PCI reset, which the
    /// hosts must pass on to the devices (`HostActions.passGuestResetsToDevices`).
    public var resetsDevicesFromTheGuest: Bool { hostNeeds.contains(.guestResetsReachDevices) }
}

public struct GuestSpec: Sendable, Equatable, Codable {
    public var memoryMiB: Int = 256
    public var vcpus: Int = 2
    /// Size of the memory workload's buffer; 0 = no workload.
    public var workloadMiB: Int = 64
    /// Emulated PCIe devices; by default one virtio-net NIC named nic0.
    public var devices: [GuestDevice] = [GuestDevice(name: "nic0", model: .virtioNet)]
    /// Passthrough device requirements (hardware labs): kinds and counts, never addresses.
    public var passthrough: [PassthroughRequirement] = []
    public init(memoryMiB: Int = 256, vcpus: Int = 2, workloadMiB: Int = 64,
                devices: [GuestDevice] = [GuestDevice(name: "nic0", model: .virtioNet)]) {
        self.memoryMiB = memoryMiB
        self.vcpus = vcpus
        self.workloadMiB = workloadMiB
        self.devices = devices
    }
}

/// Where a step was written, for messages.
public struct SourceLocation: Sendable, Equatable, Codable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }
    public var description: String { "\(file):\(line):\(column)" }
}

/// One step of a scenario: an action of a registered kind (`StepKinds.all`), its deadline and
/// where it was written.
public struct Step: Sendable, Equatable {
    public var action: any StepKind
    /// Deadline of the step; nil takes its kind's default.
    public var timeoutSeconds: Double?
    public var location: SourceLocation?

    public init<Kind: StepKind>(_ action: Kind, timeoutSeconds: Double? = nil, location: SourceLocation? = nil) {
        self.action = action
        self.timeoutSeconds = timeoutSeconds
        self.location = location
    }

    /// A fault kind used as a step (`FaultStep`).
    public static func inject<Fault: FaultKind>(_ fault: Fault, timeoutSeconds: Double? = nil, location: SourceLocation? = nil) -> Step {
        Step(FaultStep(fault), timeoutSeconds: timeoutSeconds, location: location)
    }

    public var kind: String { type(of: action).name }

    public var effectiveTimeoutSeconds: Double { timeoutSeconds ?? type(of: action).defaultTimeoutSeconds }

    /// The action as kind `K`, when it is one.
    public func action<K: StepKind>(as _: K.Type) -> K? { action as? K }

    public static func == (a: Step, b: Step) -> Bool {
        a.action.isEqual(to: b.action) && a.timeoutSeconds == b.timeoutSeconds && a.location == b.location
    }

    public struct Boot: Sendable, Equatable, Codable {
        public var host: String
        public init(host: String) { self.host = host }
    }

    public struct Restart: Sendable, Equatable, Codable {
        public var host: String
        public init(host: String) { self.host = host }
    }

    public struct Migrate: Sendable, Equatable {
        public var from: String
        public var to: String
        /// MiB/s; nil = unlimited.
        public var bandwidthMiBps: Int?
        public var maxDowntimeMs: Int?
        /// Leave the guest paused on the destination.
        public var suspend: Bool
        /// Faults fired while the migration runs.
        public var faults: [Fault]
        /// Damage to the migration stream (a proxy sits between the QEMUs).
        public var corruptStream: StreamCorruption?
        public var corruptEveryMiB: Int
        /// The destination's definition differs from the source's.
        public var destinationChange: DestinationChange?
        /// On purpose, after this migration fails, the lab does not remove and recreate the
        /// destination's mdevs: the next user gets what the failed resume left (a scenario that
        /// shows a driver crashing its host on that; the virtual VFIO hosts only).
        public var reuseMdevsAfterFailure = false
        /// What this migration must show; nil takes the scenario's `expect`.
        public var expect: MigrationExpectation?
        public init(from: String, to: String, bandwidthMiBps: Int? = nil, maxDowntimeMs: Int? = nil, suspend: Bool = false,
                    faults: [Fault] = [], corruptStream: StreamCorruption? = nil, corruptEveryMiB: Int = 1,
                    destinationChange: DestinationChange? = nil) {
            self.from = from
            self.to = to
            self.bandwidthMiBps = bandwidthMiBps
            self.maxDowntimeMs = maxDowntimeMs
            self.suspend = suspend
            self.faults = faults
            self.corruptStream = corruptStream
            self.corruptEveryMiB = corruptEveryMiB
            self.destinationChange = destinationChange
        }
    }

    /// The checks a `verify` step runs (`Verifiers`), by name, in the registry's order.
    public struct Verify: Sendable, Equatable, Codable {
        public var checks: [String]

        public init(checks: [String]) {
            self.checks = Verifiers.names.filter(checks.contains)
        }

        public init(memory: Bool = true, console: Bool = true, devices: Bool = false) {
            self.init(checks: [memory ? MemoryCheck.name : nil, console ? ConsoleCheck.name : nil, devices ? DeviceCheck.name : nil].compactMap { $0 })
        }

        public func runs(_ kind: any VerifierKind.Type) -> Bool { checks.contains(kind.name) }
        public var memory: Bool { runs(MemoryCheck.self) }
        public var console: Bool { runs(ConsoleCheck.self) }
        public var devices: Bool { runs(DeviceCheck.self) }
    }

    public struct Repeat: Sendable, Equatable {
        public var times: Int
        public var steps: [Step]
        public init(times: Int, steps: [Step]) {
            self.times = times
            self.steps = steps
        }
    }
}

/// What one migration must show: a `migrate` step's own `expect:`, or the scenario's defaults.
public struct MigrationExpectation: Sendable, Equatable, Codable {
    public var outcome: Expectations.MigrationOutcome
    /// For a failed or aborted migration: libvirt's error code (any of these) and a pattern
    /// (regular expression) its message matches.
    public var errorCodes: [Int32]?
    public var errorMessage: String?
    /// A failing migration must end within this many seconds of the first fault.
    public var failureDetectedWithinSeconds: Double?
    /// Where the guest is right after this migration (source or destination), and its state.
    public var guestOn: MigrationSide?
    public var guestState: Expectations.GuestState?

    public init(outcome: Expectations.MigrationOutcome = .completed, errorCodes: [Int32]? = nil, errorMessage: String? = nil,
                failureDetectedWithinSeconds: Double? = nil, guestOn: MigrationSide? = nil, guestState: Expectations.GuestState? = nil) {
        self.outcome = outcome
        self.errorCodes = errorCodes
        self.errorMessage = errorMessage
        self.failureDetectedWithinSeconds = failureDetectedWithinSeconds
        self.guestOn = guestOn
        self.guestState = guestState
    }
}

extension Scenario {
    /// What migration step `m` must show: its own `expect:`, else the scenario's outcome, error
    /// and detection time (the scenario's `guest:` is judged once, at the end).
    public func expectation(for m: Step.Migrate) -> MigrationExpectation {
        m.expect ?? MigrationExpectation(outcome: expect.migrations, errorCodes: expect.errorCodes, errorMessage: expect.errorMessage,
                                         failureDetectedWithinSeconds: expect.failureDetectedWithinSeconds)
    }
}

/// What the scenario must show to pass.
public struct Expectations: Sendable, Equatable, Codable {
    public enum MigrationOutcome: String, Sendable, Codable, CaseIterable { case completed, failed, aborted }
    public enum MemoryVerdict: String, Sendable, Codable, CaseIterable { case intact, corrupted }
    public enum ConsoleVerdict: String, Sendable, Codable, CaseIterable { case clean, errors }
    public enum DeviceVerdict: String, Sendable, Codable, CaseIterable { case working, broken }
    public enum GuestState: String, Sendable, Codable, CaseIterable {
        case running, paused
        case shutOff = "shut-off"
        case crashed
        /// Gone: no domain of that name on the host any more (a killed source QEMU).
        case gone
    }

    public var migrations: MigrationOutcome = .completed
    public var memory: MemoryVerdict = .intact
    public var console: ConsoleVerdict = .clean
    public var devices: DeviceVerdict = .working
    /// For failed migrations: libvirt's error code (any of these) and a pattern (regular
    /// expression) its message matches.
    public var errorCodes: [Int32]?
    public var errorMessage: String?
    /// Where the guest is after the last migration, and its state.
    public var guestOn: MigrationSide?
    public var guestState: GuestState?
    /// A failing migration must end (libvirt notices the fault) within this many seconds of it.
    public var failureDetectedWithinSeconds: Double?
    /// After a failed migration nothing may be left on the destination (`clean`), or a
    /// leftover is reported but tolerated (`any`).
    public var destinationAfterFailure: DestinationAfterFailure = .clean
    public enum DestinationAfterFailure: String, Sendable, Codable, CaseIterable { case clean, any }
    /// The hosts' kernels stay healthy (every scenario), or one crashes and miglab must detect
    /// and report it (a scenario documenting a driver bug, on throwaway virtual hosts).
    public var hostKernel: HostKernelVerdict = .healthy
    /// `sent`: every completed migration carried VFIO device state during pre-copy, before the
    /// source stopped (a PRE_COPY device's initial bytes: what switchover-ack waits for).
    public var vfioPrecopy: VFIOPrecopyVerdict?
    public enum VFIOPrecopyVerdict: String, Sendable, Codable, CaseIterable { case sent }
    public enum HostKernelVerdict: String, Sendable, Codable, CaseIterable { case healthy, crashes }

    /// In the journal as in scenario files: snake_case.
    enum CodingKeys: String, CodingKey {
        case migrations, memory, console, devices
        case errorCodes = "error_codes"
        case errorMessage = "error_message"
        case guestOn = "guest_on"
        case guestState = "guest_state"
        case failureDetectedWithinSeconds = "failure_detected_within_s"
        case destinationAfterFailure = "destination_after_failure"
        case hostKernel = "host_kernel"
        case vfioPrecopy = "vfio_precopy"
    }

    /// Missing keys take their defaults (a journal of an older miglab).
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init()
        migrations = try c.decodeIfPresent(MigrationOutcome.self, forKey: .migrations) ?? migrations
        memory = try c.decodeIfPresent(MemoryVerdict.self, forKey: .memory) ?? memory
        console = try c.decodeIfPresent(ConsoleVerdict.self, forKey: .console) ?? console
        devices = try c.decodeIfPresent(DeviceVerdict.self, forKey: .devices) ?? devices
        errorCodes = try c.decodeIfPresent([Int32].self, forKey: .errorCodes)
        errorMessage = try c.decodeIfPresent(String.self, forKey: .errorMessage)
        guestOn = try c.decodeIfPresent(MigrationSide.self, forKey: .guestOn)
        guestState = try c.decodeIfPresent(GuestState.self, forKey: .guestState)
        failureDetectedWithinSeconds = try c.decodeIfPresent(Double.self, forKey: .failureDetectedWithinSeconds)
        destinationAfterFailure = try c.decodeIfPresent(DestinationAfterFailure.self, forKey: .destinationAfterFailure) ?? destinationAfterFailure
        hostKernel = try c.decodeIfPresent(HostKernelVerdict.self, forKey: .hostKernel) ?? hostKernel
        vfioPrecopy = try c.decodeIfPresent(VFIOPrecopyVerdict.self, forKey: .vfioPrecopy)
    }

    public init(migrations: MigrationOutcome = .completed, memory: MemoryVerdict = .intact, console: ConsoleVerdict = .clean,
                devices: DeviceVerdict = .working, errorCodes: [Int32]? = nil, errorMessage: String? = nil,
                guestOn: MigrationSide? = nil, guestState: GuestState? = nil, failureDetectedWithinSeconds: Double? = nil) {
        self.migrations = migrations
        self.memory = memory
        self.console = console
        self.devices = devices
        self.errorCodes = errorCodes
        self.errorMessage = errorMessage
        self.guestOn = guestOn
        self.guestState = guestState
        self.failureDetectedWithinSeconds = failureDetectedWithinSeconds
    }
}
