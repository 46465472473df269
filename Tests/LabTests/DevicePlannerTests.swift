import Foundation
import PCI
import Scenario
import Testing
#if canImport(FoundationXML)
import FoundationXML
#endif
@testable import Lab

@Suite struct DevicePlannerTests {
    static let scenarioText = """
    name: vfio-two-nics
    guest:
      passthrough: [{name: nic, kind: vfio-pci, driver: mlx5_vfio_pci, count: 2}]
    steps:
      - boot: a
      - migrate: {from: a, to: b}
    """

    func scenario(_ text: String = scenarioText) throws -> Scenario {
        try ScenarioParser().parse(text, file: "vfio.yaml")
    }

    func inventories(_ lab: LabFile) throws -> [String: PCIInventory] {
        let source = LabHostInventories()
        return try Dictionary(uniqueKeysWithValues: lab.hosts.map { ($0.name, try source.inventory(of: $0)) })
    }

    @Test func dryRunPlansTwoVariantDevicesOnBothHostsAndRendersTheirHostdevs() throws {
        let lab = try TwoNodeLab()
        defer { lab.remove() }
        let labFile = try LabFile.load(path: lab.labPath)
        let text = try dryRunPlan(scenarios: [try scenario()], labFile: labFile, inventories: LabHostInventories())
        #expect(text.contains("nothing is changed"))
        #expect(text.contains("placeholder"))
        #expect(text.contains("nic[0] = 0000:5e:00.1 [15b3:101e]"))
        #expect(text.contains("nic[1] = 0000:5e:00.2 [15b3:101e]"))
        #expect(text.contains("host b (test:///default)"))
        #expect(!text.contains("0000:5e:00.3"))

        // The domain XML the plan defines, parsed back.
        let plan = try DevicePlanner(lab: labFile).plan(try scenario(), inventories: try inventories(labFile))
        #expect(plan.hosts.map(\.host) == ["a", "b"])
        for host in ["a", "b"] {
            let image = GuestImage(kernel: "/k", initrd: "/i", hash: "h", kernelVersion: "6.1")
            let xml = scenarioDomain(name: "miglab-s", scenario: try scenario(), plan: plan, host: host, image: image,
                                     emulator: nil, accelerator: .kvm, consoleLog: "/c.log").xml()
            let doc = try XMLDocument(xmlString: xml, options: [])
            #expect(try doc.nodes(forXPath: "/domain/@type").first?.stringValue == "kvm")
            let hostdevs = try doc.nodes(forXPath: "/domain/devices/hostdev").compactMap { $0 as? XMLElement }
            #expect(hostdevs.count == 2)
            for (i, h) in hostdevs.enumerated() {
                #expect(h.attribute(forName: "mode")?.stringValue == "subsystem")
                #expect(h.attribute(forName: "type")?.stringValue == "pci")
                #expect(h.attribute(forName: "managed")?.stringValue == "yes")
                let driver = h.elements(forName: "driver").first
                #expect(driver?.attribute(forName: "name")?.stringValue == "vfio")
                #expect(driver?.attribute(forName: "model")?.stringValue == "mlx5_vfio_pci")
                let address = h.elements(forName: "source").first?.elements(forName: "address").first
                #expect(address?.attribute(forName: "domain")?.stringValue == "0x0000")
                #expect(address?.attribute(forName: "bus")?.stringValue == "0x5e")
                #expect(address?.attribute(forName: "slot")?.stringValue == "0x00")
                #expect(address?.attribute(forName: "function")?.stringValue == "0x\(i + 1)")
                #expect(h.elements(forName: "alias").first?.attribute(forName: "name")?.stringValue == "ua-nic-\(i)")
            }
        }
    }

    /// A lab file whose hosts both have `pools` (YAML flow items, one per line).
    func labFile(_ lab: TwoNodeLab, pools: [String]) throws -> LabFile {
        let list = pools.map { "      - \($0)" }.joined(separator: "\n")
        let text = """
        hosts:
          a:
            uri: test:///default
            sysfs_root: \(lab.a.sysfsRoot)
            pools:
        \(list)
          b:
            uri: test:///default
            sysfs_root: \(lab.b.sysfsRoot)
            pools:
        \(list)
        """
        return try LabFile.parse(text, file: "\(lab.directory)/lab.yaml")
    }

