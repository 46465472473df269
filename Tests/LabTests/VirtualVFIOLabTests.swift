import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Scenario
import Testing
@testable import Lab

/// The pieces of the virtual VFIO hosts that need no VM: the lab file they write, the kernel
/// packages they pick, the QEMU properties mtty needs in the domain XML, forwarded endpoints.
@Suite struct VirtualVFIOLabTests {
    @Test func theLabFileItWritesIsALabFileWithMttyPoolsAndForwardedHosts() throws {
        let root = NSTemporaryDirectory() + "miglab-vfio-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let lab = VirtualVFIOLab(root: root)
        try lab.writeLabFile()
        let file = try LabFile.load(path: lab.labFilePath)
        #expect(file.hosts.map(\.name) == ["a", "b"])
        for h in file.hosts {
            #expect(h.uri.hasPrefix("qemu+tcp://127.0.0.1:"))
            // A forwarded port is another machine: the image is uploaded, devices read via libvirt.
            #expect(!h.isLocal)
            #expect(h.imageDirectory == "/var/lib/libvirt/images/miglab")
            #expect(h.logDirectory == "\(root)/hosts/\(h.name)/log")
            #expect(h.accelerator == .kvm)
            #expect(h.migrationAddress == "10.0.2.15")
            #expect(h.mdevTypes.map(\.type) == ["mtty-2", "mtty-1"])
            #expect(h.mdevTypes.allSatisfy { $0.parentNodeDeviceName == "mtty_mtty" && $0.qemuProperties == VirtualVFIOLab.mttyQEMUProperties })
        }
        // Both daemons share one kernel, but lock their own instances.
        #expect(Set(file.hosts.map(\.machineKey)).count == 2)
    }

    @Test func kernelPackagesFollowTheDebianVersion() throws {
        let bpo = try VirtualHostKernelBuilder.Packages(version: "6.12.95-1~bpo12+1")
        #expect(bpo.release == "6.12.95+deb12-amd64")
        #expect(bpo.image == "linux-image-6.12.95+deb12-amd64-unsigned")
        #expect(bpo.headers == ["linux-headers-6.12.95+deb12-amd64", "linux-headers-6.12.95+deb12-common", "linux-kbuild-6.12.95+deb12"])
        #expect(bpo.source == "linux-source-6.12")
        let security = try VirtualHostKernelBuilder.Packages(version: "6.12.117-1~deb12u1")
        #expect(security.release == "6.12.117+deb12-amd64")
        #expect(throws: GuestImageBuilder.ImageError.self) { try VirtualHostKernelBuilder.Packages(version: "latest") }
    }

    @Test func mttyGetsItsResetSwitchAndAnMttyThatChangedThereIsAnError() throws {
        let stock = """
            static int mtty_get_device_info(struct vfio_device_info *dev_info)
            {
            \tdev_info->flags = VFIO_DEVICE_FLAGS_PCI;
            """
        let patched = try VirtualHostKernelBuilder.patchMtty(stock)
        #expect(patched.contains("module_param(report_reset, bool, 0644);"))
        #expect(patched.contains("VFIO_DEVICE_FLAGS_PCI | (report_reset ? VFIO_DEVICE_FLAGS_RESET : 0);"))
        #expect(patched.hasSuffix("static int mtty_get_device_info(struct vfio_device_info *dev_info)\n{\n\t" + VirtualHostKernelBuilder.mttyResetFlags))
        #expect { try VirtualHostKernelBuilder.patchMtty(stock.replacingOccurrences(of: "FLAGS_PCI;", with: "FLAGS_PCI | X;")) }
            throws: { "\($0)".contains("does not have `dev_info->flags = VFIO_DEVICE_FLAGS_PCI;` exactly once") }
    }

