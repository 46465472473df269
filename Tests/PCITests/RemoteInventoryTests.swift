import Foundation
import Libvirt
import Testing
@testable import PCI

/// A libvirt test-driver host (`test:///<file>`): a ConnectX-6 Dx PF with two VFs, one VF on
/// vfio-pci, and a conventional function without a driver; plus a mediated device that the
/// PCI listing must skip.
private let nodeXML = """
    <node>
      <cpu><mhz>2400</mhz><model>x86_64</model><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads><active>2</active></cpu>
      <memory>8388608</memory>
      <device>
        <name>computer</name>
        <capability type='system'>
          <hardware><vendor>Lab</vendor><version>fake</version><serial>1</serial><uuid>11111111-2222-3333-4444-555555555555</uuid></hardware>
          <firmware><vendor>Lab</vendor><version>1</version><release_date>01/01/2024</release_date></firmware>
        </capability>
      </device>
      <device>
        <name>pci_0000_3b_00_0</name>
        <parent>computer</parent>
        <driver><name>mlx5_core</name></driver>
        <capability type='pci'>
          <class>0x020000</class>
          <domain>0</domain><bus>59</bus><slot>0</slot><function>0</function>
          <product id='0x101d'>MT2892 Family [ConnectX-6 Dx]</product>
          <vendor id='0x15b3'>Mellanox Technologies</vendor>
          <capability type='virt_functions' maxCount='8'>
            <address domain='0x0000' bus='0x3b' slot='0x00' function='0x2'/>
            <address domain='0x0000' bus='0x3b' slot='0x00' function='0x3'/>
          </capability>
          <iommuGroup number='40'>
            <address domain='0x0000' bus='0x3b' slot='0x00' function='0x0'/>
            <address domain='0x0000' bus='0x3b' slot='0x00' function='0x1'/>
          </iommuGroup>
          <pci-express>
            <link validity='cap' port='0' speed='16' width='16'/>
            <link validity='sta' speed='16' width='16'/>
          </pci-express>
        </capability>
      </device>
      <device>
        <name>pci_0000_3b_00_2</name>
        <parent>pci_0000_3b_00_0</parent>
        <driver><name>vfio-pci</name></driver>
        <capability type='pci'>
          <class>0x020000</class>
          <domain>0</domain><bus>59</bus><slot>0</slot><function>2</function>
          <product id='0x101e'>ConnectX Family mlx5Gen Virtual Function</product>
          <vendor id='0x15b3'>Mellanox Technologies</vendor>
          <capability type='phys_function'>
            <address domain='0x0000' bus='0x3b' slot='0x00' function='0x0'/>
          </capability>
          <iommuGroup number='41'>
            <address domain='0x0000' bus='0x3b' slot='0x00' function='0x2'/>
          </iommuGroup>
        </capability>
      </device>
      <device>
        <name>pci_0000_3b_00_3</name>
        <parent>pci_0000_3b_00_0</parent>
        <driver><name>mlx5_core</name></driver>
        <capability type='pci'>
          <class>0x020000</class>
          <domain>0</domain><bus>59</bus><slot>0</slot><function>3</function>
          <product id='0x101e'>ConnectX Family mlx5Gen Virtual Function</product>
          <vendor id='0x15b3'>Mellanox Technologies</vendor>
          <capability type='phys_function'>
            <address domain='0x0000' bus='0x3b' slot='0x00' function='0x0'/>
          </capability>
          <iommuGroup number='42'>
            <address domain='0x0000' bus='0x3b' slot='0x00' function='0x3'/>
          </iommuGroup>
        </capability>
      </device>
      <device>
        <name>pci_0000_00_02_0</name>
        <parent>computer</parent>
        <capability type='pci'>
          <class>0x010802</class>
          <domain>0</domain><bus>0</bus><slot>2</slot><function>0</function>
          <product id='0x1042'>Virtio 1.0 block device</product>
          <vendor id='0x1af4'>Red Hat, Inc.</vendor>
        </capability>
      </device>
      <device>
        <name>mdev_4b20d080_1b54_4048_85b3_a6a62d165c01_0000_3b_00_0</name>
        <parent>pci_0000_3b_00_0</parent>
        <capability type='mdev'>
          <type id='nvidia-35'/>
          <uuid>4b20d080-1b54-4048-85b3-a6a62d165c01</uuid>
          <iommuGroup number='43'/>
        </capability>
      </device>
    </node>
    """

/// The test-driver connection on a private copy of `nodeXML` (a `test:///<file>` connection has
/// its own state, unlike `test:///default`, which every connection in the process shares).
private func testHost() throws -> (Connection, URL) {
    let file = FileManager.default.temporaryDirectory.appendingPathComponent("miglab-node-\(UUID().uuidString).xml")
    try Data(nodeXML.utf8).write(to: file)
    return (try Connection(uri: "test://\(file.path)"), file)
}

