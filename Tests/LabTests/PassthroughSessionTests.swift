import Foundation
import Libvirt
import PCI
import Scenario
import Synchronization
import Testing
#if canImport(FoundationXML)
import FoundationXML
#endif
@testable import Lab

/// A host that records what the runner asks of it; drivers live in a table, and one chosen
/// step can be made to fail.
final class RecordingControl: PassthroughHostControl {
    struct Failure: Error {}
    let state = Mutex<(calls: [String], drivers: [PCIAddress: String], failOn: String?)>(([], [:], nil))

    init(drivers: [String: String] = [:], failOn: String? = nil) {
        state.withLock {
            $0.drivers = Dictionary(uniqueKeysWithValues: drivers.map { (PCIAddress($0.key)!, $0.value) })
            $0.failOn = failOn
        }
    }

    var calls: [String] { state.withLock { $0.calls } }
    func driver(_ a: String) -> String? { state.withLock { $0.drivers[PCIAddress(a)!] } }

    private func record(_ call: String) throws {
        try state.withLock {
            $0.calls.append(call)
            if let f = $0.failOn, call.hasPrefix(f) { throw Failure() }
        }
    }

    func detach(_ address: PCIAddress, toDriver driver: String) async throws {
        try record("detach \(address) \(driver)")
        state.withLock { $0.drivers[address] = driver }
    }

    func reattach(_ address: PCIAddress) async throws {
        try record("reattach \(address)")
        // The kernel probes the host driver again.
        state.withLock { $0.drivers[address] = "mlx5_core" }
    }

    func boundDriver(_ address: PCIAddress) throws -> String? { state.withLock { $0.drivers[address] } }

    func createMdev(parent: String, type: String, uuid: UUID) async throws { try record("create mdev \(type) on \(parent)") }
    func destroyMdev(uuid: UUID) async throws { try record("destroy mdev") }
    func reset(_ address: PCIAddress, method: HostResetMethod) async throws { try record("reset \(address) \(method.rawValue)") }
}

@Suite struct PassthroughSessionTests {
    /// Host a: two ConnectX functions on mlx5_core, for managed=no, plus an mdev.
    func setUp() throws -> (LabFile, [String: PCIInventory], DevicePlan, String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("miglab-session-\(UUID().uuidString)").path
        let lab = LabFile(hosts: [.init(name: "a", uri: "test:///default",
                                        pools: [.init(name: "mlx", selector: .vendorDevice(.init(vendor: 0x15b3, device: 0x101e)), driver: "mlx5_vfio_pci")],
                                        mdevTypes: [.init(type: "mtty-2", parent: "mtty")])],
                          lockDirectory: dir)
        let devices = ["0000:5e:00.1", "0000:5e:00.2"].map {
            PCIDevice(address: PCIAddress($0)!, vendorID: 0x15b3, deviceID: 0x101e, classCode: PCIClassCode(rawValue: 0x020000),
                      driver: "mlx5_core", vfioMigration: .notProbed("test"))
        }
        let inv = ["a": PCIInventory(source: .local, location: "fake", devices: devices)]
        let scenario = try ScenarioParser().parse("""
        name: s
        guest:
          passthrough:
            - {name: nic, kind: vfio-pci, driver: mlx5_vfio_pci, count: 2, managed: false}
            - {name: tty, kind: mdev, type: mtty-2}
        steps: [{boot: a}]
        """, file: "s.yaml")
        return (lab, inv, try DevicePlanner(lab: lab).plan(scenario, inventories: inv), dir)
    }

