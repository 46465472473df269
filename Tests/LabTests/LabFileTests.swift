import Foundation
import PCI
import Scenario
import Testing
@testable import Lab

@Suite struct LabFileTests {
    static let good = """
    version: 1
    locks: /tmp/miglab-locks
    hosts:
      a:
        uri: qemu+ssh://root@node1/system
        peer_uri: qemu+tcp://10.0.0.1/system
        migration_address: 10.0.0.1
        pools:
          - {name: nics, addresses: ["0000:3b:00.2", "0000:3b:00.3"]}
          - {name: vfs, vfs_of: "0000:3b:00.0"}
          - {name: mlx, vendor_device: "15b3:101e", driver: mlx5_vfio_pci}
        mdev_types:
          - {type: mtty-2, parent: mtty, instances: 2}
      b:
        uri: qemu:///system
        sysfs_root: fake/sys
    """

    func errors(_ text: String) -> [String] {
        do {
            _ = try LabFile.parse(text, file: "lab.yaml")
            return []
        } catch {
            return error.diagnostics.map(\.description)
        }
    }

    @Test func readsHostsPoolsAndMdevTypes() throws {
        let lab = try LabFile.parse(Self.good, file: "/labs/lab.yaml", relativeTo: "/labs")
        #expect(lab.lockDirectory == "/tmp/miglab-locks")
        #expect(lab.hosts.map(\.name) == ["a", "b"])
        let a = try #require(lab[host: "a"])
        #expect(a.uri == "qemu+ssh://root@node1/system" && a.peerURI == "qemu+tcp://10.0.0.1/system")
        #expect(a.migrationAddress == "10.0.0.1" && !a.isLocal && a.machineKey == "node1")
        #expect(a.pools.map(\.name) == ["nics", "vfs", "mlx"])
        #expect(a.pools[0].selector == .addresses([PCIAddress("0000:3b:00.2")!, PCIAddress("0000:3b:00.3")!]))
        #expect(a.pools[1].selector == .virtualFunctionsOf(PCIAddress("0000:3b:00.0")!))
        #expect(a.pools[2].selector == .vendorDevice(.init(vendor: 0x15b3, device: 0x101e)) && a.pools[2].driver == "mlx5_vfio_pci")
        #expect(a.mdevTypes == [.init(type: "mtty-2", parent: "mtty", instances: 2, location: a.mdevTypes.first?.location)])
        #expect(a.location?.line == 4)
        let b = try #require(lab[host: "b"])
        #expect(b.peerURI == "qemu:///system" && b.isLocal && b.sysfsRoot == "/labs/fake/sys")
    }

    @Test func errorsNameFileLineAndColumn() {
        let bad = """
        version: 1
        hosts:
          a:
            uri: qemu:///system
            pools:
              - {name: nics, adresses: ["0000:3b:00.2"]}
              - {name: vfs, vfs_of: "3b:00", vendor_device: "15b3:101e"}
              - {name: x, vendor_device: "15b3", driver: ixgbe}
            mdev_types: [mtty-2]
            colour: blue
          B:
            uri: 42
        """
        let e = errors(bad)
        #expect(e.contains { $0.hasPrefix("lab.yaml:6:22: error: unknown key `adresses`") })
        #expect(e.contains { $0.hasPrefix("lab.yaml:6:9: error: a pool needs one selector") })
        #expect(e.contains { $0.hasPrefix("lab.yaml:7:9: error: a pool has exactly one selector") })
        #expect(e.contains { $0.hasPrefix("lab.yaml:7:29: error: `vfs_of` must be a PCI address") })
        #expect(e.contains { $0.hasPrefix("lab.yaml:8:34: error: `vendor_device` must be `vendor:device`") })
        #expect(e.contains { $0.hasPrefix("lab.yaml:8:50: error: `driver` is the vfio driver") })
        #expect(e.contains { $0.hasPrefix("lab.yaml:9:18: error: an mdev type needs the device that creates it") })
        #expect(e.contains { $0.hasPrefix("lab.yaml:10:5: error: unknown key `colour`") })
        #expect(e.contains { $0.hasPrefix("lab.yaml:11:3: error: host name `B` must be lower-case") })
        #expect(e.count == 9)
    }

    @Test func moreMistakes() {
        #expect(errors("hosts: [a, b]").first?.contains("`hosts` must be a mapping") == true)
        #expect(errors("version: 2\nhosts: {a: {uri: 'qemu:///system'}}").first?.hasPrefix("lab.yaml:1:10: error: this miglab reads lab file format version 1") == true)
        #expect(errors("hosts: {a: {migration_address: x}}").first?.contains("host `a` needs the key `uri`") == true)
        #expect(errors("hosts: {a: {uri: 'not a uri'}}").first?.contains("must be a libvirt URI") == true)
        #expect(errors("hosts: {a: {uri: 'qemu+ssh://n/system', sysfs_root: /x}}").first?.contains("only for local hosts") == true)
        #expect(errors("hosts: {a: {uri: 'qemu:///system', pools: [{name: p, addresses: ['0000:01:00.0']}, {name: q, addresses: ['0000:01:00.0']}]}}")
            .first?.contains("listed in pools `p` and `q`") == true)
        #expect(errors("hosts: {a: {uri: 'qemu:///system', pools: [{name: p, vfs_of: '0000:01:00.0'}, {name: p, vfs_of: '0000:02:00.0'}]}}")
            .first?.contains("two pools named `p`") == true)
        #expect(errors("hosts: {a: {uri: 'qemu:///system', mdev_types: [{type: t, parent: p, instances: 0}]}}")
            .first?.contains("`instances` must be between 1 and 256") == true)
        #expect(errors("hosts: {a: [").first?.contains("YAML syntax") == true)
        #expect(errors("").first?.contains("empty") == true)
    }

    @Test func aMissingFileIsAClearError() {
        #expect { try LabFile.load(path: "/nonexistent/lab.yaml") } throws: { "\($0)".contains("/nonexistent/lab.yaml") && "\($0)".contains("cannot read") }
    }
}

/// One machine under two names is refused at run time: libvirt's host UUIDs are compared.
/// (libvirt's test driver reports no host UUID, so the check is shown on its own.)
struct SameMachineTests {
    @Test func twoHostsWithOneHostUUIDAreRefused() throws {
        let lab = try LabFile.parse("hosts:\n  a: {uri: 'qemu+ssh://node1/system'}\n  b: {uri: 'qemu+ssh://node1.lab/system'}\n  c: {uri: 'qemu+ssh://node2/system'}\n", file: "same.yaml")
        var machines = MachineIdentities(file: lab.file)
        try machines.admit(lab.hosts[0], uuid: "4c4c4544-0000-1000-8000-000000000001")
        try machines.admit(lab.hosts[2], uuid: "4c4c4544-0000-1000-8000-000000000002")
        try machines.admit(lab.hosts[2], uuid: nil)   // a daemon that says none is not compared
        #expect { try machines.admit(lab.hosts[1], uuid: "4c4c4544-0000-1000-8000-000000000001") } throws: {
            "\($0)".contains("same.yaml:3:") && "\($0)".contains("hosts `a` and `b` are the same machine (libvirt host UUID 4c4c4544-0000-1000-8000-000000000001)")
        }
    }
}
