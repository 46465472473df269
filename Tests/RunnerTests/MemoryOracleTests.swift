import Foundation
import Testing
@testable import Runner

/// The oracle must pass a consistent image and fail every kind of damage a migration can do.
/// These tests are what would fail if the oracle stopped comparing pages.
struct MemoryOracleTests {
    static let n = 64

    /// A consistent image: pages [0, boundary) hold counter+1, the rest counter; page i lives
    /// in frame 1000 + i*3 (scattered, like guest physical memory).
    static func image(boundary: Int = 20, counter: UInt32 = 7) -> [MemoryOracle.Page] {
        (0..<n).map { i in
            MemoryOracle.Page.make(index: UInt64(i), pageCount: UInt64(n),
                                   counter: i < boundary ? counter &+ 1 : counter, frame: UInt64(1000 + i * 3))
        }
    }

    @Test func cleanImagePasses() {
        let v = MemoryOracle.check(pages: Self.image(), expectedPages: Self.n)
        #expect(v.passed)
        #expect(v.pagesChecked == Self.n)
        #expect(v.badPages == 0)
        #expect(v.boundary == 20)
    }

    @Test func allEqualCountersPass() {
        #expect(MemoryOracle.check(pages: Self.image(boundary: 0), expectedPages: Self.n).passed)
        #expect(MemoryOracle.check(pages: Self.image(boundary: Self.n), expectedPages: Self.n).passed)
    }

    @Test func counterWrapsAround() {
        let pages = Self.image(boundary: 10, counter: UInt32.max)   // UInt32.max+1 wraps to 0
        #expect(MemoryOracle.check(pages: pages, expectedPages: Self.n).passed)
    }

    @Test func oneStalePageFails() {
        var pages = Self.image()
        pages[40].counter = 3   // a page migration delivered from an old pass
        let v = MemoryOracle.check(pages: pages, expectedPages: Self.n)
        #expect(!v.passed)
        #expect(v.badPages == 1)
        #expect(v.firstBad.first?.index == 40)
    }

    @Test func staleByOneAfterTheBoundaryFails() {
        var pages = Self.image()
        pages[50].counter = 6   // one below the lower value: still stale
        #expect(!MemoryOracle.check(pages: pages, expectedPages: Self.n).passed)
    }

    @Test func pageWithAnotherIndexFails() {
        var pages = Self.image()
        // The frame of page 30 holds page 31's contents (index 31, frame of 31): page 30 is
        // missing and 31 appears twice, at the wrong frame.
        let copy = pages[31]
        pages[30] = MemoryOracle.Page(physicalAddress: pages[30].physicalAddress, counter: copy.counter, index: copy.index,
                                      pfn: copy.pfn, pageCount: copy.pageCount, check: copy.check)
        let v = MemoryOracle.check(pages: pages, expectedPages: Self.n)
        #expect(!v.passed)
        #expect(v.firstBad.contains { $0.index == 30 } || v.firstBad.contains { $0.index == 31 })
    }

    @Test func twoSwappedPagesFail() {
        var pages = Self.image()
        // Contents of pages 5 and 45 swapped in guest memory: every header is intact, every
        // index present once; only the recorded frame numbers give it away.
        let a = pages[5].physicalAddress, b = pages[45].physicalAddress
        pages[5].physicalAddress = b
        pages[45].physicalAddress = a
        let v = MemoryOracle.check(pages: pages, expectedPages: Self.n)
        #expect(!v.passed)
        #expect(v.badPages == 2)
        #expect(Set(v.firstBad.map(\.index)) == [5, 45])
    }

    @Test func twoBoundariesFail() {
        var pages = Self.image(boundary: 10)
        for i in 30..<35 { pages[i].counter += 1 }   // a second run of N+1 after the boundary
        let v = MemoryOracle.check(pages: pages, expectedPages: Self.n)
        #expect(!v.passed)
        #expect(v.badPages == 5)
    }

    @Test(arguments: ["magic", "index", "pfn", "pageCount", "check", "reserved"])
    func damagedHeaderFails(field: String) {
        var pages = Self.image()
        switch field {
        case "magic": pages[12].magic ^= 1 << 40
        case "index": pages[12].index ^= 1 << 1
        case "pfn": pages[12].pfn ^= 1
        case "pageCount": pages[12].pageCount += 1
        case "check": pages[12].check ^= 0x8000
        default: pages[12].reserved = 0xdead
        }
        let v = MemoryOracle.check(pages: pages, expectedPages: Self.n)
        #expect(!v.passed, "damaged \(field) not caught")
        #expect(v.badPages >= 1)
    }

    @Test func missingPageFails() {
        var pages = Self.image()
        pages.remove(at: 63)
        let v = MemoryOracle.check(pages: pages, expectedPages: Self.n)
        #expect(!v.passed)
        #expect(v.firstBad.map(\.index) == [63])
        #expect(v.firstBad.first?.reason.contains("missing") == true)
    }

    @Test func emptyImageFails() {
        let v = MemoryOracle.check(pages: [], expectedPages: Self.n)
        #expect(!v.passed)
        #expect(v.badPages == Self.n)
    }

