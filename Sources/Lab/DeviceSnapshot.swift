import Foundation

/// The state of one passed-through device as the guest sees it, from `lspci -vvv -nn -s BDF`
/// run inside the guest (and optionally the function's sysfs `resource` file). Taken before and
/// after each migration: a migration must not change anything here.
public struct DeviceSnapshot: Sendable, Equatable, Codable {
    /// The guest's address, `01:00.0` (as lspci prints it).
    public var address: String
    public var vendorID: UInt16?
    public var deviceID: UInt16?
    public var subsystemVendorID: UInt16?
    public var subsystemDeviceID: UInt16?
    /// `[0200]`: base class and subclass.
    public var deviceClass: UInt16?
    public var revision: UInt8?
    /// BARs by index (0-5); 6 is the expansion ROM.
    public var bars: [Int: BAR]
    /// The `Control:` flags of the command register: `I/O`, `Mem`, `BusMaster`, `DisINTx`, ...
    public var control: [String: Bool]
    public var msi: MSI?
    public var msix: MSIX?
    /// PCIe Device Control (`DevCtl:`): flags as "+"/"-", settings as text (`MaxPayload`: `128 bytes`).
    public var deviceControl: [String: String]?
    /// PCIe Link Status (`LnkSta:`): `Speed`, `Width` and flags.
    public var linkStatus: [String: String]?
    /// `Kernel driver in use:`; nil when no driver is bound.
    public var driver: String?

    public struct BAR: Sendable, Equatable, Codable {
        public enum Kind: String, Sendable, Codable { case memory, io, rom }
        public var kind: Kind
        /// Bytes.
        public var size: UInt64?
        /// The address lspci shows (guest physical), nil when unassigned.
        public var address: UInt64?
        public var is64Bit: Bool
        public var prefetchable: Bool
        /// lspci's `[disabled]` (decoding off) or `[virtual]`.
        public var disabled: Bool

        public init(kind: Kind, size: UInt64?, address: UInt64? = nil, is64Bit: Bool = false, prefetchable: Bool = false, disabled: Bool = false) {
            self.kind = kind
            self.size = size
            self.address = address
            self.is64Bit = is64Bit
            self.prefetchable = prefetchable
            self.disabled = disabled
        }
    }

    public struct MSI: Sendable, Equatable, Codable {
        public var enabled: Bool
        /// `Count=allocated/maximum`.
        public var allocatedVectors: Int?
        public var maximumVectors: Int?
        public var maskable: Bool?
        public var is64Bit: Bool?
    }

    public struct MSIX: Sendable, Equatable, Codable {
        public var enabled: Bool
        /// The function mask bit.
        public var masked: Bool?
        /// `Count=`: the table size.
        public var tableSize: Int?
        /// `Vector table: BAR=1 offset=00000000`.
        public var tableBAR: Int?
        public var tableOffset: UInt64?
        public var pbaBAR: Int?
        public var pbaOffset: UInt64?
    }

    /// The scratch register of each 16550 port of a serial device (port index -> `0x5a`), read
    /// at the registers (miglab-uart). Before a migration the runner writes fresh values, so
    /// the same values after it are device state only the migration could have carried.
    public var uartScratch: [Int: String]?

    public init(address: String) {
        self.address = address
        self.bars = [:]
        self.control = [:]
    }

    /// `miglab-uart BDF scr` output (`MIGLAB-UART scr port=0 base=0xc000 value=0x5a` per port);
    /// nil when it names no port.
    public static func parseUARTScratch(_ output: String) -> [Int: String]? {
        var out: [Int: String] = [:]
        for line in output.split(separator: "\n") where line.contains("MIGLAB-UART scr ") {
            var port: Int?
            var value: String?
            for field in line.split(separator: " ") {
                if field.hasPrefix("port=") { port = Int(field.dropFirst(5)) }
                if field.hasPrefix("value=") { value = String(field.dropFirst(6)) }
            }
            if let port, let value { out[port] = value }
        }
        return out.isEmpty ? nil : out
    }
}

/// One difference between two snapshots of a device.
public struct DeviceDifference: Sendable, Equatable, Codable, CustomStringConvertible {
    /// What differs: `vendor ID`, `BAR 2 size`, `MSI-X enable`, `DevCtl MaxPayload`, ...
    public var field: String
    /// The values as text; `absent` when one side does not have the field.
    public var source: String
    public var destination: String

