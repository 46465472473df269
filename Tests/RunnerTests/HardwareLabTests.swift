import Foundation
import Lab
import PCI
import Scenario
import Testing
#if canImport(FoundationXML)
import FoundationXML
#endif
@testable import Runner

/// The pieces of a hardware-lab run that need no hardware: reading guest RAM block by block
/// (what virDomainMemoryPeek delivers), the guest's RAM map, and the destination's definition.
struct PeekedMemoryTests {
    /// The same synthetic RAM as MemoryImageTests, cut into `block`-byte reads the way
    /// `Domain.readPhysicalMemory` hands them over.
    static func scanInBlocks(_ pages: [MemoryOracle.Page], block: Int) -> [MemoryOracle.Page] {
        let base: UInt64 = 990 * 4096
        let bytes = MemoryImage.segmentBytes(pages: pages, base: base, frames: 210)
        var found: [MemoryOracle.Page] = []
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = min(block, raw.count - offset)
                MemoryImage.scan(UnsafeRawBufferPointer(rebasing: raw[offset..<offset + n]), physicalAddress: base + UInt64(offset), into: &found)
                offset += n
            }
        }
        return found
    }

    @Test func blockReadsFindEveryPageOnce() {
        let pages = MemoryOracleTests.image()
        let found = Self.scanInBlocks(pages, block: 65_536)
        #expect(found.count == pages.count)
        #expect(Set(found.map(\.index)) == Set(pages.map(\.index)))
        #expect(MemoryOracle.check(pages: found, expectedPages: MemoryOracleTests.n).passed)
    }

    @Test func aDamagedPageReadInBlocksIsCaught() {
        var pages = MemoryOracleTests.image()
        pages[17].bodyDamageOffset = 2048
        let v = MemoryOracle.check(pages: Self.scanInBlocks(pages, block: 65_536), expectedPages: MemoryOracleTests.n)
        #expect(!v.passed)
        #expect(v.firstBad.map(\.index) == [pages[17].index])
    }

    @Test func aStalePageReadInBlocksIsCaught() {
        var pages = MemoryOracleTests.image()
        pages[40].counter &-= 2
        #expect(!MemoryOracle.check(pages: Self.scanInBlocks(pages, block: 4096), expectedPages: MemoryOracleTests.n).passed)
    }

    @Test func systemRAMComesFromTopLevelIomemLines() throws {
        let iomem = """
        00000000-00000fff : Reserved
        00001000-0009fbff : System RAM
        0009fc00-0009ffff : Reserved
        000f0000-000fffff : System ROM
        00100000-0ffdffff : System RAM
          01000000-01e02566 : Kernel code
        b0000000-bfffffff : PCI MMIO
        100000000-13fffffff : System RAM
        """
        let regions = try MemoryImage.systemRAM(iomem: iomem)
        #expect(regions.map(\.start) == [0x1000, 0x100000, 0x1_0000_0000])
        // Ends are rounded down to whole pages: 0x9fbff + 1 -> 0x9f000.
        #expect(regions.map(\.length) == [0x9f000 - 0x1000, 0xffe0000 - 0x100000, 0x4000_0000])
    }

    @Test func iomemWithoutRAMOrReadWithoutPrivilegesIsAClearError() {
        #expect(throws: MemoryImage.FormatError.self) { try MemoryImage.systemRAM(iomem: "00000000-00000000 : Reserved\n") }
        #expect(throws: MemoryImage.FormatError.self) { try MemoryImage.systemRAM(iomem: "zz-yy : System RAM\n") }
    }
}

struct DestinationDefinitionTests {
    /// What libvirt's migratable XML of a guest with two VFs looks like (reduced).
    static let xml = """
    <domain type='kvm'>
      <name>miglab-s</name>
      <os><type arch='x86_64' machine='pc-q35-10.0'>hvm</type><kernel>/a/vmlinuz</kernel><initrd>/a/initrd.img</initrd></os>
      <devices>
        <hostdev mode='subsystem' type='pci' managed='yes'>
          <driver name='vfio' model='mlx5_vfio_pci'/>
          <source><address domain='0x0000' bus='0x3b' slot='0x00' function='0x2'/></source>
          <alias name='ua-vf-0'/>
          <address type='pci' domain='0x0000' bus='0x07' slot='0x00' function='0x0'/>
        </hostdev>
        <hostdev mode='subsystem' type='pci' managed='yes'>
          <driver name='vfio' model='mlx5_vfio_pci'/>
          <source><address domain='0x0000' bus='0x3b' slot='0x00' function='0x3'/></source>
          <alias name='ua-vf-1'/>
          <address type='pci' domain='0x0000' bus='0x08' slot='0x00' function='0x0'/>
        </hostdev>
      </devices>
    </domain>
    """

