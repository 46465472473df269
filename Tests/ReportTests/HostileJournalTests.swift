import Foundation
import Journal
import Testing
@testable import Report

/// Every hostile journal (Tests/HostileInputs/journals) is either refused with its line named
/// or read and never reported as a pass: in the outcome, the JUnit (which a real XML parser
/// reads) and the terminal text (no escape sequence reaches it). Nothing crashes; a hang stops
/// the test, and the slowest journal's time is printed, not asserted.
struct HostileJournalTests {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("HostileInputs/journals").path

    @Test func noHostileJournalCrashesOrPasses() throws {
        let list = try String(contentsOfFile: "\(Self.folder)/expect.txt", encoding: .utf8)
        let cases = list.split(separator: "\n").map { $0.split(separator: "\t", maxSplits: 1).map(String.init) }
        #expect(cases.count >= 40)
        var slowest: Duration = .zero
        for c in cases {
            let path = "\(Self.folder)/\(c[0])", expect = c[1]
            let t0 = ContinuousClock.now
            if expect == "not passing" {
                let events = try Journal.read(path: path)
                let result = RunResult(journal: events)
                #expect(result.outcome != .passed, "\(path) reported as passed")
                #expect(result.scenarios.allSatisfy { $0.outcome != .passed } || result.outcome != .passed, "\(path)")
                let junit = result.junit()
                #expect((try? XMLParserCheck.parse(junit)) == true, "\(path): junit.xml is not XML")
                #expect(!junit.contains("failures=\"0\" errors=\"0\""), "\(path): an all-green JUnit suite")
                #expect(!result.text().unicodeScalars.contains { $0.value == 0x1B || $0.value == 0x07 || $0.value == 0x08 || $0.value == 0x202E }, "\(path): raw control characters in the text")
                #expect((try? result.json()) != nil, "\(path): results.json could not be written")
            } else {
                #expect { try Journal.read(path: path) } throws: { "\($0)".contains(path + expect) }
            }
            slowest = max(slowest, ContinuousClock.now - t0)
        }
        print("HostileJournalTests: \(cases.count) journals, the slowest read in \(slowest)")
    }
}
