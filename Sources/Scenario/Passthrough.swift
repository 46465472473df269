import Yams

/// A passthrough device a scenario needs, by kind, never by address: the runner allocates
/// matching devices from the lab file's pools on every host the guest visits, so the same
/// scenario runs in any lab that has such devices.
///
/// ```yaml
/// guest:
///   passthrough:
///     - {name: nic, kind: vfio-pci, driver: mlx5_vfio_pci, count: 2}
///     - {name: vf, kind: vfio-pci, vendor_device: "8086:10ed", managed: false}
///     - {name: tty, kind: mdev, type: mtty-2}
/// ```
///
/// Keys: `name` (required; steps and reports use it), `kind` (`vfio-pci` or `mdev`, required),
/// `driver` (vfio-pci: the vfio driver the device must use, `vfio-pci` or a variant driver such as
/// `mlx5_vfio_pci`), `vendor_device` (vfio-pci: `vvvv:dddd` in hex), `type` (mdev: the mdev type,
/// required), `count` (1 to 16, default 1), `managed` (vfio-pci: libvirt binds and unbinds the
/// driver itself; default true; false makes the runner detach and reattach the device).
public struct PassthroughRequirement: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable, CaseIterable {
        /// A PCI function assigned through vfio-pci or a vfio-pci variant driver.
        case vfioPCI = "vfio-pci"
        /// A mediated device created from a parent device for the run.
        case mdev
    }

    /// A vendor and device ID pair, `15b3:101e`.
    public struct VendorDevice: Sendable, Equatable, Hashable, Codable, CustomStringConvertible {
        public var vendor: UInt16
        public var device: UInt16
        public init(vendor: UInt16, device: UInt16) {
            self.vendor = vendor
            self.device = device
        }

        /// Parses `15b3:101e` (hex, as lspci -nn prints it).
        public init?(_ text: String) {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 2, parts.allSatisfy({ (1...4).contains($0.count) }),
                  let v = UInt16(parts[0], radix: 16), let d = UInt16(parts[1], radix: 16) else { return nil }
            self.init(vendor: v, device: d)
        }

        public var description: String { Self.hex4(vendor) + ":" + Self.hex4(device) }

        static func hex4(_ v: UInt16) -> String {
            let s = String(v, radix: 16)
            return String(repeating: "0", count: max(0, 4 - s.count)) + s
        }
    }

    public var name: String
    public var kind: Kind
    /// vfio-pci only: the vfio driver the device must be bound to (`vfio-pci` or a variant
    /// driver); nil accepts any vfio driver the pool offers.
    public var driver: String?
    /// vfio-pci only: the device's IDs; nil accepts any.
    public var vendorDevice: VendorDevice?
    /// mdev only: the mdev type, for example `mtty-2` or `nvidia-35`.
    public var mdevType: String?
    public var count: Int
    /// vfio-pci only: libvirt detaches and reattaches the device (`managed='yes'`); when false
    /// the runner does it through the node-device API around the run.
    public var managed: Bool
    /// Where the requirement is written, for messages.
    public var location: SourceLocation?

    public init(name: String, kind: Kind, driver: String? = nil, vendorDevice: VendorDevice? = nil,
                mdevType: String? = nil, count: Int = 1, managed: Bool = true, location: SourceLocation? = nil) {
        self.name = name
        self.kind = kind
        self.driver = driver
        self.vendorDevice = vendorDevice
        self.mdevType = mdevType
        self.count = count
        self.managed = managed
        self.location = location
    }

    /// Short text for plans and errors: `nic: 2 × vfio-pci (driver mlx5_vfio_pci)`.
    public var summary: String {
        var filters: [String] = []
        if let driver { filters.append("driver \(driver)") }
        if let vendorDevice { filters.append("vendor:device \(vendorDevice)") }
        if let mdevType { filters.append("type \(mdevType)") }
        if kind == .vfioPCI && !managed { filters.append("managed=no") }
        let what = "\(count) × \(kind.rawValue)" + (filters.isEmpty ? "" : " (\(filters.joined(separator: ", ")))")
        return "\(name): \(what)"
    }

    public static let maximumCount = 16
}

