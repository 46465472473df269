import Foundation
import PCI
import Scenario
import Synchronization
import Testing
#if canImport(FoundationXML)
import FoundationXML
#endif
@testable import Lab

/// The lab-file keys a hardware run needs, host-side resets limited to the run's pool
/// devices, and how devices are found in the guest.
@Suite struct HardwareLabFileTests {
    func errors(_ text: String) -> [String] { LabFileTests().errors(text) }

    @Test func runKeysAndTheirDefaults() throws {
        let lab = try LabFile.parse("""
        hosts:
          a:
            uri: qemu+ssh://root@node1/system
          b:
            uri: qemu:///system?socket=/x/sock
            accelerator: tcg
            emulator: /opt/qemu/bin/qemu-system-x86_64
            image_dir: /srv/images
            ssh: admin@node2
        """, file: "lab.yaml")
        let a = try #require(lab[host: "a"]), b = try #require(lab[host: "b"])
        #expect(a.accelerator == .kvm && a.emulator == nil)
        // A remote host gets the guest image uploaded; its sysfs is reached over the URI's ssh target.
        #expect(a.imageDirectory == LabFile.Host.defaultImageDirectory)
        #expect(a.sshTarget == "root@node1")
        #expect(b.accelerator == .tcg && b.emulator == "/opt/qemu/bin/qemu-system-x86_64")
        #expect(b.imageDirectory == "/srv/images" && b.sshTarget == "admin@node2")
        // A local host without image_dir reads the runner's own image files.
        let local = try LabFile.parse("hosts: {a: {uri: 'qemu:///system'}}", file: "l.yaml")
        #expect(local[host: "a"]?.imageDirectory == nil)
    }

    @Test func badRunKeysNameTheLine() {
        let e = errors("""
        hosts:
          a:
            uri: qemu:///system
            accelerator: hvf
            emulator: qemu-system-x86_64
            image_dir: images
            ssh: "-oProxyCommand=x"
        """)
        #expect(e.count == 4, "\(e)")
        #expect(e.contains { $0.hasPrefix("lab.yaml:4:") && $0.contains("`kvm` or `tcg`") })
        #expect(e.contains { $0.hasPrefix("lab.yaml:5:") && $0.contains("absolute path") })
        #expect(e.contains { $0.hasPrefix("lab.yaml:6:") && $0.contains("absolute folder") })
        #expect(e.contains { $0.hasPrefix("lab.yaml:7:") && $0.contains("root@node1") })
    }
}

@Suite struct HostResetTests {
    @Test func aResetTouchesExactlyTheRunsFunctionsOfThatRequirement() async throws {
        let (lab, inv, plan, dir) = try PassthroughSessionTests().setUp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let control = RecordingControl(drivers: ["0000:5e:00.1": "mlx5_core", "0000:5e:00.2": "mlx5_core"])
        let session = try await PassthroughSession.prepare(plan: plan, lab: lab, inventories: inv, controls: ["a": control],
                                                           owner: .current(runID: "reset"))
        let before = control.calls.count
        let done = try await session.reset(requirement: "nic", on: "a", method: .flr)
        #expect(done.map(\.description) == ["0000:5e:00.1", "0000:5e:00.2"])
        #expect(Array(control.calls.dropFirst(before)) == ["reset 0000:5e:00.1 flr", "reset 0000:5e:00.2 flr"])
        // An mdev has no function of its own; a host the plan does not use has none of the run's devices.
        await #expect(throws: PassthroughError.self) { _ = try await session.reset(requirement: "tty", on: "a", method: .nodeDevice) }
        await #expect(throws: PassthroughError.self) { _ = try await session.reset(requirement: "nic", on: "b", method: .flr) }
        await #expect(throws: PassthroughError.self) { _ = try await session.reset(requirement: "other", on: "a", method: .flr) }
        #expect(control.calls.count == before + 2)
        _ = await session.finish()
    }

