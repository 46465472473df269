import Foundation
import Testing
#if canImport(FoundationXML)
import FoundationXML
#endif
@testable import Lab

struct QEMUGateTests {
    /// A fake QEMU that prints `version`. It is ready once it can be run: another test's
    /// child process, between its fork and its exec, may still hold a copy of the descriptor
    /// the script was written through, and running a file open for writing fails with
    /// ETXTBSY ("Text file busy") until that child has exec'd.
    func fakeQEMU(_ version: String) throws -> String {
        let path = NSTemporaryDirectory() + "fake-qemu-\(UUID().uuidString)"
        try "#!/bin/sh\necho 'QEMU emulator version \(version) (Debian)'\n".write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o755)
        for _ in 0..<600 {
            if (try? Command.run([path], check: false)) != nil { break }
            usleep(50_000)
        }
        return path
    }

    @Test func refusesQEMU72() throws {
        let lab = BuiltinLab(root: "/nonexistent", qemuBinary: try fakeQEMU("7.2.22"))
        #expect {
            try lab.checkQEMU(allowOld: false)
        } throws: { error in
            "\(error)".contains("QEMU 7.2.22") && "\(error)".contains("--allow-old-qemu")
        }
        // ...unless told to, on purpose.
        #expect(try lab.checkQEMU(allowOld: true) == "7.2.22")
    }

    @Test func acceptsQEMU10() throws {
        #expect(try BuiltinLab(root: "/nonexistent", qemuBinary: try fakeQEMU("10.0.2")).checkQEMU(allowOld: false) == "10.0.2")
    }

    @Test func missingQEMUIsAClearError() {
        #expect(throws: BuiltinLab.LabError.self) { try BuiltinLab(root: "/x", qemuBinary: "/nonexistent/qemu").checkQEMU(allowOld: false) }
    }

    /// `--libvirtd` that names no daemon binary is refused before anything starts (root only:
    /// `up` refuses everyone else first).
    @Test(.enabled(if: getuid() == 0)) func aLibvirtdThatIsNoBinaryIsRefusedFirst() async throws {
        let root = NSTemporaryDirectory() + "miglab-no-libvirtd-\(UUID().uuidString)"
        let lab = BuiltinLab(root: root, qemuBinary: try fakeQEMU("10.0.2"), libvirtdBinary: "/nonexistent/libvirtd")
        await #expect {
            try await lab.up()
        } throws: { error in
            "\(error)".contains("/nonexistent/libvirtd is not an executable file") && "\(error)".contains("--libvirtd")
        }
        #expect(!FileManager.default.fileExists(atPath: root))
    }

    @Test func versionParsing() throws {
        #expect(try BuiltinLab.parseQEMUVersion("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)").major == 10)
        #expect(try BuiltinLab.parseQEMUVersion("QEMU emulator version 9.1").text == "9.1.0")
        #expect(throws: (any Error).self) { try BuiltinLab.parseQEMUVersion("nonsense") }
    }
}