    public init(field: String, source: String, destination: String) {
        self.field = field
        self.source = source
        self.destination = destination
    }

    public var description: String { "\(field): \(source) on the source, \(destination) on the destination" }
}

extension DeviceSnapshot {
    /// Parses the output of `lspci -vvv -nn -s BDF` for one function (the first, when there are
    /// several) and, when given, the function's sysfs `resource` file, whose sizes win over
    /// lspci's (they are exact; lspci rounds to K/M/G). Never fails: what it cannot read stays nil.
    public static func parse(lspci: String, resource: String? = nil) -> DeviceSnapshot {
        var lines = lspci.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        while let first = lines.first, first.trimmingCharacters(in: .whitespaces).isEmpty { lines.removeFirst() }
        let header = lines.first ?? ""
        var snapshot = DeviceSnapshot(address: String(header.prefix { !$0.isWhitespace }))
        parseHeader(header, into: &snapshot)
        // The function's body: indented lines up to the next unindented one (the next function).
        let body = lines.dropFirst().prefix { $0.isEmpty || $0.first == "\t" || $0.first == " " }
        let entries = group(Array(body))
        for entry in entries {
            let text = entry.text
            if text.hasPrefix("Subsystem:"), let ids = lastIDPair(text) {
                snapshot.subsystemVendorID = ids.0
                snapshot.subsystemDeviceID = ids.1
            } else if text.hasPrefix("Control:") {
                snapshot.control = flags(in: String(text.dropFirst("Control:".count)))
            } else if text.hasPrefix("Region ") || text.hasPrefix("Expansion ROM") {
                if let (index, bar) = parseBAR(text), snapshot.bars[index] == nil { snapshot.bars[index] = bar }
            } else if text.hasPrefix("Kernel driver in use:") {
                let d = text.dropFirst("Kernel driver in use:".count).trimmingCharacters(in: .whitespaces)
                snapshot.driver = d.isEmpty ? nil : d
            } else if text.hasPrefix("Capabilities:") {
                parseCapability(entry, into: &snapshot)
            }
        }
        if let resource { applyResource(resource, to: &snapshot) }
        return snapshot
    }

