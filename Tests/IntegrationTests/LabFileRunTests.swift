import Foundation
import Testing

/// A run through a lab file, as on hardware nodes, against the built-in lab's two libvirt
/// daemons: the runner reaches them only through their URIs, so the guest image goes up
/// through a storage pool, the console comes through virDomainOpenConsole and guest RAM
/// through virDomainMemoryPeek, and the migration goes to the lab file's migration_address.
extension BuiltinLabTests {
@Suite struct LabFileRunTests {
    typealias Smoke = SmokeOnBuiltinLabTests

    /// A lab file naming the built-in lab's daemons as hardware hosts (no ssh: libvirt only).
    static func labFile(_ dir: String) throws -> String { try sshLabFile(dir, sshd: nil) }

    @Test func smokeRunsThroughALabFileWithNothingShared() throws {
        let dir = NSTemporaryDirectory() + "miglab-labfile-\(UUID().uuidString)"
        let lab = try Self.labFile(dir)
        let wasUp = try Smoke.run(["lab", "status"]).out.contains("libvirtd running")
        let up = try Smoke.run(["lab", "up"])
        #expect(up.status == 0, "\(up.err)")
        defer { if !wasUp { _ = try? Smoke.run(["lab", "down"]) } }

        let r = try Smoke.run(["run", "--lab", lab, "scenarios/smoke.yaml", "--artifacts", "\(dir)/run", "--json", "\(dir)/results.json"])
        #expect(r.status == 0, "\(Smoke.failure("miglab run --lab", r))")
        let data = try #require(FileManager.default.contents(atPath: "\(dir)/results.json"))
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let s = try #require((json["scenarios"] as? [[String: Any]])?.first)
        #expect(s["outcome"] as? String == "passed")
        let migrations = try #require(s["migrations"] as? [[String: Any]])
        #expect(migrations.map { $0["outcome"] as? String } == ["completed", "completed"])
        let verifications = try #require(s["verifications"] as? [[String: Any]])
        let memory = verifications.filter { $0["kind"] as? String == "memory" }
        #expect(memory.count == 2)
        for v in memory {
            #expect(v["verdict"] as? String == "pass")
            #expect((v["pages_checked"] as? Int ?? 0) >= 16384)
            #expect((v["detail"] as? String ?? "").contains("virDomainMemoryPeek"), "\(v)")
        }
        // The console came through libvirt, from both hosts (boot on a, then b, then a).
        let console = try String(contentsOfFile: "\(dir)/run/smoke/console.log", encoding: .utf8)
        #expect(console.contains("MIGLAB-GUEST-BOOT"))
        #expect(console.contains("MIGLAB-MEMTEST START"))
        #expect(verifications.filter { $0["kind"] as? String == "console" }.allSatisfy { $0["verdict"] as? String == "pass" })
        // The guest's kernel came from the storage pool on the host, not from the runner's cache.
        let xml = try String(contentsOfFile: "\(dir)/run/smoke/domain.xml", encoding: .utf8)
        #expect(xml.contains("<kernel>/var/lib/libvirt/images/miglab/miglab-"), "\(xml)")
        #expect(!xml.contains("<emulator>"))
        #expect(!(try Smoke.run(["lab", "status"]).out.contains("domain miglab-smoke")))

        // A fault the lab file cannot inject is refused before the guest boots, with the step's line.
        let k = try Smoke.run(["run", "--lab", lab, "scenarios/faults/kill-qemu-destination.yaml", "--artifacts", "\(dir)/kill"])
        #expect(k.status == 4)   // the lab cannot do what the scenario asks: a lab error
        #expect(k.out.contains("kill-qemu-destination.yaml:"), "\(k.out)")
        #expect(k.out.contains("needs host-side control"), "\(k.out)")
        #expect(!(try Smoke.run(["lab", "status"]).out.contains("domain miglab-kill")))
    }

    @Test func badLabFilesAndHostsAreClearErrors() throws {
        let dir = NSTemporaryDirectory() + "miglab-badlab-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "hosts:\n  a:\n    uri: qemu:///system\n    acceleratr: tcg\n".write(toFile: "\(dir)/bad.yaml", atomically: true, encoding: .utf8)
        let r = try Smoke.run(["run", "--lab", "\(dir)/bad.yaml", "scenarios/smoke.yaml", "--artifacts", "\(dir)/run"])
        #expect(r.status == 2)
        #expect(r.err.contains("\(dir)/bad.yaml:4:"), "\(r.err)")
        #expect(r.err.contains("accelerator"), "\(r.err)")   // did you mean
        // A host nobody answers for: the run errors and names the host and URI.
        try "hosts:\n  a: {uri: 'qemu:///system?socket=\(dir)/none-a', accelerator: tcg}\n  b: {uri: 'qemu:///system?socket=\(dir)/none-b', accelerator: tcg}\n"
            .write(toFile: "\(dir)/gone.yaml", atomically: true, encoding: .utf8)
        let g = try Smoke.run(["run", "--lab", "\(dir)/gone.yaml", "scenarios/smoke.yaml", "--artifacts", "\(dir)/gone"])
        #expect(g.status == 4)   // a lab error
        #expect(g.out.contains("cannot connect to host `a`"), "\(g.out)\n\(g.err)")
    }

    /// `miglab inventory --lab FILE --host NAME` on this machine: the pools' devices are marked.
    @Test func inventoryOfALabHostMarksItsPools() throws {
        let list = try Smoke.run(["inventory", "--json", "--no-vfio-probe"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(list.out.utf8)) as? [String: Any])
        let first = try #require(((json["devices"] as? [[String: Any]])?.first?["address"]) as? String)
        let dir = NSTemporaryDirectory() + "miglab-invlab-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "hosts:\n  a:\n    uri: qemu:///system\n    pools: [{name: mine, addresses: [\"\(first)\"]}]\n"
            .write(toFile: "\(dir)/lab.yaml", atomically: true, encoding: .utf8)
        let r = try Smoke.run(["inventory", "--lab", "\(dir)/lab.yaml", "--host", "a"])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.out.contains("in pools: \(first) (mine)"), "\(r.out)")
        let bad = try Smoke.run(["inventory", "--lab", "\(dir)/lab.yaml", "--host", "z"])
        #expect(bad.status == 2 && bad.err.contains("no host `z`"))
    }
}
}
