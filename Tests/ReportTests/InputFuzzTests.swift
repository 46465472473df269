import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Journal
import Lab
import Report
import Scenario
import Testing

/// A fuzz target for miglab's readers of outside input: scenario files, lab files and
/// journals, mutated from the library's own files and from the hostile corpus (byte flips,
/// YAML and JSON tokens put in, lines duplicated and cut, truncations). Every mutant must be
/// read or refused with one-line messages at a place in the file, never crash (a crash kills
/// this test process, with the seed printed first), never hang (CI would stop). A bounded number of mutants
/// per run, from a new seed each run (`MIGLAB_FUZZ_SEED` replays one); what it found became
/// cases of Tests/HostileInputs.
///
/// In-house rather than x-sheep/swift-property-based: the mirror's 2.0.1 needs swift-gen and
/// swift-macro-toolkit, which the package mirror does not have, and swift-syntax, which would
/// add minutes of build to every CI run; libFuzzer needs a second build of every target.
struct InputFuzzTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    static let mutantsPerKind = 1500

    /// SplitMix64: small, fast, and the same sequence for the same seed everywhere.
    struct Seeded: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static let seed: UInt64 = {
        let s = ProcessInfo.processInfo.environment["MIGLAB_FUZZ_SEED"].flatMap { UInt64($0) } ?? UInt64.random(in: 1...UInt64.max)
        // Printed before anything runs: a crash ends the process, and this line says how to replay it.
        print("InputFuzzTests: MIGLAB_FUZZ_SEED=\(s)")
        return s
    }()

    static let yamlTokens = ["*a", "&a ", "{", "}", "[", "]", ": ", "- ", "010", "4:16", "0b11", ".inf", ".nan", "~", "!!binary ", "!!python/object ",
                             "\"", "'", "#", "\t", "\n", "\r\n", "\u{FEFF}", "\u{1B}[31m", "\u{202E}", "\u{FFFE}", "?", "|", ">", "%YAML 1.1\n",
                             "<<: *a", "99999999999999999999", "-0", "1e999", "${x}", "null", "yes", "\u{0}"]
    static let jsonTokens = ["{", "}", "[", "]", ",", ":", "\"", "null", "true", "1e999", "-1", "NaN", "\\u0000", "\\ud800", "\u{1B}", "\u{FFFE}", "9999999999999999999999"]

    static func mutate(_ data: [UInt8], tokens: [String], using rng: inout Seeded) -> [UInt8] {
        var d = data
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            let at = d.isEmpty ? 0 : Int.random(in: 0..<d.count, using: &rng)
            switch Int.random(in: 0..<6, using: &rng) {
            case 0 where !d.isEmpty: d[at] ^= UInt8.random(in: 1...255, using: &rng)
            case 1: d.insert(contentsOf: Array(tokens.randomElement(using: &rng)!.utf8), at: at)
            case 2 where !d.isEmpty: d.removeSubrange(at..<min(d.count, at + Int.random(in: 1...40, using: &rng)))
            case 3:
                // A line repeated (duplicate keys, more steps).
                let lines = d.split(separator: 0x0A, omittingEmptySubsequences: false)
                if let line = lines.randomElement(using: &rng) { d.insert(contentsOf: Array(line) + [0x0A], at: at) }
            case 4: d = Array(d.prefix(at))
            default:
                // A run of another part of the file put here (nesting, aliases far from anchors).
                if d.count > 2 {
                    let from = Int.random(in: 0..<d.count, using: &rng)
                    d.insert(contentsOf: d[from..<min(d.count, from + Int.random(in: 1...200, using: &rng))], at: at)
                }
            }
        }
        return d
    }

    static func files(_ folder: String, suffix: String) -> [String] {
        let e = FileManager.default.enumerator(atPath: folder)
        var out: [String] = []
        while let f = e?.nextObject() as? String {
            if f.hasSuffix(suffix) { out.append("\(folder)/\(f)") }
        }
        return out.sorted()
    }

    static func write(_ bytes: [UInt8], _ path: String) {
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
    }

    /// Feeds `mutantsPerKind` mutants of `corpus` to `read` (through a file at `path`, as
    /// miglab reads them). A hang would stop this test, and CI with it; the slowest mutant's
    /// time is printed as a figure, not asserted (tests assert behaviour, never timings).
    static func fuzz(_ kind: String, corpus: [[UInt8]], tokens: [String], salt: UInt64,
                     read: (_ path: String, _ mutant: Int) -> Void) {
        var rng = Seeded(state: seed ^ salt)
        let path = NSTemporaryDirectory() + "miglab-fuzz-\(seed)-\(kind)"
        defer { try? FileManager.default.removeItem(atPath: path) }
        var slowest: Duration = .zero
        for i in 0..<mutantsPerKind {
            write(mutate(corpus.randomElement(using: &rng)!, tokens: tokens, using: &rng), path)
            let t0 = ContinuousClock.now
            read(path, i)
            slowest = max(slowest, ContinuousClock.now - t0)
        }
        print("InputFuzzTests: \(mutantsPerKind) \(kind) mutants, the slowest read in \(slowest)")
    }

    static func contents(_ paths: [String]) -> [[UInt8]] {
        paths.compactMap { FileManager.default.contents(atPath: $0).map { [UInt8]($0) } }
    }

    @Test func scenarioFilesNeverCrashTheReader() throws {
        var refused = 0
        let corpus = Self.contents(Self.files("\(Self.root)/scenarios", suffix: ".yaml") + Self.files("\(Self.root)/Tests/HostileInputs/scenarios", suffix: ".yaml"))
        Self.fuzz("scenario.yaml", corpus: corpus, tokens: Self.yamlTokens, salt: 0) { path, i in
            do throws(ScenarioErrors) {
                _ = try ScenarioParser().scenarios(file: path)
            } catch {
                refused += 1
                #expect(error.diagnostics.allSatisfy { $0.location.file == path && !$0.message.contains("\n") && $0.message.count < 2000 },
                        "mutant \(i) (seed \(Self.seed)): \(error)")
            }
        }
        #expect(refused > 0)
    }

    @Test func labFilesNeverCrashTheReader() throws {
        let corpus = Self.contents(Self.files("\(Self.root)/Tests/HostileInputs/labs", suffix: ".yaml")) + [Array("""
        version: 1
        locks: /tmp/miglab-locks
        stream_proxy: {listen: 10.0.0.100}
        hosts:
          a:
            uri: qemu+ssh://root@node1/system
            ssh: root@node1
            migration_address: 10.0.0.1
            link: {interface: eth1}
            pools:
              - {name: nics, addresses: ["0000:3b:00.2", "0000:3b:00.3"]}
              - {name: mlx, vendor_device: "15b3:101e", driver: mlx5_vfio_pci, qemu_properties: {enable-migration: "on"}}
            mdev_types:
              - {type: mtty-2, parent: mtty, instances: 2}
          b: {uri: qemu+tcp://10.0.0.2/system, migration_address: node2.lab, accelerator: kvm}

        """.utf8)]
        Self.fuzz("lab.yaml", corpus: corpus, tokens: Self.yamlTokens, salt: 0x5A5A) { path, i in
            do throws(LabFileErrors) {
                _ = try LabFile.load(path: path)
            } catch {
                #expect(error.diagnostics.allSatisfy { !$0.message.contains("\n") && $0.message.count < 2000 }, "mutant \(i) (seed \(Self.seed)): \(error)")
            }
        }
    }

    @Test func journalsNeverCrashTheReport() throws {
        let corpus = Self.contents(Self.files("\(Self.root)/Tests/HostileInputs/journals", suffix: ".jsonl")).filter { $0.count < 100_000 }
        Self.fuzz("journal.jsonl", corpus: corpus, tokens: Self.jsonTokens, salt: 0xA5A5) { path, i in
            guard let events = try? Journal.read(path: path) else { return }
            let result = RunResult(journal: events)
            #expect((try? XMLParserCheck.parse(result.junit())) == true, "mutant \(i) (seed \(Self.seed)): junit.xml is not XML")
            #expect((try? result.json()) != nil, "mutant \(i) (seed \(Self.seed))")
            #expect(!result.text().unicodeScalars.contains { $0.value == 0x1B }, "mutant \(i) (seed \(Self.seed))")
        }
    }
}
