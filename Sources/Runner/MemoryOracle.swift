/// The memory-integrity oracle: checks the pages of miglab's guest workload found in a
/// raw image of guest RAM, in the manner of QEMU's migration tests.
///
/// The workload (Sources/Lab/Guest/memtest.c) increments a counter in every 4 KiB page,
/// page after page, forever, so in a consistent image all counters are equal except at one
/// place where the value drops by exactly one. Every page also carries a header (magic,
/// index, frame number, page count, check word), so a page that is missing, duplicated,
/// delivered to another frame or damaged is caught too.
public enum MemoryOracle {
    public static let pageSize = 4096
    /// "MIGLABPG" as a little-endian u64 (memtest.c builds it at run time).
    public static let magic: UInt64 = 0x4750_4241_4C47_494D
    public static let pfnUnknown = UInt64.max

    /// The check word memtest.c writes at offset 40.
    public static func checkWord(index: UInt64, pfn: UInt64, pageCount: UInt64) -> UInt64 {
        var x = ~magic ^ index
        x = ((x << 13) | (x >> 51)) ^ pfn
        x = ((x << 29) | (x >> 35)) ^ pageCount
        return x
    }

    /// Word `word` (8-byte units, 6..<512) of the fixed body of page `index` (memtest.c's body_word).
    public static func bodyWord(index: UInt64, word: UInt64) -> UInt64 {
        let x = index &* 0x9E37_79B9_7F4A_7C15 ^ (word &+ 1) &* 0xC2B2_AE3D_27D4_EB4F
        return x ^ (x >> 29)
    }
    public static let bodyWords = 6..<(pageSize / 8)

    /// One workload page as found in the image: where it was, its header, and whether its
    /// body (bytes 48..<4096) holds the fixed pattern.
    public struct Page: Sendable, Equatable {
        public var physicalAddress: UInt64
        public var counter: UInt32
        public var reserved: UInt32
        public var magic: UInt64
        public var index: UInt64
        public var pfn: UInt64
        public var pageCount: UInt64
        public var check: UInt64
        /// Byte offset of the first body word that differs from the pattern; nil when intact.
        public var bodyDamageOffset: Int?

        public init(physicalAddress: UInt64, counter: UInt32, reserved: UInt32 = 0, magic: UInt64 = MemoryOracle.magic,
                    index: UInt64, pfn: UInt64, pageCount: UInt64, check: UInt64, bodyDamageOffset: Int? = nil) {
            self.physicalAddress = physicalAddress
            self.counter = counter
            self.reserved = reserved
            self.magic = magic
            self.index = index
            self.pfn = pfn
            self.pageCount = pageCount
            self.check = check
            self.bodyDamageOffset = bodyDamageOffset
        }

        /// A well-formed page as the workload writes it.
        public static func make(index: UInt64, pageCount: UInt64, counter: UInt32, frame: UInt64) -> Page {
            Page(physicalAddress: frame * UInt64(pageSize), counter: counter, index: index, pfn: frame,
                 pageCount: pageCount, check: checkWord(index: index, pfn: frame, pageCount: pageCount))
        }

        /// Why the header is not what the workload wrote, or nil when it is intact.
        func headerProblem(expectedPages: UInt64) -> String? {
            if magic != MemoryOracle.magic { return "magic damaged" }
            if reserved != 0 { return "reserved word damaged" }
            if check != checkWord(index: index, pfn: pfn, pageCount: pageCount) { return "check word does not match the header" }
            if pageCount != expectedPages { return "page count \(pageCount), expected \(expectedPages)" }
            if index >= expectedPages { return "index \(index) out of range" }
            if pfn != pfnUnknown && pfn * UInt64(pageSize) != physicalAddress {
                return "page written for frame \(pfn) found at frame \(physicalAddress / UInt64(pageSize))"
            }
            if let off = bodyDamageOffset { return "contents damaged at byte \(off)" }
            return nil
        }
    }

