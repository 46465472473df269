import Foundation
import Libvirt

/// `miglab qualify` on a real VFIO device with no hardware: an mtty mdev on a virtual VFIO host.
///
/// The mdev is created through the host's libvirt (the node-device API, as a run creates its
/// mdevs) and qualified by miglab itself running inside L1, where the device's VFIO group is:
/// `miglab qualify --device UUID --json FILE` through the request folder L1 serves, by a copy
/// of this same executable (`stageMiglab`). L1's console is watched meanwhile:
/// a device whose driver crashes the host kernel is a finding, not a hang.
extension VirtualVFIOLab {
    public struct DeviceQualification: Sendable {
        public let mdevUUID: String
        public let mdevType: String
        /// What `miglab qualify` printed inside L1 (the check table, or why it could not open the device).
        public let output: String
        /// Its exit status (0: no check failed, 1: a check failed, 2: the device could not be
        /// opened); nil when it did not finish (L1 crashed or hung).
        public let status: Int32?
        /// Its JSON report, when it wrote one.
        public let reportJSON: Data?
        /// Lines of L1's console that say its kernel is in trouble since the qualification began.
        public let kernelTrouble: [String]
    }

    public enum QualificationError: Error, CustomStringConvertible {
        case noSuchHost(String)
        case unknownType(String)

        public var description: String {
            switch self {
            case let .noSuchHost(h): "the virtual VFIO hosts are \(VirtualVFIOLab.hostSpecs.map(\.name).joined(separator: ", ")), not `\(h)`"
            case let .unknownType(t): "mtty offers the mdev types \(VirtualVFIOLab.mdevPools.map(\.type).joined(separator: ", ")), not `\(t)`"
            }
        }
    }

    /// Creates an mdev of `type` on virtual host `host`, qualifies it inside L1 and removes it.
    /// The virtual hosts must be up (`up()`).
    /// `checks` are `--only` prefixes (empty: the whole suite).
    public func qualifyMdev(type: String = "mtty-2", host: String = "a", checks: [String] = [],
                            timeout: Duration = .seconds(300)) async throws -> DeviceQualification {
        guard let spec = Self.hostSpecs.first(where: { $0.name == host }) else { throw QualificationError.noSuchHost(host) }
        guard Self.mdevPools.contains(where: { $0.type == type }) else { throw QualificationError.unknownType(type) }
        // Keepalive: if the device crashes L1, the connection must not wait forever to close.
        let connection = try await Connection.open(uri: Self.controlURI(spec), keepAlive: true)
        let control = LibvirtPassthroughControl(connection: connection)
        let uuid = UUID()
        let name = uuid.uuidString.lowercased()
        try await control.createMdev(parent: Self.mttyParent, type: type, uuid: uuid)
        logger.info("virtual VFIO host \(host): mdev \(name) (\(type)) created for qualification")
        let report = "\(machineDirectory)/qualify-\(name).json"
        let offset = consoleSize()
        let shell = VirtualHostShell(requests: "\(machineDirectory)/requests")
        let executable = try stageMiglab(as: "miglab-qualify-\(name)")
        defer { try? FileManager.default.removeItem(atPath: executable) }
        let command = ([executable, "qualify", "--device", name, "--json", report] + checks.flatMap { ["--only", $0] })
            .map(Command.shellQuoted).joined(separator: " ")
        var output = ""
        var status: Int32?
        do {
            let r = try shell.run(command + " 2>&1", timeout: timeout) { self.kernelTrouble(after: offset).first }
            output = r.stdout
            status = r.status
        } catch {
            output = "miglab qualify did not finish inside L1: \(error)"
        }
        let trouble = kernelTrouble(after: offset)
        let json = FileManager.default.contents(atPath: report)
        try? FileManager.default.removeItem(atPath: report)
        // A crashed L1 has no mdev to remove; otherwise the mdev goes (the qualification may
        // have left its migration state anywhere: it is never reused).
        if trouble.isEmpty {
            try await control.destroyMdev(uuid: uuid)
            logger.info("virtual VFIO host \(host): mdev \(name) removed")
        }
        return DeviceQualification(mdevUUID: name, mdevType: type, output: output, status: status, reportJSON: json, kernelTrouble: trouble)
    }
}
