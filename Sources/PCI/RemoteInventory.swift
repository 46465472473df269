import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Libvirt

/// The PCI inventory of a host as its libvirt daemon reports it (node-device API), for hosts
/// miglab cannot read sysfs on.
///
/// libvirt's node-device XML has identity, names, driver, IOMMU group and SR-IOV links, but no
/// FLR, AER, ACS, subsystem IDs or reset methods: those fields stay nil. VFIO migration flags
/// are not reported either.
public struct RemoteInventory: Sendable {
    public let connection: Connection

    public init(connection: Connection) {
        self.connection = connection
    }

    /// `virConnectListAllNodeDevices` for PCI devices, then each device's XML.
    public func scan() throws -> PCIInventory {
        var devices: [PCIDevice] = []
        for nodeDevice in try connection.nodeDevices(.pciDevice) {
            if let device = try NodeDeviceXML.pciDevice(from: try nodeDevice.xml()) {
                devices.append(device)
            }
        }
        return PCIInventory(source: .libvirt, location: connection.uri, devices: devices)
    }
}

/// An XML document libvirt returned that miglab cannot read as node-device XML.
public struct NodeDeviceXMLError: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String
    public var description: String { "node-device XML: \(message)" }
}

/// Reads libvirt's node-device XML (formatnode.html) into the inventory model.
public enum NodeDeviceXML {
    /// The PCI function a `<device>` document describes; nil when it has no `pci` capability.
    public static func pciDevice(from xml: String) throws -> PCIDevice? {
        let document: XMLDocument
        do {
            document = try XMLDocument(xmlString: xml, options: [])
        } catch {
            throw NodeDeviceXMLError(message: "not XML: \(error)")
        }
        guard let root = document.rootElement(), root.name == "device" else {
            throw NodeDeviceXMLError(message: "no <device> root element")
        }
        guard let pci = root.children(named: "capability").first(where: { $0.attribute("type") == "pci" }) else {
            return nil
        }
        let name = root.children(named: "name").first?.text ?? "?"

        guard let domain = pci.integer("domain"), let bus = pci.integer("bus"), let slot = pci.integer("slot"),
              let function = pci.integer("function") else {
            throw NodeDeviceXMLError(message: "\(name): <capability type='pci'> lacks domain, bus, slot or function")
        }
        let address = PCIAddress(domain: UInt32(domain), bus: UInt8(truncatingIfNeeded: bus),
                                 device: UInt8(truncatingIfNeeded: slot), function: UInt8(truncatingIfNeeded: function))
        let vendor = pci.children(named: "vendor").first
        let product = pci.children(named: "product").first
        guard let vendorID = vendor?.attribute("id").flatMap(PCIID.init(hex:)),
              let deviceID = product?.attribute("id").flatMap(PCIID.init(hex:)) else {
            throw NodeDeviceXMLError(message: "\(name): <vendor id> or <product id> missing")
        }

        var device = PCIDevice(
            address: address, vendorID: vendorID, deviceID: deviceID,
            classCode: pci.children(named: "class").first?.text.flatMap(PCIClassCode.init(hex:)),
            names: PCINames(vendor: vendor?.text, device: product?.text),
            driver: root.children(named: "driver").first?.children(named: "name").first?.text,
            vfioMigration: .notProbed("not reported by libvirt"))

        if let group = pci.children(named: "iommuGroup").first, let number = group.attribute("number").flatMap(integer) {
            let members = group.children(named: "address").compactMap(\.pciAddress)
            device.iommuGroup = IOMMUGroup(number: number, otherMembers: members.filter { $0 != address }.sorted())
        }
        for capability in pci.children(named: "capability") {
            switch capability.attribute("type") {
            case "virt_functions":
                let vfs = capability.children(named: "address").compactMap(\.pciAddress)
                device.sriov = SRIOV(totalVFs: capability.attribute("maxCount").flatMap(integer) ?? vfs.count,
                                     currentVFs: vfs.count, virtualFunctions: vfs)
            case "phys_function":
                device.physicalFunction = capability.children(named: "address").first?.pciAddress
            default:
                break
            }
        }
        if !pci.children(named: "pci-express").isEmpty {
            device.pciExpress = PCIExpress()
        }
        return device
    }
}

/// libvirt writes numbers in decimal (`<bus>59</bus>`) or, in attributes, as `0x3b`.
private func integer(_ text: String) -> Int? {
    let t = text.trimmingCharacters(in: .whitespaces)
    if t.hasPrefix("0x") || t.hasPrefix("0X") { return Int(t.dropFirst(2), radix: 16) }
    return Int(t)
}

extension XMLElement {
    fileprivate func children(named name: String) -> [XMLElement] { elements(forName: name) }
    fileprivate func attribute(_ name: String) -> String? { attribute(forName: name)?.stringValue }
    /// The trimmed text content; nil when empty.
    fileprivate var text: String? {
        guard let t = stringValue?.trimmingCharacters(in: .whitespacesAndNewlines), !t.isEmpty else { return nil }
        return t
    }
    fileprivate func integer(_ child: String) -> Int? { children(named: child).first?.text.flatMap(PCI.integer) }

    /// `<address domain='0x0000' bus='0x3b' slot='0x00' function='0x2'/>`.
    fileprivate var pciAddress: PCIAddress? {
        guard let domain = attribute("domain").flatMap(PCI.integer), let bus = attribute("bus").flatMap(PCI.integer),
              let slot = attribute("slot").flatMap(PCI.integer), let function = attribute("function").flatMap(PCI.integer)
        else { return nil }
        return PCIAddress(domain: UInt32(domain), bus: UInt8(truncatingIfNeeded: bus),
                          device: UInt8(truncatingIfNeeded: slot), function: UInt8(truncatingIfNeeded: function))
    }
}
