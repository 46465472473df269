import Foundation
import Scenario
#if canImport(Glibc)
import Glibc
#endif

/// One line of the run journal: every step start and end, migration progress sample,
/// verification and error is an event. Reports are functions of the journal alone, so a run
/// that was killed still yields a report of what finished.
public struct JournalEvent: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        case runStarted = "run_started"
        case scenarioStarted = "scenario_started"
        case phase                       // a timed stretch: lab set-up, tear-down
        case stepStarted = "step_started"
        case stepFinished = "step_finished"
        case migrationProgress = "migration_progress"
        case migrationFinished = "migration_finished"
        case verification
        /// A fault fired during a migration (or a guest device action outside one).
        case fault
        case scenarioFinished = "scenario_finished"
        case runFinished = "run_finished"
        case note
        /// A lab error (the scenario could not be run to its end: outcome `error`) or an
        /// interruption (outcome `interrupted`); without an outcome, something the run saw
        /// (a host's kernel trouble).
        case error
        /// Expectations judged at this point of the run (a migration's, the checks after a
        /// failed one, the scenario's own at its end).
        case expectation
        /// The versions of what the hosts run (QEMU, libvirt, kernel), recorded each time the
        /// lab is prepared.
        case environment
        /// A kind this miglab does not know (a newer miglab's journal): kept, not understood.
        case unknown

        public init(from decoder: Decoder) throws {
            let raw = try decoder.singleValueContainer().decode(String.self)
            self = Kind(rawValue: raw) ?? .unknown
        }
    }

    public var seq: Int = 0
    /// Seconds since the run started (monotonic clock).
    public var t: Double = 0
    public var wallclock: String = ""
    public var kind: Kind
    public var scenario: String?
    public var file: String?
    public var step: Int?
    public var stepKind: String?
    /// Timing category of a phase or step.
    public var phase: TimedPhase?
    public var durationSeconds: Double?
    /// How what the event closes ended.
    public var outcome: Outcome?
    public var message: String?
    public var migration: MigrationRecord?
    public var progress: MigrationStats?
    public var verification: VerificationRecord?
    public var fault: FaultRecord?
    public var expectations: [ExpectationRecord]?
    /// scenario_started: what the scenario must show (memory, console and device verdicts are
    /// judged from the verification events against it).
    public var expect: Expectations?
    public var details: [String: String]?
    /// scenario_started of a repeated run (`--repeat N`): which of its runs this is, from 1.
    public var attempt: Int?
    /// environment: one entry per host.
    public var environment: [HostEnvironment]?

    public init(kind: Kind, scenario: String? = nil) {
        self.kind = kind
        self.scenario = scenario
    }

    /// How something an event closes ended: a step (passed, error), a scenario or the run
    /// (`ScenarioVerdict.Outcome`), a migration (completed, failed, aborted), an error event
    /// (error: the lab could not go on; interrupted: Ctrl-C or SIGTERM), a guest-side fault
    /// that did not happen (failed).
    public enum Outcome: String, Codable, Sendable, CaseIterable {
        case passed, failed, error, interrupted, incomplete
        case completed, aborted

        public init(_ o: ScenarioVerdict.Outcome) {
            self = switch o {
            case .passed: .passed
            case .failed: .failed
            case .error: .error
            case .interrupted: .interrupted
            case .incomplete: .incomplete
            }
        }

        public init(_ o: Expectations.MigrationOutcome) {
            self = switch o {
            case .completed: .completed
            case .failed: .failed
            case .aborted: .aborted
            }
        }

        /// A verification's `pass`/`fail` (journals of miglab before 0.18) reads as passed/failed.
        public init(from decoder: Decoder) throws {
            let raw = try decoder.singleValueContainer().decode(String.self)
            switch raw {
            case "pass": self = .passed
            case "fail": self = .failed
            default:
                guard let o = Outcome(rawValue: raw) else {
                    throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                        debugDescription: "unknown outcome `\(raw)`; known: \(Outcome.allCases.map(\.rawValue).joined(separator: ", "))"))
                }
                self = o
            }
        }
    }

    enum CodingKeys: String, CodingKey {
        case seq, t, wallclock, kind, scenario, file, step, phase, outcome, message, migration, progress, verification,
             fault, expectations, expect, details, attempt, environment
        case stepKind = "step_kind"
        case durationSeconds = "duration_s"
    }
}

/// What one host of a run runs: the versions a regression is reported against.
public struct HostEnvironment: Codable, Sendable, Equatable, Hashable {
    public var host: String
    /// QEMU's version ("10.0.2"), of the emulator the guests use.
    public var qemu: String?
    /// The emulator binary, when the lab names one (`--qemu`, a lab file's `emulator`).
    public var qemuBinary: String?
    /// The libvirt daemon's version ("11.3.0").
    public var libvirt: String?
    /// The libvirt daemon binary, when the run chose one (`--libvirtd`).
    public var libvirtd: String?
    /// The host kernel's release (`uname -r`), when the lab can see it.
    public var kernel: String?