    /// Every difference between `source` and `destination`, field by field.
    public static func diff(_ source: DeviceSnapshot, _ destination: DeviceSnapshot) -> [DeviceDifference] {
        var out: [DeviceDifference] = []
        func check(_ field: String, _ a: String?, _ b: String?) {
            if a != b { out.append(DeviceDifference(field: field, source: a ?? "absent", destination: b ?? "absent")) }
        }
        func hex(_ v: UInt16?) -> String? { v.map { hexDigits($0, width: 4) } }
        check("vendor ID", hex(source.vendorID), hex(destination.vendorID))
        check("device ID", hex(source.deviceID), hex(destination.deviceID))
        check("subsystem vendor ID", hex(source.subsystemVendorID), hex(destination.subsystemVendorID))
        check("subsystem device ID", hex(source.subsystemDeviceID), hex(destination.subsystemDeviceID))
        check("class", hex(source.deviceClass), hex(destination.deviceClass))
        check("revision", source.revision.map { hexDigits($0, width: 2) }, destination.revision.map { hexDigits($0, width: 2) })
        for i in Set(source.bars.keys).union(destination.bars.keys).sorted() {
            let name = i == 6 ? "expansion ROM" : "BAR \(i)"
            let a = source.bars[i], b = destination.bars[i]
            if a == nil || b == nil {
                check(name, a.map(describe), b.map(describe))
                continue
            }
            check("\(name) size", a!.size.map(sizeText), b!.size.map(sizeText))
            check("\(name) type", describeType(a!), describeType(b!))
            check("\(name) address", a!.address.map { "0x" + String($0, radix: 16) }, b!.address.map { "0x" + String($0, radix: 16) })
            check("\(name) decoding", a!.disabled ? "disabled" : "enabled", b!.disabled ? "disabled" : "enabled")
        }
        compare("command register", source.control.mapValues { $0 ? "+" : "-" }, destination.control.mapValues { $0 ? "+" : "-" }, into: &out)
        func onOff(_ b: Bool?) -> String? { b.map { $0 ? "enabled" : "disabled" } }
        check("MSI", source.msi == nil ? nil : "present", destination.msi == nil ? nil : "present")
        if let a = source.msi, let b = destination.msi {
            check("MSI enable", onOff(a.enabled), onOff(b.enabled))
            check("MSI vectors allocated", a.allocatedVectors?.description, b.allocatedVectors?.description)
            check("MSI vectors maximum", a.maximumVectors?.description, b.maximumVectors?.description)
            check("MSI maskable", a.maskable?.description, b.maskable?.description)
            check("MSI 64-bit", a.is64Bit?.description, b.is64Bit?.description)
        }
        check("MSI-X", source.msix == nil ? nil : "present", destination.msix == nil ? nil : "present")
        if let a = source.msix, let b = destination.msix {
            check("MSI-X enable", onOff(a.enabled), onOff(b.enabled))
            check("MSI-X function mask", a.masked?.description, b.masked?.description)
            check("MSI-X table size", a.tableSize?.description, b.tableSize?.description)
            check("MSI-X table BAR", a.tableBAR?.description, b.tableBAR?.description)
            check("MSI-X table offset", a.tableOffset.map { String($0, radix: 16) }, b.tableOffset.map { String($0, radix: 16) })
            check("MSI-X PBA BAR", a.pbaBAR?.description, b.pbaBAR?.description)
            check("MSI-X PBA offset", a.pbaOffset.map { String($0, radix: 16) }, b.pbaOffset.map { String($0, radix: 16) })
        }
        check("PCIe DevCtl", source.deviceControl == nil ? nil : "present", destination.deviceControl == nil ? nil : "present")
        if let a = source.deviceControl, let b = destination.deviceControl { compare("DevCtl", a, b, into: &out) }
        check("PCIe LnkSta", source.linkStatus == nil ? nil : "present", destination.linkStatus == nil ? nil : "present")
        if let a = source.linkStatus, let b = destination.linkStatus { compare("LnkSta", a, b, into: &out) }
        check("driver", source.driver ?? "none", destination.driver ?? "none")
        if source.uartScratch != nil || destination.uartScratch != nil {
            let a = source.uartScratch ?? [:], b = destination.uartScratch ?? [:]
            for port in Set(a.keys).union(b.keys).sorted() {
                check("UART port \(port) scratch register", a[port], b[port])
            }
        }
        return out
    }

    private static func compare(_ prefix: String, _ a: [String: String], _ b: [String: String], into out: inout [DeviceDifference]) {
        for key in Set(a.keys).union(b.keys).sorted() where a[key] != b[key] {
            out.append(DeviceDifference(field: "\(prefix) \(key)", source: a[key] ?? "absent", destination: b[key] ?? "absent"))
        }
    }

    private static func describe(_ bar: BAR) -> String {
        "\(describeType(bar)), size \(bar.size.map(sizeText) ?? "unknown")"
    }

    private static func describeType(_ bar: BAR) -> String {
        switch bar.kind {
        case .io: "I/O"
        case .rom: "ROM"
        case .memory: "memory \(bar.is64Bit ? "64" : "32")-bit\(bar.prefetchable ? " prefetchable" : "")"
        }
    }

