import Foundation
import Journal
import Lab
import Libvirt
import Scenario
import Testing
@testable import Runner

struct StreamCorruptorTests {
    /// A synthetic RAM stream: QEMU-like 8-byte page headers followed by page data; some
    /// pages are workload pages (magic at +8).
    static func stream(pages: Int, workloadEvery: Int) -> [UInt8] {
        var s = [UInt8](repeating: 0x11, count: 64)   // stream header stand-in
        for i in 0..<pages {
            s += [UInt8](repeating: 0xEE, count: 8)   // page header stand-in
            var page = [UInt8](repeating: UInt8(i & 0x7F), count: 4096)
            if i % workloadEvery == 0 {
                let m = withUnsafeBytes(of: MemoryOracle.magic.littleEndian, Array.init)
                page.replaceSubrange(8..<16, with: m)
            }
            s += page
        }
        return s
    }

    /// Feeds the stream in chunks of `chunk` bytes (the proxy sees arbitrary read sizes).
    static func run(_ c: inout StreamCorruptor, _ data: [UInt8], chunk: Int) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < data.count {
            var part = Array(data[i..<min(i + chunk, data.count)])
            c.process(&part)
            out += part
            i += chunk
        }
        return out
    }

    @Test(arguments: [1, 7, 1000, 4104, 65536])
    func payloadFlipsOneBodyByteInEveryWorkloadPage(chunk: Int) {
        let data = Self.stream(pages: 40, workloadEvery: 4)
        var c = StreamCorruptor(mode: .payload)
        let out = Self.run(&c, data, chunk: chunk)
        #expect(c.pagesHit == 10)
        #expect(c.flips == 10)
        let diffs = zip(data, out).enumerated().filter { $0.element.0 != $0.element.1 }.map(\.offset)
        #expect(diffs.count == 10)
        for d in diffs {
            // Inside a workload page's body: 1000 bytes after the page start, never a header.
            let pageStart = d - Int(StreamCorruptor.payloadFlipOffset)
            #expect(data[pageStart + 8] == 0x4D) // 'M' of "MIGLABPG"
        }
    }

    @Test func headerModeFlipsTheFirstFourBytesOnly() {
        let data = Self.stream(pages: 3, workloadEvery: 1)
        var c = StreamCorruptor(mode: .header)
        let out = Self.run(&c, data, chunk: 3)
        #expect(zip(data, out).enumerated().filter { $0.element.0 != $0.element.1 }.map(\.offset) == [0, 1, 2, 3])
    }

    /// A stream with two chunks of VFIO device state (an mtty's 24 pre-copy bytes, then its 72
    /// stop-copy bytes) between RAM pages, framed the way QEMU's vfio_save_block writes them.
    static func streamWithDeviceState() -> (bytes: [UInt8], firstDeviceBytes: [Int]) {
        var out = stream(pages: 6, workloadEvery: 2)
        var firsts: [Int] = []
        for size in [24, 72] {
            out += StreamCorruptor.deviceStateMarker
            out += withUnsafeBytes(of: UInt64(size).bigEndian, Array.init)
            firsts.append(out.count)
            // mtty's magic leads its state, little-endian.
            out += withUnsafeBytes(of: UInt64(0x7e9d_0989_8c3e_2c4e).littleEndian, Array.init)
            out += [UInt8](repeating: 0x11, count: size - 8)
            out += stream(pages: 2, workloadEvery: 1)
        }
        return (out, firsts)
    }

    @Test(arguments: [1, 5, 17, 4096, 65536])
    func deviceStateFlipsTheFirstByteOfEveryChunkOfDeviceState(chunk: Int) {
        let (data, firsts) = Self.streamWithDeviceState()
        var c = StreamCorruptor(mode: .deviceState)
        let out = Self.run(&c, data, chunk: chunk)
        #expect(c.pagesHit == 2)
        #expect(zip(data, out).enumerated().filter { $0.element.0 != $0.element.1 }.map(\.offset) == firsts)
        // The destination's driver sees a magic that is not its own.
        #expect(out[firsts[0]] == 0x4e ^ 0xff)
    }

    @Test func deviceStateLeavesAStreamWithoutDeviceStateAlone() {
        let data = Self.stream(pages: 40, workloadEvery: 4)
        var c = StreamCorruptor(mode: .deviceState)
        #expect(Self.run(&c, data, chunk: 4096) == data)
        #expect(c.flips == 0)
    }

    @Test func flipEveryMiB() {
        let data = [UInt8](repeating: 0, count: 3 << 20 + 10)
        var c = StreamCorruptor(mode: .flipEvery, everyMiB: 1)
        let out = Self.run(&c, data, chunk: 100_000)
        #expect(zip(data, out).enumerated().filter { $0.element.0 != $0.element.1 }.map(\.offset) == [1 << 20, 2 << 20, 3 << 20])
    }
}

