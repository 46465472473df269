import ArgumentParser
import Foundation
import Lab
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
    @Option(help: "A lab file: inventory one of its hosts (--host), marking the devices of its pools; only pool devices are ever opened.")
    var lab: String?
    @Option(help: "The lab file's host to inventory (with --lab).") var host: String?

    func validate() throws {
        if (lab == nil) != (host == nil) { throw ValidationError("--lab and --host go together: --lab FILE --host NAME") }
        if lab != nil && uri != nil { throw ValidationError("--uri and --lab name the host twice; give one") }
    }

    func run() async throws {
        let inventory: PCIInventory
        var poolNote = ""
        if let lab, let host {
            let file: LabFile
            do { file = try LabFile.load(path: lab) } catch {
                printError("\(error)")
                throw ExitCode(ExitStatus.badInput)
            }
            guard let h = file[host: host] else {
                printError("\(lab): no host `\(host)`; it has \(file.hosts.map(\.name).joined(separator: ", "))")
                throw ExitCode(ExitStatus.badInput)
            }
            inventory = try LabHostInventories(probePoolDevices: !noVfioProbe).inventory(of: h)
            let inPools = inventory.devices.compactMap { d -> String? in
                let pools = h.pools(containing: d).map(\.name)
                return pools.isEmpty ? nil : "\(d.address) (\(pools.joined(separator: ", ")))"
            }
            poolNote = "\nhost \(host) of \(lab): " + (inPools.isEmpty ? "no device is in a pool" : "in pools: " + inPools.joined(separator: ", "))
                + "; every other device is never touched"
        } else if let uri {
            let connection = try await Connection.open(uri: uri)
            inventory = try RemoteInventory(connection: connection).scan()
        } else {
            let local = noVfioProbe ? LocalInventory(sysfsRoot: sysfsRoot, migrationProbe: nil) : LocalInventory(sysfsRoot: sysfsRoot)
            inventory = try local.scan()
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            // snake_case, like results.json and every other JSON miglab writes.
            encoder.keyEncodingStrategy = .convertToSnakeCase
            print(String(decoding: try encoder.encode(inventory), as: UTF8.self))
        } else {
            print(inventory.table() + poolNote)
        }
    }
}