    @Test func managedNoDevicesAreDetachedThenRestoredToTheirOriginalDriver() async throws {
        let (lab, inv, plan, dir) = try setUp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let control = RecordingControl(drivers: ["0000:5e:00.1": "mlx5_core", "0000:5e:00.2": "mlx5_core"])
        let session = try await PassthroughSession.prepare(plan: plan, lab: lab, inventories: inv, controls: ["a": control],
                                                           owner: .current(runID: "run-1"))
        #expect(control.driver("0000:5e:00.1") == "mlx5_vfio_pci")
        #expect(control.calls == ["detach 0000:5e:00.1 mlx5_vfio_pci", "detach 0000:5e:00.2 mlx5_vfio_pci", "create mdev mtty-2 on mtty"])
        // The devices are locked while the session lives.
        #expect(throws: DeviceLockError.self) {
            try DeviceLockSet.acquire(plan.lockNames(lab: lab), directory: dir, owner: .current(runID: "run-2"))
        }
        let problems = await session.finish()
        #expect(problems.isEmpty)
        #expect(Array(control.calls.suffix(3)) == ["destroy mdev", "reattach 0000:5e:00.2", "reattach 0000:5e:00.1"])
        #expect(control.driver("0000:5e:00.1") == "mlx5_core")
        // ...and free afterwards.
        let again = try acquireAfterRelease {
            try DeviceLockSet.acquire(plan.lockNames(lab: lab), directory: dir, owner: .current(runID: "run-3"))
        }
        again.release()
    }

    @Test func aFailureHalfwayUndoesWhatWasDoneAndReleasesTheLocks() async throws {
        let (lab, inv, plan, dir) = try setUp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let control = RecordingControl(drivers: ["0000:5e:00.1": "mlx5_core", "0000:5e:00.2": "mlx5_core"], failOn: "create mdev")
        await #expect(throws: RecordingControl.Failure.self) {
            _ = try await PassthroughSession.prepare(plan: plan, lab: lab, inventories: inv, controls: ["a": control],
                                                     owner: .current(runID: "run-1"))
        }
        #expect(Array(control.calls.suffix(2)) == ["reattach 0000:5e:00.2", "reattach 0000:5e:00.1"])
        #expect(control.driver("0000:5e:00.2") == "mlx5_core")
        let again = try acquireAfterRelease {
            try DeviceLockSet.acquire(plan.lockNames(lab: lab), directory: dir, owner: .current(runID: "run-2"))
        }
        again.release()
    }

    @Test func aDeviceAlreadyOnItsVFIODriverIsLeftAloneAndAnotherVFIODriverIsRebound() async throws {
        let (lab, inv, plan, dir) = try setUp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let control = RecordingControl(drivers: ["0000:5e:00.1": "mlx5_vfio_pci", "0000:5e:00.2": "vfio-pci"])
        let session = try await PassthroughSession.prepare(plan: plan, lab: lab, inventories: inv, controls: ["a": control],
                                                           owner: .current(runID: "run-1"))
        #expect(!control.calls.contains { $0.contains("5e:00.1") })
        _ = await session.finish()
        #expect(control.calls.last == "detach 0000:5e:00.2 vfio-pci")
        #expect(control.driver("0000:5e:00.2") == "vfio-pci")
    }

    @Test func mdevNodeDeviceXMLNamesParentTypeAndUUID() throws {
        let uuid = UUID(uuidString: "2E6B0E54-5E3B-4C1B-9F5A-8C4A3B2D1E0F")!
        let doc = try XMLDocument(xmlString: mdevNodeDeviceXML(parent: "pci_0000_3b_00_0", type: "mtty-2", uuid: uuid))
        #expect(try doc.nodes(forXPath: "/device/parent").first?.stringValue == "pci_0000_3b_00_0")
        #expect(try doc.nodes(forXPath: "/device/capability[@type='mdev']/type/@id").first?.stringValue == "mtty-2")
        #expect(try doc.nodes(forXPath: "/device/capability/uuid").first?.stringValue == "2e6b0e54-5e3b-4c1b-9f5a-8c4a3b2d1e0f")
    }
}

/// The libvirt side against libvirt's test driver (no real devices): the calls reach libvirt
/// and its refusals come back as errors naming the call.
@Suite struct LibvirtPassthroughControlTests {
    @Test func callsReachLibvirtAndFailCleanly() async throws {
        let control = LibvirtPassthroughControl(connection: try Connection(uri: "test:///default"))
        #expect { try control.boundDriver(PCIAddress("0000:7f:1f.7")!) } throws: {
            "\($0)".contains("no node device pci_0000_7f_1f_7")
        }
        await #expect {
            try await control.createMdev(parent: "pci_0000_7f_1f_7", type: "mtty-2", uuid: UUID())
        } throws: { ($0 as? LibvirtError)?.operation == "virNodeDeviceCreateXML" }
        // Nothing to remove is not an error (a run that failed before creating it).
        try await control.destroyMdev(uuid: UUID())
    }
}

/// A runner killed on a shared node leaves devices detached and mdevs created; the lock file
/// says so, and the next run that takes the lock over undoes it before using the device.
@Suite struct DeadRunLeftoverTests {
    func record(in dir: String, lock: String) throws -> DeviceLockOwner? {
        let data = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/\(lock).lock"))
        return data.isEmpty ? nil : try JSONDecoder().decode(DeviceLockOwner.self, from: data)
    }

