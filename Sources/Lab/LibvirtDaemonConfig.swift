import Foundation

/// The configuration of one lab libvirt daemon (libvirtd.conf, qemu.conf, libvirt.conf), written
/// into its host folder, which `HostSupervisor` bind-mounts over /etc/libvirt. Used by the
/// built-in lab and by the virtual VFIO hosts, so both daemons are configured one way.
struct LibvirtDaemonConfig {
    /// For the comment at the top of each file.
    var label: String
    /// The host folder as the daemon sees it (etc, run, lib, log, cache, sock below it).
    var directory: String
    /// Where libvirtd listens for TCP connections (peer-to-peer migration, remote control).
    var listenAddress: String
    var tcpPort: Int?
    var hostUUID: String
    /// Where incoming migration streams are received.
    var migrationAddress: String
    var migrationPorts: ClosedRange<Int> = 49152...49215

    static let subfolders = ["etc", "etc/qemu", "run", "lib", "log", "log/qemu", "cache", "sock"]

    /// Writes the files into `folder`/etc and makes the subfolders there; `folder` is
    /// `directory` unless the daemon runs on another machine that copies them (a virtual host).
    func write(into folder: String? = nil) throws {
        let folder = folder ?? directory
        for sub in Self.subfolders {
            try FileManager.default.createDirectory(atPath: "\(folder)/\(sub)", withIntermediateDirectories: true)
        }
        var libvirtd = """
        # written by miglab: \(label)
        listen_tls = 0
        listen_tcp = 1
        listen_addr = "\(listenAddress)"
        auth_tcp = "none"
        auth_unix_rw = "none"
        auth_unix_ro = "none"
        unix_sock_dir = "\(directory)/sock"
        host_uuid = "\(hostUUID)"
        log_outputs = "3:file:\(directory)/log/libvirtd.log"

        """
        if let tcpPort { libvirtd += "tcp_port = \"\(tcpPort)\"\n" }
        // No libvirt-daemon-system here: QEMU runs as root, without namespaces, cgroups or a
        // security driver; stdio goes to a file so no virtlogd is needed.
        let qemu = """
        # written by miglab: \(label)
        user = "root"
        group = "root"
        security_driver = "none"
        dynamic_ownership = 0
        remember_owner = 0
        namespaces = [ ]
        cgroup_controllers = [ ]
        stdio_handler = "file"
        migration_address = "\(migrationAddress)"
        migration_host = "\(migrationAddress)"
        migration_port_min = \(migrationPorts.lowerBound)
        migration_port_max = \(migrationPorts.upperBound)

        """
        try libvirtd.write(toFile: "\(folder)/etc/libvirtd.conf", atomically: true, encoding: .utf8)
        try qemu.write(toFile: "\(folder)/etc/qemu.conf", atomically: true, encoding: .utf8)
        try "uri_default = \"qemu:///system\"\n".write(toFile: "\(folder)/etc/libvirt.conf", atomically: true, encoding: .utf8)
    }
}
