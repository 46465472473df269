import Foundation
import Testing
@testable import Scenario

/// Where the hostile-input corpus lives (Tests/HostileInputs, written by its make-corpus.py),
/// and what each file's refusal must say (its expect.txt: file, tab, text).
enum HostileCorpus {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("HostileInputs").path

    static func cases(_ folder: String) throws -> [(path: String, expect: String)] {
        let list = try String(contentsOfFile: "\(root)/\(folder)/expect.txt", encoding: .utf8)
        return list.split(separator: "\n").map { line in
            let parts = line.split(separator: "\t", maxSplits: 1).map(String.init)
            return ("\(root)/\(folder)/\(parts[0])", parts.count > 1 ? parts[1] : "")
        }
    }
}

/// Every hostile scenario file is refused, for the reason its case names, at a place in the
/// file, without a crash. A hang stops the test (and CI); the slowest file's time is printed
/// as a figure, never asserted.
struct HostileScenarioTests {
    @Test func everyHostileScenarioIsRefusedForItsReason() throws {
        let cases = try HostileCorpus.cases("scenarios")
        #expect(cases.count >= 100)
        var slowest: Duration = .zero
        for (path, expect) in cases {
            let t0 = ContinuousClock.now
            do {
                let s = try ScenarioParser().scenarios(file: path)
                Issue.record("\(path) was accepted: \(s.map(\.name))")
            } catch {
                #expect(error.diagnostics.contains { $0.message.contains(expect) }, "\(path): wanted `\(expect)`, got \(error)")
                #expect(error.diagnostics.allSatisfy { $0.location.file == path && $0.location.line >= 1 }, "\(path): \(error)")
                // One line each: a message never dumps the file.
                #expect(error.diagnostics.allSatisfy { !$0.message.contains("\n") && $0.message.count < 1000 }, "\(path): \(error)")
            }
            slowest = max(slowest, ContinuousClock.now - t0)
        }
        print("HostileScenarioTests: \(cases.count) files, the slowest refused in \(slowest)")
    }
}
