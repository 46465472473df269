import Foundation
import Journal
import Testing
@testable import Runner

struct ConsoleScannerTests {
    @Test func cleanConsolePasses() {
        let text = "MIGLAB-GUEST-BOOT uptime=2.1\r\nMIGLAB-GA-STARTED uptime=2.2\r\n~ # \r\nMIGLAB-MEMTEST START mib=64 pages=16384\r\n"
        #expect(ConsoleScanner.scan(text).isEmpty)
    }

    @Test(arguments: [
        "[   12.3] Kernel panic - not syncing: stack-protector: Kernel stack is corrupted in: foo",
        "[    9.1] general protection fault, probably for non-canonical address 0xdead00000000012a: 0000 [#1] SMP",
        "[    5.0] traps: miglab-memtest[90] general protection fault ip:40172d sp:1 error:0",
        "[    5.0] BUG: unable to handle page fault for address: ffff888000000000",
        "[    7.7] Oops: 0011 [#1] PREEMPT SMP NOPTI",
        "MIGLAB-MEMTEST ERROR page=4864 got=5036 expect=5019",
    ])
    func failureLinesAreFound(line: String) {
        // Serial consoles end lines with \r\n; the line must be found and numbered right.
        let text = "boot\r\nfine\r\n\(line)\r\nmore\r\n"
        let f = ConsoleScanner.scan(text)
        #expect(f.count == 1)
        #expect(f.first?.line == 3)
    }

    @Test func workloadStatusParsesOnlyWellFormedLines() {
        #expect(WorkloadStatus.parse("MIGLAB-MEMTEST pass=3 page=10 touched=4096 errors=0 npages=16384\n\0\0")
                == WorkloadStatus(pass: 3, page: 10, touched: 4096, errors: 0, pageCount: 16384))
        #expect(WorkloadStatus.parse("") == nil)
        #expect(WorkloadStatus.parse("MIGLAB-MEMTEST pass=x page=10") == nil)
        #expect(WorkloadStatus.parse("garbage\u{0}\u{1}") == nil)
        #expect(WorkloadStatus.parse("MIGLAB-MEMTEST pass=3 page=10 touched=4096 errors=0") == nil)
    }
}

struct JournalTests {
    func tempDir() -> String {
        let d = NSTemporaryDirectory() + "miglab-journal-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    @Test func eventsAreOnDiskAsSoonAsRecorded() throws {
        let path = tempDir() + "/journal.jsonl"
        let j = try Journal(path: path)
        j.record(JournalEvent(kind: .runStarted))
        var e = JournalEvent(kind: .scenarioStarted, scenario: "s")
        e.file = "x.yaml"
        j.record(e)
        // No flush, no close: a reader sees both events now (a killed runner loses nothing).
        let events = try Journal.read(path: path)
        #expect(events.map(\.kind) == [.runStarted, .scenarioStarted])
        #expect(events.map(\.seq) == [1, 2])
        #expect(events[1].file == "x.yaml")
    }

    @Test func tornLastLineIsSkipped() throws {
        let path = tempDir() + "/journal.jsonl"
        let j = try Journal(path: path)
        j.record(JournalEvent(kind: .runStarted))
        let h = FileHandle(forWritingAtPath: path)!
        h.seekToEndOfFile()
        h.write(Data("{\"kind\":\"scenario_sta".utf8))
        try h.close()
        #expect(try Journal.read(path: path).count == 1)
    }

    @Test func damagedLineInTheMiddleIsAnErrorNamingTheLine() throws {
        let path = tempDir() + "/journal.jsonl"
        try "{\"kind\":\"run_started\",\"seq\":1,\"t\":0,\"wallclock\":\"\"}\nnot json\n{\"kind\":\"run_finished\",\"seq\":2,\"t\":1,\"wallclock\":\"\"}\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        #expect {
            try Journal.read(path: path)
        } throws: { error in
            "\(error)".contains("journal.jsonl:2:")
        }
    }
}
