import ArgumentParser
import Foundation
import Libvirt
import PCI

/// `miglab inventory`: PCI devices of a host (issue 4).
struct InventoryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inventory", abstract: "List the PCI devices of a host, with what matters for passthrough and migration.",
        discussion: """
            Without --uri, reads this machine through libpci and sysfs, and asks VFIO for the migration \
            flags of each vfio-bound function nobody holds open. With --uri, asks that host's libvirt \
            daemon (node-device API); FLR, AER, ACS and reset methods are then unknown (?).
            """)

    @Flag(help: "Print the complete inventory as JSON.") var json = false
    @Option(help: "A libvirt URI (qemu+ssh://host/system, test:///default, ...): inventory that host through libvirt.")
    var uri: String?
    @Option(help: ArgumentHelp("Read this sysfs PCI directory instead of /sys/bus/pci.", visibility: .hidden))
    var sysfsRoot = "/sys/bus/pci"
    @Flag(help: "Do not open vfio-bound devices to read their migration flags.") var noVfioProbe = false

    func run() async throws {
        let inventory: PCIInventory
        if let uri {
            let connection = try await Connection.open(uri: uri)
            inventory = try RemoteInventory(connection: connection).scan()
        } else {
            let local = noVfioProbe ? LocalInventory(sysfsRoot: sysfsRoot, migrationProbe: nil) : LocalInventory(sysfsRoot: sysfsRoot)
            inventory = try local.scan()
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(inventory), as: UTF8.self))
        } else {
            print(inventory.table())
        }
    }
}