struct TriggerTests {
    func stats(iteration: UInt64, remaining: UInt64, total: UInt64 = 256 << 20) -> JobStats {
        JobStats(type: 2, fields: ["memory_iteration": .uint(iteration), "data_remaining": .uint(remaining), "data_total": .uint(total)])
    }

    @Test func triggers() {
        typealias E = ScenarioExecution
        #expect(!E.triggerHolds(.afterMs(1500), stats: nil, nowMs: 1499))
        #expect(E.triggerHolds(.afterMs(1500), stats: nil, nowMs: 1500))
        #expect(!E.triggerHolds(.iteration(2), stats: stats(iteration: 1, remaining: 1), nowMs: 0))
        #expect(E.triggerHolds(.iteration(2), stats: stats(iteration: 2, remaining: 1), nowMs: 0))
        // Before the bulk pass, libvirt reports 0 remaining: that must not fire size triggers.
        #expect(!E.triggerHolds(.remainingBelowMiB(10), stats: stats(iteration: 0, remaining: 0), nowMs: 0))
        #expect(E.triggerHolds(.remainingBelowMiB(10), stats: stats(iteration: 1, remaining: 5 << 20), nowMs: 0))
        #expect(!E.triggerHolds(.remainingBelowMiB(10), stats: stats(iteration: 1, remaining: 50 << 20), nowMs: 0))
        #expect(E.triggerHolds(.remainingBelowFraction(0.5), stats: stats(iteration: 1, remaining: 100 << 20), nowMs: 0))
        #expect(!E.triggerHolds(.remainingBelowFraction(0.25), stats: stats(iteration: 1, remaining: 100 << 20), nowMs: 0))
    }
}

@Suite struct VFIODataStatisticTests {
    /// libvirt >= 10.6 reports the VFIO device state sent; it lands in the journal's statistics
    /// (migration results and progress samples) as `vfio_data_bytes`, and is absent, not 0,
    /// where the daemon does not report it.
    @Test func vfioDeviceBytesAreJournaledWhenLibvirtReportsThem() throws {
        let stats = MigrationStats(JobStats(type: JobStats.typeCompleted,
                                            fields: ["vfio_data_transferred": .uint(96), "data_total_bytes": .uint(268967936)]))
        #expect(stats.vfioDataBytes == 96)
        let json = String(decoding: try JSONEncoder().encode(stats), as: UTF8.self)
        #expect(json.contains("\"vfio_data_bytes\":96"))
        let old = MigrationStats(JobStats(type: JobStats.typeCompleted, fields: ["data_total_bytes": .uint(1)]))
        #expect(old.vfioDataBytes == nil)
        #expect(!String(decoding: try JSONEncoder().encode(old), as: UTF8.self).contains("vfio"))
    }
}

/// The expectations a VFIO scenario adds, shown failing as well as passing.
@Suite struct VFIOExpectationTests {
    @Test func deviceStateInPreCopyMustBeSeenInEveryMigration() {
        #expect(ScenarioExecution.vfioPrecopyExpectation([24, 24]).verdict == .pass)
        #expect(ScenarioExecution.vfioPrecopyExpectation([24, nil]).verdict == .fail)
        #expect(ScenarioExecution.vfioPrecopyExpectation([24, 0]).verdict == .fail)
        let none = ScenarioExecution.vfioPrecopyExpectation([])
        #expect(none.verdict == .fail && none.observed == "no completed migration")
    }

    @Test func aHostCrashPassesOnlyWhenExpected() {
        #expect(ScenarioExecution.hostKernelExpectation(.crashes, crash: "BUG: x").verdict == .pass)
        #expect(ScenarioExecution.hostKernelExpectation(.crashes, crash: nil).verdict == .fail)
        #expect(ScenarioExecution.hostKernelExpectation(.healthy, crash: "BUG: x").verdict == .fail)
        #expect(ScenarioExecution.hostKernelExpectation(.healthy, crash: nil).verdict == .pass)
    }
}

/// The stream proxy a lab runs on a host reports through its output; one that printed no
/// summary changed nothing the runner can vouch for.
struct HostStreamProxyTests {
    struct PrintingProcess: HostProcess {
        let output: String
        func stop(grace: Duration) -> String { output }
    }

