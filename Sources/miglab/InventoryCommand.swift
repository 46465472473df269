import ArgumentParser

/// `miglab inventory`: PCI devices of a host (issue 4).
struct InventoryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inventory", abstract: "List the PCI devices of a host, with what matters for passthrough and migration.")
    func run() async throws {
        throw ValidationError("not implemented yet")
    }
}
