import ArgumentParser
import Foundation
import Lab
import Qualification
import Scenario
import VFIO

/// `miglab qualify`: runs the conformance suite of the VFIO migration uAPI, DMA logging and the
/// virtio device context against the reference device or a real VFIO device.
struct QualifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "qualify",
        abstract: "Qualify a migration-capable device against the VFIO migration rules.",
        discussion: """
            Exit status: 0 when no check fails, 1 when a check fails, 2 when the device cannot be opened.
            """)

    @Flag(help: "Qualify the built-in reference device.")
    var reference = false

    @Option(help: "With --reference: break one rule on purpose (names: --list-bugs).")
    var bug: String?

    @Option(help: "Qualify the VFIO device at this PCI address (DDDD:BB:DD.F), or the mdev with this UUID. A PCI device must already be bound to vfio-pci or a variant driver.")
    var device: String?

    @Flag(help: "Qualify an mtty mdev on the virtual VFIO hosts (brought up when needed): created through libvirt, qualified by miglab inside the host VM, removed.")
    var vfioHost = false

    @Option(help: "With --vfio-host: the mtty type to qualify (mtty-2 or mtty-1).")
    var mdevType = "mtty-2"

    @Option(help: "Run only the checks whose id starts with this (repeatable), e.g. --only fsm.pairs --only data.resume.")
    var only: [String] = []

    @Option(help: "Also write every check's id, rule, source, verdict and detail to this JSON file.")
    var json: String?

    @Flag(help: "List the seeded bugs of the reference device and the checks that catch each.")
    var listBugs = false

    @Flag(help: "List the checks with their rules and sources.")
    var listChecks = false

    func validate() throws {
        let modes = [reference, device != nil, vfioHost, listBugs, listChecks].filter { $0 }.count
        guard modes == 1 else {
            throw ValidationError("Give exactly one of --reference, --device ADDRESS, --vfio-host, --list-bugs, --list-checks.")
        }
        if let bug {
            guard reference else { throw ValidationError("--bug only applies to --reference.") }
            guard SeededBug(rawValue: bug) != nil else {
                throw ValidationError("Unknown bug '\(bug)'. Known: \(SeededBug.allCases.map(\.rawValue).joined(separator: ", ")).")
            }
        }
        if json != nil && (listBugs || listChecks) {
            throw ValidationError("--json applies to a qualification run.")
        }
    }

    func run() async throws {
        if listBugs {
            for bug in SeededBug.allCases {
                let caughtBy = QualificationSuite.expectedFailures[bug, default: []].sorted().joined(separator: ", ")
                print("\(bug.rawValue)\n    \(bug.summary)\n    caught by: \(caughtBy)")
            }
            return
        }
        if listChecks {
            for check in QualificationSuite.checks {
                print("\(check.id)\n    \(check.rule)\n    source: \(check.source)")
            }
            return
        }
        if vfioHost {
            try await qualifyOnVirtualHost()
            return
        }
        let target: QualificationTarget
        if let device {
            do {
                target = try QualificationTarget.hardware(address: device)
            } catch {
                printError("miglab qualify: \(error)")
                throw ExitCode(ExitStatus.badInput)
            }
        } else {
            target = QualificationTarget.reference(bug: bug.flatMap(SeededBug.init(rawValue:)))
        }
        let checks = only.isEmpty ? QualificationSuite.checks : QualificationSuite.checks.filter { c in only.contains { c.id.hasPrefix($0) } }
        guard !checks.isEmpty else {
            printError("miglab qualify: no check id starts with \(only.joined(separator: " or ")); --list-checks lists them")
            throw ExitCode(ExitStatus.badInput)
        }
        let report = QualificationRunner.run(checks, on: target)
        print(report.renderTable())
        if let json {
            try report.jsonData().write(to: URL(fileURLWithPath: json))
        }
        if !report.passed { throw ExitCode.failure }
    }

    /// `--vfio-host`: the lab brings the virtual hosts up when they are down (and takes them down
    /// again), creates the mdev, runs this same command with `--device` inside L1, removes it.
    func qualifyOnVirtualHost() async throws {
        bootstrapLogging(verbose: false)
        let lab = VirtualVFIOLab()
        let broughtUp = !(await lab.isUp())
        let result: VirtualVFIOLab.DeviceQualification
        do {
            try await lab.up()
            result = try await lab.qualifyMdev(type: mdevType, checks: only)
        } catch {
            if broughtUp { try? await lab.down() }
            printError("miglab qualify --vfio-host: \(error)")
            throw ExitCode(ExitStatus.labError)
        }
        if broughtUp { try? await lab.down() }
        print("mtty mdev \(result.mdevUUID) (\(result.mdevType)) on a virtual VFIO host:")
        print(SafeText.lines(result.output.trimmingCharacters(in: .whitespacesAndNewlines)))
        if let json, let data = result.reportJSON {
            try data.write(to: URL(fileURLWithPath: json))
        }
        if !result.kernelTrouble.isEmpty {
            print("FAIL  the host kernel broke while the device was qualified: \(result.kernelTrouble.joined(separator: "; ")) (console: \(lab.consoleLog))")
            throw ExitCode.failure
        }
        guard let status = result.status else { throw ExitCode(ExitStatus.labError) }
        if status != 0 { throw ExitCode(status) }
    }
}
