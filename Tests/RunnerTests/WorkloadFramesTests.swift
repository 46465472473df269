import Testing
@testable import Runner

/// The workload's frames file is guest output: it is parsed strictly, and anything it gets
/// wrong makes the check read all of guest RAM (see TwinRunTests for the check itself).
struct WorkloadFramesTests {
    @Test func runsAreParsedAndNearbyRunsReadTogether() throws {
        let f = try WorkloadFrames.parse("MIGLAB-MEMTEST-FRAMES npages=7 runs=3\n100 2\n110 3\n1000 2\n")
        #expect(f.pageCount == 7)
        #expect(f.runs == [.init(first: 100, count: 2), .init(first: 110, count: 3), .init(first: 1000, count: 2)])
        let r = f.regions(gapPages: 16)
        #expect(r.map(\.start) == [100 * 4096, 1000 * 4096])
        #expect(r.map(\.length) == [13 * 4096, 2 * 4096])   // frames 100..<113 read as one
        #expect(f.regions(gapPages: 0).count == 3)
        // A gap that is a hole in the guest's memory map is not read through.
        #expect(f.regions(gapPages: 16, ram: [(start: 0, length: 105 * 4096), (start: 108 * 4096, length: 2000 * 4096)]).count == 3)
        #expect(f.lies(within: [(start: 0, length: 2000 * 4096)]))
        #expect(!f.lies(within: [(start: 0, length: 1001 * 4096)]))
    }

    @Test(arguments: [
        ("", "no MIGLAB-MEMTEST-FRAMES header"),
        ("MIGLAB-MEMTEST-FRAMES npages=2 runs=1\n", "truncated"),
        ("MIGLAB-MEMTEST-FRAMES npages=2 runs=1\n5 3\n", "more frames"),
        ("MIGLAB-MEMTEST-FRAMES npages=4 runs=2\n5 2\n6 2\n", "overlaps"),
        ("MIGLAB-MEMTEST-FRAMES npages=4 runs=2\n9 2\n5 2\n", "precedes"),
        ("MIGLAB-MEMTEST-FRAMES npages=2 runs=1\nfive 2\n", "is not FIRST_PFN COUNT"),
        ("MIGLAB-MEMTEST-FRAMES npages=2 runs=1\n18446744073709551615 2\n", "is not FIRST_PFN COUNT"),
        ("MIGLAB-MEMTEST-FRAMES npages=x runs=1\n", "is not KEY=NUMBER"),
        ("MIGLAB-MEMTEST-FRAMES npages=0 runs=0\n", "must be positive"),
    ])
    func malformedFilesAreRefusedWithTheirLine(text: String, why: String) {
        #expect {
            _ = try WorkloadFrames.parse(text)
        } throws: { error in
            "\(error)".contains(why) && "\(error)".contains("/run/miglab-memtest.frames")
        }
    }
}
