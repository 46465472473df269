import Foundation
import Lab
import Testing

extension BuiltinLabTests {
/// A run stopped by SIGTERM (or Ctrl-C) cleans up what it made; a runner killed outright
/// leaves a journal that still reports, and `lab down` removes what it left.
@Suite struct InterruptTests {
    typealias Smoke = SmokeOnBuiltinLabTests

    /// Starts `miglab run` and returns its pid once its journal shows `marker`. (posix_spawn
    /// and waitpid rather than Foundation's Process, whose waitUntilExit did not return for a
    /// child killed with SIGKILL here.)
    func startRun(_ dir: String, until marker: String) throws -> pid_t {
        let pid = try Command.spawn([Smoke.miglab, "run", Smoke.root + "/scenarios/smoke.yaml", "--artifacts", dir],
                                    newSession: false, logPath: "/dev/null")
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            if let j = try? String(contentsOfFile: dir + "/journal.jsonl", encoding: .utf8), j.contains(marker) { return pid }
            Thread.sleep(forTimeInterval: 0.05)
        }
        kill(pid, SIGKILL)
        throw CancellationError()
    }

    func wait(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return status
    }

    /// No daemon, namespace or QEMU process of the built-in lab is left.
    func expectLabEmpty() throws {
        let status = try Smoke.run(["lab", "status", "--json"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(status.out.utf8)) as? [String: Any])
        let builtin = try #require(json["builtin"] as? [String: Any])
        for h in try #require(builtin["hosts"] as? [[String: Any]]) {
            #expect(h["daemon_running"] as? Bool == false, "\(h)")
            #expect(h["namespace"] as? Bool == false, "\(h)")
            #expect((h["qemu_processes"] as? [Any])?.isEmpty == true, "\(h)")
        }
    }

    @Test func sigtermStopsTheRunAndCleansUp() throws {
        _ = try Smoke.run(["lab", "down"])
        let dir = NSTemporaryDirectory() + "miglab-sigterm-\(UUID().uuidString)"
        let pid = try startRun(dir, until: "\"step_kind\":\"boot\"")
        kill(pid, SIGTERM)
        let status = wait(pid)
        #expect((status >> 8) & 0xff == 130, "exit status \(status)")
        let journal = try String(contentsOfFile: dir + "/journal.jsonl", encoding: .utf8)
        #expect(journal.contains("\"outcome\":\"interrupted\""))
        // The run brought the lab up, so it took it down again: nothing runs.
        try expectLabEmpty()
        let report = try Smoke.run(["report", dir])
        #expect(report.status == 130)
        #expect(report.out.contains("run interrupted"))
    }

    @Test func killedRunnerLeavesAReportAndLabDownRemovesItsLeftovers() throws {
        let dir = NSTemporaryDirectory() + "miglab-sigkill-\(UUID().uuidString)"
        let pid = try startRun(dir, until: "\"kind\":\"migration_finished\"")
        kill(pid, SIGKILL)
        _ = wait(pid)
        // The journal of the killed run still reports; never as a pass.
        let report = try Smoke.run(["report", dir])
        #expect(report.status == 3)
        #expect(report.out.contains("run incomplete"))
        #expect(report.out.contains("INCOMPLETE  smoke"))
        // Its guest, daemons and namespaces are still there; `lab down` removes them all.
        let before = try Smoke.run(["lab", "status"])
        #expect(before.out.contains("domain miglab-smoke"))
        let down = try Smoke.run(["lab", "down"])
        #expect(down.status == 0, "\(down.err)")
        try expectLabEmpty()
    }
}
}
