import Journal
import Journal
import Libvirt

/// The journal's figures from libvirt's job statistics (the journal schema itself knows no
/// libvirt).
extension MigrationStats {
    public init(_ s: JobStats) {
        self.init()
        timeElapsedMs = s.timeElapsedMs
        downtimeMs = s.downtimeMs
        setupTimeMs = s.setupTimeMs
        dataTotalBytes = s.dataTotalBytes
        dataProcessedBytes = s.dataProcessedBytes
        dataRemainingBytes = s.dataRemainingBytes
        memoryIterations = s.memoryIterations
        memoryDirtyRatePagesPerSecond = s.memoryDirtyRatePagesPerSecond
        memoryBytesPerSecond = s.memoryBytesPerSecond
        memoryProcessedBytes = s.memoryProcessedBytes
        vfioDataBytes = s.vfioDataTransferredBytes
    }
}

extension MigrationPhase {
    /// The phase a source-side sample is in: a source that no longer runs (paused for the
    /// switchover, or already shut off once the migration completed: the state is read just
    /// after the statistics) is in stop-copy; a running one is in set-up until the first byte
    /// went out.
    public static func of(sourceRunning: Bool, stats: JobStats) -> MigrationPhase {
        if !sourceRunning { return .stopCopy }
        return (stats.dataProcessedBytes ?? 0) == 0 ? .setup : .preCopy
    }
}

public enum RunnerError: Error, CustomStringConvertible, Sendable {
    case io(String)
    case step(String)
    case timeout(String)
    /// A host's kernel broke (its console says so): nothing on that host can be waited for.
    case hostCrashed(String)

    public var description: String {
        switch self {
        case let .io(s), let .step(s): return s
        case let .timeout(s): return "timed out: \(s)"
        case let .hostCrashed(s): return "a host's kernel crashed: \(s)"
        }
    }
}

