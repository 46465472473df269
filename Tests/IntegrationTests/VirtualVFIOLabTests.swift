import Foundation
import Testing

extension BuiltinLabTests {
/// End-to-end on the virtual VFIO hosts: a real VFIO device (the kernel's mtty, as an mdev)
/// migrates between two real libvirt hosts inside an L1 VM, reached only through the lab file
/// the lab writes. Serialized with the built-in lab's tests: both need this machine's 2 cores.
@Suite struct VirtualVFIOLabTests {
    typealias Smoke = SmokeOnBuiltinLabTests

    @Test func mttyMigratesThereAndBackWithMemoryAndDeviceIntact() throws {
        _ = try Smoke.run(["lab", "down"])
        let dir = NSTemporaryDirectory() + "miglab-vfio-\(UUID().uuidString)"
        let r = try Smoke.run(["run", "--vfio", "scenarios/vfio/mtty-pingpong.yaml", "--artifacts", dir])
        #expect(r.status == 0, "\(Smoke.failure("miglab run --vfio", r))")
        let data = try #require(FileManager.default.contents(atPath: dir + "/results.json"))
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(json["outcome"] as? String == "passed")
        let scenario = try #require((json["scenarios"] as? [[String: Any]])?.first)
        let migrations = try #require(scenario["migrations"] as? [[String: Any]])
        #expect(migrations.map { "\($0["from"] ?? "")->\($0["to"] ?? ""):\($0["outcome"] ?? "")" } == ["a->b:completed", "b->a:completed"])
        for m in migrations {
            let stats = try #require(m["stats"] as? [String: Any])
            #expect((stats["data_total_bytes"] as? Int ?? 0) > 0 && (stats["downtime_ms"] as? Int ?? 0) > 0, "\(stats)")
            // mtty's device state crossed in the VFIO stream (libvirt 11.3 in the virtual hosts
            // reports it), most of it in stop-copy, next to the RAM of each phase.
            #expect((stats["vfio_data_bytes"] as? Int ?? 0) > 0, "\(stats)")
            let phases = try #require(m["phases"] as? [[String: Any]])
            #expect(phases.map { $0["phase"] as? String ?? "" } == ["setup", "pre_copy", "stop_copy"], "\(phases)")
            let stopCopy = phases.last ?? [:]
            #expect((stopCopy["vfio_bytes"] as? Int ?? 0) > 0 && stopCopy["ram_bytes"] != nil, "\(phases)")
        }
        let verifications = try #require(scenario["verifications"] as? [[String: Any]])
        let memory = verifications.filter { $0["kind"] as? String == "memory" }
        #expect(memory.count == 2 && memory.allSatisfy { $0["verdict"] as? String == "pass" && $0["bad_pages"] as? Int == 0
            && ($0["pages_checked"] as? Int ?? 0) > 0 }, "\(memory)")
        // The mtty mdev: found in the guest by its PCI path, both UART ports loop back at the
        // registers on every host, after every migration.
        let devices = verifications.filter { $0["kind"] as? String == "devices" }
        #expect(devices.count == 3 && devices.allSatisfy { $0["verdict"] as? String == "pass" }, "\(devices)")
        for d in devices {
            let findings = d["findings"] as? [String] ?? []
            #expect(findings.contains { $0.hasPrefix("tty[0] ") && $0.contains("vendor=0x4348 device=0x3253") && $0.contains("looped=2 failed=none") },
                    "\(findings)")
        }
        // After each migration the scratch registers written on the source before it were read
        // on the destination (the comparison is a finding only when it passed).
        #expect(devices.dropFirst().allSatisfy { (($0["findings"] as? [String]) ?? []).contains { $0.contains("compared with the source") && $0.contains("scr=0x") } },
                "\(devices)")
        // The run brought the lab up, so it took it down, and kept L1's console and logs.
        for f in ["l1-console.log", "a-libvirtd.log", "b-libvirtd.log"] {
            #expect(FileManager.default.fileExists(atPath: "\(dir)/vfio-lab/\(f)"), "\(f)")
        }
        let console = (try? String(contentsOfFile: "\(dir)/vfio-lab/l1-console.log", encoding: .utf8)) ?? ""
        #expect(console.contains("MIGLAB-L1-READY") && console.contains("MIGLAB-L1-LIBVIRT libvirtd (libvirt) 11.3"))
        #expect(try Smoke.run(["lab", "status"]).out.contains("L1 not running"))
    }

    /// `miglab qualify --vfio-host`: the suite runs against the kernel's real mtty (Linux
    /// 6.12.95, the default virtual host kernel) inside L1 and reports without crashing the
    /// host. mtty breaks three rules (its migration state survives a close, it loads any port
    /// state without checking it, its DMA logging is a stub); miglab does not send the one
    /// request Linux itself never returns from. A future kernel that fixes mtty changes these
    /// verdicts on purpose: update them with it.
    @Test func qualificationOfTheRealMttyReportsItsBugsWithoutCrashingTheHost() throws {
        _ = try Smoke.run(["lab", "down"])
        let dir = NSTemporaryDirectory() + "miglab-qualify-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let json = dir + "/mtty-qualification.json"
        let r = try Smoke.run(["qualify", "--vfio-host", "--json", json])
        print(r.out)
        #expect(r.status == 1, "a failed check exits 1:\n\(r.out)\n\(r.err)")
        #expect(!r.out.contains("host kernel broke"), "\(r.out)")
        let data = try #require(FileManager.default.contents(atPath: json))
        let report = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let results = try #require(report["results"] as? [[String: Any]])
        let verdicts = Dictionary(uniqueKeysWithValues: results.map { ($0["id"] as? String ?? "", $0["verdict"] as? String ?? "") })
        #expect(verdicts.count == 39)
        #expect(verdicts.filter { $0.value == "fail" }.keys.sorted()
                == ["data.resume-corrupted", "dma.second-start-refused", "fsm.open-starts-running"], "\(verdicts)")
        for passing in ["fsm.capabilities", "fsm.pairs.stop-copy-p2p-pre-copy", "data.stop-copy-read-to-end", "data.resume-round-trip",
                        "data.resume-foreign", "precopy.info-consistent", "precopy.info-only-in-pre-copy", "fsm.reset-returns-running"] {
            #expect(verdicts[passing] == "pass", "\(passing): \(verdicts[passing] ?? "missing")")
        }
        let notSent = results.first { $0["id"] as? String == "fsm.stop-copy-to-pre-copy-refused" }
        #expect(notSent?["verdict"] as? String == "skip" && (notSent?["detail"] as? String ?? "").contains("vfio_mig_get_next_state"))
        #expect(try Smoke.run(["lab", "status"]).out.contains("L1 not running"), "qualify took down the hosts it brought up")
    }
}
}
