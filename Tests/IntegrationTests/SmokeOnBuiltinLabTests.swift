import Foundation
import Testing

/// End-to-end: the `miglab` executable runs the smoke scenario on the real built-in lab (two
/// libvirt daemons in two network namespaces, QEMU 10 under TCG) and its JSON result shows two
/// completed migrations and intact memory. Needs root and ci/setup's packages; set
/// MIGLAB_SKIP_INTEGRATION=1 to skip on a machine without them (CI never sets it).
/// Every test that drives the built-in lab lives under this one serialized suite: there is one
/// built-in lab per machine, and one run at a time may use it.
@Suite(.serialized, .enabled(if: ProcessInfo.processInfo.environment["MIGLAB_SKIP_INTEGRATION"] != "1"))
struct BuiltinLabTests {}

extension BuiltinLabTests {
@Suite struct SmokeOnBuiltinLabTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// The miglab executable built next to this test bundle.
    static var miglab: String {
        if let e = ProcessInfo.processInfo.environment["MIGLAB_EXECUTABLE"] { return e }
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        return URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent("miglab").path
    }

    /// Runs miglab in the repository root and returns its exit status and output. posix_spawn
    /// and waitpid, with the output in files, rather than Foundation's Process: its
    /// waitUntilExit has left a finished child unreaped here (a zombie) and the test waiting
    /// forever, and a pipe read to its end would wait for any process that inherited it.
    static func run(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
        try spawn([miglab] + args)
    }

    /// A failed run's output for an expectation's message, the scenarios that did not pass
    /// first: a CI log keeps only the start and the end of a long message, and a library run's
    /// one failing scenario sits in its middle. Then every scenario's first line, the end of
    /// the log (standard error), and the whole output.
    static func failure(_ what: String, _ r: (status: Int32, out: String, err: String)) -> String {
        var blocks: [[Substring]] = []
        for line in r.out.split(separator: "\n", omittingEmptySubsequences: false) {
            if !line.hasPrefix(" "), line.split(separator: " ").count >= 2, let mark = line.split(separator: " ").first,
               ["PASS", "FAIL", "INTERRUPTED", "INCOMPLETE", "ERROR"].contains(mark) {
                blocks.append([line])
            } else if !blocks.isEmpty {
                blocks[blocks.count - 1].append(line)
            }
        }
        let failed = blocks.filter { !$0[0].hasPrefix("PASS") }
        let log = r.err.split(separator: "\n").suffix(40)
        return (["\(what) exited \(r.status); scenarios that did not pass:"]
                + failed.flatMap { $0 }
                + ["-- every scenario:"] + blocks.map { $0[0] }
                + ["-- the end of standard error:"] + log
                + ["-- the whole output:", Substring(r.out)]).joined(separator: "\n")
    }

    /// Runs any program in the repository root, the same way.
    static func spawn(_ command: [String]) throws -> (status: Int32, out: String, err: String) {
        let base = NSTemporaryDirectory() + "miglab-cmd-\(UUID().uuidString)"
        defer { for f in [".out", ".err"] { try? FileManager.default.removeItem(atPath: base + f) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, base + ".out", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, base + ".err", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        // `env -C` runs it in the repository root (glibc's posix_spawn chdir action is not
        // visible to Swift here).
        let argv = (["/usr/bin/env", "-C", root] + command).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, "/usr/bin/env", &actions, nil, argv, environ)
        guard rc == 0 else { throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .EINVAL) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        // WIFEXITED / WEXITSTATUS, else 128 + the signal, as a shell reports it.
        let code = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        let out = (try? String(contentsOfFile: base + ".out", encoding: .utf8)) ?? ""
        let err = (try? String(contentsOfFile: base + ".err", encoding: .utf8)) ?? ""
        return (code, out, err)
    }

    @Test func smokePassesWithTwoMigrationsAndIntactMemory() throws {
        #expect(FileManager.default.isExecutableFile(atPath: Self.miglab), "build miglab first (swift build)")
        let dir = NSTemporaryDirectory() + "miglab-smoke-\(UUID().uuidString)"
        let r = try Self.run(["run", "scenarios/smoke.yaml", "--artifacts", dir, "--json", dir + "-results.json"])
        #expect(r.status == 0, "\(Self.failure("miglab run", r))")
        let data = try #require(FileManager.default.contents(atPath: dir + "-results.json"))
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(json["outcome"] as? String == "passed")
        let s = try #require((json["scenarios"] as? [[String: Any]])?.first)
        #expect(s["name"] as? String == "smoke")
        #expect(s["outcome"] as? String == "passed")
        let migrations = try #require(s["migrations"] as? [[String: Any]])
        #expect(migrations.count == 2)
        for m in migrations {
            #expect(m["outcome"] as? String == "completed")
            let stats = try #require(m["stats"] as? [String: Any])
            #expect((stats["data_total_bytes"] as? Int ?? 0) > 0)
            #expect((stats["downtime_ms"] as? Int ?? 0) > 0)
            #expect((stats["time_elapsed_ms"] as? Int ?? 0) > 0)
        }
        #expect(migrations.map { "\($0["from"]!)->\($0["to"]!)" } == ["a->b", "b->a"])
        let memory = try #require(s["verifications"] as? [[String: Any]]).filter { $0["kind"] as? String == "memory" }
        #expect(memory.count == 2)
        for v in memory {
            #expect(v["verdict"] as? String == "pass")
            #expect((v["pages_checked"] as? Int ?? 0) >= 16384)
            #expect(v["bad_pages"] as? Int == 0)
        }
        // The journal was written as the run went, and `miglab report` rebuilds the same result.
        let report = try Self.run(["report", dir, "--json", dir + "-rebuilt.json"])
        #expect(report.status == 0, "\(report.err)")
        let rebuilt = try #require(FileManager.default.contents(atPath: dir + "-rebuilt.json"))
        #expect(rebuilt == data)
        // Artifacts: both hosts' QEMU logs and the guest console.
        for f in ["journal.jsonl", "junit.xml", "smoke/console.log", "smoke/qemu-a.log", "smoke/qemu-b.log", "smoke/domain.xml"] {
            #expect(FileManager.default.fileExists(atPath: "\(dir)/\(f)"), "missing artifact \(f)")
        }
        // Nothing of the run is left on the lab.
        let status = try Self.run(["lab", "status"])
        #expect(!status.out.contains("domain miglab-smoke"))
    }

    @Test func validateReportsFileLineAndNeverCrashes() throws {
        let bad = NSTemporaryDirectory() + "bad-\(UUID().uuidString).yaml"
        try "name: x\nsteps:\n  - boot: {on: a, colour: red}\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let r = try Self.run(["validate", bad, "scenarios/smoke.yaml"])
        #expect(r.status == 2)
        #expect(r.err.contains("\(bad):3:"))
        #expect(r.err.contains("colour"))
        let binary = NSTemporaryDirectory() + "bin-\(UUID().uuidString).yaml"
        try Data((0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 7919) }).write(to: URL(fileURLWithPath: binary))
        let r2 = try Self.run(["validate", binary])
        #expect(r2.status == 2, "\(r2.err)")
        let ok = try Self.run(["validate", "scenarios"])
        #expect(ok.status == 0, "\(ok.err)")
    }
}
}