    @Test func eachHostdevGetsTheDestinationsFunctionByAliasAndTheGuestAddressStays() throws {
        let dest: [Hostdev] = [
            .pci(.init(address: PCIAddress("0000:af:01.1")!, driver: "mlx5_vfio_pci", alias: "ua-vf-1")),
            .pci(.init(address: PCIAddress("0001:5e:00.4")!, driver: "mlx5_vfio_pci", alias: "ua-vf-0")),
        ]
        let out = try XMLDocument(xmlString: try ScenarioExecution.rewrite(Self.xml, hostdevs: dest, image: nil))
        func source(_ alias: String) throws -> String {
            let a = try #require(try out.nodes(forXPath: "/domain/devices/hostdev[alias/@name='\(alias)']/source/address").first as? XMLElement)
            return ["domain", "bus", "slot", "function"].map { a.attribute(forName: $0)?.stringValue ?? "?" }.joined(separator: " ")
        }
        #expect(try source("ua-vf-0") == "0x0001 0x5e 0x00 0x4")
        #expect(try source("ua-vf-1") == "0x0000 0xaf 0x01 0x1")
        // The guest-side address (the guest ABI) is untouched.
        #expect(try out.nodes(forXPath: "/domain/devices/hostdev/address/@bus").compactMap(\.stringValue) == ["0x07", "0x08"])
        #expect(try out.nodes(forXPath: "/domain/os/kernel").first?.stringValue == "/a/vmlinuz")
    }

    @Test func theDestinationsImagePathsReplaceTheSources() throws {
        let image = GuestImage(kernel: "/b/k", initrd: "/b/i", hash: "h", kernelVersion: "v")
        let out = try XMLDocument(xmlString: try ScenarioExecution.rewrite(Self.xml, hostdevs: [], image: image))
        #expect(try out.nodes(forXPath: "/domain/os/kernel").first?.stringValue == "/b/k")
        #expect(try out.nodes(forXPath: "/domain/os/initrd").first?.stringValue == "/b/i")
    }

    /// One kernel holds an mdev UUID once (the virtual VFIO hosts share one): the destination
    /// names its own mdev, found by alias, with the QEMU overrides kept as they are.
    @Test func anMdevGetsTheDestinationsUUIDByAlias() throws {
        let xml = """
        <domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
          <name>miglab-s</name>
          <devices>
            <hostdev mode='subsystem' type='mdev' model='vfio-pci'>
              <source><address uuid='11111111-0000-0000-0000-000000000001'/></source>
              <alias name='ua-tty-0'/>
            </hostdev>
          </devices>
          <qemu:override><qemu:device alias='ua-tty-0'><qemu:frontend>
            <qemu:property name='enable-migration' type='string' value='on'/>
          </qemu:frontend></qemu:device></qemu:override>
        </domain>
        """
        let dest: [Hostdev] = [.mdev(.init(uuid: UUID(uuidString: "22222222-0000-0000-0000-000000000002")!, alias: "ua-tty-0"))]
        let text = try ScenarioExecution.rewrite(xml, hostdevs: dest, image: nil)
        let out = try XMLDocument(xmlString: text)
        #expect(try out.nodes(forXPath: "/domain/devices/hostdev/source/address/@uuid").first?.stringValue
                == "22222222-0000-0000-0000-000000000002")
        #expect(text.contains("enable-migration"))
        let missing: [Hostdev] = [.mdev(.init(uuid: UUID(), alias: "ua-other-0"))]
        #expect(throws: RunnerError.self) { try ScenarioExecution.rewrite(xml, hostdevs: missing, image: nil) }
    }

    @Test func aHostdevTheGuestDoesNotHaveIsAnError() {
        let dest: [Hostdev] = [.pci(.init(address: PCIAddress("0000:af:01.1")!, alias: "ua-nic-0"))]
        #expect(throws: RunnerError.self) { try ScenarioExecution.rewrite(Self.xml, hostdevs: dest, image: nil) }
    }
}

@Suite struct ScratchValueTests {
    /// Never 0 (what a reset port reads), different per port and for consecutive migrations:
    /// a destination that kept the previous migration's values, or a reset, cannot look right.
    @Test func freshValuesDifferFromZeroAcrossPortsAndFromTheLastMigration() {
        for g in 0..<600 {
            let now = ScenarioExecution.scratchValues(generation: g), next = ScenarioExecution.scratchValues(generation: g + 1)
            #expect(!now.contains(0))
            #expect(Set(now).count == now.count)
            #expect(zip(now, next).allSatisfy { $0 != $1 })
        }
    }
}
