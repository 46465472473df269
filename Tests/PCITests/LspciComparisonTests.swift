import Foundation
import Testing
@testable import PCI

/// What `lspci -vvnn -D` says about one function, reduced to what the inventory also reports.
struct LspciFunction {
    var address: PCIAddress
    var deviceClass: String
    var className: String
    var vendorID: String
    var deviceID: String
    /// "Vendor Device" as lspci prints it before the IDs.
    var vendorAndDevice: String
    var revision: String?
    var subsystem: (vendor: String, device: String)?
    var driver: String?
    var iommuGroup: Int?
    /// From `FLReset+/-` (PCIe DevCap, endpoints only) and `AFCap: ... FLR+/-`; nil when neither is printed.
    var flr: Bool?
    var aer = false
    var acs = false
    var sriov = false
    /// lspci printed "Capabilities: <access denied>" (not root).
    var accessDenied = false

    /// Parses the blocks of `lspci -vvnn -D`, one per function, separated by blank lines.
    static func parse(_ output: String) -> [LspciFunction] {
        output.components(separatedBy: "\n\n").compactMap { block in
            let lines = block.split(separator: "\n").map(String.init)
            guard let first = lines.first, var function = parseFirstLine(first) else { return nil }
            for raw in lines.dropFirst() {
                let line = raw.trimmingCharacters(in: .whitespaces)
                if line.hasPrefix("Subsystem:"), let ids = lastIDPair(line) {
                    function.subsystem = ids
                } else if line.hasPrefix("Kernel driver in use:") {
                    function.driver = line.dropFirst("Kernel driver in use:".count).trimmingCharacters(in: .whitespaces)
                } else if line.hasPrefix("IOMMU group:") {
                    function.iommuGroup = Int(line.dropFirst("IOMMU group:".count).trimmingCharacters(in: .whitespaces))
                } else if line.hasPrefix("Capabilities:") {
                    if line.contains("<access denied>") { function.accessDenied = true }
                    if line.contains("Advanced Error Reporting") { function.aer = true }
                    if line.contains("Access Control Services") { function.acs = true }
                    if line.contains("Single Root I/O Virtualization") { function.sriov = true }
                }
                if line.contains("FLReset+") || (line.hasPrefix("AFCap:") && line.contains("FLR+")) {
                    function.flr = true
                } else if function.flr == nil, line.contains("FLReset-") || (line.hasPrefix("AFCap:") && line.contains("FLR-")) {
                    function.flr = false
                }
            }
            return function
        }
    }

    /// `0000:00:01.0 Unassigned class [ffff]: Red Hat, Inc. Virtio 1.0 memory balloon [1af4:1045] (rev 01)`
    private static func parseFirstLine(_ line: String) -> LspciFunction? {
        guard let space = line.firstIndex(of: " "), let address = PCIAddress(String(line[..<space])),
              let classEnd = line.range(of: "]: ") else { return nil }
        let classPart = line[line.index(after: space)..<classEnd.lowerBound]  // "Unassigned class [ffff"
        guard let bracket = classPart.range(of: " [", options: .backwards) else { return nil }
        let rest = String(line[classEnd.upperBound...])
        guard let ids = lastIDPair(rest), let idsStart = rest.range(of: " [\(ids.vendor):\(ids.device)]", options: .backwards) else { return nil }
        var revision: String?
        if let rev = rest.range(of: "(rev ") { revision = String(rest[rev.upperBound...].prefix(2)) }
        return LspciFunction(
            address: address, deviceClass: String(classPart[bracket.upperBound...]), className: String(classPart[..<bracket.lowerBound]),
            vendorID: ids.vendor, deviceID: ids.device, vendorAndDevice: String(rest[..<idsStart.lowerBound]), revision: revision)
    }

    /// The last `[xxxx:xxxx]` in a line.
    private static func lastIDPair(_ line: String) -> (vendor: String, device: String)? {
        var search = line[...]
        while let open = search.range(of: "[", options: .backwards) {
            let candidate = line[open.upperBound...].prefix(10)
            if candidate.count == 10, candidate.last == "]", candidate.dropLast().split(separator: ":").count == 2 {
                let parts = candidate.dropLast().split(separator: ":")
                if parts.allSatisfy({ $0.count == 4 && UInt16($0, radix: 16) != nil }) {
                    return (String(parts[0]), String(parts[1]))
                }
            }
            search = line[..<open.lowerBound]
        }
        return nil
    }

