import Foundation
import Logging

/// The parts of an x86 Linux kernel image (bzImage) that booting it fast needs: the compressed
/// ELF kernel inside it (the boot protocol's `payload_offset`/`payload_length`, protocol 2.08+)
/// and whether that ELF has a PVH entry point (`XEN_ELFNOTE_PHYS32_ENTRY`), through which QEMU
/// boots it directly, with no decompression in the guest.
enum KernelImage {
    struct FormatError: Error, CustomStringConvertible {
        let description: String
    }

    enum Compression: String {
        case gzip, xz, zstd, lzma, lz4, bzip2
        /// The command that decompresses it from stdin to stdout.
        var decompressor: [String] {
            switch self {
            case .gzip: ["gzip", "-dc"]
            case .xz: ["xz", "-dc"]
            case .zstd: ["zstd", "-dcq"]
            case .lzma: ["xz", "--format=lzma", "-dc"]
            case .lz4: ["lz4", "-dcq"]
            case .bzip2: ["bzip2", "-dc"]
            }
        }

        init?(magic d: Data) {
            let b = [UInt8](d.prefix(6))
            func starts(_ m: [UInt8]) -> Bool { b.count >= m.count && Array(b.prefix(m.count)) == m }
            if starts([0x1F, 0x8B]) { self = .gzip }
            else if starts([0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]) { self = .xz }
            else if starts([0x28, 0xB5, 0x2F, 0xFD]) { self = .zstd }
            else if starts([0x5D, 0x00, 0x00]) { self = .lzma }
            else if starts([0x02, 0x21, 0x4C, 0x18]) { self = .lz4 }
            else if starts([0x42, 0x5A, 0x68]) { self = .bzip2 }
            else { return nil }
        }
    }

    /// The compressed kernel inside a bzImage, how it is compressed, and its uncompressed size
    /// when the build appended it (every format but gzip, whose own trailer has it: the
    /// kernel's `*_with_size` rules). The appended size is cut off: decompressors see it as a
    /// truncated second stream.
    static func payload(ofBzImage d: Data) throws -> (compression: Compression, bytes: Data, size: Int?) {
        func u32(_ o: Int) -> UInt32 { d.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: o, as: UInt32.self).littleEndian } }
        func u16(_ o: Int) -> UInt16 { d.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: o, as: UInt16.self).littleEndian } }
        guard d.count > 0x250, u32(0x202) == 0x5372_6448 /* "HdrS" */ else {
            throw FormatError(description: "not a bzImage (no HdrS boot header)")
        }
        guard u16(0x206) >= 0x0208 else { throw FormatError(description: "boot protocol before 2.08 has no payload fields") }
        var setupSectors = Int(d[0x1F1])
        if setupSectors == 0 { setupSectors = 4 }
        let start = (setupSectors + 1) * 512 + Int(u32(0x248)), length = Int(u32(0x24C))
        guard length > 0, start + length <= d.count else { throw FormatError(description: "payload out of bounds") }
        let bytes = d.subdata(in: start..<start + length)
        guard let c = Compression(magic: bytes) else { throw FormatError(description: "payload in an unknown compression") }
        guard c != .gzip else { return (c, bytes, nil) }
        guard length > 4 else { throw FormatError(description: "payload too short") }
        let size = d.withUnsafeBytes { Int($0.loadUnaligned(fromByteOffset: start + length - 4, as: UInt32.self).littleEndian) }
        return (c, bytes.prefix(length - 4), size)
    }

    /// Whether the ELF file's notes carry a PVH entry point: a "Xen" note of type 18.
    static func hasPVHEntry(elf d: Data) -> Bool {
        d.withUnsafeBytes { raw -> Bool in
            guard raw.count >= 64, raw[0] == 0x7F, raw[1] == 0x45, raw[2] == 0x4C, raw[3] == 0x46, raw[4] == 2, raw[5] == 1 else { return false }
            func u16(_ o: Int) -> Int { Int(raw.loadUnaligned(fromByteOffset: o, as: UInt16.self).littleEndian) }
            func u32(_ o: Int) -> Int { Int(raw.loadUnaligned(fromByteOffset: o, as: UInt32.self).littleEndian) }
            func u64(_ o: Int) -> Int { Int(truncatingIfNeeded: raw.loadUnaligned(fromByteOffset: o, as: UInt64.self).littleEndian) }
            let phoff = u64(32), phentsize = u16(54), phnum = u16(56)
            guard phoff > 0, phentsize >= 56, phoff + phnum * phentsize <= raw.count else { return false }
            for i in 0..<phnum {
                let h = phoff + i * phentsize
                guard u32(h) == 4 else { continue }   // PT_NOTE
                let offset = u64(h + 8), size = u64(h + 32)
                guard offset >= 0, size >= 0, offset + size <= raw.count else { continue }
                var o = offset
                while o + 12 <= offset + size {
                    let namesz = u32(o), descsz = u32(o + 4), type = u32(o + 8)
                    let name = o + 12, next = name + (namesz + 3) / 4 * 4 + (descsz + 3) / 4 * 4
                    guard next > o, next <= offset + size else { break }
                    if type == 18, namesz == 4, raw[name] == 0x58, raw[name + 1] == 0x65, raw[name + 2] == 0x6E { return true }  // "Xen"
                    o = next
                }
            }
            return false
        }
    }

    /// The kernel file to boot: the ELF kernel of `bzImage`, written to `elf`, when it has a PVH
    /// entry (QEMU loads it as it is and the guest skips the bzImage's decompressor, 4.4 s of a
    /// 10 s boot under TCG, measured); otherwise, or when it cannot be unpacked, the bzImage
    /// itself, with the reason logged. `what` names the kernel in the log.
    static func bootable(bzImage: String, elf: String, scratch: String, what: String, logger: Logger) -> String {
        try? FileManager.default.removeItem(atPath: elf)
        do {
            if try unpackPVHKernel(bzImage: bzImage, to: elf, scratch: scratch) { return elf }
            logger.info("\(what) has no PVH entry: booting the bzImage")
        } catch {
            logger.warning("cannot unpack the ELF image of \(what) (\(error)): booting the bzImage")
        }
        return bzImage
    }

    /// Writes the ELF kernel of `bzImage` to `out` and returns true when it has a PVH entry;
    /// false (and no file) when it has none. Decompresses with the format's own tool.
    static func unpackPVHKernel(bzImage: String, to out: String, scratch: String) throws -> Bool {
        guard let d = FileManager.default.contents(atPath: bzImage) else { throw FormatError(description: "cannot read \(bzImage)") }
        let (compression, bytes, size) = try payload(ofBzImage: d)
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        let packed = "\(scratch)/kernel-payload.\(compression.rawValue)"
        try bytes.write(to: URL(fileURLWithPath: packed))
        defer { try? FileManager.default.removeItem(atPath: packed) }
        let tool = compression.decompressor.map(Command.shellQuoted).joined(separator: " ")
        do {
            try Command.run(["sh", "-c", "\(tool) < \(Command.shellQuoted(packed)) > \(Command.shellQuoted(out))"])
        } catch {
            try? FileManager.default.removeItem(atPath: out)
            throw error
        }
        guard let elf = try? Data(contentsOf: URL(fileURLWithPath: out), options: .alwaysMapped),
              size == nil || elf.count == size, hasPVHEntry(elf: elf) else {
            try? FileManager.default.removeItem(atPath: out)
            return false
        }
        return true
    }
}
