import Foundation
import Testing
import VFIO
@testable import Qualification

/// The suite against the reference device: clean it passes, with every seeded bug it fails
/// exactly the checks the bug breaks.
struct ReferenceQualificationTests {
    @Test func cleanReferencePassesEveryCheck() {
        let report = QualificationRunner.run(on: .reference())
        let failures = report.results.filter { $0.verdict == .fail }.map { "\($0.id): \($0.detail)" }
        #expect(failures.isEmpty, "\(failures)")
        for result in report.results where result.verdict == .skip {
            #expect(!result.detail.isEmpty, "\(result.id) skipped without a reason")
        }
        #expect(report.summary.checks == QualificationSuite.checks.count)
        #expect(report.passed)
    }

    @Test(arguments: SeededBug.allCases)
    func seededBugFailsExactlyItsChecks(_ bug: SeededBug) throws {
        let expected = try #require(QualificationSuite.expectedFailures[bug], "no expected failures listed for \(bug)")
        #expect(!expected.isEmpty)
        let report = QualificationRunner.run(on: .reference(bug: bug))
        #expect(!report.passed)
        #expect(report.failedCheckIDs == expected, "\(bug): failed \(report.failedCheckIDs.sorted()), expected \(expected.sorted())")
    }

    @Test func expectationsNameRealChecks() {
        let ids = Set(QualificationSuite.checks.map(\.id))
        for (bug, failing) in QualificationSuite.expectedFailures {
            #expect(failing.isSubset(of: ids), "\(bug) lists unknown checks \(failing.subtracting(ids))")
        }
        #expect(Set(QualificationSuite.expectedFailures.keys) == Set(SeededBug.allCases))
    }

    @Test func checksHaveUniqueIDsRulesAndSources() {
        let ids = QualificationSuite.checks.map(\.id)
        #expect(Set(ids).count == ids.count)
        for check in QualificationSuite.checks {
            #expect(!check.rule.isEmpty && !check.source.isEmpty, "\(check.id)")
            #expect(check.rule.hasSuffix("."), "\(check.id): a rule is one sentence")
        }
    }

    @Test func everyCombinationHasAPairsCheck() {
        let ids = Set(QualificationSuite.checks.map(\.id))
        for combination in MigrationCapabilities.definedCombinations {
            #expect(ids.contains("fsm.pairs.\(combination.slug)"))
        }
    }

    // How long the reference run takes is a figure, not a test (timings in tests are flaky by
    // design): ci/bench prints it.
}

/// What the report says, as a table and as JSON.
struct QualificationReportTests {
    static let report = QualificationRunner.run(on: .reference(bug: .dmaLogNotCleared))

    @Test func tableHasARowPerCheckAndASummary() {
        let lines = Self.report.renderTable().split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.first?.hasPrefix("VERDICT") == true)
        for result in Self.report.results {
            #expect(lines.contains { $0.contains(" \(result.id) ") }, "\(result.id)")
        }
        #expect(lines.contains { $0.hasPrefix("FAIL") && $0.contains("dma.report-clears") })
        #expect(lines.last == Self.report.summaryLine)
        #expect(Self.report.summaryLine.contains("1 failed"))
    }

    @Test func jsonListsEveryCheckWithIDRuleVerdictAndDetail() throws {
        let object = try JSONSerialization.jsonObject(with: try Self.report.jsonData()) as? [String: Any]
        let results = try #require(object?["results"] as? [[String: Any]])
        #expect(results.count == QualificationSuite.checks.count)
        for result in results {
            for key in ["id", "rule", "source", "verdict", "detail"] {
                #expect(result[key] is String, "\(key) missing in \(result)")
            }
        }
        let failed = results.filter { $0["verdict"] as? String == "fail" }.compactMap { $0["id"] as? String }
        #expect(failed == ["dma.report-clears"])
        let decoded = try JSONDecoder().decode(QualificationReport.self, from: try Self.report.jsonData())
        #expect(decoded.results == Self.report.results)
    }
}

/// A hardware target on a host without VFIO fails before any check, with the reason.
struct HardwareTargetTests {
    @Test func unboundDeviceIsAClearError() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("miglab-qualify-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createDirectory(atPath: root + "/sys/bus/pci/devices/0000:00:01.0", withIntermediateDirectories: true)
        let locator = VFIODeviceLocator(sysfsRoot: root + "/sys", devRoot: root + "/dev")
        #expect(throws: VFIOOpenError.self) { try QualificationTarget.hardware(address: "0000:00:01.0", locator: locator) }
        #expect(throws: VFIOOpenError.self) { try QualificationTarget.hardware(address: "0000:00:09.0", locator: locator) }
        #expect(throws: VFIOOpenError.invalidAddress("not-an-address")) { try QualificationTarget.hardware(address: "not-an-address", locator: locator) }
    }
}