    @Test func changesAreOnRecordWhileTheRunHoldsTheDevices() async throws {
        let (lab, inv, plan, dir) = try PassthroughSessionTests().setUp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let control = RecordingControl(drivers: ["0000:5e:00.1": "mlx5_core", "0000:5e:00.2": "mlx5_core"])
        let session = try await PassthroughSession.prepare(plan: plan, lab: lab, inventories: inv, controls: ["a": control],
                                                           owner: .current(runID: "alive"))
        let devices = plan.devices(on: "a")
        #expect(try record(in: dir, lock: DevicePlan.lockName(devices[0], host: "a", lab: lab))?.leftover == .detached(fromDriver: "mlx5_core"))
        guard case let .mdev(m) = devices[2].resource else { Issue.record("mdev"); return }
        #expect(try record(in: dir, lock: DevicePlan.lockName(devices[2], host: "a", lab: lab))?.leftover == .mdev(uuid: m.uuid.uuidString.lowercased()))
        _ = await session.finish()
        // A clean end leaves no record at all.
        #expect(try record(in: dir, lock: DevicePlan.lockName(devices[0], host: "a", lab: lab)) == nil)
    }

    @Test func theNextRunUndoesWhatADeadRunLeftBeforeUsingTheDevices() async throws {
        let (lab, inv, plan, dir) = try PassthroughSessionTests().setUp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let devices = plan.devices(on: "a")
        let deadMdev = UUID()
        // The dead run's records, as its lock files keep them after SIGKILL (no flock held).
        for (d, left) in [(devices[0], DeviceLockOwner.Leftover.detached(fromDriver: "mlx5_core")),
                          (devices[2], .mdev(uuid: deadMdev.uuidString.lowercased()))] {
            let dead = DeviceLockOwner(pid: 4_194_304 + 7, processStartTicks: 1, started: "2026-01-01T00:00:00Z",
                                       runID: "killed", hostname: ProcessInfo.processInfo.hostName, leftover: left)
            try JSONEncoder().encode(dead).write(to: URL(fileURLWithPath: "\(dir)/\(DevicePlan.lockName(d, host: "a", lab: lab)).lock"))
        }
        // 00.1 is still on the vfio driver the dead run bound.
        let control = RecordingControl(drivers: ["0000:5e:00.1": "mlx5_vfio_pci", "0000:5e:00.2": "mlx5_core"])
        let session = try await PassthroughSession.prepare(plan: plan, lab: lab, inventories: inv, controls: ["a": control],
                                                           owner: .current(runID: "next"))
        #expect(Array(control.calls.prefix(3)) == ["reattach 0000:5e:00.1", "detach 0000:5e:00.1 mlx5_vfio_pci", "detach 0000:5e:00.2 mlx5_vfio_pci"],
                "\(control.calls)")
        #expect(control.calls.filter { $0 == "destroy mdev" }.count == 1)
        #expect(session.takeovers.count == 2)
        #expect(session.takeovers.contains { $0.contains("run killed") && $0.contains("detached from mlx5_core (undone before use)") })
        _ = await session.finish()
        #expect(control.driver("0000:5e:00.1") == "mlx5_core" && control.driver("0000:5e:00.2") == "mlx5_core")
    }
}

extension DeadRunLeftoverTests {
    @Test func whatCouldNotBeRestoredStaysOnRecordForTheNextRun() async throws {
        let (lab, inv, plan, dir) = try PassthroughSessionTests().setUp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let broken = RecordingControl(drivers: ["0000:5e:00.1": "mlx5_core", "0000:5e:00.2": "mlx5_core"], failOn: "reattach")
        let first = try await PassthroughSession.prepare(plan: plan, lab: lab, inventories: inv, controls: ["a": broken],
                                                         owner: .current(runID: "first"))
        #expect(!(await first.finish()).isEmpty)
        let d0 = plan.devices(on: "a")[0]
        #expect(try record(in: dir, lock: DevicePlan.lockName(d0, host: "a", lab: lab))?.leftover == .detached(fromDriver: "mlx5_core"))
        // The next run, on a host that works again, puts the driver back before it starts.
        let control = RecordingControl(drivers: ["0000:5e:00.1": "mlx5_vfio_pci", "0000:5e:00.2": "mlx5_vfio_pci"])
        let next = try await PassthroughSession.prepare(plan: plan, lab: lab, inventories: inv, controls: ["a": control],
                                                        owner: .current(runID: "next"))
        #expect(control.calls.first == "reattach 0000:5e:00.1", "\(control.calls)")
        #expect(await next.finish().isEmpty)
        #expect(control.driver("0000:5e:00.1") == "mlx5_core" && control.driver("0000:5e:00.2") == "mlx5_core")
    }
}
