import Foundation
import Testing

/// An sshd of the test's own, in a network namespace it creates, reachable from this machine
/// at 10.79.0.2 as `miglab-sshd` (a Host of the ssh_config the test writes), accepting one key
/// it generates, for root. The lab file's hosts are reached through it as through a remote
/// machine's sshd (here it shares this machine's processes and files).
final class TestSSHD {
    typealias Smoke = BuiltinLabTests.SmokeOnBuiltinLabTests
    static let namespace = "miglab-sshd"
    static let hostInterface = "miglab-sshr"
    let dir: String
    var configFile: String { "\(dir)/ssh_config" }

    /// Runs a command the way every integration test does (posix_spawn and waitpid: Foundation's
    /// Process may miss a child's exit under the test runner).
    @discardableResult
    static func sh(_ args: [String], check: Bool = true) throws -> String {
        let r = try Smoke.spawn(args)
        if check && r.status != 0 { throw TestSSHDError(description: "\(args.joined(separator: " ")) exited \(r.status): \(r.err)") }
        return r.out
    }

    static func removeNetwork() {
        _ = try? sh(["ip", "netns", "delete", namespace], check: false)
        _ = try? sh(["ip", "link", "delete", hostInterface], check: false)
    }

    init(dir: String) throws {
        self.dir = dir
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        Self.removeNetwork()
        let ns = Self.namespace
        for c in [["ip", "netns", "add", ns],
                  ["ip", "link", "add", Self.hostInterface, "type", "veth", "peer", "name", "miglab-sshn"],
                  ["ip", "link", "set", "miglab-sshn", "netns", ns],
                  ["ip", "addr", "add", "10.79.0.1/30", "dev", Self.hostInterface],
                  ["ip", "link", "set", Self.hostInterface, "up"],
                  ["ip", "-n", ns, "addr", "add", "10.79.0.2/30", "dev", "miglab-sshn"],
                  ["ip", "-n", ns, "link", "set", "miglab-sshn", "up"],
                  ["ip", "-n", ns, "link", "set", "lo", "up"]] { try Self.sh(c) }
        for key in ["host_key", "client_key"] {
            try Self.sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "miglab-test", "-f", "\(dir)/\(key)"])
        }
        try FileManager.default.copyItem(atPath: "\(dir)/client_key.pub", toPath: "\(dir)/authorized_keys")
        try FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true)   // sshd's privilege separation
        try """
        ListenAddress 10.79.0.2
        Port 22
        HostKey \(dir)/host_key
        AuthorizedKeysFile \(dir)/authorized_keys
        PermitRootLogin prohibit-password
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        UsePAM no
        StrictModes no
        PidFile \(dir)/sshd.pid
        LogLevel ERROR

        """.write(toFile: "\(dir)/sshd_config", atomically: true, encoding: .utf8)
        try """
        Host miglab-sshd
          HostName 10.79.0.2
          User root
          IdentityFile \(dir)/client_key
          IdentitiesOnly yes
          StrictHostKeyChecking no
          UserKnownHostsFile /dev/null
          LogLevel ERROR

        """.write(toFile: "\(dir)/ssh_config", atomically: true, encoding: .utf8)
        // sshd puts itself in the background once it listens, and writes its pid file.
        try Self.sh(["ip", "netns", "exec", ns, "/usr/sbin/sshd", "-f", "\(dir)/sshd_config"])
        let deadline = Date().addingTimeInterval(20)
        while (try? Self.sh(["ssh", "-F", configFile, "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "miglab-sshd", "true"])) == nil {
            guard Date() < deadline else { throw TestSSHDError(description: "sshd in \(ns) did not come up") }
            Thread.sleep(forTimeInterval: 0.2)
        }
    }

    func stop() {
        if let text = try? String(contentsOfFile: "\(dir)/sshd.pid", encoding: .utf8),
           let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
            kill(pid, SIGTERM)
        }
        Self.removeNetwork()
    }
}

struct TestSSHDError: Error, CustomStringConvertible { var description: String }

/// A lab file whose hosts are the built-in lab's daemons; with `sshd`, the ssh driver too: `ssh`
/// through the test's sshd, the daemons' pid files, and each host's end of the lab's veth pair
/// as its link.
func sshLabFile(_ dir: String, sshd: TestSSHD?, link: Bool = true) throws -> String {
    let root = ProcessInfo.processInfo.environment["MIGLAB_LAB_DIR"] ?? "/var/lib/miglab/lab"
    let text = """
    version: 1
    locks: \(dir)/locks
    hosts:
    \(["a": "10.77.0.1", "b": "10.77.0.2"].sorted { $0.key < $1.key }.map { name, address in """
      \(name):
        uri: qemu:///system?socket=\(root)/\(name)/sock/libvirt-sock
        peer_uri: qemu+tcp://\(address)/system
        migration_address: \(address)
        accelerator: tcg
        image_dir: /var/lib/libvirt/images/miglab
    """ + (sshd.map { s in """

        ssh: miglab-sshd
        ssh_config: \(s.configFile)
        qemu_pid_dir: \(root)/\(name)/run/qemu
        daemon_pid_file: \(root)/\(name)/run/libvirtd.pid
    """ + (link ? "\n    link: {interface: miglab-\(name), namespace: miglab-\(name)}" : "") } ?? "") }.joined(separator: "\n"))
    """
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    try text.write(toFile: "\(dir)/lab.yaml", atomically: true, encoding: .utf8)
    return "\(dir)/lab.yaml"
}

