import Foundation

/// The sysfs attributes of one PCI function that libpci does not read: SR-IOV links and
/// counts, reset methods, the members of its IOMMU group.
///
/// `root` is the same directory libpci reads (`/sys/bus/pci` live, a fake tree in tests);
/// `devices/<address>` under it is the function's directory.
struct SysfsPCIFunction {
    let directory: String

    init(root: String, address: PCIAddress) {
        directory = "\(root)/devices/\(address)"
    }

    /// `reset_method`: the kernel's reset methods, preferred first (Linux 5.15 and later).
    /// nil when the attribute is missing: the kernel hides it when no method works.
    var resetMethods: [String]? {
        text("reset_method").map { $0.split(whereSeparator: \.isWhitespace).map(String.init) }
    }

    /// `sriov_totalvfs`, present on physical functions with the SR-IOV capability.
    var totalVFs: Int? { text("sriov_totalvfs").flatMap { Int($0) } }

    /// `sriov_numvfs`: the VFs enabled now.
    var numVFs: Int? { text("sriov_numvfs").flatMap { Int($0) } }

    /// The `virtfnN` links of a physical function, in N order.
    var virtualFunctions: [PCIAddress] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return entries.compactMap { name -> (Int, PCIAddress)? in
            guard name.hasPrefix("virtfn"), let n = Int(name.dropFirst("virtfn".count)),
                  let address = linkedAddress(name) else { return nil }
            return (n, address)
        }
        .sorted { $0.0 < $1.0 }
        .map(\.1)
    }

    /// The `physfn` link of a virtual function.
    var physicalFunction: PCIAddress? { linkedAddress("physfn") }

    /// The PCI functions in the function's IOMMU group (`iommu_group/devices/`), itself included.
    var iommuGroupMembers: [PCIAddress]? {
        guard let group = resolved("iommu_group"),
              let entries = try? FileManager.default.contentsOfDirectory(atPath: "\(group)/devices") else { return nil }
        return entries.compactMap { PCIAddress($0) }.sorted()
    }

    /// The trimmed contents of an attribute; nil when it is missing or unreadable.
    private func text(_ attribute: String) -> String? {
        guard let data = FileManager.default.contents(atPath: "\(directory)/\(attribute)") else { return nil }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The address a link such as `physfn` or `virtfn0` points to (its last path component).
    private func linkedAddress(_ link: String) -> PCIAddress? {
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(directory)/\(link)") else { return nil }
        return PCIAddress(String(target.split(separator: "/").last ?? ""))
    }

    /// The canonical path a link resolves to, the way libpci resolves `iommu_group` (realpath).
    private func resolved(_ link: String) -> String? {
        guard let path = realpath("\(directory)/\(link)", nil) else { return nil }
        defer { free(path) }
        return String(cString: path)
    }
}