    @Test func sysfsFLRSelectsFLRWritesResetAndPutsTheMethodBack() async throws {
        let tree = try PassthroughSysfs.node()
        let reset = SysfsFunctionReset(access: .local(root: tree.sysfsRoot))
        let dev = "\(tree.sysfsRoot)/bus/pci/devices/0000:5e:00.1"
        try Data("flr bus\n".utf8).write(to: URL(fileURLWithPath: "\(dev)/reset_method"))
        try Data().write(to: URL(fileURLWithPath: "\(dev)/reset"))
        try await reset.functionLevelReset(PCIAddress("0000:5e:00.1")!)
        func read(_ f: String) throws -> String { try String(contentsOfFile: "\(dev)/\(f)", encoding: .utf8).trimmingCharacters(in: .newlines) }
        #expect(try read("reset") == "1")
        #expect(try read("reset_method") == "flr bus")
        await #expect(throws: PassthroughError.self) { try await reset.functionLevelReset(PCIAddress("0000:77:00.0")!) }
        // A kernel before 5.15 has no reset_method: `reset` alone, and nothing else is written.
        let old = "\(tree.sysfsRoot)/bus/pci/devices/0000:5e:00.3"
        try FileManager.default.removeItem(atPath: "\(old)/reset_method")
        try Data().write(to: URL(fileURLWithPath: "\(old)/reset"))
        try await reset.functionLevelReset(PCIAddress("0000:5e:00.3")!)
        #expect(try String(contentsOfFile: "\(old)/reset", encoding: .utf8) == "1\n")
        #expect(!FileManager.default.fileExists(atPath: "\(old)/reset_method"))
        // A function the kernel cannot reset has no `reset` file.
        await #expect(throws: PassthroughError.self) { try await reset.functionLevelReset(PCIAddress("0000:5e:00.2")!) }
    }

    @Test func aLabHostsSysfsIsLocalOrOverSSH() {
        #expect(SysfsFunctionReset(host: .init(name: "a", uri: "qemu:///system"))?.access == .local(root: "/sys"))
        #expect(SysfsFunctionReset(host: .init(name: "a", uri: "qemu:///system", sysfsRoot: "/t/sys"))?.access == .local(root: "/t/sys"))
        #expect(SysfsFunctionReset(host: .init(name: "a", uri: "qemu+ssh://root@n1/system"))?.access == .ssh(SSHClient(target: "root@n1")))
        #expect(SysfsFunctionReset(host: .init(name: "a", uri: "qemu+tls://n1/system")) == nil)
    }

    /// `miglab inventory --lab`: the VFIO probe opens pool devices only.
    @Test func theInventoryProbeOpensOnlyPoolDevices() throws {
        final class Probe: VFIOMigrationProbe {
            let asked = Mutex<[PCIAddress]>([])
            func migrationSupport(of address: PCIAddress, iommuGroup: Int) -> VFIOMigrationSupport {
                asked.withLock { $0.append(address) }
                return .failed("probed")
            }
        }
        let inner = Probe()
        let probe = PoolOnlyProbe(inner: inner, allowed: [PCIAddress("0000:5e:00.1")!])
        #expect(probe.migrationSupport(of: PCIAddress("0000:5e:00.3")!, iommuGroup: 52).status == .notProbed)
        #expect(probe.migrationSupport(of: PCIAddress("0000:5e:00.1")!, iommuGroup: 50).status == .failed)
        #expect(inner.asked.withLock { $0 } == [PCIAddress("0000:5e:00.1")!])
    }
}

