import ArgumentParser
import Foundation
import Qualification
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

    @Option(help: "Qualify the VFIO device at this PCI address (DDDD:BB:DD.F). The device must already be bound to vfio-pci or a variant driver.")
    var device: String?

    @Option(help: "Also write every check's id, rule, source, verdict and detail to this JSON file.")
    var json: String?

    @Flag(help: "List the seeded bugs of the reference device and the checks that catch each.")
    var listBugs = false

    @Flag(help: "List the checks with their rules and sources.")
    var listChecks = false

    func validate() throws {
        let modes = [reference, device != nil, listBugs, listChecks].filter { $0 }.count
        guard modes == 1 else {
            throw ValidationError("Give exactly one of --reference, --device ADDRESS, --list-bugs, --list-checks.")
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
        let target: QualificationTarget
        if let device {
            do {
                target = try QualificationTarget.hardware(address: device)
            } catch {
                FileHandle.standardError.write(Data("miglab qualify: \(error)\n".utf8))
                throw ExitCode(2)
            }
        } else {
            target = QualificationTarget.reference(bug: bug.flatMap(SeededBug.init(rawValue:)))
        }
        let report = QualificationRunner.run(on: target)
        print(report.renderTable())
        if let json {
            try report.jsonData().write(to: URL(fileURLWithPath: json))
        }
        if !report.passed { throw ExitCode.failure }
    }
}
