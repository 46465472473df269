import Foundation
import Testing
@testable import Lab

/// Every hostile lab file (Tests/HostileInputs/labs) is refused, for the reason its case
/// names, without a crash (a hang stops the test; the slowest time is printed, not asserted).
struct HostileLabFileTests {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("HostileInputs/labs").path

    @Test func everyHostileLabFileIsRefusedForItsReason() throws {
        let list = try String(contentsOfFile: "\(Self.folder)/expect.txt", encoding: .utf8)
        let cases = list.split(separator: "\n").map { $0.split(separator: "\t", maxSplits: 1).map(String.init) }
        #expect(cases.count >= 40)
        var slowest: Duration = .zero
        for c in cases {
            let path = "\(Self.folder)/\(c[0])", expect = c[1]
            let t0 = ContinuousClock.now
            do {
                let lab = try LabFile.load(path: path)
                Issue.record("\(path) was accepted: \(lab.hosts.map(\.name))")
            } catch {
                #expect(error.diagnostics.contains { $0.message.contains(expect) }, "\(path): wanted `\(expect)`, got \(error)")
                #expect(error.diagnostics.allSatisfy { !$0.message.contains("\n") && $0.message.count < 1000 }, "\(path): \(error)")
            }
            slowest = max(slowest, ContinuousClock.now - t0)
        }
        print("HostileLabFileTests: \(cases.count) files, the slowest refused in \(slowest)")
    }
}
