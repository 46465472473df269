import Foundation

/// Reads the workload pages out of a memory-only ELF core dump of a guest
/// (`virDomainCoreDumpWithFormat`, `VIR_DUMP_MEMORY_ONLY`): every PT_LOAD segment is guest
/// physical memory at `p_paddr`. Pages whose magic matches are returned for the oracle.
public enum MemoryImage {
    public struct FormatError: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public static func workloadPages(elfCoreAt path: String) throws -> [MemoryOracle.Page] {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
        } catch {
            throw FormatError(description: "cannot read the memory dump \(path): \(error.localizedDescription)")
        }
        return try workloadPages(elfCore: data, name: path)
    }

    public static func workloadPages(elfCore data: Data, name: String = "memory dump") throws -> [MemoryOracle.Page] {
        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) throws -> [MemoryOracle.Page] in
            func u16(_ o: Int) -> UInt16 { raw.loadUnaligned(fromByteOffset: o, as: UInt16.self).littleEndian }
            func u32(_ o: Int) -> UInt32 { raw.loadUnaligned(fromByteOffset: o, as: UInt32.self).littleEndian }
            func u64(_ o: Int) -> UInt64 { raw.loadUnaligned(fromByteOffset: o, as: UInt64.self).littleEndian }
            guard raw.count >= 64, raw[0] == 0x7F, raw[1] == 0x45, raw[2] == 0x4C, raw[3] == 0x46 else {
                throw FormatError(description: "\(name) is not an ELF file")
            }
            guard raw[4] == 2, raw[5] == 1 else { throw FormatError(description: "\(name): not a 64-bit little-endian ELF core") }
            let phoff = Int(u64(32)), phentsize = Int(u16(54)), phnum = Int(u16(56))
            guard phentsize >= 56, phoff > 0, phoff + phnum * phentsize <= raw.count else {
                throw FormatError(description: "\(name): program headers out of bounds")
            }
            var pages: [MemoryOracle.Page] = []
            for i in 0..<phnum {
                let h = phoff + i * phentsize
                guard u32(h) == 1 else { continue } // PT_LOAD
                let offset = Int(u64(h + 8)), paddr = u64(h + 24), filesz = Int(u64(h + 32))
                guard offset >= 0, filesz >= 0, offset + filesz <= raw.count else {
                    throw FormatError(description: "\(name): segment \(i) runs past the end of the file (truncated dump?)")
                }
                scan(UnsafeRawBufferPointer(rebasing: raw[offset..<offset + filesz]), physicalAddress: paddr, into: &pages)
            }
            return pages
        }
    }

    /// Appends the workload pages found in `block`, a stretch of guest physical memory that
    /// starts at `physicalAddress`. Pages are found at guest page boundaries; a page cut off by
    /// the block's end counts as damaged, so callers pass blocks that end on a page boundary
    /// (or at the end of a memory region).
    public static func scan(_ block: UnsafeRawBufferPointer, physicalAddress paddr: UInt64, into pages: inout [MemoryOracle.Page]) {
        func u32(_ o: Int) -> UInt32 { block.loadUnaligned(fromByteOffset: o, as: UInt32.self).littleEndian }
        func u64(_ o: Int) -> UInt64 { block.loadUnaligned(fromByteOffset: o, as: UInt64.self).littleEndian }
        let page = MemoryOracle.pageSize
        let size = block.count
        let misalign = Int(paddr % UInt64(page))
        var o = misalign == 0 ? 0 : page - misalign
        while o + 48 <= size {
            if u64(o + 8) == MemoryOracle.magic {
                let index = u64(o + 16)
                var damage: Int?
                if o + page <= size {
                    for w in MemoryOracle.bodyWords where u64(o + w * 8) != MemoryOracle.bodyWord(index: index, word: UInt64(w)) {
                        damage = w * 8
                        break
                    }
                } else {
                    damage = size - o   // the page is cut off by the block's end
                }
                pages.append(MemoryOracle.Page(
                    physicalAddress: paddr + UInt64(o), counter: u32(o), reserved: u32(o + 4),
                    magic: u64(o + 8), index: index, pfn: u64(o + 24),
                    pageCount: u64(o + 32), check: u64(o + 40), bodyDamageOffset: damage))
            }
            o += page
        }
    }

    /// The guest's RAM regions from its `/proc/iomem` ("System RAM" at the top level), as
    /// page-aligned (start, length) pairs for reading through `virDomainMemoryPeek`.
    public static func systemRAM(iomem: String) throws -> [(start: UInt64, length: UInt64)] {
        var out: [(UInt64, UInt64)] = []
        let page = UInt64(MemoryOracle.pageSize)
        for line in iomem.split(whereSeparator: \.isNewline) where !line.hasPrefix(" ") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, parts[1].trimmingCharacters(in: .whitespaces) == "System RAM" else { continue }
            let range = parts[0].trimmingCharacters(in: .whitespaces).split(separator: "-")
            guard range.count == 2, let a = UInt64(range[0], radix: 16), let b = UInt64(range[1], radix: 16), b >= a else {
                throw FormatError(description: "the guest's /proc/iomem has a line miglab cannot read: `\(line)`")
            }
            let start = (a + page - 1) / page * page, end = (b + 1) / page * page
            if end > start { out.append((start, end - start)) }
        }
        guard !out.isEmpty, out.contains(where: { $0.1 > 0 }) else {
            throw FormatError(description: "the guest's /proc/iomem lists no System RAM (is it readable as root? addresses all zero mean it was read without privileges)")
        }
        return out
    }

    /// Builds a minimal ELF core with the given segments: the test twin of QEMU's dump.
    public static func makeELFCore(segments: [(physicalAddress: UInt64, bytes: Data)]) -> Data {
        var d = Data(count: 64)
        let phoff = 64, phentsize = 56
        var dataOffset = phoff + phentsize * segments.count
        dataOffset = (dataOffset + 4095) / 4096 * 4096
        func put<T: FixedWidthInteger>(_ v: T, at o: Int, in d: inout Data) {
            withUnsafeBytes(of: v.littleEndian) { d.replaceSubrange(o..<o + MemoryLayout<T>.size, with: $0) }
        }
        d[0] = 0x7F; d[1] = 0x45; d[2] = 0x4C; d[3] = 0x46; d[4] = 2; d[5] = 1; d[6] = 1
        put(UInt16(4), at: 16, in: &d)          // ET_CORE
        put(UInt16(62), at: 18, in: &d)         // EM_X86_64
        put(UInt64(phoff), at: 32, in: &d)
        put(UInt16(64), at: 52, in: &d)
        put(UInt16(phentsize), at: 54, in: &d)
        put(UInt16(segments.count), at: 56, in: &d)
        var headers = Data(count: phentsize * segments.count)
        var offset = dataOffset
        for (i, s) in segments.enumerated() {
            let h = i * phentsize
            put(UInt32(1), at: h, in: &headers)
            put(UInt64(offset), at: h + 8, in: &headers)
            put(s.physicalAddress, at: h + 16, in: &headers)
            put(s.physicalAddress, at: h + 24, in: &headers)
            put(UInt64(s.bytes.count), at: h + 32, in: &headers)
            put(UInt64(s.bytes.count), at: h + 40, in: &headers)
            offset += s.bytes.count
        }
        d.append(headers)
        d.append(Data(count: dataOffset - d.count))
        for s in segments { d.append(s.bytes) }
        return d
    }

    /// Serializes workload pages into the bytes of one physical segment starting at `base`.
    public static func segmentBytes(pages: [MemoryOracle.Page], base: UInt64, frames: Int) -> Data {
        var d = Data(count: frames * MemoryOracle.pageSize)
        for p in pages {
            let o = Int(p.physicalAddress - base)
            guard o >= 0, o + 48 <= d.count else { continue }
            func put<T: FixedWidthInteger>(_ v: T, _ at: Int) {
                withUnsafeBytes(of: v.littleEndian) { d.replaceSubrange(o + at..<o + at + MemoryLayout<T>.size, with: $0) }
            }
            put(p.counter, 0); put(p.reserved, 4); put(p.magic, 8); put(p.index, 16)
            put(p.pfn, 24); put(p.pageCount, 32); put(p.check, 40)
            guard o + MemoryOracle.pageSize <= d.count else { continue }
            for w in MemoryOracle.bodyWords { put(MemoryOracle.bodyWord(index: p.index, word: UInt64(w)), w * 8) }
            if let damage = p.bodyDamageOffset { d[o + damage] ^= 0x40 }
        }
        return d
    }
}