    /// `16384` -> `16K (16384 bytes)`.
    static func sizeText(_ bytes: UInt64) -> String {
        let units: [(UInt64, String)] = [(1 << 40, "T"), (1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")]
        for (unit, suffix) in units where bytes >= unit && bytes % unit == 0 {
            return "\(bytes / unit)\(suffix) (\(bytes) bytes)"
        }
        return "\(bytes) bytes"
    }

    // MARK: parsing

    /// A line and its continuation lines (indented deeper), joined.
    struct Entry {
        var text: String
        /// Sub-entries: lines one level deeper (a capability's registers).
        var children: [Entry]
    }

    private static func indent(_ line: String) -> Int {
        var n = 0
        for c in line {
            if c == "\t" { n += 8 } else if c == " " { n += 1 } else { break }
        }
        return n
    }

    /// Groups lines into entries by indentation: an entry holds the lines indented deeper than it.
    static func group(_ lines: [String]) -> [Entry] {
        var result: [Entry] = []
        var i = 0
        let items = lines.filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
        while i < items.count {
            let level = indent(items[i])
            var j = i + 1
            while j < items.count, indent(items[j]) > level { j += 1 }
            let inner = Array(items[(i + 1)..<j])
            result.append(Entry(text: items[i].trimmingCharacters(in: .whitespaces), children: group(inner)))
            i = j
        }
        return result
    }

    /// The entry's own text with every deeper line appended (for DevCtl's continuation lines).
    static func flattened(_ e: Entry) -> String {
        ([e.text] + e.children.map(flattened)).joined(separator: " ")
    }

    private static func parseHeader(_ header: String, into s: inout DeviceSnapshot) {
        if let ids = lastIDPair(header) {
            s.vendorID = ids.0
            s.deviceID = ids.1
        }
        // `01:00.0 Ethernet controller [0200]: ...`: the first [hhhh] before the first ": ".
        if let colon = header.range(of: ": ") {
            let prefix = header[..<colon.lowerBound]
            if let open = prefix.lastIndex(of: "["), let close = prefix.lastIndex(of: "]"), open < close {
                s.deviceClass = UInt16(prefix[prefix.index(after: open)..<close], radix: 16)
            }
        }
        if let rev = header.range(of: "(rev ") {
            s.revision = UInt8(header[rev.upperBound...].prefix { $0.isHexDigit }, radix: 16)
        }
    }

    /// The last `[hhhh:hhhh]` of a line (names may hold brackets too).
    static func lastIDPair(_ text: String) -> (UInt16, UInt16)? {
        var found: (UInt16, UInt16)?
        var rest = Substring(text)
        while let open = rest.firstIndex(of: "[") {
            let after = rest[rest.index(after: open)...]
            guard let close = after.firstIndex(of: "]") else { break }
            let inner = after[..<close]
            let parts = inner.split(separator: ":", omittingEmptySubsequences: false)
            if parts.count == 2, parts.allSatisfy({ $0.count == 4 }),
               let v = UInt16(parts[0], radix: 16), let d = UInt16(parts[1], radix: 16) {
                found = (v, d)
            }
            rest = after[after.index(after: close)...]
        }
        return found
    }

    /// `I/O+ Mem+ BusMaster-` -> ["I/O": true, "Mem": true, "BusMaster": false].
    static func flags(in text: String) -> [String: Bool] {
        var out: [String: Bool] = [:]
        for word in text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "," }) where word.count > 1 {
            if word.hasSuffix("+") { out[String(word.dropLast())] = true } else if word.hasSuffix("-") { out[String(word.dropLast())] = false }
        }
        return out
    }

    /// A register description: flags (`CorrErr-`) and settings (`MaxPayload 128 bytes`,
    /// `Speed 2.5GT/s (ok)`), comma- or space-separated, as text values.
    static func fields(in text: String) -> [String: String] {
        var out: [String: String] = [:]
        for segment in text.split(whereSeparator: { $0 == "," || $0 == ";" }) {
            var key: String?
            var value: [Substring] = []
            func flush() {
                if let k = key { out[k] = value.joined(separator: " ") }
                key = nil
                value = []
            }
            for word in segment.split(whereSeparator: { $0 == " " || $0 == "\t" }) {
                if word.count > 1, word.last == "+" || word.last == "-", word.dropLast().allSatisfy({ $0.isLetter || $0.isNumber || $0 == "/" }) {
                    flush()
                    out[String(word.dropLast())] = String(word.last!)
                } else if key == nil {
                    key = String(word)
                } else {
                    value.append(word)
                }
            }
            flush()
        }
        return out
    }

    /// `Region 1: Memory at fc840000 (32-bit, non-prefetchable) [size=4K]`,
    /// `Region 0: I/O ports at c000 [size=32]`, `Expansion ROM at fc800000 [disabled] [size=256K]`.
    static func parseBAR(_ text: String) -> (Int, BAR)? {
        let index: Int
        if text.hasPrefix("Expansion ROM") {
            index = 6
        } else {
            let digits = text.dropFirst("Region ".count).prefix { $0.isNumber }
            guard let i = Int(digits), (0...5).contains(i) else { return nil }
            index = i
        }
        let kind: BAR.Kind = index == 6 ? .rom : (text.contains("I/O ports") ? .io : .memory)
        var address: UInt64?
        if let at = text.range(of: " at ") {
            address = UInt64(text[at.upperBound...].prefix { $0.isHexDigit }, radix: 16)
        }
        var size: UInt64?
        if let s = text.range(of: "[size=") {
            size = parseSize(String(text[s.upperBound...].prefix { $0 != "]" }))
        }
        return (index, BAR(kind: kind, size: size, address: address, is64Bit: text.contains("64-bit"),
                           prefetchable: text.contains(" prefetchable"),
                           disabled: text.contains("[disabled]") || text.contains("[virtual]")))
    }

