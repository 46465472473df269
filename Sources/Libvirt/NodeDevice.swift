import CLibvirt
import Foundation

/// Which node devices `Connection.nodeDevices(_:)` lists (`virConnectListAllNodeDevicesFlags`).
/// An empty set lists every device.
public struct NodeDeviceListFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// The host itself, the root of the device tree (`VIR_CONNECT_LIST_NODE_DEVICES_CAP_SYSTEM`).
    public static let system = NodeDeviceListFlags(rawValue: VIR_CONNECT_LIST_NODE_DEVICES_CAP_SYSTEM.rawValue)
    /// PCI functions (`VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV`).
    public static let pciDevice = NodeDeviceListFlags(rawValue: VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV.rawValue)
    /// Network interfaces (`VIR_CONNECT_LIST_NODE_DEVICES_CAP_NET`).
    public static let network = NodeDeviceListFlags(rawValue: VIR_CONNECT_LIST_NODE_DEVICES_CAP_NET.rawValue)
    /// Mediated devices (`VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV`).
    public static let mediatedDevice = NodeDeviceListFlags(rawValue: VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV.rawValue)
    /// Devices that can create mediated devices (`VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV_TYPES`).
    public static let mediatedDeviceTypes = NodeDeviceListFlags(rawValue: VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV_TYPES.rawValue)
    /// vDPA devices (`VIR_CONNECT_LIST_NODE_DEVICES_CAP_VDPA`).
    public static let vdpa = NodeDeviceListFlags(rawValue: VIR_CONNECT_LIST_NODE_DEVICES_CAP_VDPA.rawValue)
    /// Only active devices (`VIR_CONNECT_LIST_NODE_DEVICES_ACTIVE`).
    public static let active = NodeDeviceListFlags(rawValue: VIR_CONNECT_LIST_NODE_DEVICES_ACTIVE.rawValue)
    /// Only inactive (defined, not started) devices (`VIR_CONNECT_LIST_NODE_DEVICES_INACTIVE`).
    public static let inactive = NodeDeviceListFlags(rawValue: VIR_CONNECT_LIST_NODE_DEVICES_INACTIVE.rawValue)
}

/// A host device as libvirt's node-device driver reports it (`virNodeDevicePtr`), freed in deinit.
///
/// Node devices are how miglab sees the PCI functions of a remote host: libvirt reads the
/// remote sysfs for us and answers with node-device XML.
public final class NodeDevice: @unchecked Sendable {
    let raw: OpaquePointer
    /// Keeps the connection open for as long as the device handle is used.
    public let connection: Connection

    init(owning raw: OpaquePointer, connection: Connection) {
        self.raw = raw
        self.connection = connection
    }
    deinit { virNodeDeviceFree(raw) }

    /// `virNodeDeviceGetName`, for example `pci_0000_3b_00_2`.
    public var name: String { virNodeDeviceGetName(raw).map { String(cString: $0) } ?? "" }

    /// `virNodeDeviceGetParent`: the parent device's name; nil for the root device (`computer`).
    public var parent: String? { virNodeDeviceGetParent(raw).map { String(cString: $0) } }

    /// `virNodeDeviceGetXMLDesc`: the node-device XML (`<device>`).
    public func xml() throws -> String {
        guard let s = virNodeDeviceGetXMLDesc(raw, 0) else { throw LibvirtError.last("virNodeDeviceGetXMLDesc(\(name))") }
        defer { free(s) }
        return String(cString: s)
    }

    /// `virNodeDeviceNumOfCaps` and `virNodeDeviceListCaps`: the capability types of the
    /// device, for example `["pci", "virt_functions"]`.
    public func capabilities() throws -> [String] {
        let count = virNodeDeviceNumOfCaps(raw)
        guard count >= 0 else { throw LibvirtError.last("virNodeDeviceNumOfCaps(\(name))") }
        guard count > 0 else { return [] }
        var names = [UnsafeMutablePointer<CChar>?](repeating: nil, count: Int(count))
        let got = virNodeDeviceListCaps(raw, &names, count)
        guard got >= 0 else { throw LibvirtError.last("virNodeDeviceListCaps(\(name))") }
        defer { for n in names { free(n) } }
        return names.prefix(Int(got)).compactMap { $0.map { String(cString: $0) } }
    }

    /// `virNodeDeviceDetachFlags`: unbinds the PCI function from its host driver and binds it to
    /// `driverName` (nil: libvirt's default, `vfio`), ready for passthrough.
    public func detach(driverName: String? = nil) async throws {
        try await onBlockingThread("virNodeDeviceDetachFlags") { [self] in
            guard virNodeDeviceDetachFlags(raw, driverName, 0) == 0 else {
                throw LibvirtError.last("virNodeDeviceDetachFlags(\(name))")
            }
        }
    }

    /// `virNodeDeviceReAttach`: gives a detached PCI function back to its host driver.
    public func reattach() async throws {
        try await onBlockingThread("virNodeDeviceReAttach") { [self] in
            guard virNodeDeviceReAttach(raw) == 0 else { throw LibvirtError.last("virNodeDeviceReAttach(\(name))") }
        }
    }

    /// `virNodeDeviceReset`: resets the PCI function (FLR, else a power-management or bus
    /// reset); libvirt refuses while a running domain uses the device.
    public func reset() async throws {
        try await onBlockingThread("virNodeDeviceReset") { [self] in
            guard virNodeDeviceReset(raw) == 0 else { throw LibvirtError.last("virNodeDeviceReset(\(name))") }
        }
    }
}

extension Connection {
    /// `virConnectListAllNodeDevices`: the host's devices that match `flags`
    /// (for PCI functions, `.pciDevice`).
    public func nodeDevices(_ flags: NodeDeviceListFlags = []) throws -> [NodeDevice] {
        var list: UnsafeMutablePointer<OpaquePointer?>?
        let n = virConnectListAllNodeDevices(raw, &list, flags.rawValue)
        guard n >= 0 else { throw LibvirtError.last("virConnectListAllNodeDevices") }
        defer { free(list) }
        return (0..<Int(n)).compactMap { i in list?[i].map { NodeDevice(owning: $0, connection: self) } }
    }

    /// `virNodeDeviceLookupByName`; nil when no such device exists.
    public func nodeDevice(named name: String) throws -> NodeDevice? {
        guard let d = virNodeDeviceLookupByName(raw, name) else {
            let err = LibvirtError.last("virNodeDeviceLookupByName(\(name))")
            if err.code == LibvirtError.noNodeDevice { return nil }
            throw err
        }
        return NodeDevice(owning: d, connection: self)
    }
}

extension LibvirtError {
    /// `VIR_ERR_NO_NODE_DEVICE`: no node device with that name.
    public static let noNodeDevice = Int32(VIR_ERR_NO_NODE_DEVICE.rawValue)
}
