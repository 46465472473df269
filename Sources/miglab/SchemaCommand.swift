import ArgumentParser
import Scenario

/// `miglab schema`: the scenario format's JSON Schema, generated from the registry the parser
/// reads with (scenarios/schema.json is its output; a test keeps the two equal).
struct SchemaCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schema", abstract: "Print the JSON Schema (draft 2020-12) of the scenario format.")

    func run() throws {
        print(ScenarioFormat.jsonSchema(), terminator: "")
    }
}