    /// `4K`, `16M`, `32` -> bytes.
    static func parseSize(_ text: String) -> UInt64? {
        guard let last = text.last else { return nil }
        let multipliers: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        if let m = multipliers[last] {
            guard let n = UInt64(text.dropLast()) else { return nil }
            let (product, overflow) = n.multipliedReportingOverflow(by: m)
            return overflow ? nil : product
        }
        return UInt64(text)
    }

    private static func parseCapability(_ entry: Entry, into s: inout DeviceSnapshot) {
        // `Capabilities: [dc] MSI-X: Enable+ Count=3 Masked-`
        guard let close = entry.text.firstIndex(of: "]") else { return }
        let rest = entry.text[entry.text.index(after: close)...].trimmingCharacters(in: .whitespaces)
        if rest.hasPrefix("MSI-X:") {
            let f = flags(in: rest)
            var x = MSIX(enabled: f["Enable"] ?? false, masked: f["Masked"], tableSize: intValue("Count=", in: rest))
            for child in entry.children {
                if child.text.hasPrefix("Vector table:") {
                    x.tableBAR = intValue("BAR=", in: child.text)
                    x.tableOffset = hexValue("offset=", in: child.text)
                } else if child.text.hasPrefix("PBA:") {
                    x.pbaBAR = intValue("BAR=", in: child.text)
                    x.pbaOffset = hexValue("offset=", in: child.text)
                }
            }
            s.msix = x
        } else if rest.hasPrefix("MSI:") {
            // `MSI: Enable+ Count=1/4 Maskable- 64bit+`
            let f = flags(in: rest)
            var m = MSI(enabled: f["Enable"] ?? false, maskable: f["Maskable"], is64Bit: f["64bit"])
            if let count = rest.range(of: "Count=") {
                let parts = rest[count.upperBound...].prefix { !$0.isWhitespace }.split(separator: "/")
                m.allocatedVectors = parts.first.flatMap { Int($0) }
                m.maximumVectors = parts.count > 1 ? Int(parts[1]) : nil
            }
            s.msi = m
        } else if rest.hasPrefix("Express") {
            for child in entry.children {
                let text = flattened(child)
                if text.hasPrefix("DevCtl:") {
                    s.deviceControl = fields(in: String(text.dropFirst("DevCtl:".count)))
                } else if text.hasPrefix("LnkSta:") {
                    s.linkStatus = fields(in: String(text.dropFirst("LnkSta:".count)))
                }
            }
        }
    }

    private static func intValue(_ key: String, in text: String) -> Int? {
        guard let r = text.range(of: key) else { return nil }
        return Int(text[r.upperBound...].prefix { $0.isNumber })
    }

    private static func hexValue(_ key: String, in text: String) -> UInt64? {
        guard let r = text.range(of: key) else { return nil }
        return UInt64(text[r.upperBound...].prefix { $0.isHexDigit }, radix: 16)
    }

    /// sysfs `resource`: one `start end flags` line per resource (BARs 0-5, ROM, then bridge
    /// windows); unused ones are all zero. Size = end - start + 1.
    static func applyResource(_ text: String, to s: inout DeviceSnapshot) {
        for (i, line) in text.split(separator: "\n").prefix(7).enumerated() {
            let parts = line.split(separator: " ").map { UInt64($0.hasPrefix("0x") ? $0.dropFirst(2) : $0, radix: 16) }
            guard parts.count == 3, let start = parts[0], let end = parts[1], let flags = parts[2] else { continue }
            guard end > start || (end == start && start != 0) else { continue }
            let size = end - start + 1
            // IORESOURCE_IO 0x100, MEM 0x200, PREFETCH 0x2000, MEM_64 0x100000.
            if var bar = s.bars[i] {
                bar.size = size
                s.bars[i] = bar
            } else {
                s.bars[i] = BAR(kind: i == 6 ? .rom : (flags & 0x100 != 0 ? .io : .memory), size: size, address: start,
                                is64Bit: flags & 0x10_0000 != 0, prefetchable: flags & 0x2000 != 0)
            }
        }
    }
}
