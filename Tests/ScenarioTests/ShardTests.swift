import Testing
@testable import Scenario

struct ShardTests {
    let names = (1...60).map { "scenario-\($0)" } + ["bandwidth-by-model[bandwidth=100,model=virtio-net]", "smoke", "pingpong"]

    @Test func shardsAreDisjointAndCoverTheSelection() throws {
        for n in [1, 2, 3, 7] {
            let shards = try (1...n).map { try Shard("\($0)/\(n)") }
            for name in names {
                #expect(shards.filter { $0.takes(name: name) }.count == 1, "\(name) in \(n) shards")
            }
        }
        // Not all in one: the hash spreads.
        let two = try Shard("1/2")
        let first = names.filter { two.takes(name: $0) }.count
        #expect(first > 10 && first < names.count - 10, "\(first) of \(names.count)")
    }

    @Test func aScenarioStaysInItsShardWhenOthersAreAdded() throws {
        let s = try Shard("2/3")
        let before = names.filter { s.takes(name: $0) }
        let after = (names + ["new-1", "new-2", "zzz"]).filter { s.takes(name: $0) }
        #expect(Set(before).isSubset(of: Set(after)))
    }

    @Test func badShardsAreRefused() {
        for text in ["0/2", "3/2", "2", "a/b", "1/0", "-1/2", "1/2/3", ""] {
            #expect(throws: ScenarioSelection.SelectionError.self, "\(text)") { try Shard(text) }
        }
    }
}
