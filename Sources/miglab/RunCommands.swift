import Journal
import ArgumentParser
import Foundation
import Lab
import Logging
import Report
import Runner
import Scenario
#if canImport(Glibc)
import Glibc
#endif

/// Exit codes, the same for every command (README, "Exit codes"):
/// 0 passed; 1 a scenario failed (the system under test misbehaved); 2 bad input (a scenario,
/// lab file, journal or path miglab cannot use); 3 incomplete (the journal ends before the run
/// did); 4 lab error (the lab could not do its job: boot, connect, prepare a device);
/// 64 a command-line usage error (ArgumentParser's own); 130 interrupted.
enum ExitStatus {
    static let failed: Int32 = 1
    static let badInput: Int32 = 2
    static let incomplete: Int32 = 3
    static let labError: Int32 = 4
    static let interrupted: Int32 = 130

    /// A run's status from its results: interrupted, then incomplete, then a failed scenario
    /// (a bug found matters most), then a lab error; 0 only when every scenario passed.
    static func of(_ result: RunResult) -> Int32 {
        if result.outcome == .interrupted { return interrupted }
        if result.outcome == .incomplete || result.scenarios.contains(where: { $0.outcome == .incomplete }) { return incomplete }
        if result.scenarios.contains(where: { $0.outcome == .failed }) { return failed }
        // Not passed with no scenario failed: the lab's trouble (a scenario's error, or the
        // run's own, such as a lab that could not be taken down).
        return result.outcome == .passed ? 0 : labError
    }
}

/// Writes a message to stderr, made safe for a terminal (`SafeText`): it may quote a guest,
/// a device or a file.
func printError(_ message: String) {
    FileHandle.standardError.write(Data((SafeText.lines(message) + "\n").utf8))
}

/// Expands folders to the .yaml/.yml files in them, sorted; files stay as given.
func scenarioFiles(_ paths: [String]) throws -> [String] {
    var out: [String] = []
    for p in paths {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: p, isDirectory: &isDir) else {
            printError("\(p): no such file or folder")
            throw ExitCode(ExitStatus.badInput)
        }
        if isDir.boolValue {
            let e = FileManager.default.enumerator(atPath: p)
            var found: [String] = []
            while let f = e?.nextObject() as? String {
                if f.hasSuffix(".yaml") || f.hasSuffix(".yml") { found.append((p as NSString).appendingPathComponent(f)) }
            }
            out += found.sorted()
        } else {
            out.append(p)
        }
    }
    return out
}

/// Parses every file; prints every diagnostic; nil when any file is bad.
func parseScenarios(_ files: [String]) -> [Scenario]? {
    var scenarios: [Scenario] = []
    var ok = true
    for f in files {
        do {
            scenarios.append(contentsOf: try ScenarioParser().scenarios(file: f))
        } catch {
            ok = false
            printError("\(error)")
        }
    }
    return ok ? scenarios : nil
}

/// `--tags` and `-k`, shared by `run` and `list`.
struct SelectionOptions: ParsableArguments {
    @Option(help: "Only scenarios whose tags match: comma-separated terms that must all hold, each a tag, !TAG or TAG|TAG (e.g. faults,!slow).")
    var tags: String?
    @Option(name: .customShort("k"), help: "Only scenarios whose name contains this (case-insensitive; repeatable: any of them).")
    var names: [String] = []

    func selection() throws -> ScenarioSelection {
        do { return try ScenarioSelection(tags: tags, namePatterns: names) } catch {
            throw ValidationError(error.description)
        }
    }
}

/// The parsed scenarios the selection takes; an empty selection is an error (a run of nothing
/// must not pass).
func selectedScenarios(_ paths: [String], _ options: SelectionOptions) throws -> [Scenario] {
    let files = try scenarioFiles(paths)
    let selection = try options.selection()
    guard let scenarios = parseScenarios(files) else { throw ExitCode(ExitStatus.badInput) }
    let chosen = scenarios.filter(selection.selects)
    if chosen.isEmpty {
        printError("no scenario in \(paths.joined(separator: " ")) matches\(options.tags.map { " --tags \($0)" } ?? "")\(options.names.map { " -k \($0)" }.joined()) (\(scenarios.count) read)")
        throw ExitCode(ExitStatus.badInput)
    }
    return chosen
}