/// Scans the guest console for signs that the guest broke: kernel oops and panics, general
/// protection faults, traps, BUG lines, and the workload's own error reports.
public enum ConsoleScanner {
    public static let patterns: [(name: String, needle: String)] = [
        ("kernel panic", "Kernel panic"),
        ("oops", "Oops:"),
        ("oops", "Oops "),
        ("general protection fault", "general protection fault"),
        ("trap", "traps:"),
        ("kernel BUG", "BUG:"),
        ("kernel BUG", "kernel BUG at"),
        ("call trace", "Call Trace:"),
        ("segfault", "segfault at"),
        ("stack protector", "stack-protector"),
        ("workload error", "MIGLAB-MEMTEST ERROR"),
        ("rcu stall", "rcu_sched self-detected stall"),
        ("watchdog", "watchdog: BUG: soft lockup"),
    ]

    public struct Finding: Sendable, Equatable, CustomStringConvertible {
        public var line: Int
        public var kind: String
        public var text: String
        public var description: String { "console line \(line): \(kind): \(text)" }
    }

    public static func consoleLines(_ text: String) -> [Substring] {
        text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline)
    }

    public static func scan(_ text: String) -> [Finding] {
        var out: [Finding] = []
        // Serial consoles end lines with "\r\n", which Swift treats as one Character: split on
        // any newline, never on "\n" alone.
        for (i, raw) in consoleLines(text).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespacesAndNewlines)
            for (name, needle) in patterns where line.contains(needle) {
                out.append(Finding(line: i + 1, kind: name, text: String(line.prefix(200))))
                break
            }
        }
        return out
    }
}
