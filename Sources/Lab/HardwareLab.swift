import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Libvirt
import Logging
import Scenario

/// A lab of hosts named by a lab file (hardware nodes, or any libvirt daemons): the runner
/// reaches each one only through its libvirt URI. Nothing here assumes the runner can read the
/// hosts' files: guest memory is read with `virDomainMemoryPeek`, the console through
/// `virDomainOpenConsole`, and the guest image is uploaded through a storage pool.
public struct HardwareLab: Sendable {
    public let file: LabFile
    /// Where a host's QEMU logs the serial console (libvirt's own QEMU log folder).
    public static let consoleLogDirectory = "/var/log/libvirt/qemu"

    public init(file: LabFile) { self.file = file }

    /// Connects to every host of the lab file; `actions` are the host-side fault actions the
    /// lab offers, by host name (none for plain lab-file hosts).
    /// `trouble` tells the runner when a host's kernel broke (the virtual VFIO hosts scan L1's console).
    /// `kernel` gives a host's kernel release where the lab knows it.
    public func environment(actions: [String: any HostActions] = [:],
                            trouble: (@Sendable () -> [String])? = nil,
                            kernel: (@Sendable (String) -> String?)? = nil) async throws -> HardwareLabEnvironment {
        var hosts: [String: LabHost] = [:]
        var parts: [String] = []
        var machines = MachineIdentities(file: file.file)
        for h in file.hosts {
            let connection: Connection
            do {
                connection = try await Connection.open(uri: h.uri)
            } catch {
                throw LabFileErrors(diagnostics: [Diagnostic(location: h.location ?? SourceLocation(file: file.file, line: 0, column: 0),
                                                             message: "cannot connect to host `\(h.name)` at \(h.uri): \(error); is its libvirt daemon running and reachable?")])
            }
            try machines.admit(h, uuid: try? connection.hostUUID())
            let qemu = (try? connection.hypervisorVersion()).map { "QEMU \($0.major).\($0.minor).\($0.micro)" } ?? "QEMU ?"
            parts.append("\(h.name): \(h.uri), \(qemu), \(h.accelerator == .kvm ? "KVM" : "TCG")")
            hosts[h.name] = LabHost(name: h.name, controlURI: h.uri, peerURI: h.peerURI, migrationAddress: h.migrationAddress,
                                    logDirectory: h.logDirectory, connection: connection, actions: actions[h.name],
                                    accelerator: h.accelerator, emulator: h.emulator,
                                    imagePoolDirectory: h.imageDirectory,
                                    migrationURI: h.migrationAddress.map { "tcp://" + ($0.contains(":") ? "[\($0)]" : $0) })
        }
        return HardwareLabEnvironment(hosts: hosts, summary: "lab file \(file.file) (\(parts.joined(separator: "; ")))", labFile: file,
                                      trouble: trouble, kernel: kernel)
    }
}

/// The machines a lab file's hosts are, by libvirt host UUID: two names for one machine would
/// hand the same devices to both "hosts" and migrate a guest onto itself.
struct MachineIdentities {
    let file: String
    var first: [String: String] = [:]   // host UUID -> the first host that has it

    /// Takes host `h` with its UUID (nil: the daemon says none, as libvirt's test driver);
    /// refuses it when an earlier host has the same.
    mutating func admit(_ h: LabFile.Host, uuid: String?) throws(LabFileErrors) {
        guard let uuid else { return }
        if let other = first[uuid] {
            throw LabFileErrors(diagnostics: [Diagnostic(location: h.location ?? SourceLocation(file: file, line: 0, column: 0),
                message: "hosts `\(other)` and `\(h.name)` are the same machine (libvirt host UUID \(uuid)): a migration needs two; point `\(h.name)` at another machine (two daemons on one machine need their own `host_uuid` in libvirtd.conf)")])
        }
        first[uuid] = h.name
    }
}

public struct HardwareLabEnvironment: LabEnvironment {
    public let hosts: [String: LabHost]
    public let summary: String
    public var sharedScratchDirectory: String? { nil }
    public let labFile: LabFile?
    let trouble: (@Sendable () -> [String])?
    let kernel: (@Sendable (String) -> String?)?
    public func hostTrouble() -> [String] { trouble?() ?? [] }
    public func kernelRelease(of host: LabHost) -> String? { kernel?(host.name) }
}

/// Puts the guest image where a host's QEMU can read it.
public enum GuestImageStaging {
    /// The storage pool the image goes into on hosts with an `imagePoolDirectory`.
    public static let poolName = "miglab-images"

    /// The image as `host` sees it: the runner's own files when the host reads them, else
    /// the kernel and initramfs uploaded (once per content hash) into a directory storage pool.
    public static func stage(_ image: GuestImage, on host: LabHost, logger: Logger = Logger(label: "miglab.image")) async throws -> GuestImage {
        // A twin host reads the runner's files.
        guard let directory = host.imagePoolDirectory, let connection = host.connection else { return image }
        let pool: StoragePool
        if let existing = try connection.storagePool(named: poolName) {
            if !existing.isActive { try existing.start() }
            pool = existing
        } else {
            pool = try connection.createStoragePool(xml: poolXML(directory: directory))
        }
        try pool.refresh()
        let tag = String(image.hash.prefix(16))
        var paths: [String] = []
        // The kernel keeps its file name: vmlinux (the ELF booted through PVH) or vmlinuz.
        for (file, suffix) in [(image.kernel, (image.kernel as NSString).lastPathComponent), (image.initrd, "initrd.img")] {
            let name = "miglab-\(tag)-\(suffix)"
            let size = try FileManager.default.attributesOfItem(atPath: file)[.size] as? UInt64 ?? 0
            if let volume = try pool.volume(named: name) {
                if try volume.capacity() == size {
                    paths.append(try volume.path())
                    continue
                }
                try volume.delete()   // a partial upload of an earlier run
            }
            let volume = try pool.createVolume(xml: volumeXML(name: name, bytes: size))
            logger.info("uploading \(file) to host \(host.name) (\(size) bytes, pool \(poolName))")
            do {
                try await volume.upload(contentsOf: file)
            } catch {
                try? volume.delete()
                throw error
            }
            paths.append(try volume.path())
        }
        return GuestImage(kernel: paths[0], initrd: paths[1], hash: image.hash, kernelVersion: image.kernelVersion)
    }

    static func poolXML(directory: String) -> String {
        let pool = XMLElement(name: "pool")
        pool.addAttribute(xmlAttribute("type", "dir"))
        pool.addChild(XMLElement(name: "name", stringValue: poolName))
        let target = XMLElement(name: "target")
        target.addChild(XMLElement(name: "path", stringValue: directory))
        pool.addChild(target)
        return XMLDocument(rootElement: pool).xmlString
    }

    static func volumeXML(name: String, bytes: UInt64) -> String {
        let volume = XMLElement(name: "volume")
        volume.addChild(XMLElement(name: "name", stringValue: name))
        let capacity = XMLElement(name: "capacity", stringValue: "\(bytes)")
        capacity.addAttribute(xmlAttribute("unit", "bytes"))
        volume.addChild(capacity)
        let target = XMLElement(name: "target")
        let format = XMLElement(name: "format")
        format.addAttribute(xmlAttribute("type", "raw"))
        target.addChild(format)
        volume.addChild(target)
        return XMLDocument(rootElement: volume).xmlString
    }
}