    @Test func qemuPropertiesBecomeAQEMUOverrideOnTheHostdevsAlias() throws {
        var d = DomainDefinition(name: "miglab-t", memoryMiB: 256, vcpus: 1,
                                 image: GuestImage(kernel: "/k", initrd: "/i", hash: "h", kernelVersion: "v"),
                                 kernelArguments: [], emulator: nil, consoleLog: "/c",
                                 hostdevs: [.mdev(.init(uuid: UUID(), alias: "ua-tty-0", qemuProperties: VirtualVFIOLab.mttyQEMUProperties)),
                                            .mdev(.init(uuid: UUID(), alias: "ua-tty-1"))])
        d.accelerator = .kvm
        let xml = d.xml()
        let doc = try XMLDocument(xmlString: xml)
        let root = try #require(doc.rootElement())
        #expect(root.namespace(forPrefix: "qemu")?.stringValue == DomainDefinition.qemuNamespace)
        let devices = try #require(root.elements(forName: "qemu:override").first).elements(forName: "qemu:device")
        #expect(devices.map { $0.attribute(forName: "alias")?.stringValue } == ["ua-tty-0"])
        let properties = try #require(devices.first?.elements(forName: "qemu:frontend").first).elements(forName: "qemu:property")
        #expect(properties.map { "\($0.attribute(forName: "name")?.stringValue ?? "")=\($0.attribute(forName: "value")?.stringValue ?? "")" }
                == ["x-device-dirty-page-tracking=off", "enable-migration=on"])
        // A KVM guest is offered no nested virtualization (its nested state would migrate too).
        #expect(try doc.nodes(forXPath: "/domain/cpu/feature[@policy='disable']/@name").compactMap(\.stringValue) == ["svm", "vmx"])
        d.accelerator = .tcg
        d.hostdevs = []
        let tcg = try XMLDocument(xmlString: d.xml())
        #expect(try tcg.nodes(forXPath: "/domain/cpu/feature").isEmpty)
        #expect(!d.xml().contains("qemu:override"))
    }

    @Test func labFilesTakeQEMUPropertiesAndALogFolder() throws {
        let lab = try LabFile.parse("""
        version: 1
        hosts:
          a:
            uri: qemu+tcp://127.0.0.1:16611/system
            log_dir: /srv/logs/a
            pools:
              - {name: vfs, vfs_of: "0000:3b:00.0", qemu_properties: {x-enable-migration: "on"}}
            mdev_types:
              - {type: mtty-2, parent: mtty_mtty, qemu_properties: {enable-migration: "on", x-device-dirty-page-tracking: "off"}}
        """, file: "lab.yaml")
        let a = try #require(lab[host: "a"])
        #expect(a.logDirectory == "/srv/logs/a")
        #expect(a.pools.first?.qemuProperties == [QEMUDeviceProperty(name: "x-enable-migration", value: "on")])
        #expect(a.mdevTypes.first?.qemuProperties.map(\.name) == ["enable-migration", "x-device-dirty-page-tracking"])
        #expect(!a.isLocal && a.machineKey == "127.0.0.1_16611")
        #expect(LabFile.Host(name: "l", uri: "qemu+tcp://127.0.0.1/system").isLocal)

        func errors(_ host: String) -> [String] {
            do {
                _ = try LabFile.parse("version: 1\nhosts:\n  a:\n" + host, file: "bad.yaml")
                return []
            } catch {
                return error.diagnostics.map(\.description)
            }
        }
        let badName = errors("    uri: qemu:///system\n    mdev_types:\n      - {type: mtty-2, parent: mtty, qemu_properties: {\"a b\": \"on\"}}\n")
        #expect(badName.contains { $0.hasPrefix("bad.yaml:6:") && $0.contains("not a QEMU property name") }, "\(badName)")
        let notMap = errors("    uri: qemu:///system\n    mdev_types:\n      - {type: mtty-2, parent: mtty, qemu_properties: [on]}\n")
        #expect(notMap.contains { $0.contains("`qemu_properties` must be a mapping") }, "\(notMap)")
        let control = errors("    uri: qemu:///system\n    mdev_types:\n      - {type: mtty-2, parent: mtty, qemu_properties: {x: \"a\\nb\"}}\n")
        #expect(control.contains { $0.contains("control character") }, "\(control)")
        let relative = errors("    uri: qemu:///system\n    log_dir: logs\n")
        #expect(relative.contains { $0.hasPrefix("bad.yaml:5:") && $0.contains("`log_dir`") }, "\(relative)")
    }
}

@Suite struct VirtualHostKernelTroubleTests {
    /// A run on a virtual host whose kernel crashed or stalled is not evidence: the lab names
    /// the line; a clean console, or trouble before the run began, names nothing.
    @Test func crashesAndStallsOnL1sConsoleAreFoundAfterTheRunsStart() throws {
        let root = NSTemporaryDirectory() + "miglab-vfio-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root + "/l1", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let lab = VirtualVFIOLab(root: root)
        try "MIGLAB-L1-READY kernel=6.12\n[  117.2] kvm: vcpu0, guest rIP: 0xffff Unhandled WRMSR(0xc0010007) = 0xffff\n"
            .write(toFile: lab.consoleLog, atomically: true, encoding: .utf8)
        #expect(lab.kernelTrouble().isEmpty)
        let start = lab.consoleSize()
        let handle = try #require(FileHandle(forWritingAtPath: lab.consoleLog))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data("[  425.9] Kernel panic - not syncing: corrupted stack end detected inside scheduler\n".utf8))
        try handle.close()
        #expect(lab.kernelTrouble(after: start) == ["[  425.9] Kernel panic - not syncing: corrupted stack end detected inside scheduler"])
        #expect(lab.kernelTrouble(after: lab.consoleSize()).isEmpty)
        let stall = "[ 1057.7] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n"
        try stall.write(toFile: lab.consoleLog, atomically: true, encoding: .utf8)
        #expect(lab.kernelTrouble().count == 1)
        // The serial console writes CR LF: the finding is the one line, not the rest of the log.
        try "[ 1189.6] BUG: kernel NULL pointer dereference, address: 0000000000000008\r\n[ 1189.7] #PF: supervisor read access\r\n"
            .write(toFile: lab.consoleLog, atomically: true, encoding: .utf8)
        #expect(lab.kernelTrouble() == ["[ 1189.6] BUG: kernel NULL pointer dereference, address: 0000000000000008"])
    }
}

