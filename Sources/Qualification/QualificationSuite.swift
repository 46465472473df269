import VFIO

/// Every check, in the order they run and report.
public enum QualificationSuite {
    public static let checks: [Check] =
        StateMachineChecks.all + DataChecks.all + DMALoggingChecks.all + VirtioChecks.all
        // Last: it also reports every open of the run that did not find RUNNING.
        + [StateMachineChecks.openStartsRunning]

    /// The checks each seeded bug of the reference device must fail, and no others. The tests
    /// hold the suite to this table for every bug; `miglab qualify --list-bugs` prints it.
    public static let expectedFailures: [SeededBug: Set<String>] = [
        .pathThroughSavingState: ["fsm.pairs.stop-copy-pre-copy", "fsm.pairs.stop-copy-p2p-pre-copy"],
        .streamOnNonSavingArc: [
            "fsm.pairs.stop-copy", "fsm.pairs.stop-copy-p2p", "fsm.pairs.stop-copy-pre-copy", "fsm.pairs.stop-copy-p2p-pre-copy",
        ],
        .stopCopyToPreCopyAccepted: [
            "fsm.pairs.stop-copy-pre-copy", "fsm.pairs.stop-copy-p2p-pre-copy", "fsm.stop-copy-to-pre-copy-refused",
        ],
        .errorRequestable: [
            "fsm.pairs.stop-copy", "fsm.pairs.stop-copy-p2p", "fsm.pairs.stop-copy-pre-copy", "fsm.pairs.stop-copy-p2p-pre-copy",
            "fsm.error-not-requestable",
        ],
        .resetNotRunning: ["fsm.error-exit-only-by-reset", "fsm.reset-returns-running"],
        .stateSurvivesClose: ["fsm.open-starts-running"],
        .resetKeepsSession: ["data.reset-ends-session"],
        .dataReadableInStop: ["data.leaving-saving-ends-session"],
        .resumeAcceptsCorrupted: ["data.resume-corrupted"],
        .resumeAcceptsTruncated: ["data.resume-truncated"],
        .resumeAcceptsForeignVersion: ["data.resume-foreign"],
        .resumeDoesNotRestore: ["data.resume-round-trip"],
        .precopyInfoStale: ["precopy.info-consistent"],
        .dmaSecondStartAccepted: ["dma.second-start-refused"],
        .dmaLogNotCleared: ["dma.report-clears"],
        .dmaReportIgnoresPageSize: ["dma.report-exact"],
        .dmaMultiPageWriteLost: ["dma.report-exact"],
        .dmaReportOverwritesBitmap: ["dma.report-ors-bits"],
        .dmaReportWithoutStart: ["dma.report-needs-start"],
        .dmaStopNotIdempotent: ["dma.stop-idempotent"],
        .contextFieldCountWrong: ["virtio.context-well-formed", "virtio.context-round-trip"],
        .contextWriteOutsideFreeze: ["virtio.context-write-only-in-freeze"],
        .contextLengthMismatchAccepted: ["virtio.context-write-validation"],
        .modeChangeDuringPartialRead: ["virtio.mode-blocked-by-partial-transfer"],
        .contextReadRestartsAfterEnd: ["virtio.context-read-after-end"],
        .discardKeepsReadPosition: ["virtio.context-discard", "virtio.mode-blocked-by-partial-transfer"],
        .flrStopsWriteRecording: ["virtio.write-records-flr"],
    ]
}

/// One check's verdict, as the report and the JSON carry it.
public struct CheckResult: Codable, Sendable, Equatable {
    public let id: String
    public let rule: String
    public let source: String
    public let verdict: Verdict
    public let detail: String
}

/// The verdicts of one run.
public struct QualificationReport: Codable, Sendable {
    public let target: String
    public let results: [CheckResult]
    public let summary: Summary
    public let seconds: Double

    public struct Summary: Codable, Sendable, Equatable {
        public let checks: Int
        public let passed: Int
        public let failed: Int
        public let skipped: Int
    }

    init(target: String, results: [CheckResult], seconds: Double) {
        self.target = target
        self.results = results
        self.seconds = seconds
        summary = Summary(
            checks: results.count, passed: results.count { $0.verdict == .pass },
            failed: results.count { $0.verdict == .fail }, skipped: results.count { $0.verdict == .skip })
    }

    public var failedCheckIDs: Set<String> { Set(results.filter { $0.verdict == .fail }.map(\.id)) }

    public var passed: Bool { summary.failed == 0 }
}

/// Runs checks one after the other against a target. A check that throws an unexpected error
/// fails with that error as its detail; the run always completes.
public enum QualificationRunner {
    public static func run(_ checks: [Check] = QualificationSuite.checks, on target: QualificationTarget) -> QualificationReport {
        let clock = ContinuousClock()
        let started = clock.now
        let context = CheckContext(target: target)
        let results = checks.map { check in
            context.openings.currentCheck = check.id
            let outcome: CheckOutcome
            do {
                outcome = try check.body(context)
            } catch let failure as CheckFailure {
                outcome = .fail(failure.detail)
            } catch let skipped as CheckSkipped {
                outcome = .skip(skipped.reason)
            } catch {
                outcome = .fail("unexpected error: \(error)")
            }
            return CheckResult(id: check.id, rule: check.rule, source: check.source, verdict: outcome.verdict, detail: outcome.detail)
        }
        let elapsed = clock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return QualificationReport(target: target.name, results: results, seconds: seconds)
    }
}
