import Testing
@testable import Scenario

@Suite struct ScenarioSelectionTests {
    let library: [(String, [String])] = [
        ("abort-source", ["faults"]),
        ("network-partition", ["faults", "slow"]),
        ("serial-loopback", ["devices"]),
        ("mtty-abort", ["vfio", "slow", "faults", "devices"]),
        ("kill-qemu-destination", ["faults"]),
        ("smoke", []),
    ]

    func names(_ s: ScenarioSelection) -> [String] { library.filter { s.selects(name: $0.0, tags: $0.1) }.map(\.0) }

    @Test func termsMustAllHold() throws {
        #expect(names(try ScenarioSelection(tags: "faults,!slow")) == ["abort-source", "kill-qemu-destination"])
        #expect(names(try ScenarioSelection(tags: "vfio|devices")) == ["serial-loopback", "mtty-abort"])
        #expect(names(try ScenarioSelection(tags: "devices|faults, !vfio")) == ["abort-source", "network-partition", "serial-loopback", "kill-qemu-destination"])
        #expect(names(ScenarioSelection()) == library.map(\.0))
    }

    @Test func namePatternsAreCaseInsensitiveAlternatives() throws {
        #expect(names(try ScenarioSelection(tags: nil, namePatterns: ["KILL"])) == ["kill-qemu-destination"])
        #expect(names(try ScenarioSelection(tags: nil, namePatterns: ["abort", "smoke"])) == ["abort-source", "mtty-abort", "smoke"])
        #expect(names(try ScenarioSelection(tags: "!vfio", namePatterns: ["abort"])) == ["abort-source"])
    }

    @Test func badExpressionsSayWhatIsWrong() {
        for bad in ["", "faults,,slow", "!", "a|", "fa ults", "!!slow"] {
            #expect(throws: ScenarioSelection.SelectionError.self, "\(bad)") { try ScenarioSelection(tags: bad) }
        }
    }
}
