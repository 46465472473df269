/// A scenario: a guest, the steps run against it, and what the run must show.
/// Built from YAML by `ScenarioParser` (format v1, see scenarios/README.md).
public struct Scenario: Sendable, Equatable, Codable {
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

    /// Steps with every `repeat` unrolled, in the order they run.
    public var flattenedSteps: [Step] {
        func flatten(_ steps: [Step]) -> [Step] {
            steps.flatMap { step -> [Step] in
                if case let .repeat(r) = step.action {
                    return (0..<r.times).flatMap { _ in flatten(r.steps) }
                }
                return [step]
            }
        }
        return flatten(steps)
    }
}

public struct GuestSpec: Sendable, Equatable, Codable {
    public var memoryMiB: Int = 256
    public var vcpus: Int = 2
    /// Size of the memory workload's buffer; 0 = no workload.
    public var workloadMiB: Int = 64
    public init(memoryMiB: Int = 256, vcpus: Int = 2, workloadMiB: Int = 64) {
        self.memoryMiB = memoryMiB
        self.vcpus = vcpus
        self.workloadMiB = workloadMiB
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

public struct Step: Sendable, Equatable, Codable {
    public var action: Action
    /// Deadline of the step; the default depends on the kind.
    public var timeoutSeconds: Double?
    public var location: SourceLocation?

    public init(_ action: Action, timeoutSeconds: Double? = nil, location: SourceLocation? = nil) {
        self.action = action
        self.timeoutSeconds = timeoutSeconds
        self.location = location
    }

    public var kind: String {
        switch action {
        case .boot: "boot"
        case .migrate: "migrate"
        case .verify: "verify"
        case .repeat: "repeat"
        }
    }

    public var effectiveTimeoutSeconds: Double {
        timeoutSeconds ?? {
            switch action {
            case .boot: 180
            case .migrate: 300
            case .verify: 180
            case .repeat: .infinity
            }
        }()
    }

    public indirect enum Action: Sendable, Equatable, Codable {
        case boot(Boot)
        case migrate(Migrate)
        case verify(Verify)
        case `repeat`(Repeat)
    }

    public struct Boot: Sendable, Equatable, Codable {
        public var host: String
        public init(host: String) { self.host = host }
    }

    public struct Migrate: Sendable, Equatable, Codable {
        public var from: String
        public var to: String
        /// MiB/s; nil = unlimited.
        public var bandwidthMiBps: Int?
        public var maxDowntimeMs: Int?
        /// Leave the guest paused on the destination.
        public var suspend: Bool
        public init(from: String, to: String, bandwidthMiBps: Int? = nil, maxDowntimeMs: Int? = nil, suspend: Bool = false) {
            self.from = from
            self.to = to
            self.bandwidthMiBps = bandwidthMiBps
            self.maxDowntimeMs = maxDowntimeMs
            self.suspend = suspend
        }
    }

    public struct Verify: Sendable, Equatable, Codable {
        public var memory: Bool
        public var console: Bool
        public init(memory: Bool = true, console: Bool = true) {
            self.memory = memory
            self.console = console
        }
    }

    public struct Repeat: Sendable, Equatable, Codable {
        public var times: Int
        public var steps: [Step]
        public init(times: Int, steps: [Step]) {
            self.times = times
            self.steps = steps
        }
    }
}

/// What the scenario must show to pass.
public struct Expectations: Sendable, Equatable, Codable {
    public enum MigrationOutcome: String, Sendable, Codable, CaseIterable { case completed, failed, aborted }
    public enum MemoryVerdict: String, Sendable, Codable, CaseIterable { case intact, corrupted }
    public enum ConsoleVerdict: String, Sendable, Codable, CaseIterable { case clean, errors }

    public var migrations: MigrationOutcome = .completed
    public var memory: MemoryVerdict = .intact
    public var console: ConsoleVerdict = .clean

    public init(migrations: MigrationOutcome = .completed, memory: MemoryVerdict = .intact, console: ConsoleVerdict = .clean) {
        self.migrations = migrations
        self.memory = memory
        self.console = console
    }
}