struct GuestImageTests {
    @Test func moduleLoadOrderPutsDependenciesFirst() throws {
        let dep = """
        kernel/drivers/virtio/virtio.ko:
        kernel/drivers/virtio/virtio_ring.ko:
        kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
        kernel/drivers/virtio/virtio_pci_modern_dev.ko:
        kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
        kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
        kernel/net/core/failover.ko:
        """
        let order = try GuestImageBuilder.moduleLoadOrder(["virtio_pci", "virtio_net", "e1000e"], modulesDep: dep,
                                                          builtin: "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko\n")
        let names = order.map { GuestImageBuilder.moduleName($0) }
        #expect(Set(names) == ["virtio", "virtio_ring", "virtio_pci", "virtio_pci_modern_dev", "virtio_net", "net_failover", "failover"])
        for (i, path) in order.enumerated() {
            for d in dep.split(separator: "\n").first(where: { $0.hasPrefix(path + ":") })!.split(separator: " ").dropFirst() {
                #expect(order.firstIndex(of: String(d))! < i, "\(d) must load before \(path)")
            }
        }
        #expect(throws: GuestImageBuilder.ImageError.self) {
            try GuestImageBuilder.moduleLoadOrder(["nope"], modulesDep: dep, builtin: "")
        }
    }

    /// Device drivers carry the PCI aliases that make /init load them; their dependencies
    /// inherit them; modules every guest needs have none.
    @Test func deviceModulesLoadOnlyForTheirDevices() throws {
        let dep = """
        kernel/drivers/virtio/virtio.ko:
        kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko
        kernel/drivers/net/mlx5_core.ko: kernel/drivers/net/mlxfw.ko kernel/net/psample.ko
        kernel/drivers/net/mlxfw.ko:
        kernel/net/psample.ko:
        """
        let aliases = """
        alias virtio:d00000001v* virtio_net
        alias pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_core
        alias pci:v000015B3d00001018sv*sd*bc*sc*i* mlx5_core
        alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
        """
        let lines = try GuestImageBuilder.moduleLines(always: ["virtio_pci"], onDevice: ["mlx5_core"], modulesDep: dep, builtin: "", aliases: aliases)
        #expect(lines.map(\.text) == [
            "virtio.ko\n", "virtio_pci.ko\n",
            "mlxfw.ko pci:v000015B3d0000101Esv*sd*bc*sc*i* pci:v000015B3d00001018sv*sd*bc*sc*i*\n",
            "psample.ko pci:v000015B3d0000101Esv*sd*bc*sc*i* pci:v000015B3d00001018sv*sd*bc*sc*i*\n",
            "mlx5_core.ko pci:v000015B3d0000101Esv*sd*bc*sc*i* pci:v000015B3d00001018sv*sd*bc*sc*i*\n",
        ])
        // A driver nothing could ever load is refused when the image is built.
        #expect(throws: GuestImageBuilder.ImageError.self) {
            try GuestImageBuilder.moduleLines(always: [], onDevice: ["mlxfw"], modulesDep: dep, builtin: "", aliases: aliases)
        }
    }

    /// The ELF kernel is found inside a bzImage by its boot header, the size the build appended
    /// is cut off, and a PVH entry is recognised by its note.
    @Test func theELFKernelOfABzImageAndItsPVHEntry() throws {
        let elf = Self.elf(noteType: 18)
        var bz = Data(count: 0x400)
        bz[0x1F1] = 1                                       // one setup sector: code at 1024
        bz.replaceSubrange(0x202..<0x206, with: Array("HdrS".utf8))
        bz.replaceSubrange(0x206..<0x208, with: [0x0F, 0x02])  // protocol 2.15
        let packed = Data([0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]) + Data(repeating: 7, count: 10) + Data([0x40, 0, 0, 0])
        withUnsafeBytes(of: UInt32(8).littleEndian) { bz.replaceSubrange(0x248..<0x24C, with: $0) }
        withUnsafeBytes(of: UInt32(packed.count).littleEndian) { bz.replaceSubrange(0x24C..<0x250, with: $0) }
        bz.append(Data(count: 8) + packed + Data(count: 32))
        let p = try KernelImage.payload(ofBzImage: bz)
        #expect(p.compression == .xz && p.size == 0x40 && p.bytes.count == packed.count - 4)
        #expect(KernelImage.hasPVHEntry(elf: elf))
        #expect(!KernelImage.hasPVHEntry(elf: Self.elf(noteType: 17)))
        #expect(!KernelImage.hasPVHEntry(elf: Data("not an elf".utf8)))
        #expect(throws: KernelImage.FormatError.self) { try KernelImage.payload(ofBzImage: Data(count: 0x400)) }
    }

    /// A 64-bit ELF with one PT_NOTE segment holding one "Xen" note of the given type.
    static func elf(noteType: UInt32) -> Data {
        var d = Data(count: 64 + 56)
        d.replaceSubrange(0..<6, with: [0x7F, 0x45, 0x4C, 0x46, 2, 1])
        func put<T: FixedWidthInteger>(_ v: T, _ o: Int) { withUnsafeBytes(of: v.littleEndian) { d.replaceSubrange(o..<o + MemoryLayout<T>.size, with: $0) } }
        put(UInt64(64), 32); put(UInt16(56), 54); put(UInt16(1), 56)
        var note = Data()
        for v: UInt32 in [4, 8, noteType] { withUnsafeBytes(of: v.littleEndian) { note.append(contentsOf: $0) } }
        note.append(Data("Xen\0".utf8)); note.append(Data(count: 8))
        put(UInt32(4), 64); put(UInt64(120), 72); put(UInt64(note.count), 96)
        d.append(note)
        return d
    }

    @Test func cpioArchiveIsNewcAndDeterministic() throws {
        let root = NSTemporaryDirectory() + "cpio-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root + "/bin", withIntermediateDirectories: true)
        try "hello".write(toFile: root + "/bin/x", atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: root + "/sh", withDestinationPath: "bin/x")
        var a = CPIOArchive(), b = CPIOArchive()
        try a.addTree(root: root)
        try b.addTree(root: root)
        let da = a.finish(), db = b.finish()
        #expect(da == db)
        #expect(da.count % 512 == 0)
        #expect(da.prefix(6) == Data("070701".utf8))
        let text = String(decoding: da, as: UTF8.self)
        #expect(text.contains("bin/x"))
        #expect(text.contains("hello"))
        #expect(text.contains("TRAILER!!!"))
    }

    @Test func guestSourcesShipAsResources() throws {
        #expect(String(decoding: try GuestImageBuilder.guestResource("init"), as: UTF8.self).contains("miglab.memtest="))
        #expect(String(decoding: try GuestImageBuilder.guestResource("memtest.c"), as: UTF8.self).contains("MIGLAB-MEMTEST"))
    }
}

struct DomainDefinitionTests {
    @Test func xmlIsWellFormedAndEscaped() throws {
        let image = GuestImage(kernel: "/k/vmlinuz", initrd: "/k/initrd&<>.cpio", hash: "h", kernelVersion: "6.1")
        let def = DomainDefinition(name: "miglab-x", memoryMiB: 256, vcpus: 2, image: image,
                                   kernelArguments: ["console=ttyS0", "miglab.memtest=64"], emulator: "/usr/bin/qemu-system-x86_64",
                                   consoleLog: "/tmp/c.log", nics: [.init(model: "virtio", mac: "52:54:00:00:00:01")])
        let doc = try XMLDocument(xmlString: def.xml())
        let root = try #require(doc.rootElement())
        #expect(root.attribute(forName: "type")?.stringValue == "qemu")
        #expect(try doc.nodes(forXPath: "/domain/os/initrd").first?.stringValue == "/k/initrd&<>.cpio")
        #expect(try doc.nodes(forXPath: "/domain/os/cmdline").first?.stringValue == "console=ttyS0 miglab.memtest=64")
        #expect(try doc.nodes(forXPath: "/domain/devices/serial/log/@file").first?.stringValue == "/tmp/c.log")
        #expect(try doc.nodes(forXPath: "/domain/devices/channel/target/@name").first?.stringValue == "org.qemu.guest_agent.0")
        #expect(try doc.nodes(forXPath: "/domain/devices/interface/model/@type").first?.stringValue == "virtio")
    }
}
