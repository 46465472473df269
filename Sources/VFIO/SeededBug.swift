/// Rules the reference device can break on purpose, one at a time, to show that the qualification
/// suite notices. Selected by name (`miglab qualify --reference --bug NAME`).
public enum SeededBug: String, CaseIterable, Sendable, Codable, CustomStringConvertible {
    // State machine
    case pathThroughSavingState = "path-through-saving-state"
    case streamOnNonSavingArc = "stream-on-non-saving-arc"
    case stopCopyToPreCopyAccepted = "stop-copy-to-pre-copy-accepted"
    case errorRequestable = "error-requestable"
    case resetNotRunning = "reset-not-running"
    case stateSurvivesClose = "state-survives-close"
    // Data sessions
    case resetKeepsSession = "reset-keeps-session"
    case dataReadableInStop = "data-readable-in-stop"
    case resumeAcceptsCorrupted = "resume-accepts-corrupted"
    case resumeAcceptsTruncated = "resume-accepts-truncated"
    case resumeAcceptsForeignVersion = "resume-accepts-foreign-version"
    case resumeDoesNotRestore = "resume-does-not-restore"
    case precopyInfoStale = "precopy-info-stale"
    // DMA logging
    case dmaSecondStartAccepted = "dma-second-start-accepted"
    case dmaLogNotCleared = "dma-log-not-cleared"
    case dmaReportIgnoresPageSize = "dma-report-ignores-page-size"
    case dmaMultiPageWriteLost = "dma-multi-page-write-lost"
    case dmaReportOverwritesBitmap = "dma-report-overwrites-bitmap"
    case dmaReportWithoutStart = "dma-report-without-start"
    case dmaStopNotIdempotent = "dma-stop-not-idempotent"
    // virtio owner-device view
    case contextFieldCountWrong = "context-field-count-wrong"
    case contextWriteOutsideFreeze = "context-write-outside-freeze"
    case contextLengthMismatchAccepted = "context-length-mismatch-accepted"
    case modeChangeDuringPartialRead = "mode-change-during-partial-read"
    case contextReadRestartsAfterEnd = "context-read-restarts-after-end"
    case discardKeepsReadPosition = "discard-keeps-read-position"
    case flrStopsWriteRecording = "flr-stops-write-recording"

    /// What the device does wrong, in one line.
    public var summary: String {
        switch self {
        case .pathThroughSavingState:
            "RUNNING -> STOP_COPY passes through PRE_COPY: a saving state inside a combination path"
        case .streamOnNonSavingArc:
            "every arc into STOP returns a data fd, though no session starts there"
        case .stopCopyToPreCopyAccepted:
            "STOP_COPY -> PRE_COPY and STOP_COPY -> PRE_COPY_P2P are accepted instead of refused"
        case .errorRequestable:
            "ERROR can be requested as a device state"
        case .resetNotRunning:
            "VFIO_DEVICE_RESET leaves the device in STOP instead of RUNNING"
        case .stateSurvivesClose:
            "closing the device keeps its migration state: the next user opens it where the last one left it (mtty's mtty_close, Linux 6.12)"
        case .resetKeepsSession:
            "a reset during PRE_COPY or STOP_COPY leaves the data session open"
        case .dataReadableInStop:
            "the STOP_COPY data fd stays readable after STOP_COPY -> STOP"
        case .resumeAcceptsCorrupted:
            "RESUMING -> STOP skips the integrity check and loads corrupted data"
        case .resumeAcceptsTruncated:
            "RESUMING -> STOP accepts a stream that ends early"
        case .resumeAcceptsForeignVersion:
            "RESUMING -> STOP accepts a stream of another format version"
        case .resumeDoesNotRestore:
            "RESUMING -> STOP validates the stream but never loads it into the device"
        case .precopyInfoStale:
            "VFIO_MIG_GET_PRECOPY_INFO keeps reporting the initial bytes after they were read"
        case .dmaSecondStartAccepted:
            "a second DMA logging START replaces the first instead of failing"
        case .dmaLogNotCleared:
            "a DMA logging REPORT does not clear the pages it reported"
        case .dmaReportIgnoresPageSize:
            "DMA logging REPORT sets bits at the tracking page size, not the page size asked for"
        case .dmaMultiPageWriteLost:
            "a DMA write spanning several pages logs only its first page (dirty pages lost)"
        case .dmaReportOverwritesBitmap:
            "DMA logging REPORT overwrites the caller's bitmap instead of OR-ing bits in"
        case .dmaReportWithoutStart:
            "DMA logging REPORT succeeds with an empty bitmap when logging was never started"
        case .dmaStopNotIdempotent:
            "DMA logging STOP fails when logging is not running"
        case .contextFieldCountWrong:
            "the device context announces one field more than it holds"
        case .contextWriteOutsideFreeze:
            "device context writes are accepted in Active and Stop mode"
        case .contextLengthMismatchAccepted:
            "a device context field whose length disagrees with the device's is accepted"
        case .modeChangeDuringPartialRead:
            "the mode can change while the device context is partly read"
        case .contextReadRestartsAfterEnd:
            "reading the device context after its end starts it over instead of returning length 0"
        case .discardKeepsReadPosition:
            "DEV_CTX_DISCARD forgets a partial write but not a partial read"
        case .flrStopsWriteRecording:
            "a member FLR stops write recording and drops the records gathered"
        }
    }

    public var description: String { rawValue }
}
