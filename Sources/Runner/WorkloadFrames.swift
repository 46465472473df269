/// Where the memory workload's pages lie in guest physical memory, as the workload reports it
/// (memtest.c's frames file): runs of consecutive page frames. The memory check reads only
/// these frames, so its cost follows the workload's size, not the guest's.
///
/// The guest is trusted for nothing but where to look: every page read is still checked
/// against its own header (magic, index, frame number, check word, body), and a page that is
/// not where the file says is missing. A file that is malformed (it lives in guest RAM, which
/// a migration may damage) or that points outside the guest's RAM is refused, and the check
/// then reads all of guest RAM.
struct WorkloadFrames: Equatable, Sendable {
    struct Run: Equatable, Sendable {
        var first: UInt64
        var count: UInt64
    }
    var pageCount: UInt64
    var runs: [Run]

    static let path = GuestPaths.workloadFrames

    struct FormatError: Error, CustomStringConvertible {
        let description: String
    }

    /// Parses "MIGLAB-MEMTEST-FRAMES npages=N runs=R" then R lines "FIRST_PFN COUNT".
    /// Runs must ascend without overlap and their counts sum to N.
    static func parse(_ text: String) throws -> WorkloadFrames {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard let header = lines.first, header.hasPrefix("MIGLAB-MEMTEST-FRAMES ") else {
            throw FormatError(description: "\(path) line 1: no MIGLAB-MEMTEST-FRAMES header")
        }
        var fields: [String: UInt64] = [:]
        for part in header.split(separator: " ").dropFirst() {
            let kv = part.split(separator: "=", maxSplits: 1)
            guard kv.count == 2, let v = UInt64(kv[1]) else { throw FormatError(description: "\(path) line 1: `\(part)` is not KEY=NUMBER") }
            fields[String(kv[0])] = v
        }
        guard let npages = fields["npages"], let nruns = fields["runs"], npages > 0, nruns > 0, nruns <= npages else {
            throw FormatError(description: "\(path) line 1: npages and runs must be positive, runs <= npages")
        }
        var runs: [Run] = []
        runs.reserveCapacity(Int(nruns))
        var total: UInt64 = 0
        for (i, line) in lines.dropFirst().enumerated() where !line.isEmpty {
            let f = line.split(separator: " ")
            guard f.count == 2, let first = UInt64(f[0]), let count = UInt64(f[1]), count > 0,
                  first <= UInt64.max / page - count else {
                throw FormatError(description: "\(path) line \(i + 2): `\(line.prefix(60))` is not FIRST_PFN COUNT")
            }
            if let last = runs.last, first < last.first + last.count {
                throw FormatError(description: "\(path) line \(i + 2): run at frame \(first) overlaps or precedes the one before")
            }
            runs.append(Run(first: first, count: count))
            total += count
            guard runs.count <= nruns, total <= npages else {
                throw FormatError(description: "\(path) line \(i + 2): more frames than the header's \(npages) pages in \(nruns) runs")
            }
        }
        guard runs.count == nruns, total == npages else {
            throw FormatError(description: "\(path): \(runs.count) runs of \(total) pages, the header says \(nruns) runs of \(npages) (truncated?)")
        }
        return WorkloadFrames(pageCount: npages, runs: runs)
    }

    /// The byte ranges to read: the runs, with gaps of at most `gapPages` read through when the
    /// gap is guest RAM (`ram`, when given), since one read of a few pages more costs less than
    /// another `virDomainMemoryPeek` call, and a hole in the memory map is never read.
    func regions(gapPages: UInt64 = 16, ram: [(start: UInt64, length: UInt64)]? = nil) -> [(start: UInt64, length: UInt64)] {
        var out: [(start: UInt64, length: UInt64)] = []
        for r in runs {
            if let last = out.last, r.first * Self.page <= last.start + last.length + gapPages * Self.page,
               ram.map({ Self.isRAM(last.start + last.length, r.first * Self.page, in: $0) }) ?? true {
                out[out.count - 1].length = (r.first + r.count) * Self.page - last.start
            } else {
                out.append((r.first * Self.page, r.count * Self.page))
            }
        }
        return out
    }

    /// Whether every run lies inside the guest's RAM (its /proc/iomem System RAM).
    func lies(within ram: [(start: UInt64, length: UInt64)]) -> Bool {
        runs.allSatisfy { Self.isRAM($0.first * Self.page, ($0.first + $0.count) * Self.page, in: ram) }
    }

    private static let page = UInt64(MemoryOracle.pageSize)

    /// Whether the bytes [a, b) lie inside one range of `ram`.
    private static func isRAM(_ a: UInt64, _ b: UInt64, in ram: [(start: UInt64, length: UInt64)]) -> Bool {
        ram.contains { a >= $0.start && b <= $0.start + $0.length }
    }
}