    @Test func theSummaryIsTheLastLineTheProxyPrinted() {
        let handle = StreamProxyHandle.onHost(PrintingProcess(output: "warming up\n{\"bytes\":269264,\"flips\":1,\"pagesHit\":1}\n"))
        #expect(handle.stop() == StreamProxy.Summary(bytes: 269264, flips: 1, pagesHit: 1))
    }

    @Test func aProxyThatPrintedNoSummaryFlippedNothing() {
        let s = StreamProxyHandle.onHost(PrintingProcess(output: "Error: --listen takes ADDRESS:PORT\n")).stop()
        #expect(s.flips == 0)
        #expect(s.error?.contains("printed no summary") == true && s.error?.contains("--listen") == true)
    }
}

/// A guest program's report is the last line of its output.
struct GuestReportLineTests {
    @Test func theLastLineIsTheReport() {
        #expect(ScenarioExecution.report("noise\nMIGLAB-GUESTCTL resets=2 failures=0\n") == "MIGLAB-GUESTCTL resets=2 failures=0")
        #expect(ScenarioExecution.report("") == nil)
        // stderr merged in after the report line does not hide it.
        #expect(ScenarioExecution.report("MIGLAB-GUESTCTL resets=156 failures=0\nrm: can't remove '/run/miglab-stop'\n") == "MIGLAB-GUESTCTL resets=156 failures=0")
    }
}

/// Each migration is held to its own expectation, and every record names its step.
struct MigrationJudgementTests {
    func record(_ outcome: Expectations.MigrationOutcome, code: Int32? = nil, message: String? = nil) -> MigrationRecord {
        MigrationRecord(from: "a", to: "b", outcome: outcome, stats: MigrationStats(), wallSeconds: 1, errorCode: code, errorMessage: message)
    }

    @Test func anAbortedMigrationMeetsItsExpectation() {
        let j = MigrationJudgement(step: 1, expectation: MigrationExpectation(outcome: .aborted, errorCodes: [78], errorMessage: "canceled",
                                                                             failureDetectedWithinSeconds: 5, guestOn: .source, guestState: .running),
                                   record: record(.aborted, code: 78, message: "operation aborted: migration out job: canceled by client"),
                                   detectionMs: 800, guestAfter: ("a", "running"))
        let r = j.records(number: 1)
        #expect(r.count == 6)
        #expect(r.allSatisfy { $0.verdict == .pass && $0.step == 1 })
    }

    @Test func eachWayOfMissingTheExpectationFails() {
        let ex = MigrationExpectation(outcome: .aborted, errorCodes: [78], errorMessage: "canceled", failureDetectedWithinSeconds: 5,
                                      guestOn: .source, guestState: .running)
        // It completed: the outcome, the error and the detection all fail; the guest moved.
        let completed = MigrationJudgement(step: 3, expectation: ex, record: record(.completed), detectionMs: nil, guestAfter: ("b", "paused"))
        #expect(completed.records(number: 2).map(\.verdict.rawValue) == ["fail", "fail", "fail", "fail", "fail", "fail"])
        #expect(completed.records(number: 2).first?.what == "migration #2 (a -> b)")
        // It failed otherwise, too slowly.
        let other = MigrationJudgement(step: 3, expectation: ex, record: record(.aborted, code: 1, message: "load of migration failed"),
                                       detectionMs: 9000, guestAfter: ("a", "running"))
        #expect(other.records(number: 1).map(\.verdict.rawValue) == ["pass", "fail", "fail", "fail", "pass", "pass"])
    }
}

/// Every registered verifier has the runner's body, and its verdicts are judged by the name it
/// is registered under.
struct VerifierRegistryTests {
    @Test func everyVerifierRuns() {
        for kind in Verifiers.all {
            #expect(kind is any RunnableVerifier.Type, "verifier \(kind.name) has no body in the runner")
        }
        #expect(Verifiers.names == ["memory", "console", "devices"])
        #expect(Set(ScenarioFormat.steps.object("verify").allowed) == Set(Verifiers.names + ["timeout_s"]))
    }
}

/// Every registered step kind has the runner's body, on the same type.
struct StepRegistryBodyTests {
    @Test func everyStepKindRuns() {
        for kind in StepKinds.all {
            #expect(kind is any RunnableStep.Type, "step kind \(kind.name) has no body in the runner")
        }
    }
}