    public struct BadPage: Sendable, Equatable, CustomStringConvertible {
        public var index: UInt64
        public var reason: String
        public var description: String { "page \(index): \(reason)" }
    }

    public struct Verdict: Sendable, Equatable {
        public var pagesChecked: Int
        public var badPages: Int
        /// The first few bad pages, with the reason.
        public var firstBad: [BadPage]
        /// The counter before the boundary (N+1) and the boundary position, when consistent.
        public var counter: UInt32?
        public var boundary: Int?
        public var passed: Bool { badPages == 0 && pagesChecked > 0 }
    }

    static let reportLimit = 10

    /// Checks the workload pages found in an image. `pages` may contain anything whose magic
    /// matched at a page boundary; `expectedPages` is the workload's buffer size in pages.
    public static func check(pages: [Page], expectedPages: Int) -> Verdict {
        let n = expectedPages
        var bad: [UInt64: String] = [:]
        var byIndex = [Page?](repeating: nil, count: n)
        for p in pages {
            if let problem = p.headerProblem(expectedPages: UInt64(n)) {
                // A damaged header cannot name its page reliably; report it under the index it
                // claims when that is in range, else by its frame.
                let key = p.index < UInt64(n) ? p.index : UInt64(n) + p.physicalAddress / UInt64(pageSize)
                if bad[key] == nil { bad[key] = "\(problem) (at physical 0x\(String(p.physicalAddress, radix: 16)))" }
                continue
            }
            let i = Int(p.index)
            if let other = byIndex[i] {
                bad[p.index] = "found twice, at physical 0x\(String(other.physicalAddress, radix: 16)) and 0x\(String(p.physicalAddress, radix: 16))"
            } else {
                byIndex[i] = p
            }
        }
        for i in 0..<n where byIndex[i] == nil && bad[UInt64(i)] == nil {
            bad[UInt64(i)] = "missing from guest memory"
        }
        // Counters: the best fit of "hi for [0, k), hi-1 for [k, n)", then every page that
        // does not fit it is bad. Candidates for hi: the most frequent values and their +1.
        let counters = byIndex.map { $0?.counter }
        var freq: [UInt32: Int] = [:]
        for c in counters { if let c { freq[c, default: 0] += 1 } }
        let top = freq.sorted { $0.value > $1.value || ($0.value == $1.value && $0.key > $1.key) }.prefix(3).map(\.key)
        var candidates = Set<UInt32>()
        for v in top { candidates.insert(v); candidates.insert(v &+ 1) }
        var best: (mismatches: Int, hi: UInt32, k: Int)?
        for hi in candidates.sorted() {
            let lo = hi &- 1
            // mismatches(k) = #(i < k, c != hi) + #(i >= k, c != lo), over known counters.
            var suffixNotLo = 0
            for c in counters { if let c, c != lo { suffixNotLo += 1 } }
            var prefixNotHi = 0
            var bestK = (count: suffixNotLo, k: 0)
            for k in 1...max(n, 1) where n > 0 {
                if let c = counters[k - 1] {
                    if c != hi { prefixNotHi += 1 }
                    if c != lo { suffixNotLo -= 1 }
                }
                if prefixNotHi + suffixNotLo < bestK.count { bestK = (prefixNotHi + suffixNotLo, k) }
            }
            if best == nil || bestK.count < best!.mismatches { best = (bestK.count, hi, bestK.k) }
        }
        if let best {
            for i in 0..<n {
                guard let c = counters[i] else { continue }
                let want = i < best.k ? best.hi : best.hi &- 1
                if c != want { bad[UInt64(i)] = "counter \(c), expected \(want) (stale or corrupted)" }
            }
        }
        let sorted = bad.sorted { $0.key < $1.key }
        return Verdict(pagesChecked: n, badPages: bad.count,
                       firstBad: sorted.prefix(reportLimit).map { BadPage(index: $0.key, reason: $0.value) },
                       counter: best?.hi, boundary: best?.k)
    }
}
