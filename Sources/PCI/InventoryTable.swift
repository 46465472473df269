import Foundation

extension PCIInventory {
    /// The inventory as a terminal table: one row per function with the facts that decide
    /// passthrough and migration, then an indented line with names and relations.
    /// `?` marks what the source cannot tell, `-` what the function does not have.
    public func table() -> String {
        let header = ["ADDRESS", "CLASS", "VENDOR:DEVICE", "DRIVER", "IOMMU", "FLR", "AER", "ACS", "SR-IOV", "RESET", "VFIO MIGRATION"]
        let rows = devices.map { d -> [String] in
            [
                d.address.description,
                d.classCode.map { hex($0.deviceClass, width: 4) } ?? "?",
                "\(d.vendorID):\(d.deviceID)",
                d.driver ?? "-",
                d.iommuGroup.map { String($0.number) } ?? "-",
                flag(d.flr), flag(d.aer), flag(d.acs),
                sriovColumn(d),
                d.resetMethods.map { $0.isEmpty ? "-" : $0.joined(separator: ",") } ?? (source == .local ? "-" : "?"),
                migrationColumn(d.vfioMigration),
            ]
        }
        let widths = header.indices.map { column in
            ([header] + rows).map { $0[column].count }.max() ?? 0
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, cell in
                i == cells.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }
        let indent = String(repeating: " ", count: widths[0] + 2)
        var out = [line(header)]
        for (device, row) in zip(devices, rows) {
            out.append(line(row))
            out.append(indent + detail(device))
        }
        if devices.isEmpty { out.append("(no PCI devices)") }
        for warning in warnings { out.append("warning: \(warning)") }
        return out.joined(separator: "\n")
    }

    private func flag(_ value: Bool?) -> String {
        switch value {
        case true?: "yes"
        case false?: "no"
        case nil: "?"
        }
    }

    private func sriovColumn(_ d: PCIDevice) -> String {
        if let s = d.sriov { return "PF \(s.currentVFs)/\(s.totalVFs)" }
        if d.physicalFunction != nil { return "VF" }
        return "-"
    }

    private func migrationColumn(_ m: VFIOMigrationSupport) -> String {
        switch m.status {
        case .supported: (m.flags?.names ?? []).joined(separator: ",")
        case .unsupported: "unsupported"
        case .inUse: "in use"
        case .notProbed: "not probed: \(m.reason ?? "?")"
        case .failed: "failed: \(m.reason ?? "?")"
        }
    }

    /// Names, then what links the function to others.
    private func detail(_ d: PCIDevice) -> String {
        var parts: [String] = []
        parts.append("\(d.names.vendor ?? "vendor \(d.vendorID)") \(d.names.device ?? "device \(d.deviceID)")")
        if let c = d.names.deviceClass { parts.append(c) }
        if let sv = d.subsystemVendorID, let sd = d.subsystemDeviceID,
           (sv, sd) != (d.vendorID, d.deviceID) || d.names.subsystemDevice != d.names.device {
            let subsystemName = [d.names.subsystemVendor, d.names.subsystemDevice].compactMap { $0 }.joined(separator: " ")
            parts.append("subsystem \(sv):\(sd)" + (subsystemName.isEmpty ? "" : " \(subsystemName)"))
        }
        if let pf = d.physicalFunction { parts.append("VF of \(pf)") }
        if let vfs = d.sriov?.virtualFunctions, !vfs.isEmpty {
            parts.append("VFs " + vfs.map(\.description).joined(separator: " "))
        }
        if let group = d.iommuGroup, !group.otherMembers.isEmpty {
            parts.append("group shared with " + group.otherMembers.map(\.description).joined(separator: " "))
        }
        return parts.joined(separator: " | ")
    }
}
