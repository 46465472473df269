import ArgumentParser

/// `miglab qualify`: device qualification through the VFIO uAPI (issue 5).
struct QualifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "qualify", abstract: "Qualify a migration-capable device against the VFIO migration rules.")
    func run() async throws {
        throw ValidationError("not implemented yet")
    }
}