extension BuiltinLabTests {
/// kill-qemu, kill-libvirtd and network-partition on lab-file hosts, through the ssh driver.
@Suite struct SSHDriverRunTests {
    typealias Smoke = SmokeOnBuiltinLabTests

    @Test func processAndLinkFaultsRunOverSSH() throws {
        let dir = NSTemporaryDirectory() + "miglab-sshlab-\(UUID().uuidString)"
        let wasUp = try Smoke.run(["lab", "status"]).out.contains("libvirtd running")
        let up = try Smoke.run(["lab", "up"])
        #expect(up.status == 0, "\(up.err)")
        defer { if !wasUp { _ = try? Smoke.run(["lab", "down"]) } }
        let sshd = try TestSSHD(dir: "\(dir)/sshd")
        defer { sshd.stop() }
        let lab = try sshLabFile(dir, sshd: sshd)
        // The link fault: network-blip, a 3 s cut the migration survives (network-partition, 40 s
        // of link down until libvirt's keepalive gives up, runs in ci/nightly; here what is
        // tested is that the ssh driver cuts and restores the link).
        let faults = ["scenarios/faults/kill-qemu-destination.yaml", "scenarios/faults/kill-libvirtd-destination.yaml",
                      "scenarios/faults/network-blip.yaml"]
        let v = try Smoke.run(["validate", "--lab", lab] + faults)
        #expect(v.status == 0, "\(v.out)\n\(v.err)")

        let r = try Smoke.run(["run", "--lab", lab] + faults + ["--artifacts", "\(dir)/run", "--json", "\(dir)/results.json"])
        #expect(r.status == 0, "\(Smoke.failure("miglab run --lab (ssh)", r))")
        let data = try #require(FileManager.default.contents(atPath: "\(dir)/results.json"))
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let scenarios = try #require(json["scenarios"] as? [[String: Any]])
        #expect(scenarios.count == 3)
        for s in scenarios { #expect(s["outcome"] as? String == "passed", "\(s["name"] ?? "?"): \(s)") }
        func result(_ scenario: String, _ kind: String) -> String {
            let s = scenarios.first { $0["name"] as? String == scenario }
            let f = (s?["faults"] as? [[String: Any]])?.first { $0["kind"] as? String == kind }
            return (f?["result"] as? String) ?? "\(f ?? [:])"
        }
        #expect(result("kill-qemu-destination", "kill-qemu").hasPrefix("killed QEMU pid "))
        #expect(result("kill-libvirtd-destination", "kill-libvirtd").hasPrefix("killed libvirtd pid "))
        #expect(result("network-blip", "network-partition").hasPrefix("link cut (link-down)"))
        // The link is back up.
        let link = try Smoke.spawn(["ip", "-n", "miglab-b", "link", "show", "miglab-b"])
        #expect(link.out.contains("state UP") || link.out.contains(",UP"), "\(link.out)")
    }
}
}

extension BuiltinLabTests {
/// corrupt_stream on a lab file's hosts: the runner's own stream proxy, at the lab file's
/// `stream_proxy` address, between hosts whose network it cannot enter. The test links this
/// machine to each host namespace of the built-in lab with a veth pair of its own.
@Suite struct LabFileStreamProxyTests {
    typealias Smoke = SmokeOnBuiltinLabTests

    static func removeLinks() {
        for l in ["miglab-pxa", "miglab-pxb"] { _ = try? Smoke.spawn(["ip", "link", "delete", l]) }
    }