    static var lspciPath: String? {
        ["/usr/bin/lspci", "/bin/lspci", "/usr/sbin/lspci", "/sbin/lspci"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// `lspci -vvnn -D`, with `extraArguments` (for example another sysfs tree).
    static func run(_ extraArguments: [String] = []) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try #require(lspciPath))
        process.arguments = ["-vvnn", "-D"] + extraArguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    /// Expects `inventory` to say what lspci says, function by function.
    static func expectAgreement(_ lspci: [LspciFunction], _ inventory: PCIInventory, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(inventory.devices.map(\.address) == lspci.map(\.address).sorted(), sourceLocation: sourceLocation)
        for expected in lspci {
            guard let device = inventory[expected.address] else {
                Issue.record("\(expected.address) missing from the inventory", sourceLocation: sourceLocation)
                continue
            }
            let at = "\(expected.address)"
            #expect(device.vendorID.description == expected.vendorID, "\(at) vendor", sourceLocation: sourceLocation)
            #expect(device.deviceID.description == expected.deviceID, "\(at) device", sourceLocation: sourceLocation)
            #expect(device.classCode.map { hex($0.deviceClass, width: 4) } == expected.deviceClass, "\(at) class", sourceLocation: sourceLocation)
            if let revision = expected.revision {
                #expect(device.revision.map { hex($0, width: 2) } == revision, "\(at) revision", sourceLocation: sourceLocation)
            }
            #expect(device.subsystemVendorID?.description == expected.subsystem?.vendor, "\(at) subsystem vendor", sourceLocation: sourceLocation)
            #expect(device.subsystemDeviceID?.description == expected.subsystem?.device, "\(at) subsystem device", sourceLocation: sourceLocation)
            #expect(device.driver == expected.driver, "\(at) driver", sourceLocation: sourceLocation)
            #expect(device.iommuGroup?.number == expected.iommuGroup, "\(at) IOMMU group", sourceLocation: sourceLocation)
            if let className = device.names.deviceClass {
                #expect(className == expected.className, "\(at) class name", sourceLocation: sourceLocation)
            }
            if let vendor = device.names.vendor, let name = device.names.device {
                #expect("\(vendor) \(name)" == expected.vendorAndDevice, "\(at) names", sourceLocation: sourceLocation)
            }
            if expected.accessDenied { continue }
            if let flr = expected.flr { #expect(device.flr == flr, "\(at) FLR", sourceLocation: sourceLocation) }
            #expect(device.aer == expected.aer, "\(at) AER", sourceLocation: sourceLocation)
            #expect(device.acs == expected.acs, "\(at) ACS", sourceLocation: sourceLocation)
            #expect((device.sriov != nil) == expected.sriov, "\(at) SR-IOV", sourceLocation: sourceLocation)
        }
    }
}

/// "Done when: `miglab inventory` on this machine agrees with `lspci -vv` device by device."
@Suite struct LspciComparisonTests {
    @Test(.enabled(if: LspciFunction.lspciPath != nil && FileManager.default.fileExists(atPath: "/sys/bus/pci/devices")))
    func inventoryAgreesWithLspci() throws {
        let lspci = LspciFunction.parse(try LspciFunction.run())
        let inventory = try LocalInventory(migrationProbe: nil).scan()
        LspciFunction.expectAgreement(lspci, inventory)
    }

    /// This machine has no PCIe function, so FLR, AER, ACS and SR-IOV are only ever "absent"
    /// above. lspci reads the fake tree too (`-A linux-sysfs -O sysfs.path=`), which checks the
    /// capability parsing against lspci's on PCIe functions that have them.
    @Test(.enabled(if: LspciFunction.lspciPath != nil))
    func fakeTreeInventoryAgreesWithLspci() throws {
        let sysfs = try Lab.build()
        let lspci = LspciFunction.parse(try LspciFunction.run(["-A", "linux-sysfs", "-O", "sysfs.path=\(sysfs.pciRoot)"]))
        #expect(lspci.count == 6)
        #expect(lspci.filter { $0.flr == true }.count == 4)
        #expect(lspci.contains { $0.acs } && lspci.contains { $0.sriov })
        LspciFunction.expectAgreement(lspci, try LocalInventory(sysfsRoot: sysfs.pciRoot, migrationProbe: nil).scan())
    }

    @Test func parsesLspciBlocks() {
        let sample = """
            0000:3b:00.0 Ethernet controller [0200]: Mellanox Technologies MT2892 Family [ConnectX-6 Dx] [15b3:101d]
            \tSubsystem: Mellanox Technologies Device [15b3:0016]
            \t\tDevCap:\tMaxPayload 512 bytes, PhantFunc 0, Latency L0s unlimited, L1 unlimited
            \t\t\tExtTag+ AttnBtn- AttnInd- PwrInd- RBE+ FLReset+ SlotPowerLimit 25W
            \tCapabilities: [100 v1] Advanced Error Reporting
            \tCapabilities: [180 v1] Single Root I/O Virtualization (SR-IOV)
            \tKernel driver in use: mlx5_core
            \tIOMMU group: 40

            0000:00:1f.3 Audio device [0403]: Intel Corporation Device [8086:a348] (rev 10)
            \tAFCap:\tTP+ FLR-
            """
        let parsed = LspciFunction.parse(sample)
        #expect(parsed.count == 2)
        #expect(parsed[0].address == PCIAddress("0000:3b:00.0"))
        #expect(parsed[0].vendorAndDevice == "Mellanox Technologies MT2892 Family [ConnectX-6 Dx]")
        #expect(parsed[0].vendorID == "15b3" && parsed[0].deviceID == "101d" && parsed[0].deviceClass == "0200")
        #expect(parsed[0].subsystem?.device == "0016")
        #expect(parsed[0].flr == true && parsed[0].aer && !parsed[0].acs && parsed[0].sriov)
        #expect(parsed[0].driver == "mlx5_core" && parsed[0].iommuGroup == 40)
        #expect(parsed[1].revision == "10" && parsed[1].flr == false && parsed[1].className == "Audio device")
    }
}