/// `miglab list`: the scenarios the paths hold (and a selection takes), with their tags.
struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List scenarios with their tags; --tags and -k select as `run` does.")
    @Argument(help: "Scenario files or folders.") var paths: [String]
    @OptionGroup var selection: SelectionOptions

    func run() throws {
        let scenarios = try selectedScenarios(paths, selection)
        let tags = scenarios.map { $0.tags.isEmpty ? "-" : $0.tags.joined(separator: ",") }
        let nameWidth = scenarios.map(\.name.count).max() ?? 0, tagWidth = tags.map(\.count).max() ?? 0
        for (s, t) in zip(scenarios, tags) {
            print(s.name.padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  "
                  + t.padding(toLength: tagWidth, withPad: " ", startingAt: 0) + "  " + s.file)
        }
    }
}

struct ValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate", abstract: "Check scenario files against the scenario format (and, with --lab, against what a lab file's hosts offer).")
    @Argument(help: "Scenario files or folders.") var paths: [String]
    @Option(help: "Lab file: refuse faults its hosts cannot inject (kill-qemu needs `ssh:`, network-partition `link:` too).") var lab: String?

    func run() throws {
        let files = try scenarioFiles(paths)
        guard let scenarios = parseScenarios(files) else { throw ExitCode(ExitStatus.badInput) }
        var labFile: LabFile?
        if let lab {
            do { labFile = try LabFile.load(path: lab) } catch {
                printError("\(error)")
                throw ExitCode(ExitStatus.badInput)
            }
        }
        var ok = true
        for s in scenarios {
            if let labFile {
                let problems = s.unmetNeeds(lab: "lab file \(labFile.file)") { name, c in labFile.offers(host: name).map { $0.contains(c) } }
                let missing = s.visitedHosts.filter { labFile[host: $0] == nil }
                if !missing.isEmpty {
                    printError("\(s.file):1:1: error: the scenario uses host\(missing.count == 1 ? "" : "s") \(missing.joined(separator: ", ")), which lab file \(labFile.file) does not name")
                    ok = false
                }
                for p in problems { printError("\(p)") }
                if !problems.isEmpty || !missing.isEmpty { ok = false; continue }
            }
            print("\(s.file): ok (\(s.name), \(s.flattenedSteps.count) steps)")
        }
        if !ok { throw ExitCode(ExitStatus.badInput) }
    }
}

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Run scenarios; with no --lab on the built-in lab, brought up when needed.")
    @Argument(help: "Scenario files or folders.") var paths: [String]
    @Option(help: "Lab file naming the hosts (libvirt URIs) and their device pools; without it, the built-in lab.") var lab: String?
    @Flag(help: "Print the plan (devices per host, domain XML) and change nothing.") var dryRun = false
    @Option(help: "Write the JSON result here.") var json: String?
    @Option(help: "Write JUnit XML here.") var junit: String?
    @Option(help: "Folder for the journal, logs and guest console (default: artifacts/<time>).") var artifacts: String?
    @Flag(help: "Run on the virtual VFIO hosts (a VM with VFIO and the kernel's mtty; brought up when needed), not the built-in lab.") var vfio = false
    @Flag(help: "Leave the built-in lab (or the virtual VFIO hosts) up after the run when the run brought it up.") var keepLab = false
    @Flag(help: "Run on a QEMU older than 10 (results are not trustworthy).") var allowOldQemu = false
    @Option(help: "The built-in lab's QEMU binary (your own build; default /usr/bin/qemu-system-x86_64).") var qemu: String?
    @Option(help: "The libvirt daemon binary the built-in lab's two hosts run (your own build; the lab must be down or already run it).") var libvirtd: String?
    @Option(name: .customLong("repeat"), help: "Run each scenario N times (in rounds over the selection); results get pass counts, failure rates with 95% intervals and distributions.") var repeatCount: Int?
    @Flag(help: "Stop at the first run that does not pass (up to --repeat N runs of each, \(Repetition.untilFailBound) without it).") var untilFail = false
    @Option(help: "Run the K-th of N deterministic shares of the selection (by scenario name), e.g. 2/4; `miglab merge` joins the shards' results.") var shard: String?
    @Flag(help: "Debug logging.") var verbose = false
    @Flag(help: .hidden) var disableMemoryOracle = false
    @OptionGroup var selection: SelectionOptions

    func run() async throws {
        bootstrapLogging(verbose: verbose)
        if let n = repeatCount, n < 1 || n > 10_000 { throw ValidationError("--repeat \(n): give a number of runs from 1 to 10000") }
        if (qemu != nil || libvirtd != nil) && (lab != nil || vfio) {
            throw ValidationError("--qemu and --libvirtd choose the built-in lab's binaries; a lab file names its hosts' `emulator`, and the virtual VFIO hosts bring their own")
        }
        let shard: Shard?
        do { shard = try self.shard.map { text throws(ScenarioSelection.SelectionError) in try Shard(text) } } catch { throw ValidationError(error.description) }
        var scenarios = try selectedScenarios(paths, selection)
        if let shard {
            let all = scenarios.count
            scenarios = scenarios.filter { shard.takes(name: $0.name) }
            // A share of nothing is no error: with more shards than scenarios some get none.
            if scenarios.isEmpty {
                print("miglab: shard \(shard) of \(all) scenario(s) takes none; nothing to run")
                return
            }
        }
        if dryRun {
            guard let lab else {
                printError("--dry-run plans passthrough devices from a lab file: give --lab FILE")
                throw ExitCode(ExitStatus.badInput)
            }
            do {
                let labFile = try LabFile.load(path: lab)
                print(try dryRunPlan(scenarios: scenarios, labFile: labFile, inventories: LabHostInventories(), image: nil))
            } catch {
                printError("\(error)")
                throw ExitCode(ExitStatus.badInput)
            }
            return
        }
        let stamp = ISO8601DateFormatter.string(from: Date(), timeZone: .current,
                                                formatOptions: [.withFullDate, .withTime, .withColonSeparatorInTime])
        let dir = artifacts ?? "artifacts/\(stamp.replacingOccurrences(of: ":", with: ""))"
        let provider: LabProvider
        if vfio && lab != nil {
            printError("--vfio runs on the virtual VFIO hosts, --lab on a lab file's: give one of them")
            throw ExitCode(ExitStatus.badInput)
        }
        if vfio {
            provider = VirtualVFIOLabProvider(keepUp: keepLab, artifactsDirectory: dir)
        } else if let lab {
            do {
                provider = HardwareLabProvider(file: try LabFile.load(path: lab))
            } catch {
                printError("\(error)")
                throw ExitCode(ExitStatus.badInput)
            }
        } else {
            let qemuBinary = qemu.map { URL(fileURLWithPath: $0).standardizedFileURL.path } ?? "/usr/bin/qemu-system-x86_64"
            let daemon = libvirtd.map { URL(fileURLWithPath: $0).standardizedFileURL.path } ?? BuiltinLab.systemLibvirtd
            provider = BuiltinLabProvider(lab: BuiltinLab(qemuBinary: qemuBinary, libvirtdBinary: daemon),
                                          allowOldQEMU: allowOldQemu, keepUp: keepLab)
        }
        let repetition = Repetition(times: repeatCount ?? (untilFail ? Repetition.untilFailBound : 1), untilFail: untilFail)
        let config = RunConfiguration(artifactsDirectory: dir, liveProgress: isatty(2) == 1,
                                      memoryOracleEnabled: !disableMemoryOracle, repetition: repetition, shard: shard?.description)
        let controller = try RunController(config: config, provider: provider)
        print("miglab: journal \(controller.journal.path)")
        let task = Task { await controller.run(scenarios) }
        let signals = [SIGINT, SIGTERM, SIGHUP].map { sig -> DispatchSourceSignal in
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig)
            s.setEventHandler {
                printError("\nmiglab: signal \(sig): stopping, cleaning up")
                task.cancel()
            }
            s.resume()
            return s
        }
        let passed = await task.value
        signals.forEach { $0.cancel() }
        let result = RunResult(journal: try Journal.read(path: controller.journal.path))
        try writeReports(result, dir: dir, json: json, junit: junit)
        print(result.text())
        let status = ExitStatus.of(result)
        if status != 0 { throw ExitCode(status) }
        // The runner's own view agrees (both come from the journal); never a green it did not see.
        if !passed { throw ExitCode(ExitStatus.failed) }
    }
}