    @Test func aDamagedStreamThroughTheRunnersProxy() throws {
        let dir = NSTemporaryDirectory() + "miglab-proxylab-\(UUID().uuidString)"
        let wasUp = try Smoke.run(["lab", "status"]).out.contains("libvirtd running")
        let up = try Smoke.run(["lab", "up"])
        #expect(up.status == 0, "\(up.err)")
        defer { if !wasUp { _ = try? Smoke.run(["lab", "down"]) } }
        Self.removeLinks()
        defer { Self.removeLinks() }
        for (name, net) in [("a", 1), ("b", 2)] {
            for c in [["ip", "link", "add", "miglab-px\(name)", "type", "veth", "peer", "name", "miglab-px\(name)n"],
                      ["ip", "link", "set", "miglab-px\(name)n", "netns", "miglab-\(name)"],
                      ["ip", "addr", "add", "10.79.\(net).1/30", "dev", "miglab-px\(name)"],
                      ["ip", "link", "set", "miglab-px\(name)", "up"],
                      ["ip", "-n", "miglab-\(name)", "addr", "add", "10.79.\(net).2/30", "dev", "miglab-px\(name)n"],
                      ["ip", "-n", "miglab-\(name)", "link", "set", "miglab-px\(name)n", "up"]] {
                let r = try Smoke.spawn(c)
                #expect(r.status == 0, "\(c.joined(separator: " ")): \(r.err)")
            }
        }
        // The sources reach this machine at 10.79.1.1; the destination's QEMU listens on its
        // own end of the second pair, where the proxy forwards to.
        var text = try String(contentsOfFile: try sshLabFile(dir, sshd: nil), encoding: .utf8)
        text = text.replacingOccurrences(of: "migration_address: 10.77.0.2", with: "migration_address: 10.79.2.2")
            .replacingOccurrences(of: "migration_address: 10.77.0.1", with: "migration_address: 10.79.1.2")
        text += "\nstream_proxy: {listen: 10.79.1.1}\n"
        try text.write(toFile: "\(dir)/lab.yaml", atomically: true, encoding: .utf8)
        let v = try Smoke.run(["validate", "--lab", "\(dir)/lab.yaml", "scenarios/faults/corrupt-stream-header.yaml"])
        #expect(v.status == 0, "\(v.out)\n\(v.err)")

        let r = try Smoke.run(["run", "--lab", "\(dir)/lab.yaml", "scenarios/faults/corrupt-stream-header.yaml",
                               "--artifacts", "\(dir)/run", "--json", "\(dir)/results.json"])
        #expect(r.status == 0, "\(Smoke.failure("corrupt_stream through the runner's proxy", r))")
        let journal = try String(contentsOfFile: "\(dir)/run/journal.jsonl", encoding: .utf8)
        #expect(journal.contains("corrupt_stream damaged the stream"), "no proxy expectation in the journal")
        let proxyFlips = journal.split(separator: "\n").first { $0.contains("\"proxy_flips\"") }
        #expect(proxyFlips != nil && !(proxyFlips!.contains("\"proxy_flips\":\"0\"")), "\(proxyFlips ?? "no proxy summary")")
    }
}
}

/// `validate --lab` refuses, before anything boots, a fault the lab file's hosts cannot inject.
@Suite struct ValidateAgainstLabFileTests {
    typealias Smoke = BuiltinLabTests.SmokeOnBuiltinLabTests

    @Test func faultsTheHostsCannotInjectAreRefusedWithTheirLine() throws {
        let dir = NSTemporaryDirectory() + "miglab-validatelab-\(UUID().uuidString)"
        let plain = try sshLabFile(dir + "/plain", sshd: nil)
        let k = try Smoke.run(["validate", "--lab", plain, "scenarios/faults/kill-qemu-destination.yaml", "scenarios/smoke.yaml"])
        #expect(k.status == 2)
        #expect(k.err.contains("kill-qemu-destination.yaml:"), "\(k.err)")
        #expect(k.err.contains("`kill-qemu` needs host-side control of host b (process control)") && k.err.contains("`ssh:`"), "\(k.err)")
        #expect(k.out.contains("smoke.yaml: ok"), "\(k.out)")
        // ssh without a link: processes yes, the link no.
        let noLink = try sshLabFile(dir + "/nolink", sshd: nil, link: false)
        try (try String(contentsOfFile: noLink, encoding: .utf8)).replacingOccurrences(of: "accelerator: tcg", with: "accelerator: tcg\n    ssh: root@node1")
            .write(toFile: noLink, atomically: true, encoding: .utf8)
        let p = try Smoke.run(["validate", "--lab", noLink, "scenarios/faults/kill-qemu-destination.yaml", "scenarios/faults/network-partition.yaml"])
        #expect(p.status == 2)
        #expect(p.out.contains("kill-qemu-destination.yaml: ok"), "\(p.out)")
        #expect(p.err.contains("`network-partition` needs host-side control of host a (link control)"), "\(p.err)")
        // corrupt_stream needs the lab file's stream_proxy.
        let c = try Smoke.run(["validate", "--lab", plain, "scenarios/faults/corrupt-stream-header.yaml"])
        #expect(c.status == 2 && c.err.contains("`corrupt_stream` needs host-side control of host b (stream proxy)") && c.err.contains("stream_proxy"), "\(c.err)")
        // A host the lab file does not name.
        let one = dir + "/one.yaml"
        try "hosts:\n  a: {uri: 'qemu:///system'}\n".write(toFile: one, atomically: true, encoding: .utf8)
        let m = try Smoke.run(["validate", "--lab", one, "scenarios/smoke.yaml"])
        #expect(m.status == 2 && m.err.contains("uses host b, which lab file"), "\(m.err)")
    }
}
