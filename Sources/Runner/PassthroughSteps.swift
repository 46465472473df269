import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Lab
import Libvirt
import PCI
import Scenario

/// Passthrough devices on a hardware lab: the plan and host-side set-up before boot, the
/// destination's own devices in each migration, and host-side resets.
extension ScenarioExecution {
    /// Plans the scenario's devices from the lab file's pools (refusing anything outside them
    /// before any host changes), locks them and prepares them on every host the guest visits.
    func preparePassthrough(_ labFile: LabFile, hosts visited: [String]) async throws -> PassthroughSession {
        progress.show("[\(scenario.name)] passthrough devices")
        let reader = LabHostInventories()
        var inventories: [String: PCIInventory] = [:]
        var controls: [String: any PassthroughHostControl] = [:]
        for name in visited {
            guard let fileHost = labFile[host: name] else {
                throw RunnerError.step("the scenario uses host `\(name)`, which \(labFile.file) does not define")
            }
            inventories[name] = try await onBlockingThread("inventory") { try reader.inventory(of: fileHost) }
            guard let connection = try host(name).connection else {
                throw RunnerError.step("host `\(name)` has no libvirt connection for its passthrough devices")
            }
            controls[name] = LibvirtPassthroughControl(connection: connection, sysfs: SysfsFunctionReset(host: fileHost))
        }
        let plan = try DevicePlanner(lab: labFile).plan(scenario, inventories: inventories)
        let owner = DeviceLockOwner.current(runID: URL(fileURLWithPath: config.artifactsDirectory).lastPathComponent)
        let session = try await PassthroughSession.prepare(plan: plan, lab: labFile, inventories: inventories,
                                                           controls: controls, owner: owner, logger: logger)
        var e = event(.note)
        e.message = "passthrough plan: " + plan.hosts.map { h in
            "\(h.host): " + h.devices.map { d in
                switch d.resource {
                case let .pci(f): "\(d.requirement)[\(d.index)]=\(f.address) (\(f.driver), pool \(d.pool))"
                case let .mdev(m): "\(d.requirement)[\(d.index)]=mdev \(m.type) \(m.uuid.uuidString.lowercased())"
                }
            }.joined(separator: ", ")
        }.joined(separator: "; ")
        if !session.takeovers.isEmpty { e.message! += "; lock takeovers: " + session.takeovers.joined(separator: "; ") }
        journal.record(e)
        return session
    }

    /// A host-side reset of every function of `device` on `host`; the text for the record.
    func hostReset(device: String, method: HostResetMethod, on host: String) async throws -> String {
        guard let session = passthrough else {
            throw RunnerError.step("\(method.kind) of `\(device)` needs a passthrough device given by a lab file's pools (run with --lab FILE)")
        }
        let done = try await session.reset(requirement: device, on: host, method: method)
        return "\(method.kind) of \(done.map(\.description).joined(separator: ", ")) on \(host)"
    }

    /// The destination's definition, when it must differ from the source's: its own
    /// passthrough functions (by the hostdevs' user aliases) and its own guest image paths,
    /// applied to `migratableXML()` (fetched only then). nil when the guest's definition works
    /// unchanged on `destination`.
    func destinationDefinition(_ migratableXML: () throws -> String, destination: String) throws -> String? {
        let hostdevs = passthrough?.plan.hostdevs(on: destination) ?? []
        let image = images[destination]
        let differentImage = image != nil && image != images[location ?? ""]
        guard !hostdevs.isEmpty || differentImage else { return nil }
        return try Self.rewrite(try migratableXML(), hostdevs: hostdevs, image: differentImage ? image : nil)
    }

    /// `xml` with each hostdev's source (PCI address, mdev UUID) replaced by the one of the
    /// hostdev with the same alias in `hostdevs`, and the kernel and initrd of `image`.
    static func rewrite(_ xml: String, hostdevs: [Hostdev], image: GuestImage?) throws -> String {
        let doc = try XMLDocument(xmlString: xml)
        for hostdev in hostdevs {
            let (alias, attributes, what): (String?, [(String, String)], String) = switch hostdev {
            case let .pci(p):
                (p.alias, [("domain", "0x" + String(format: "%04x", p.address.domain)), ("bus", String(format: "0x%02x", p.address.bus)),
                           ("slot", String(format: "0x%02x", p.address.device)), ("function", "0x\(p.address.function)")], "\(p.address)")
            case let .mdev(m):
                (m.alias, [("uuid", m.uuid.uuidString.lowercased())], "mdev \(m.uuid.uuidString.lowercased())")
            }
            guard let alias else { continue }
            let found = try doc.nodes(forXPath: "/domain/devices/hostdev[alias/@name='\(alias)']/source/address").compactMap { $0 as? XMLElement }
            guard let address = found.first else {
                throw RunnerError.step("the guest's definition has no hostdev `\(alias)` to give the destination's \(what)")
            }
            for (name, value) in attributes {
                address.attribute(forName: name)?.stringValue = value
            }
        }
        if let image {
            for (path, value) in [("/domain/os/kernel", image.kernel), ("/domain/os/initrd", image.initrd)] {
                (try doc.nodes(forXPath: path).first as? XMLElement)?.stringValue = value
            }
        }
        return doc.xmlString
    }
}
