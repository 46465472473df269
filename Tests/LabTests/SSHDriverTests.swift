import Foundation
import Scenario
import Testing
@testable import Lab

/// The ssh driver's lab-file keys, its commands, and its kill script run for real (with sh on
/// this machine: the script is what ssh runs on the host).
@Suite struct SSHDriverTests {
    func errors(_ text: String) -> [String] { LabFileTests().errors(text) }

    @Test func sshKeysAndWhatTheHostThenOffers() throws {
        let lab = try LabFile.parse("""
        hosts:
          a:
            uri: qemu+ssh://root@node1/system
            ssh_config: conf/ssh_config
            qemu_pid_dir: /var/run/libvirt/qemu
            daemon_pid_file: /run/virtqemud.pid
            link: {interface: ens1f1, namespace: mig}
          b:
            uri: qemu+ssh://root@node2/system
          c:
            uri: qemu:///system
        """, file: "/labs/lab.yaml", relativeTo: "/labs")
        let a = try #require(lab[host: "a"]), b = try #require(lab[host: "b"]), c = try #require(lab[host: "c"])
        #expect(a.sshConfig == "/labs/conf/ssh_config")
        #expect(a.qemuPidDirectory == "/var/run/libvirt/qemu" && a.daemonPidFile == "/run/virtqemud.pid")
        #expect(a.link == LabFile.Link(interface: "ens1f1", namespace: "mig"))
        #expect(b.qemuPidDirectory == "/run/libvirt/qemu" && b.daemonPidFile == "/run/libvirtd.pid" && b.link == nil)
        #expect(a.offers.isSuperset(of: [.processControl, .linkControl]))
        #expect(b.offers.contains(.processControl) && !b.offers.contains(.linkControl))
        #expect(!c.offers.contains(.processControl))
        #expect(SSHHostActions(host: c) == nil)
        let actions = try #require(SSHHostActions(host: a))
        #expect(actions.ssh == SSHClient(target: "root@node1", configFile: "/labs/conf/ssh_config"))
        #expect(actions.offersLinkControl && !(SSHHostActions(host: b)?.offersLinkControl ?? true))
    }

    @Test func namesThatWouldBeCommandsAreRefused() {
        let e = errors("""
        hosts:
          a:
            uri: qemu+ssh://root@node1/system
            link: {interface: "eth0; reboot", namespace: "../x"}
          b:
            uri: qemu:///system
            link: {interface: eth1}
        """)
        #expect(e.contains { $0.contains(":4:") && $0.contains("`interface` is a network interface name") }, "\(e)")
        #expect(e.contains { $0.contains("`namespace` is a network namespace name") }, "\(e)")
        #expect(e.contains { $0.contains(":7:") && $0.contains("`link` is for the ssh driver") }, "\(e)")
    }

    @Test func theStreamProxyAddressIsAnIPAddressAndServesHostsWithAMigrationAddress() throws {
        let lab = try LabFile.parse("""
        stream_proxy: {listen: 10.0.0.100}
        hosts:
          a: {uri: "qemu+tcp://n1/system", migration_address: 10.0.0.1}
          b: {uri: "qemu+tcp://n2/system"}
        """, file: "lab.yaml")
        #expect(lab.streamProxyAddress == "10.0.0.100")
        #expect(lab.offers(host: "a")?.contains(.streamProxy) == true)
        #expect(lab.offers(host: "b")?.contains(.streamProxy) == false)
        #expect(lab.offers(host: "z") == nil)
        #expect(try LabFile.parse("stream_proxy: {listen: \"fd00::1\"}\nhosts: {a: {uri: \"qemu:///system\"}}\n", file: "l").streamProxyAddress == "fd00::1")
        let e = errors("stream_proxy: {listen: \"node1; reboot\"}\nhosts: {a: {uri: \"qemu:///system\"}}\n")
        #expect(e.contains { $0.contains("lab.yaml:1:") && $0.contains("`listen` is an IP address") }, "\(e)")
    }

    @Test func theClientQuotesNothingAwayAndNeverPrompts() {
        let c = SSHClient(target: "root@node1", configFile: "/etc/miglab/ssh_config")
        #expect(c.argv("echo hi") == ["ssh", "-F", "/etc/miglab/ssh_config", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                                      "--", "root@node1", "echo hi"])
        #expect(SSHClient(target: "n").argv("x").prefix(2) == ["ssh", "-o"])
    }

    @Test func linkCommands() {
        let l = LabFile.Link(interface: "ens1f1", namespace: "mig")
        #expect(SSHHostActions.linkScript(l, cut: true, lossOnly: false) == "ip -n 'mig' link set dev 'ens1f1' down")
        #expect(SSHHostActions.linkScript(l, cut: false, lossOnly: false) == "ip -n 'mig' link set dev 'ens1f1' up")
        #expect(SSHHostActions.linkScript(LabFile.Link(interface: "e1"), cut: true, lossOnly: true) == "tc qdisc add dev 'e1' root netem loss 100%")
        #expect(SSHHostActions.linkScript(LabFile.Link(interface: "e1"), cut: false, lossOnly: true) == "tc qdisc del dev 'e1' root")
    }

    /// The kill script kills the live process its pid file names and prints its pid; a stale
    /// or missing pid file is an error that says which file to set.
    @Test func theKillScriptKillsWhatThePidFileNames() throws {
        let dir = NSTemporaryDirectory() + "miglab-ssh-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let victim = Process()
        victim.executableURL = URL(fileURLWithPath: "/bin/sleep")
        victim.arguments = ["600"]
        try victim.run()
        defer { if victim.isRunning { victim.terminate() } }
        try "\(victim.processIdentifier)\n".write(toFile: "\(dir)/guest's.pid", atomically: true, encoding: .utf8)
        let r = try Command.run(["/bin/sh", "-c", SSHHostActions.killScript(pidFile: "\(dir)/guest's.pid", what: "QEMU of guest's")], check: false)
        #expect(r.status == 0 && r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "\(victim.processIdentifier)", "\(r.stderr)")
        victim.waitUntilExit()
        #expect(victim.terminationReason == .uncaughtSignal && victim.terminationStatus == SIGKILL)
        // Now the pid file is stale; a missing one is the same error.
        for file in ["\(dir)/guest's.pid", "\(dir)/none.pid"] {
            let again = try Command.run(["/bin/sh", "-c", SSHHostActions.killScript(pidFile: file, what: "libvirt daemon")], check: false)
            #expect(again.status == 3)
            #expect(again.stderr.contains("no running libvirt daemon") && again.stderr.contains("daemon_pid_file"), "\(again.stderr)")
        }
    }
}