/// The virtual hosts' process actions go through L1's request folder: tested here with a
/// stand-in for l1-stage2's loop (the same protocol: NAME.sh run once, NAME.out, then NAME.rc).
@Suite struct VirtualHostActionsTests {
    /// Serves the request folder like l1-stage2, until terminated.
    static func serve(_ requests: String) -> Process {
        let loop = """
        while true; do
          for f in "$1"/*.sh; do [ -e "$f" ] || continue; b=${f%.sh}; mv "$f" "$b.run" || continue
            ( bash "$b.run" > "$b.out" 2>&1 < /dev/null; echo $? > "$b.rc.tmp"; mv "$b.rc.tmp" "$b.rc" ) & done
          sleep 0.05
        done
        """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = ["-c", loop, "serve", requests]
        // Holding none of the test runner's pipes, so nothing waits on it if it outlives a test.
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try? p.run()
        return p
    }

    @Test func killQEMUKillsThePidOfTheDomainsPidFileAndNamesAMissingOne() throws {
        let root = NSTemporaryDirectory() + "miglab-l1req-\(UUID().uuidString)"
        let state = root + "/state/a"
        try FileManager.default.createDirectory(atPath: state + "/run/qemu", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/requests", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let server = Self.serve(root + "/requests")
        // SIGKILL: a child of the test inherits its blocked signals, SIGTERM among them.
        defer { kill(server.processIdentifier, SIGKILL) }
        let victim = Process()
        victim.executableURL = URL(fileURLWithPath: "/bin/sleep")
        victim.arguments = ["60"]
        victim.standardOutput = FileHandle.nullDevice
        victim.standardError = FileHandle.nullDevice
        try victim.run()
        defer { kill(victim.processIdentifier, SIGKILL) }
        try "\(victim.processIdentifier)\n".write(toFile: state + "/run/qemu/miglab-x.pid", atomically: true, encoding: .utf8)
        let actions = VirtualHostActions(host: "a", stateDirectory: state, shell: VirtualHostShell(requests: root + "/requests"),
                                         stage: { _ in throw CommandError(command: ["stage"], status: 1, stderr: "not here") })
        #expect(try actions.killQEMU(domain: "miglab-x") == victim.processIdentifier)
        victim.waitUntilExit()
        #expect(victim.terminationReason == .uncaughtSignal && victim.terminationStatus == SIGKILL)
        #expect { try actions.killLibvirtd() } throws: { "\($0)".contains("no running libvirtd on host a") }
        #expect(!actions.offersLinkControl)
        #expect(throws: CommandError.self) { try actions.cutLink(lossOnly: false) }
        // Nothing is left in the request folder.
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/requests").isEmpty)
    }

    /// A miglab the lab starts on a virtual host (the stream proxy) runs in the background,
    /// is stopped with SIGTERM, and its output and staged copy go with it.
    @Test func aMiglabStartedOnTheHostRunsUntilStoppedAndLeavesNothing() throws {
        let root = NSTemporaryDirectory() + "miglab-l1req-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root + "/requests", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let server = Self.serve(root + "/requests")
        defer { kill(server.processIdentifier, SIGKILL) }
        // Stands in for the staged miglab: says what it was asked, prints a summary on SIGTERM
        // (which it unblocks first, as miglab does: the test runner blocks it for its children).
        let fake = #"""
            #!/usr/bin/perl
            use POSIX;
            $| = 1;
            sigprocmask(SIG_UNBLOCK, POSIX::SigSet->new(SIGTERM));
            $SIG{TERM} = sub { print "{\"flips\":1}\n"; exit 0 };
            print "asked: @ARGV\n";
            select(undef, undef, undef, 0.05) while 1;
            """#
        let actions = VirtualHostActions(host: "b", stateDirectory: root, shell: VirtualHostShell(requests: root + "/requests"),
                                         stage: { name in
                                             let path = root + "/" + name
                                             try fake.write(toFile: path, atomically: true, encoding: .utf8)
                                             chmod(path, 0o755)
                                             return path
                                         })
        #expect(actions.runsMiglab && actions.secondaryAddress == "10.0.2.16")
        let process = try actions.startMiglab(["stream-proxy", "--listen", "10.0.2.15:49300"])
        Thread.sleep(forTimeInterval: 0.3)
        let output = process.stop(grace: .seconds(5))
        #expect(output.contains("asked: stream-proxy --listen 10.0.2.15:49300"))
        #expect(output.contains(#"{"flips":1}"#))
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).sorted() == ["requests"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/requests").isEmpty)
    }

    @Test func anL1ThatDoesNotAnswerIsAnError() throws {
        let root = NSTemporaryDirectory() + "miglab-l1req-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let shell = VirtualHostShell(requests: root)
        #expect { try shell.run("true", timeout: .milliseconds(300)) } throws: { "\($0)".contains("L1 did not run it") }
    }
}
