import Foundation
import Logging

/// The libvirt a virtual VFIO host runs, when it is not the runner machine's own: Debian
/// packages unpacked into a folder (never installed here) that L1 copies over its volatile root
/// before its daemons start. So the virtual hosts can run bookworm-backports' libvirt 11.3, which
/// reports a migration's VFIO device bytes (`vfio_data_transferred`, libvirt >= 10.6), while this
/// machine's built-in lab and the runner keep Debian 12's 9.0. The runner's 9.0 client reads
/// 11.3's job statistics unchanged: typed parameters travel by name.
public struct VirtualHostLibvirt: Sendable, Codable, Equatable {
    /// The Debian package version, e.g. 11.3.0-2~bpo12+1.
    public let packageVersion: String
    /// The unpacked packages (usr/sbin/libvirtd, usr/lib/x86_64-linux-gnu/libvirt.so.0, ...).
    public let root: String
    public let hash: String
}

/// Unpacks `VirtualHostLibvirt`s, cached by a content hash of the packages.
public struct VirtualHostLibvirtBuilder: Sendable {
    /// bookworm-backports' libvirt: the first in Debian 12's reach with `vfio_data_transferred`.
    public static let defaultPackageVersion = "11.3.0-2~bpo12+1"
    /// `--libvirt host`: the virtual hosts run this machine's own libvirt, as installed.
    public static let machineOwn = "host"
    /// What a lab daemon needs: libvirtd with the QEMU, node-device (mdevs) and storage (image
    /// upload into a `dir` pool) drivers, and virsh for a person debugging inside L1. Their
    /// library dependencies are Debian 12's own (checked: libc 2.34, glib, libxml2, gnutls).
    static let packages = ["libvirt0", "libvirt-common", "libvirt-daemon", "libvirt-daemon-common", "libvirt-daemon-log",
                           "libvirt-daemon-driver-qemu", "libvirt-daemon-driver-nodedev", "libvirt-daemon-driver-storage",
                           "libvirt-clients"]
    static let layoutVersion = "miglab-l1-libvirt-2"

    /// Downloads and the cache folder are the guest image builder's.
    let images: GuestImageBuilder
    var cacheRoot: String { images.cacheRoot }
    var logger: Logger { images.logger }

    public init(images: GuestImageBuilder = GuestImageBuilder(logger: Logger(label: "miglab.vfio-lab"))) {
        self.images = images
    }

    /// nil for `machineOwn`: L1 keeps the libvirt it sees on this machine's root.
    public func build(packageVersion: String = VirtualHostLibvirtBuilder.defaultPackageVersion) throws -> VirtualHostLibvirt? {
        if packageVersion == Self.machineOwn { return nil }
        let fm = FileManager.default
        let downloads = "\(cacheRoot)/debs"
        try fm.createDirectory(atPath: downloads, withIntermediateDirectories: true)
        let debs = try Self.packages.map { try images.download($0, version: packageVersion, into: downloads) }
        var hasher = ContentHash()
        hasher.add(Self.layoutVersion)
        for d in debs { hasher.add((d as NSString).lastPathComponent) }
        let hash = hasher.hex
        let dir = "\(cacheRoot)/virtual-hosts/libvirt-\(hash)"
        let root = "\(dir)/root"
        let manifest = "\(dir)/libvirt.json"
        if let d = fm.contents(atPath: manifest), let l = try? JSONDecoder().decode(VirtualHostLibvirt.self, from: d),
           fm.fileExists(atPath: "\(l.root)/usr/sbin/libvirtd") {
            return l
        }
        logger.info("unpacking libvirt \(packageVersion) for the virtual hosts (\(hash))")
        try? fm.removeItem(atPath: dir)
        try fm.createDirectory(atPath: root, withIntermediateDirectories: true)
        for d in debs { try Command.run(["dpkg-deb", "-x", d, root]) }
        // Debian writes some of a package's doc folder as a symlink to another's, which cannot
        // replace the machine's real folder in L1 (and nobody reads the docs there).
        try? fm.removeItem(atPath: "\(root)/usr/share/doc")
        guard fm.fileExists(atPath: "\(root)/usr/sbin/libvirtd") else {
            throw GuestImageBuilder.ImageError(description: "libvirt-daemon \(packageVersion) has no usr/sbin/libvirtd")
        }
        let l = VirtualHostLibvirt(packageVersion: packageVersion, root: root, hash: hash)
        try JSONEncoder().encode(l).write(to: URL(fileURLWithPath: manifest))
        return l
    }
}