@Suite struct RemoteInventoryTests {
    @Test func listsPCIFunctionsFromNodeDevices() throws {
        let (connection, file) = try testHost()
        defer { try? FileManager.default.removeItem(at: file) }
        let inventory = try RemoteInventory(connection: connection).scan()

        #expect(inventory.source == .libvirt)
        #expect(inventory.devices.map(\.address.description) == ["0000:00:02.0", "0000:3b:00.0", "0000:3b:00.2", "0000:3b:00.3"])

        let pf = try #require(inventory[PCIAddress("0000:3b:00.0")!])
        #expect(pf.vendorID == 0x15b3 && pf.deviceID == 0x101d)
        #expect(pf.names.vendor == "Mellanox Technologies" && pf.names.device == "MT2892 Family [ConnectX-6 Dx]")
        #expect(pf.classCode == PCIClassCode(rawValue: 0x020000))
        // libvirt's test driver drops <driver> from the device definitions; a real daemon reports
        // it (see parsesDaemonXML).
        #expect(pf.iommuGroup == IOMMUGroup(number: 40, otherMembers: [PCIAddress("0000:3b:00.1")!]))
        #expect(pf.sriov == SRIOV(totalVFs: 8, currentVFs: 2, virtualFunctions: [PCIAddress("0000:3b:00.2")!, PCIAddress("0000:3b:00.3")!]))
        #expect(pf.pciExpress != nil)
        // What node-device XML cannot tell stays unknown.
        #expect(pf.flr == nil && pf.aer == nil && pf.acs == nil && pf.resetMethods == nil && pf.capabilities == nil)

        let vf = try #require(inventory[PCIAddress("0000:3b:00.2")!])
        #expect(vf.physicalFunction == PCIAddress("0000:3b:00.0"))
        #expect(vf.iommuGroup == IOMMUGroup(number: 41))
        #expect(vf.vfioMigration.status == .notProbed)

        let block = try #require(inventory[PCIAddress("0000:00:02.0")!])
        #expect(block.iommuGroup == nil && block.pciExpress == nil)

        let table = inventory.table()
        #expect(table.contains("0000:3b:00.0") && table.contains("PF 2/8"))
        #expect(table.split(separator: "\n").first { $0.hasPrefix("0000:3b:00.0") }?.contains("?") == true)
    }

    @Test func nodeDeviceHandles() async throws {
        let (connection, file) = try testHost()
        defer { try? FileManager.default.removeItem(at: file) }

        let vf = try #require(try connection.nodeDevice(named: "pci_0000_3b_00_2"))
        #expect(vf.name == "pci_0000_3b_00_2")
        #expect(vf.parent == "pci_0000_3b_00_0")
        #expect(try vf.capabilities().contains("pci"))
        #expect(try vf.xml().contains("phys_function"))
        #expect(try connection.nodeDevice(named: "pci_0000_ff_00_0") == nil)

        // The test driver implements no detach, reattach or reset: the wrappers hand libvirt's
        // error back (VIR_ERR_NO_SUPPORT) with the C call named.
        let error = await #expect(throws: LibvirtError.self) { try await vf.reset() }
        #expect(error?.code == 3)
        #expect(error?.operation == "virNodeDeviceReset(pci_0000_3b_00_2)")
        await #expect(throws: LibvirtError.self) { try await vf.detach() }
        await #expect(throws: LibvirtError.self) { try await vf.reattach() }

        #expect(try connection.nodeDevices().count == 6)
        #expect(try connection.nodeDevices(.pciDevice).count == 4)
        #expect(try connection.nodeDevices(.mediatedDevice).map(\.name) == ["mdev_4b20d080_1b54_4048_85b3_a6a62d165c01_0000_3b_00_0"])
    }

    /// As `virsh nodedev-dumpxml` prints it against a real libvirtd 9.0.
    @Test func parsesDaemonXML() throws {
        let xml = """
            <device>
              <name>pci_0000_00_03_0</name>
              <path>/sys/devices/pci0000:00/0000:00:03.0</path>
              <parent>computer</parent>
              <driver>
                <name>virtio-pci</name>
              </driver>
              <capability type='pci'>
                <class>0x020000</class>
                <domain>0</domain>
                <bus>0</bus>
                <slot>3</slot>
                <function>0</function>
                <product id='0x1041'>Virtio 1.0 network device</product>
                <vendor id='0x1af4'>Red Hat, Inc.</vendor>
                <iommuGroup number='3'>
                  <address domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
                </iommuGroup>
                <numa node='0'/>
              </capability>
            </device>
            """
        let device = try #require(try NodeDeviceXML.pciDevice(from: xml))
        #expect(device.address == PCIAddress("0000:00:03.0"))
        #expect(device.driver == "virtio-pci")
        #expect(device.vendorID == 0x1af4 && device.deviceID == 0x1041)
        #expect(device.names == PCINames(vendor: "Red Hat, Inc.", device: "Virtio 1.0 network device"))
        #expect(device.iommuGroup == IOMMUGroup(number: 3))
        #expect(device.sriov == nil && device.physicalFunction == nil)
    }

    @Test func rejectsXMLThatIsNotANodeDevice() throws {
        #expect(throws: NodeDeviceXMLError.self) { try NodeDeviceXML.pciDevice(from: "<domain/>") }
        #expect(try NodeDeviceXML.pciDevice(from: "<device><name>computer</name><capability type='system'/></device>") == nil)
        let noIDs = "<device><name>x</name><capability type='pci'><domain>0</domain><bus>1</bus><slot>0</slot><function>0</function></capability></device>"
        #expect(throws: NodeDeviceXMLError.self) { try NodeDeviceXML.pciDevice(from: noIDs) }
    }
}