/// results.json, junit.xml and report.html in the run's folder (and copies where asked).
func writeReports(_ result: RunResult, dir: String, json: String?, junit: String?, html: String? = nil) throws {
    let data = try result.json()
    try data.write(to: URL(fileURLWithPath: "\(dir)/results.json"))
    try result.junit().write(toFile: "\(dir)/junit.xml", atomically: true, encoding: .utf8)
    let page = HTMLReport(result: result, artifactsDirectory: dir).render()
    try page.write(toFile: "\(dir)/report.html", atomically: true, encoding: .utf8)
    if let json { try data.write(to: URL(fileURLWithPath: json)) }
    if let junit { try result.junit().write(toFile: junit, atomically: true, encoding: .utf8) }
    if let html { try page.write(toFile: html, atomically: true, encoding: .utf8) }
}

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report", abstract: "Rebuild results.json, junit.xml and report.html from a run's journal (also of a killed run).")
    @Argument(help: "The run's artifacts folder (holding journal.jsonl).") var directory: String
    @Option(help: "Also write the JSON result here.") var json: String?
    @Option(help: "Also write JUnit XML here.") var junit: String?
    @Option(help: "Also write the HTML report (self-contained, works offline) here; DIR/report.html is always written.") var html: String?

    func run() throws {
        let events: [JournalEvent]
        do {
            events = try Journal.read(path: "\(directory)/journal.jsonl")
        } catch {
            printError("\(error)")
            throw ExitCode(ExitStatus.badInput)
        }
        let result = RunResult(journal: events)
        let unknown = events.filter { $0.kind == .unknown }.count
        if unknown > 0 {
            printError("warning: \(directory)/journal.jsonl has \(unknown) event(s) of kinds this miglab does not know (a newer miglab's journal?); they are left out of the report")
        }
        try writeReports(result, dir: directory, json: json, junit: junit, html: html)
        print(result.text())
        let status = ExitStatus.of(result)
        if status != 0 { throw ExitCode(status) }
    }
}