    /// Two pools that name one device are refused unless both allow it on purpose.
    @Test func overlappingPoolsAreRefusedUnlessAllowed() throws {
        let lab = try TwoNodeLab()
        defer { lab.remove() }
        let overlapping = try labFile(lab, pools: ["{name: mlx, addresses: [\"0000:5e:00.1\", \"0000:5e:00.2\"], driver: mlx5_vfio_pci}",
                                                   "{name: all, vendor_device: \"15b3:101e\", driver: mlx5_vfio_pci}"])
        #expect { try DevicePlanner(lab: overlapping).plan(try scenario(), inventories: try inventories(overlapping)) } throws: {
            "\($0)".contains("0000:5e:00.1 is in pools `mlx` and `all` of host `a`: pools must not overlap") && "\($0)".contains("allow: [overlap]")
        }
        let allowed = try labFile(lab, pools: ["{name: mlx, addresses: [\"0000:5e:00.1\", \"0000:5e:00.2\"], driver: mlx5_vfio_pci, allow: [overlap]}",
                                               "{name: all, vendor_device: \"15b3:101e\", driver: mlx5_vfio_pci, allow: [overlap]}"])
        #expect(try DevicePlanner(lab: allowed).plan(try scenario(), inventories: try inventories(allowed)).devices(on: "a").count == 2)
    }

    /// A physical function with VFs enabled (bound to its NIC driver) is not handed out as a
    /// vfio-pci device unless its pool allows it on purpose.
    @Test func aPhysicalFunctionWithVFsIsRefusedUnlessAllowed() throws {
        let lab = try TwoNodeLab()
        defer { lab.remove() }
        let pf = try scenario("""
        name: pf
        guest:
          passthrough: [{name: nic, kind: vfio-pci, vendor_device: "8086:10fb"}]
        steps:
          - boot: a
          - migrate: {from: a, to: b}
        """)
        let plain = try labFile(lab, pools: ["{name: pf, addresses: [\"0000:3b:00.0\"]}"])
        #expect { try DevicePlanner(lab: plain).plan(pf, inventories: try inventories(plain)) } throws: {
            "\($0)".contains("0000:3b:00.0 in pool `pf` of host `a` is a physical function with 2 VFs enabled (bound to ixgbe)") && "\($0)".contains("allow: [pf_with_vfs]")
        }
        let allowed = try labFile(lab, pools: ["{name: pf, addresses: [\"0000:3b:00.0\"], allow: [pf_with_vfs]}"])
        #expect(try DevicePlanner(lab: allowed).plan(pf, inventories: try inventories(allowed)).devices(on: "b").count == 1)
    }

    @Test func aMatchingDeviceOutsideEveryPoolIsRefusedAndNothingChanges() throws {
        let lab = try TwoNodeLab()
        defer { lab.remove() }
        let labFile = try LabFile.load(path: lab.labPath)
        let before = (try lab.a.state(), try lab.b.state())
        // Three are asked for; the third ConnectX function matches but is in no pool.
        let greedy = try scenario(Self.scenarioText.replacingOccurrences(of: "count: 2", with: "count: 3"))
        #expect {
            try dryRunPlan(scenarios: [greedy], labFile: labFile, inventories: LabHostInventories())
        } throws: { error in
            let text = "\(error)"
            return text.contains("vfio.yaml:3:17") && text.contains("refused: 0000:5e:00.3")
                && text.contains("in no pool of host `a`") && text.contains("`mlx`") && text.contains("`vfs`")
                && text.contains(lab.labPath)
        }
        #expect(try lab.a.state() == before.0)
        #expect(try lab.b.state() == before.1)
        #expect(!FileManager.default.fileExists(atPath: lab.lockDirectory))
    }

    @Test func aHandMadePlanWithAnOutOfPoolDeviceIsRefusedBeforeAnyLockOrChange() async throws {
        let lab = try TwoNodeLab()
        defer { lab.remove() }
        let labFile = try LabFile.load(path: lab.labPath)
        let inv = try inventories(labFile)
        var plan = try DevicePlanner(lab: labFile).plan(try scenario(), inventories: inv)
        guard case var .pci(f) = plan.hosts[1].devices[1].resource else { Issue.record("not pci"); return }
        f.address = PCIAddress("0000:5e:00.3")!
        f.managed = false
        plan.hosts[1].devices[1].resource = .pci(f)
        let control = RecordingControl()
        await #expect {
            _ = try await PassthroughSession.prepare(plan: plan, lab: labFile, inventories: inv,
                                                     controls: ["a": control, "b": control], owner: .current(runID: "t"))
        } throws: { "\($0)".contains("refused: 0000:5e:00.3") }
        #expect(control.calls.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: lab.lockDirectory))
    }

    /// Each host gets its own mdev UUIDs: two hosts may share one kernel (the virtual VFIO
    /// lab), which holds a UUID once; the destination definition names its own by alias.
    @Test func vfsOfAPFAndMdevsArePlannedWithEachHostsOwnMdevUUIDs() throws {
        let lab = try TwoNodeLab()
        defer { lab.remove() }
        let labFile = try LabFile.load(path: lab.labPath)
        let s = try scenario("""
        name: mixed
        guest:
          passthrough:
            - {name: vf, kind: vfio-pci, vendor_device: "8086:10ed", managed: false}
            - {name: tty, kind: mdev, type: mtty-2, count: 2}
        steps: [{boot: a}, {migrate: {from: a, to: b}}]
        """)
        var n = 0
        let plan = try DevicePlanner(lab: labFile).plan(s, inventories: try inventories(labFile)) {
            n += 1
            return UUID(uuidString: "00000000-0000-0000-0000-00000000000\(n)")!
        }
        for (host, first) in [("a", 1), ("b", 3)] {
            let devices = plan.devices(on: host)
            #expect(devices.count == 3)
            guard case let .pci(vf) = devices[0].resource else { Issue.record("vf"); continue }
            #expect(vf.address == PCIAddress("0000:3b:10.0")!)
            #expect(vf.driver == "vfio-pci" && !vf.managed && vf.boundDriver == "vfio-pci")
            guard case let .mdev(m0) = devices[1].resource, case let .mdev(m1) = devices[2].resource else { Issue.record("mdev"); continue }
            #expect(m0.uuid.uuidString.hasSuffix("\(first)") && m1.uuid.uuidString.hasSuffix("\(first + 1)"))
            #expect(m0.slot == 0 && m1.slot == 1 && m0.parent == "mtty")
            let xml = try XMLDocument(xmlString: scenarioDomain(name: "miglab-s", scenario: s, plan: plan, host: host,
                                                               image: GuestImage(kernel: "/k", initrd: "/i", hash: "h", kernelVersion: "x"),
                                                               emulator: nil, accelerator: .kvm, consoleLog: "/c").xml())
            let mdevs = try xml.nodes(forXPath: "/domain/devices/hostdev[@type='mdev']").compactMap { $0 as? XMLElement }
            #expect(mdevs.count == 2)
            #expect(mdevs.first?.attribute(forName: "model")?.stringValue == "vfio-pci")
            #expect(try xml.nodes(forXPath: "/domain/devices/hostdev[@type='mdev']/source/address/@uuid").first?.stringValue
                    == "00000000-0000-0000-0000-00000000000\(first)")
            #expect(try xml.nodes(forXPath: "/domain/devices/hostdev[@type='pci']/@managed").first?.stringValue == "no")
        }
        #expect(plan.lockNames(lab: labFile).count == 6)
        #expect(Set(plan.lockNames(lab: labFile)).count == 6)   // the two fake machines lock separately
    }

    /// `destination: {mdev_type}`: the destination host gets the other type for that device,
    /// the source keeps the scenario's.
    @Test func aMismatchedDestinationGetsTheOtherMdevType() throws {
        let lab = try TwoNodeLab()
        defer { lab.remove() }
        let labFile = try LabFile.load(path: lab.labPath)
        let s = try scenario("""
        name: m
        guest: {passthrough: [{name: tty, kind: mdev, type: mtty-2}]}
        steps: [{boot: a}, {migrate: {from: a, to: b, destination: {mdev_type: {device: tty, type: mtty-1}}}}]
        """)
        let plan = try DevicePlanner(lab: labFile).plan(s, inventories: try inventories(labFile))
        let types = ["a", "b"].map { h in plan.devices(on: h).compactMap { d -> String? in if case let .mdev(m) = d.resource { m.type } else { nil } } }
        #expect(types == [["mtty-2"], ["mtty-1"]])
    }

    @Test func anMdevTypeTheHostDoesNotOfferIsAnError() throws {
        let lab = try TwoNodeLab()
        defer { lab.remove() }
        let labFile = try LabFile.load(path: lab.labPath)
        let s = try scenario("""
        name: m
        guest: {passthrough: [{name: g, kind: mdev, type: nvidia-35}]}
        steps: [{boot: a}]
        """)
        #expect { try DevicePlanner(lab: labFile).plan(s, inventories: try inventories(labFile)) } throws: {
            "\($0)".contains("nvidia-35") && "\($0)".contains("host `a`")
        }
    }

    @Test func hostsWithoutACommonModelAreRefused() throws {
        func device(_ address: String, _ id: PCIID) -> PCIDevice {
            PCIDevice(address: PCIAddress(address)!, vendorID: 0x15b3, deviceID: id, classCode: PCIClassCode(rawValue: 0x020000),
                      driver: "vfio-pci", vfioMigration: .notProbed("test"))
        }
        let lab = LabFile(hosts: [
            .init(name: "a", uri: "test:///default", pools: [.init(name: "p", selector: .vendorDevice(.init(vendor: 0x15b3, device: 0x101e)))]),
            .init(name: "b", uri: "test:///default", pools: [.init(name: "p", selector: .vendorDevice(.init(vendor: 0x15b3, device: 0x101d)))]),
        ])
        let inv = ["a": PCIInventory(source: .local, location: "a", devices: [device("0000:01:00.0", 0x101e)]),
                   "b": PCIInventory(source: .local, location: "b", devices: [device("0000:01:00.0", 0x101d)])]
        let s = try scenario("""
        name: m
        guest: {passthrough: [{name: n, kind: vfio-pci}]}
        steps: [{boot: a}, {migrate: {from: a, to: b}}]
        """)
        #expect { try DevicePlanner(lab: lab).plan(s, inventories: inv) } throws: {
            "\($0)".contains("no model is available") && "\($0)".contains("15b3:101e") && "\($0)".contains("15b3:101d")
        }
    }
}

/// Every scenario of the hardware library plans on a two-node lab (fake sysfs trees with
/// ConnectX functions on mlx5_vfio_pci and an mtty parent): the library cannot drift from the
/// format or from what the planner accepts.
@Suite struct HardwareLibraryPlanTests {
    static let library = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scenarios/hardware").path

    @Test func everyHardwareScenarioPlansAndRendersItsDevices() throws {
        let lab = try TwoNodeLab()
        defer { lab.remove() }
        let labFile = try LabFile.load(path: lab.labPath)
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.library).filter { $0.hasSuffix(".yaml") }.sorted()
        #expect(files.count >= 4)
        for f in files {
            let scenario = try ScenarioParser().parse(file: "\(Self.library)/\(f)")
            let text = try dryRunPlan(scenarios: [scenario], labFile: labFile, inventories: LabHostInventories())
            for r in scenario.guest.passthrough {
                #expect(text.contains("\(r.name)[0] = "), "\(f): \(text)")
            }
            #expect(text.contains("<domain type=\"kvm\">") || text.contains("<domain type='kvm'>"), "\(f)")
            #expect(text.contains("<hostdev"), "\(f)")
        }
    }
}