    public init(host: String, qemu: String? = nil, qemuBinary: String? = nil, libvirt: String? = nil,
                libvirtd: String? = nil, kernel: String? = nil) {
        self.host = host
        self.qemu = qemu
        self.qemuBinary = qemuBinary
        self.libvirt = libvirt
        self.libvirtd = libvirtd
        self.kernel = kernel
    }

    enum CodingKeys: String, CodingKey {
        case host, qemu, libvirt, libvirtd, kernel
        case qemuBinary = "qemu_binary"
    }
}

/// The figures of a migration job miglab reports (libvirt's units).
public struct MigrationStats: Codable, Sendable, Equatable {
    public var timeElapsedMs: UInt64?
    public var downtimeMs: UInt64?
    public var setupTimeMs: UInt64?
    public var dataTotalBytes: UInt64?
    public var dataProcessedBytes: UInt64?
    public var dataRemainingBytes: UInt64?
    public var memoryIterations: UInt64?
    public var memoryDirtyRatePagesPerSecond: UInt64?
    public var memoryBytesPerSecond: UInt64?
    /// Guest RAM sent (the rest of `data_processed` is device state and stream overhead).
    public var memoryProcessedBytes: UInt64?
    /// VFIO device state sent (libvirt >= 10.6 reports it; absent otherwise).
    public var vfioDataBytes: UInt64?
    /// Progress samples only: where the migration stood when the sample was taken.
    public var phase: MigrationPhase?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case timeElapsedMs = "time_elapsed_ms"
        case downtimeMs = "downtime_ms"
        case setupTimeMs = "setup_time_ms"
        case dataTotalBytes = "data_total_bytes"
        case dataProcessedBytes = "data_processed_bytes"
        case dataRemainingBytes = "data_remaining_bytes"
        case memoryIterations = "memory_iterations"
        case memoryDirtyRatePagesPerSecond = "memory_dirty_rate_pages_s"
        case memoryBytesPerSecond = "memory_bps"
        case memoryProcessedBytes = "memory_processed_bytes"
        case vfioDataBytes = "vfio_data_bytes"
        case phase
    }
}

/// The phases of a pre-copy live migration (seed 003): set-up (devices start tracking, nothing
/// sent yet), pre-copy (RAM and a VFIO device's pre-copy data stream while the guest runs),
/// stop-copy (the source is paused; the rest of RAM and the device state go over).
public enum MigrationPhase: String, Codable, Sendable, Equatable {
    case setup
    case preCopy = "pre_copy"
    case stopCopy = "stop_copy"
}

public struct MigrationRecord: Codable, Sendable, Equatable {
    public var from: String
    public var to: String
    public var outcome: Expectations.MigrationOutcome
    public var stats: MigrationStats
    /// Wall time of the whole libvirt call, seconds.
    public var wallSeconds: Double
    public var errorCode: Int32?
    public var errorDomain: Int32?
    public var errorMessage: String?

    public init(from: String, to: String, outcome: Expectations.MigrationOutcome, stats: MigrationStats, wallSeconds: Double,
                errorCode: Int32? = nil, errorDomain: Int32? = nil, errorMessage: String? = nil) {
        self.from = from
        self.to = to
        self.outcome = outcome
        self.stats = stats
        self.wallSeconds = wallSeconds
        self.errorCode = errorCode
        self.errorDomain = errorDomain
        self.errorMessage = errorMessage
    }

    enum CodingKeys: String, CodingKey {
        case from, to, outcome, stats
        case wallSeconds = "wall_s"
        case errorCode = "error_code"
        case errorDomain = "error_domain"
        case errorMessage = "error_message"
    }
}

public struct VerificationRecord: Codable, Sendable, Equatable {
    /// memory | console
    public var kind: String
    /// pass | fail
    public var verdict: Verdict
    public var host: String?
    public var pagesChecked: Int?
    public var badPages: Int?
    public var firstBadPages: [String]?
    /// The guest ran (the workload's counter advanced) before the full check.
    public var guestRunning: Bool?
    /// Errors the workload found itself, from inside the guest.
    public var guestReportedErrors: UInt64?
    public var findings: [String]?
    public var detail: String?
    /// Memory checks: how guest RAM was read ("dump": a core dump of all of it; "frames": the
    /// workload's frames through virDomainMemoryPeek; "ram": all of it through
    /// virDomainMemoryPeek), how many bytes, and in how long (the check's throughput).
    public var readMethod: String?
    public var bytesRead: UInt64?
    public var readSeconds: Double?

    public init(kind: String, verdict: Verdict) {
        self.kind = kind
        self.verdict = verdict
    }