extension NodeReader {
    /// `guest.passthrough`: a list of requirements.
    mutating func passthrough(_ node: Node) -> [PassthroughRequirement] {
        guard case let .sequence(seq) = node else {
            error(node, "`passthrough` must be a list like `[{name: nic, kind: vfio-pci, driver: mlx5_vfio_pci, count: 2}]`; found \(describe(node))")
            return []
        }
        var out: [PassthroughRequirement] = []
        for item in seq {
            guard let r = passthroughRequirement(item) else { continue }
            if out.contains(where: { $0.name == r.name }) {
                error(item, "passthrough name `\(r.name)` is used twice; give each requirement its own name")
                continue
            }
            out.append(r)
        }
        if out.count > 8 { error(node, "at most 8 passthrough requirements") }
        return out
    }

    mutating func passthroughRequirement(_ node: Node) -> PassthroughRequirement? {
        guard let m = mapping(node, format: ScenarioFormat.passthrough) else { return nil }
        let name = m["name"].flatMap { host($0, key: "name") }
        let kind = m["kind"].flatMap { choice($0, key: "kind", as: PassthroughRequirement.Kind.self) }
        let count = m["count"].flatMap { int($0, key: "count", range: 1...PassthroughRequirement.maximumCount) }
        let managed = m["managed"].flatMap { bool($0, key: "managed") }
        var driver: String?
        if let d = m["driver"], let s = string(d, key: "driver") {
            if s.wholeMatch(of: #/[A-Za-z0-9_-]{1,64}/#) == nil {
                error(d, "`driver` must be a kernel driver name like `vfio-pci` or `mlx5_vfio_pci`; found `\(s)`")
            } else if !(s == "vfio-pci" || s.hasSuffix("vfio_pci") || s.hasSuffix("vfio-pci")) {
                // The VFIO target's rule (VFIODeviceLocator.isVFIODriver); Scenario does not import VFIO.
                error(d, "`driver` must be a vfio driver (`vfio-pci` or a variant driver whose name ends in `vfio_pci` or `vfio-pci`, like `mlx5_vfio_pci`); found `\(s)`, which cannot own a passed-through device")
            } else {
                driver = s
            }
        }
        var vendorDevice: PassthroughRequirement.VendorDevice?
        if let v = m["vendor_device"], let s = string(v, key: "vendor_device") {
            vendorDevice = PassthroughRequirement.VendorDevice(s)
            if vendorDevice == nil { error(v, "`vendor_device` must be `vendor:device` in hex, like \"15b3:101e\"; found `\(s)`") }
        }
        var mdevType: String?
        if let t = m["type"], let s = string(t, key: "type") {
            if s.wholeMatch(of: #/[A-Za-z0-9_.:-]{1,64}/#) == nil {
                error(t, "`type` must be an mdev type name like `mtty-2` or `nvidia-35`; found `\(s)`")
            } else {
                mdevType = s
            }
        }
        guard let name, let kind else { return nil }
        switch kind {
        case .vfioPCI:
            if let t = m["type"] { error(t, "`type` is for `kind: mdev`; a vfio-pci requirement selects devices with `driver` and `vendor_device`") }
        case .mdev:
            if m["type"] == nil { error(node, "`kind: mdev` needs `type`, the mdev type to create (like `mtty-2`)") }
            for key in ["driver", "vendor_device", "managed"] {
                if let v = m[key] { error(v, "`\(key)` is for `kind: vfio-pci`; an mdev requirement names only `type` and `count`") }
            }
        }
        return PassthroughRequirement(name: name, kind: kind, driver: driver, vendorDevice: vendorDevice, mdevType: mdevType,
                                      count: count ?? 1, managed: managed ?? true, location: location(node))
    }
}