    @Test func unknownFrameNumbersStillCheckCounters() {
        var pages = Self.image().map { p -> MemoryOracle.Page in
            var q = p
            q.pfn = MemoryOracle.pfnUnknown
            q.check = MemoryOracle.checkWord(index: q.index, pfn: q.pfn, pageCount: q.pageCount)
            return q
        }
        #expect(MemoryOracle.check(pages: pages, expectedPages: Self.n).passed)
        pages[3].counter = 0
        #expect(!MemoryOracle.check(pages: pages, expectedPages: Self.n).passed)
    }

    @Test func reportsAtMostTenBadPages() {
        let pages = Self.image().map { p -> MemoryOracle.Page in
            var q = p
            if q.index % 2 == 1 { q.counter = 1 }
            return q
        }
        let v = MemoryOracle.check(pages: pages, expectedPages: Self.n)
        #expect(v.badPages >= 30)
        #expect(v.firstBad.count == 10)
    }
}

/// The ELF reader and the oracle together, on synthetic dumps shaped like QEMU's.
struct MemoryImageTests {
    static func dump(_ pages: [MemoryOracle.Page]) -> Data {
        // Two segments like a q35 guest: low memory and memory above 4 GiB are not needed
        // here; two separate ranges exercise the segment walk.
        let low = pages.filter { $0.physicalAddress < 1100 * 4096 }
        let high = pages.filter { $0.physicalAddress >= 1100 * 4096 }
        return MemoryImage.makeELFCore(segments: [
            (physicalAddress: 990 * 4096, bytes: MemoryImage.segmentBytes(pages: low, base: 990 * 4096, frames: 110)),
            (physicalAddress: 1100 * 4096, bytes: MemoryImage.segmentBytes(pages: high, base: 1100 * 4096, frames: 100)),
        ])
    }

    @Test func readsEveryPageBackFromAnELFCore() throws {
        let pages = MemoryOracleTests.image()
        let found = try MemoryImage.workloadPages(elfCore: Self.dump(pages))
        #expect(found.count == pages.count)
        #expect(Set(found.map(\.index)) == Set(pages.map(\.index)))
        #expect(MemoryOracle.check(pages: found, expectedPages: MemoryOracleTests.n).passed)
    }

    @Test func oneFlippedByteInAPageBodyIsCaught() throws {
        // What a corrupted migration stream does: one byte somewhere in the middle of a page.
        var d = Self.dump(MemoryOracleTests.image())
        let found = try MemoryImage.workloadPages(elfCore: d)
        let victim = try #require(found.first { $0.index == 17 })
        let fileOffset = 4096 + Int(victim.physicalAddress - 990 * 4096) + 3000 // segment 1 data starts at 4096
        d[fileOffset] ^= 0x01
        let damaged = try MemoryImage.workloadPages(elfCore: d)
        #expect(damaged.first { $0.index == 17 }?.bodyDamageOffset == 3000 - 3000 % 8)
        let v = MemoryOracle.check(pages: damaged, expectedPages: MemoryOracleTests.n)
        #expect(!v.passed)
        #expect(v.firstBad.map(\.index) == [17])
        #expect(v.firstBad.first?.reason.contains("contents damaged") == true)
    }

    @Test func corruptedCounterInTheDumpIsCaught() throws {
        var pages = MemoryOracleTests.image()
        pages[7].counter = 99
        let found = try MemoryImage.workloadPages(elfCore: Self.dump(pages))
        #expect(!MemoryOracle.check(pages: found, expectedPages: MemoryOracleTests.n).passed)
    }

    @Test func notAnELFFileIsAClearError() {
        #expect(throws: MemoryImage.FormatError.self) { try MemoryImage.workloadPages(elfCore: Data("hello".utf8)) }
        #expect(throws: MemoryImage.FormatError.self) { try MemoryImage.workloadPages(elfCore: Data(count: 100)) }
    }

    @Test func truncatedDumpIsAClearError() throws {
        let d = Self.dump(MemoryOracleTests.image())
        #expect(throws: MemoryImage.FormatError.self) { try MemoryImage.workloadPages(elfCore: d.prefix(d.count - 5000)) }
    }

    @Test func checkWordMatchesTheWorkloadSource() throws {
        // The C workload and the Swift oracle must agree on the magic value; the magic's bytes
        // spell "MIGLABPG".
        let bytes = withUnsafeBytes(of: MemoryOracle.magic.littleEndian, Array.init)
        #expect(String(decoding: bytes, as: UTF8.self) == "MIGLABPG")
        let src = try String(contentsOfFile: packageRoot() + "/Sources/Lab/Guest/memtest.c", encoding: .utf8)
        #expect(src.contains("0x1d0a181b161d1317ull"))
        #expect(src.contains("index * 0x9E3779B97F4A7C15ull ^ (word + 1) * 0xC2B2AE3D27D4EB4Full"))
        #expect(0x1d0a_181b_161d_1317 ^ 0x5a5a_5a5a_5a5a_5a5a == MemoryOracle.magic)
    }
}

func packageRoot() -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
}