/// `miglab merge`: the shards of a CI fleet as one run.
struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge", abstract: "Merge runs (the shards of `run --shard K/N`) into one results.json, junit.xml and report.html.")
    @Argument(help: "The runs' artifacts folders.") var directories: [String]
    @Option(help: "Folder for the merged results (created).") var output: String = "merged"

    func run() throws {
        var parts: [(source: String, result: RunResult)] = []
        for d in directories {
            do { parts.append((d, try RunResult.load(directory: d))) } catch {
                printError("\(error)")
                throw ExitCode(ExitStatus.badInput)
            }
        }
        let merged = RunResult.merged(parts)
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        let data = try merged.json()
        try data.write(to: URL(fileURLWithPath: "\(output)/results.json"))
        try merged.junit().write(toFile: "\(output)/junit.xml", atomically: true, encoding: .utf8)
        // The merged page links each scenario's logs in its own shard's folder.
        try HTMLReport(result: merged, artifactsDirectory: nil, title: "miglab run (\(directories.count) merged)").render()
            .write(toFile: "\(output)/report.html", atomically: true, encoding: .utf8)
        print(merged.text())
        let status = ExitStatus.of(merged)
        if status != 0 { throw ExitCode(status) }
    }
}

/// `miglab compare A B`: is B worse than A?
struct CompareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Compare two runs per scenario: pass rates with 95% intervals, Fisher's exact test, medians of migration time and downtime, environment; exit 1 when B is significantly worse.")
    @Argument(help: "Run A's artifacts folder (the baseline).") var a: String
    @Argument(help: "Run B's artifacts folder (the candidate).") var b: String
    @Option(help: "Write the comparison as JSON here.") var json: String?
    @Option(help: "Write the comparison as a self-contained HTML page here.") var html: String?

    func run() throws {
        let ra: RunResult, rb: RunResult
        do {
            ra = try RunResult.load(directory: a)
            rb = try RunResult.load(directory: b)
        } catch {
            printError("\(error)")
            throw ExitCode(ExitStatus.badInput)
        }
        let c = Comparison(a: ra, named: a, b: rb, named: b)
        if let json { try c.json().write(to: URL(fileURLWithPath: json)) }
        if let html { try c.html().write(toFile: html, atomically: true, encoding: .utf8) }
        print(c.text())
        if c.bIsWorse { throw ExitCode(ExitStatus.failed) }
    }
}
