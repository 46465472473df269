import Foundation
import Libvirt

/// One libvirt host of a lab, as the runner sees it. `LabHost` hides how host-side actions
/// happen (built-in lab: local processes and namespaces; hardware node: libvirt or ssh).
public final class LabHost: Sendable {
    /// The name scenarios use ("a", "b").
    public let name: String
    /// URI the runner uses to control this host.
    public let controlURI: String
    /// URI another host's daemon uses to reach this one in a peer-to-peer migration.
    public let peerURI: String
    /// Address the migration stream is sent to, e.g. 10.77.0.2 (tcp://ADDRESS:PORT).
    public let migrationAddress: String?
    /// Where this host's libvirtd and QEMU logs are, when the runner can read them.
    public let logDirectory: String?
    public let connection: Connection

    public init(name: String, controlURI: String, peerURI: String, migrationAddress: String?,
                logDirectory: String?, connection: Connection) {
        self.name = name
        self.controlURI = controlURI
        self.peerURI = peerURI
        self.migrationAddress = migrationAddress
        self.logDirectory = logDirectory
        self.connection = connection
    }

    /// Path of the QEMU log of `domain` on this host, when readable here.
    public func qemuLogPath(domain: String) -> String? {
        logDirectory.map { "\($0)/qemu/\(domain).log" }
    }
}

/// A set of hosts the runner can use: the built-in lab or a hardware lab from a lab file.
public protocol LabEnvironment: Sendable {
    /// Hosts by scenario name.
    var hosts: [String: LabHost] { get }
    /// Short description for logs and results ("built-in lab, QEMU 10.0.2").
    var summary: String { get }
    /// Can the runner read files the hypervisor writes (memory dumps, console logs)?
    var sharesFilesystemWithRunner: Bool { get }
    /// A folder both the runner and every host's QEMU can write and read.
    var sharedScratchDirectory: String { get }
}
