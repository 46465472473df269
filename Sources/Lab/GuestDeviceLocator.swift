import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// Where a domain's devices sit in the guest's PCI tree, read from its domain XML: for each
/// device with a user alias, the slot.function of every hop from the root bus
/// (`01.0/00.0`: function 00.0 behind the root port at 0000:00:01.0). The guest numbers the
/// buses behind bridges itself, so a bus number from the XML means nothing inside the guest;
/// the path of slots does. `miglab-guestctl` takes it as `pci=PATH`.
public enum GuestDeviceLocator {
    public struct LocatorError: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// Alias -> PCI path, for every device of `xml` that has a user alias and a PCI address.
    public static func pciPaths(domainXML xml: String) throws -> [String: String] {
        let doc: XMLDocument
        do { doc = try XMLDocument(xmlString: xml) } catch {
            throw LocatorError(description: "the domain XML does not parse: \(error)")
        }
        guard doc.rootElement()?.name == "domain" else { throw LocatorError(description: "not a domain XML (no <domain> element)") }
        typealias Address = (bus: Int, slot: Int, function: Int)
        func address(of element: XMLElement) -> Address? {
            guard let a = element.elements(forName: "address").first(where: { $0.attribute(forName: "type")?.stringValue == "pci" }),
                  let bus = number(a, "bus"), let slot = number(a, "slot"), let function = number(a, "function") else { return nil }
            return (bus, slot, function)
        }
        func number(_ e: XMLElement, _ name: String) -> Int? {
            guard let v = e.attribute(forName: name)?.stringValue else { return nil }
            return v.hasPrefix("0x") ? Int(v.dropFirst(2), radix: 16) : Int(v)
        }
        // Bus index -> the address of the bridge (root port, switch port, PCIe-to-PCI bridge) that makes it.
        var bridges: [Int: Address] = [:]
        for c in try doc.nodes(forXPath: "/domain/devices/controller[@type='pci']").compactMap({ $0 as? XMLElement }) {
            guard let index = c.attribute(forName: "index")?.stringValue.flatMap({ Int($0) }), let a = address(of: c) else { continue }
            bridges[index] = a
        }
        var out: [String: String] = [:]
        for device in try doc.nodes(forXPath: "/domain/devices/*[alias]").compactMap({ $0 as? XMLElement }) {
            guard let alias = device.elements(forName: "alias").first?.attribute(forName: "name")?.stringValue,
                  alias.hasPrefix("ua-"), var at = address(of: device) else { continue }
            var hops: [String] = []
            var seen = Set<Int>()
            while true {
                hops.insert(String(format: "%02x.%x", at.slot, at.function), at: 0)
                if at.bus == 0 { break }
                guard !seen.contains(at.bus), let up = bridges[at.bus] else {
                    throw LocatorError(description: "device \(alias) is on bus \(at.bus), which no PCI controller of the domain XML makes")
                }
                seen.insert(at.bus)
                at = up
            }
            out[alias] = hops.joined(separator: "/")
        }
        return out
    }
}