    enum CodingKeys: String, CodingKey {
        case kind, verdict, host, findings, detail
        case pagesChecked = "pages_checked"
        case badPages = "bad_pages"
        case firstBadPages = "first_bad_pages"
        case guestRunning = "guest_running"
        case guestReportedErrors = "guest_reported_errors"
        case readMethod = "read_method"
        case bytesRead = "bytes_read"
        case readSeconds = "read_s"
    }
}

/// Where and when a fault landed, measured against its trigger.
public struct FaultRecord: Codable, Sendable, Equatable {
    public var kind: String
    /// The trigger as written ("after 1500 ms", "at iteration 3", ...).
    public var trigger: String
    /// Milliseconds after the migration started when the fault fired.
    public var firedAtMs: Double
    /// Milliseconds after the migration started when the runner first saw the trigger
    /// condition hold (fired_at_ms - condition_seen_at_ms is the action's own latency).
    public var conditionSeenAtMs: Double?
    /// The job statistics when it fired.
    public var stats: MigrationStats?
    /// Which host it acted on.
    public var host: String?
    /// What happened: "ok", a refusal with libvirt's message, the guest tool's counts.
    public var result: String?
    public var error: String?

    public init(kind: String, trigger: String, firedAtMs: Double) {
        self.kind = kind
        self.trigger = trigger
        self.firedAtMs = firedAtMs
    }

    enum CodingKeys: String, CodingKey {
        case kind, trigger, stats, host, result, error
        case firedAtMs = "fired_at_ms"
        case conditionSeenAtMs = "condition_seen_at_ms"
    }
}

public struct ExpectationRecord: Codable, Sendable, Equatable {
    public var what: String
    public var expected: String
    public var observed: String
    /// pass | fail
    public var verdict: Verdict
    /// The step (index in the unrolled steps) the expectation belongs to; nil for the
    /// scenario's own (memory, console, devices, where the guest ends up).
    public var step: Int?
    public init(what: String, expected: String, observed: String, pass: Bool? = nil, step: Int? = nil) {
        self.what = what
        self.expected = expected
        self.observed = observed
        self.verdict = (pass ?? (expected == observed)) ? .pass : .fail
        self.step = step
    }
}

/// Appends events to `journal.jsonl`, one JSON object per line, each written with its own
/// write(2) as it happens: nothing is buffered in the process, so a killed runner loses nothing.
public final class Journal: @unchecked Sendable {
    public let path: String
    private let fd: Int32
    private let lock = NSLock()
    private var seq = 0
    /// What was recorded, for the verdict of the scenario that runs (the file is the record).
    private var recorded: [JournalEvent] = []
    private let start = ContinuousClock.now
    private let encoder: JSONEncoder
    private let formatter = ISO8601DateFormatter()

    public init(path: String) throws {
        self.path = path
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw JournalError("cannot open the journal \(path): \(String(cString: strerror(errno)))")
        }
        encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    }

    deinit { close(fd) }

    /// Seconds since the journal was opened.
    public var elapsed: Double { (ContinuousClock.now - start).seconds }

    @discardableResult
    public func record(_ event: JournalEvent) -> JournalEvent {
        var e = event
        lock.withLock {
            seq += 1
            e.seq = seq
            e.t = (elapsed * 1000).rounded() / 1000
            e.wallclock = formatter.string(from: Date())
            recorded.append(e)
            if var line = try? encoder.encode(e) {
                line.append(0x0A)
                line.withUnsafeBytes { raw in
                    var off = 0
                    while off < raw.count {
                        let n = write(fd, raw.baseAddress! + off, raw.count - off)
                        if n <= 0 { if errno == EINTR { continue }; break }
                        off += n
                    }
                }
            }
        }
        return e
    }

    /// The events recorded from sequence number `seq` on.
    public func events(from seq: Int) -> [JournalEvent] {
        lock.withLock { Array(recorded.drop { $0.seq < seq }) }
    }

    /// Reads a journal back. A torn last line (the runner died mid-write) is skipped;
    /// any other bad line is an error naming the line.
    public static func read(path: String) throws -> [JournalEvent] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw JournalError("cannot read the journal \(path)")
        }
        let lines = data.split(separator: 0x0A, omittingEmptySubsequences: false)
        var events: [JournalEvent] = []
        let decoder = JSONDecoder()
        let endsWithNewline = data.last == 0x0A
        for (i, line) in lines.enumerated() where !line.isEmpty {
            do {
                events.append(try decoder.decode(JournalEvent.self, from: Data(line)))
            } catch {
                if i == lines.count - 1 && !endsWithNewline { continue } // torn last line
                throw JournalError("\(path):\(i + 1): not a journal event (\(error)); the journal is damaged")
            }
        }
        return events
    }
}

/// A check's verdict.
public enum Verdict: String, Codable, Sendable, Equatable {
    case pass, fail

    public init(_ passed: Bool) { self = passed ? .pass : .fail }
}

/// A journal that cannot be opened, read or parsed.
public struct JournalError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ d: String) { description = d }
}

extension Duration {
    /// Seconds as a Double.
    public var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) / 1e18
    }
}