@Suite struct GuestDeviceLocatorTests {
    /// A q35 guest as libvirt lays it out: root ports on pcie.0, a VF behind one, a pci-serial
    /// behind a PCIe-to-PCI bridge behind another root port.
    static let xml = """
    <domain type='qemu'><name>g</name><devices>
      <controller type='pci' index='0' model='pcie-root'/>
      <controller type='pci' index='1' model='pcie-root-port'><address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0' multifunction='on'/></controller>
      <controller type='pci' index='2' model='pcie-root-port'><address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x1'/></controller>
      <controller type='pci' index='3' model='pcie-to-pci-bridge'><address type='pci' domain='0x0000' bus='0x02' slot='0x00' function='0x0'/></controller>
      <hostdev mode='subsystem' type='pci'><alias name='ua-vf-0'/><address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></hostdev>
      <serial type='udp'><alias name='ua-serial-tty0'/><address type='pci' domain='0x0000' bus='0x03' slot='0x01' function='0x0'/></serial>
      <interface type='user'><alias name='net0'/><address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></interface>
      <controller type='sata' index='0'><alias name='ua-sata'/><address type='pci' domain='0x0000' bus='0x00' slot='0x1f' function='0x2'/></controller>
    </devices></domain>
    """

    @Test func eachAliasedDeviceGetsItsPathOfSlotsFromTheRootBus() throws {
        let paths = try GuestDeviceLocator.pciPaths(domainXML: Self.xml)
        #expect(paths["ua-vf-0"] == "02.0/00.0")
        #expect(paths["ua-serial-tty0"] == "02.1/00.0/01.0")
        #expect(paths["ua-sata"] == "1f.2")
        #expect(paths["net0"] == nil)   // not a user alias
    }

    @Test func aBusNoControllerMakesIsAnError() {
        let bad = Self.xml.replacingOccurrences(of: "bus='0x03' slot='0x01'", with: "bus='0x09' slot='0x01'")
        #expect(throws: GuestDeviceLocator.LocatorError.self) { try GuestDeviceLocator.pciPaths(domainXML: bad) }
        #expect(throws: GuestDeviceLocator.LocatorError.self) { try GuestDeviceLocator.pciPaths(domainXML: "<pool type='dir'/>") }
    }

    @Test func serialStandInsLoopBackOrGoNowhereAndBrokenNICsHaveNoLink() throws {
        let s = try ScenarioParser().parse("""
        name: d
        guest:
          devices:
            - {name: nic0, model: virtio-net, link: down}
            - {name: tty0, model: pci-serial}
            - {name: tty1, model: pci-serial, loopback: false}
        steps: [{boot: a}, {verify: [devices]}]
        expect: {devices: broken}
        """, file: "d.yaml")
        let def = scenarioDomain(name: "miglab-d", scenario: s, plan: nil, host: "a",
                                 image: GuestImage(kernel: "/k", initrd: "/i", hash: "h", kernelVersion: "v"),
                                 emulator: nil, accelerator: .tcg, consoleLog: "/c")
        let doc = try XMLDocument(xmlString: def.xml())
        #expect(try doc.nodes(forXPath: "/domain/devices/interface").count == 1)
        #expect(try doc.nodes(forXPath: "/domain/devices/interface/link/@state").first?.stringValue == "down")
        let port = serialLoopbackPort(domain: "miglab-d", index: 1)
        let looped = try #require(try doc.nodes(forXPath: "/domain/devices/serial[alias/@name='ua-serial-tty0']").first as? XMLElement)
        #expect(looped.attribute(forName: "type")?.stringValue == "udp")
        #expect(try looped.nodes(forXPath: "source/@service").compactMap(\.stringValue) == ["\(port)", "\(port)"])
        #expect(try looped.nodes(forXPath: "target/@type").first?.stringValue == "pci-serial")
        let broken = try #require(try doc.nodes(forXPath: "/domain/devices/serial[alias/@name='ua-serial-tty1']").first as? XMLElement)
        #expect(broken.attribute(forName: "type")?.stringValue == "null")
        // No emulator named: the host's libvirt picks its own.
        #expect(try doc.nodes(forXPath: "/domain/devices/emulator").isEmpty)
        #expect(def.kernelArguments.contains("8250.nr_uarts=16"))
    }
}
