import Foundation
import Testing

/// The whole scenario library on the real built-in lab: the spine scenarios and every fault
/// scenario, the corrupted-stream negative control included.
extension BuiltinLabTests {
@Suite struct FaultScenariosTests {
    typealias Smoke = SmokeOnBuiltinLabTests

    func results(_ path: String) throws -> [String: Any] {
        let data = try #require(FileManager.default.contents(atPath: path))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// The library runs as a CI fleet would: two shards (`--shard 1/2`, `--shard 2/2`), one
    /// after the other on the one built-in lab, merged by `miglab merge`; the merged result must
    /// hold every scenario of the unsharded selection once, each with the outcome an unsharded
    /// run gives it (all pass).
    @Test func scenarioLibraryPasses() throws {
        let base = NSTemporaryDirectory() + "miglab-library-\(UUID().uuidString)"
        // scenarios/hardware needs hardware nodes.
        // Scenarios tagged nightly run in ci/nightly (network-partition: 40 s of a cut link).
        let library = ["scenarios/smoke.yaml", "scenarios/pingpong.yaml", "scenarios/faults", "scenarios/devices",
                       "scenarios/recovery", "scenarios/matrix", "--tags", "!nightly"]
        var shardNames: [Set<String>] = []
        for k in 1...2 {
            let r = try Smoke.run(["run"] + library + ["--shard", "\(k)/2", "--artifacts", "\(base)/shard-\(k)"])
            #expect(r.status == 0, "\(Smoke.failure("miglab run --shard \(k)/2", r))")
            let shard = try results("\(base)/shard-\(k)/results.json")
            shardNames.append(Set(((shard["scenarios"] as? [[String: Any]]) ?? []).compactMap { $0["name"] as? String }))
        }
        let merge = try Smoke.run(["merge", "\(base)/shard-1", "\(base)/shard-2", "--output", "\(base)/merged"])
        #expect(merge.status == 0, "miglab merge failed:\n\(merge.out)\n\(merge.err)")
        let dir = "\(base)/merged"
        try FileManager.default.copyItem(atPath: "\(dir)/results.json", toPath: dir + ".json")
        try FileManager.default.copyItem(atPath: "\(dir)/junit.xml", toPath: dir + ".xml")
        // The shards are disjoint, and together they are the unsharded selection.
        let list = try Smoke.run(["list"] + library)
        let everything = Set(list.out.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) })
        #expect(shardNames[0].isDisjoint(with: shardNames[1]))
        #expect(shardNames[0].union(shardNames[1]) == everything, "shards \(shardNames) against \(everything)")
        #expect(!shardNames[0].isEmpty && !shardNames[1].isEmpty)
        // The merged report.html in headless Chromium: it loads without an error or a request,
        // and every timeline renders, fault markers included (abort-source's, among others).
        let page = try Smoke.spawn(["ci/html-check", "\(dir)/report.html", "\(base)/report.png"])
        #expect(page.status == 0, "ci/html-check failed:\n\(page.out)\n\(page.err)")
        let verdict = try #require(try JSONSerialization.jsonObject(with: Data(page.out.utf8)) as? [String: Any], "\(page.out)")
        #expect((verdict["errors"] as? [Any])?.isEmpty == true && (verdict["requests"] as? [Any])?.isEmpty == true, "\(verdict)")
        #expect((verdict["svgs"] as? Int ?? 0) > 10 && verdict["svgs_rendered"] as? Int == verdict["svgs"] as? Int, "\(verdict)")
        #expect((verdict["fault_markers"] as? Int ?? 0) > 0, "\(verdict)")
        #expect(FileManager.default.fileExists(atPath: "\(base)/report.png"))
        let json = try results(dir + ".json")
        #expect(Set(json["shards"] as? [String] ?? []) == ["1/2", "2/2"])
        #expect(json["outcome"] as? String == "passed")
        let scenarios = try #require(json["scenarios"] as? [[String: Any]])
        let names = Set(scenarios.compactMap { $0["name"] as? String })
        #expect(names == everything && scenarios.count == everything.count)
        for required in ["smoke", "pingpong", "abort-source", "kill-qemu-destination", "kill-qemu-source",
                         "kill-libvirtd-source", "kill-libvirtd-destination", "network-blip",
                         "corrupt-stream-header", "corrupt-stream-payload", "mismatched-destination",
                         "guest-flr-loop", "guest-flr-bound", "guest-device-reset", "convergence",
                         "serial-loopback", "broken-devices",
                         "abort-then-retry", "kill-destination-then-pingpong", "failed-migration-then-device-check"] {
            #expect(names.contains(required), "scenario \(required) did not run")
        }
        for s in scenarios {
            #expect(s["outcome"] as? String == "passed", "\(s["name"] ?? "?"): \(s["message"] ?? "") \(s["expectations"] ?? "")")
            for e in s["expectations"] as? [[String: Any]] ?? [] {
                #expect(e["verdict"] as? String == "pass", "\(s["name"] ?? "?"): \(e)")
            }
        }
        // Every fault that fired carries its timeline entry: kind, trigger, when, job statistics.
        let abort = try #require(scenarios.first { $0["name"] as? String == "abort-source" })
        let fault = try #require((abort["faults"] as? [[String: Any]])?.first)
        #expect(fault["kind"] as? String == "abort")
        let fired = try #require(fault["fired_at_ms"] as? Double)
        #expect(fired >= 1500)
        #expect(fault["stats"] != nil)
        // The matrix: every combination not excluded ran as its own scenario and JUnit testcase.
        let combinations = ["bandwidth-by-model[bandwidth=100,model=virtio-net]", "bandwidth-by-model[bandwidth=1000,model=virtio-net]",
                            "bandwidth-by-model[bandwidth=1000,model=e1000e]"]
        #expect(Set(scenarios.compactMap { $0["name"] as? String }.filter { $0.hasPrefix("bandwidth-by-model") }) == Set(combinations))
        let junit = try String(contentsOfFile: dir + ".xml", encoding: .utf8)
        for c in combinations { #expect(junit.contains("name=\"\(c)\""), "\(c) is no JUnit testcase") }
        // Per-step expectations: the aborted migration and its retry are each judged, by step.
        let retry = try #require(scenarios.first { $0["name"] as? String == "abort-then-retry" })
        let judged = ((retry["expectations"] as? [[String: Any]]) ?? []).filter { ($0["what"] as? String)?.hasPrefix("migration #") == true }
        #expect(judged.contains { $0["what"] as? String == "migration #1 (a -> b)" && $0["expected"] as? String == "aborted" && $0["step"] as? Int == 1 }, "\(judged)")
        #expect(judged.contains { $0["what"] as? String == "migration #2 (a -> b)" && $0["expected"] as? String == "completed" && $0["step"] as? Int == 3 }, "\(judged)")
        #expect((retry["migrations"] as? [[String: Any]])?.map { $0["outcome"] as? String } == ["aborted", "completed"])
        // The negative control: QEMU accepted the damaged stream, the oracle caught it.
        let payload = try #require(scenarios.first { $0["name"] as? String == "corrupt-stream-payload" })
        #expect((payload["migrations"] as? [[String: Any]])?.first?["outcome"] as? String == "completed")
        let memory = try #require((payload["verifications"] as? [[String: Any]])?.first { $0["kind"] as? String == "memory" })
        #expect(memory["verdict"] as? String == "fail")
        #expect((memory["bad_pages"] as? Int ?? 0) > 0)
        // The device checks' negative control: each broken device is caught by its own check.
        let broken = try #require(scenarios.first { $0["name"] as? String == "broken-devices" })
        let devices = try #require((broken["verifications"] as? [[String: Any]])?.first { $0["kind"] as? String == "devices" })
        #expect(devices["verdict"] as? String == "fail")
        let findings = (devices["findings"] as? [String]) ?? []
        #expect(findings.contains { $0.hasPrefix("nic0: network check failed") && $0.contains("link=0") }, "\(findings)")
        #expect(findings.contains { $0.hasPrefix("tty0: serial loopback failed") && $0.contains("looped=0") }, "\(findings)")
        // ... and the working ones pass the same checks, after each migration.
        let serial = try #require(scenarios.first { $0["name"] as? String == "serial-loopback" })
        let checks = ((serial["verifications"] as? [[String: Any]]) ?? []).filter { $0["kind"] as? String == "devices" }
        #expect(checks.count == 3)
        for c in checks {
            let f = (c["findings"] as? [String]) ?? []
            #expect(f.contains { $0.hasPrefix("tty0 ") && $0.contains("looped=1 failed=none") }, "\(f)")
            #expect(f.contains { $0.hasPrefix("nic0 ") && $0.contains("link=1") && $0.contains("lease=yes") }, "\(f)")
        }
    }

    /// With the memory oracle's page comparison disabled, the negative control must fail: the
    /// suite's verdict on a corrupted stream rests on the oracle.
    @Test func negativeControlFailsWithoutTheOracle() throws {
        let dir = NSTemporaryDirectory() + "miglab-nooracle-\(UUID().uuidString)"
        let r = try Smoke.run(["run", "scenarios/faults/corrupt-stream-payload.yaml", "--disable-memory-oracle",
                               "--artifacts", dir, "--json", dir + ".json"])
        #expect(r.status == 1, "expected the negative control to fail without the oracle:\n\(r.out)")
        let s = try #require((try results(dir + ".json")["scenarios"] as? [[String: Any]])?.first)
        #expect(s["outcome"] as? String == "failed")
        let memory = try #require((s["expectations"] as? [[String: Any]])?.first { $0["what"] as? String == "memory" })
        #expect(memory["observed"] as? String == "intact")
        #expect(memory["verdict"] as? String == "fail")
    }
}
}
