import CLibvirt
import Foundation

// Creating and removing node devices: transient mediated devices for passthrough runs.

extension Connection {
    /// `virNodeDeviceCreateXML`: creates a transient node device from node-device XML, for
    /// example a mediated device (`<device><parent>pci_0000_3b_00_0</parent><capability
    /// type='mdev'><type id='mtty-2'/><uuid>...</uuid></capability></device>`). libvirt asks
    /// mdevctl or sysfs to create it; it exists until `NodeDevice.destroy()` or a host reboot.
    public func createNodeDevice(xml: String) async throws -> NodeDevice {
        try await onBlockingThread("virNodeDeviceCreateXML") { [self] in
            guard let d = virNodeDeviceCreateXML(raw, xml, 0) else { throw LibvirtError.last("virNodeDeviceCreateXML") }
            return NodeDevice(owning: d, connection: self)
        }
    }

    /// The mediated device with this UUID, found among `virConnectListAllNodeDevices(MDEV)`;
    /// nil when there is none. libvirt names mdevs `mdev_<uuid>` or, since 7.8,
    /// `mdev_<uuid>_<parent>`, with `_` for `-`.
    public func mediatedDevice(uuid: UUID) throws -> NodeDevice? {
        let prefix = "mdev_" + uuid.uuidString.lowercased().replacingOccurrences(of: "-", with: "_")
        return try nodeDevices(.mediatedDevice).first { $0.name == prefix || $0.name.hasPrefix(prefix + "_") }
    }
}

extension NodeDevice {
    /// `virNodeDeviceDestroy`: removes a transient device (a mediated device, a vHBA).
    public func destroy() async throws {
        try await onBlockingThread("virNodeDeviceDestroy") { [self] in
            guard virNodeDeviceDestroy(raw) == 0 else { throw LibvirtError.last("virNodeDeviceDestroy(\(name))") }
        }
    }
}
