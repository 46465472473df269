import Foundation
import Logging

/// What a virtual VFIO host boots: a Debian kernel with VFIO, mdev and KVM, the kernel's sample
/// `mtty` driver built for it, and a small initramfs that mounts the runner machine's own root
/// read-only over virtio-9p (so the host's QEMU runs inside, unchanged).
public struct VirtualHostKernel: Sendable, Codable, Equatable {
    /// `uname -r`, e.g. 6.12.95+deb12-amd64.
    public let release: String
    /// The Debian package version the kernel, headers and source come from.
    public let packageVersion: String
    /// The unpacked packages: boot/vmlinuz-RELEASE, lib/modules/RELEASE (with modules.dep).
    public let root: String
    public let kernel: String
    /// The L1 initramfs (busybox, 9p and overlay modules, `l1-init`).
    public let initramfs: String
    /// samples/vfio-mdev/mtty.c built against this kernel's headers.
    public let mttyModule: String
    /// Content hash the artifacts are cached under.
    public let hash: String
}

/// Builds `VirtualHostKernel`s from Debian packages (`apt-get download` + `dpkg-deb -x`, never
/// installed), cached by a content hash of every input like the guest image.
///
/// Debian builds no kernel samples, so mtty is compiled here from `linux-source-X.Y` against the
/// matching `linux-headers-*` and `linux-kbuild-*` (unpacked into the cache, not installed).
public struct VirtualHostKernelBuilder: Sendable {
    /// The kernel the virtual hosts boot by default: bookworm-backports' 6.12 (VFIO_MDEV=m,
    /// VFIO_CONTAINER=y, KVM; mtty migrates since 6.7). Pinned so every run boots the same kernel.
    public static let defaultPackageVersion = "6.12.95-1~bpo12+1"
    /// Bump when the layout changes in a way the inputs do not show.
    static let layoutVersion = "miglab-l1-2"
    /// Modules the L1 initramfs loads before it can mount its root.
    static let initramfsModules = ["netfs", "9pnet", "9pnet_virtio", "9p", "overlay"]

    /// The one change miglab makes to mtty: a switch, off by default (stock behaviour), that
    /// makes it report the reset it implements. mtty handles VFIO_DEVICE_RESET (mtty_reset puts
    /// its migration state back to RUNNING and disables the data files) but its
    /// VFIO_DEVICE_GET_INFO leaves out VFIO_DEVICE_FLAGS_RESET, so QEMU never passes a guest's
    /// device reset on to it, unlike a device with FLR. With `report_reset=1` (writable at run
    /// time; read when QEMU opens the device) a guest reset during a migration reaches the driver:
    /// the "data_fd out of sync" race of a real device. Off, the crash of a reused RESUMING mdev
    /// stays reachable (QEMU's reset at start would otherwise put the mdev back to RUNNING).
    static let mttyResetSwitch = """
        /* miglab: report the reset mtty implements (VFIO_DEVICE_FLAGS_RESET) when asked to. */
        static bool report_reset;
        module_param(report_reset, bool, 0644);
        MODULE_PARM_DESC(report_reset, "miglab: report VFIO_DEVICE_FLAGS_RESET so that QEMU passes guest resets on");

        static int mtty_get_device_info(
        """
    static let mttyStockFlags = "dev_info->flags = VFIO_DEVICE_FLAGS_PCI;"
    static let mttyResetFlags = "dev_info->flags = VFIO_DEVICE_FLAGS_PCI | (report_reset ? VFIO_DEVICE_FLAGS_RESET : 0);"

    /// samples/vfio-mdev/mtty.c with the reset switch; an error names what it did not find (a
    /// kernel whose mtty changed there).
    static func patchMtty(_ source: String) throws -> String {
        let declaration = "static int mtty_get_device_info("
        for anchor in [declaration, mttyStockFlags] where source.components(separatedBy: anchor).count != 2 {
            throw GuestImageBuilder.ImageError(description: "this kernel's samples/vfio-mdev/mtty.c does not have `\(anchor)` exactly once: miglab cannot add its reset switch (VirtualHostKernelBuilder.patchMtty)")
        }
        return source.replacingOccurrences(of: declaration, with: mttyResetSwitch)
            .replacingOccurrences(of: mttyStockFlags, with: mttyResetFlags)
    }

    public let cacheRoot: String
    let images: GuestImageBuilder
    let logger: Logger

    public init(cacheRoot: String = GuestImageBuilder.defaultCacheRoot, logger: Logger = Logger(label: "miglab.vfio-lab")) {
        self.cacheRoot = cacheRoot
        self.images = GuestImageBuilder(cacheRoot: cacheRoot, logger: logger)
        self.logger = logger
    }

    /// The Debian packages of one kernel version: `6.12.95-1~bpo12+1` gives ABI `6.12.95+deb12`.
    struct Packages {
        let version: String
        let abi: String
        let series: String

        init(version: String) throws {
            // 6.12.95-1~bpo12+1 -> upstream 6.12.95, Debian suffix deb12 (bpo12 or deb12u1 alike).
            guard let upstream = version.split(separator: "-").first, upstream.split(separator: ".").count >= 2,
                  let suite = version.range(of: #"(bpo|deb)(\d+)"#, options: .regularExpression) else {
                throw GuestImageBuilder.ImageError(description: "`\(version)` is not a Debian kernel package version like \(VirtualHostKernelBuilder.defaultPackageVersion)")
            }
            let release = version[suite].drop { $0.isLetter }
            self.version = version
            self.abi = "\(upstream)+deb\(release)"
            self.series = upstream.split(separator: ".").prefix(2).joined(separator: ".")
        }

        var release: String { "\(abi)-amd64" }
        var image: String { "linux-image-\(release)-unsigned" }
        var headers: [String] { ["linux-headers-\(release)", "linux-headers-\(abi)-common", "linux-kbuild-\(abi)"] }
        var source: String { "linux-source-\(series)" }
    }

    public func build(packageVersion: String = VirtualHostKernelBuilder.defaultPackageVersion) throws -> VirtualHostKernel {
        let fm = FileManager.default
        let p = try Packages(version: packageVersion)
        let downloads = "\(cacheRoot)/debs"
        try fm.createDirectory(atPath: downloads, withIntermediateDirectories: true)
        let kernelDebs = try ([p.image] + p.headers).map { try images.download($0, version: p.version, into: downloads) }
        let sourceDeb = try images.download(p.source, version: p.version, into: downloads)
        let busybox = try images.download("busybox-static", into: downloads)
        let initScript = try labResource("VirtualHost", "l1-init")
        var hasher = ContentHash()
        hasher.add(Self.layoutVersion)
        for d in kernelDebs + [sourceDeb, busybox] { hasher.add((d as NSString).lastPathComponent) }
        hasher.add(initScript)
        hasher.add(Self.mttyResetSwitch + Self.mttyResetFlags)
        let hash = hasher.hex
        let dir = "\(cacheRoot)/virtual-hosts/\(hash)"
        let manifest = "\(dir)/kernel.json"
        if let d = fm.contents(atPath: manifest), let k = try? JSONDecoder().decode(VirtualHostKernel.self, from: d),
           [k.kernel, k.initramfs, k.mttyModule].allSatisfy(fm.fileExists(atPath:)) {
            return k
        }
        logger.info("building the virtual host kernel \(p.release) with mtty (\(hash))")
        let work = "\(cacheRoot)/work-l1-\(getpid())"
        try? fm.removeItem(atPath: work)
        defer { try? fm.removeItem(atPath: work) }
        try? fm.removeItem(atPath: dir)
        let root = "\(dir)/root"
        try fm.createDirectory(atPath: root, withIntermediateDirectories: true)
        for d in kernelDebs { try Command.run(["dpkg-deb", "-x", d, root]) }
        // The packages ship no modules.dep: depmod writes it when a kernel is installed.
        try Command.run(["depmod", "-b", root, p.release])
        let kernel = "\(root)/boot/vmlinuz-\(p.release)"
        guard fm.fileExists(atPath: kernel) else {
            throw GuestImageBuilder.ImageError(description: "\(p.image) has no boot/vmlinuz-\(p.release)")
        }

        // mtty.c from the kernel source, built out of tree against the unpacked headers.
        let src = "\(work)/source"
        try fm.createDirectory(atPath: src, withIntermediateDirectories: true)
        try Command.run(["dpkg-deb", "-x", sourceDeb, src])
        let tarball = "\(src)/usr/src/linux-source-\(p.series).tar.xz"
        let sample = "linux-source-\(p.series)/samples/vfio-mdev/mtty.c"
        try Command.run(["tar", "-xJf", tarball, "-C", work, sample])
        let module = "\(work)/mtty"
        try fm.createDirectory(atPath: module, withIntermediateDirectories: true)
        let stock = try String(contentsOfFile: "\(work)/\(sample)", encoding: .utf8)
        try Self.patchMtty(stock).write(toFile: "\(module)/mtty.c", atomically: true, encoding: .utf8)
        try "obj-m := mtty.o\n".write(toFile: "\(module)/Kbuild", atomically: true, encoding: .utf8)
        // The headers' Makefile includes the -common package's by its installed path; ours are
        // unpacked into the cache, so a Makefile naming the unpacked one stands in for it.
        let headers = "\(root)/usr/src/linux-headers-\(p.release)"
        try "include \(root)/usr/src/linux-headers-\(p.abi)-common/Makefile\n"
            .write(toFile: "\(work)/Makefile.headers", atomically: true, encoding: .utf8)
        // No pahole here: BTF for out-of-tree modules is optional, so it is switched off.
        try Command.run(["make", "-C", headers, "-f", "\(work)/Makefile.headers", "M=\(module)",
                         "CONFIG_DEBUG_INFO_BTF_MODULES=", "modules"])
        let mtty = "\(dir)/mtty.ko"
        try fm.copyItem(atPath: "\(module)/mtty.ko", toPath: mtty)

        // The L1 initramfs: busybox, the modules that mount the root, and the init script.
        let initRoot = "\(work)/initramfs"
        for sub in ["bin", "lib/modules", "proc", "sys", "dev", "newroot", "lower", "rw"] {
            try fm.createDirectory(atPath: "\(initRoot)/\(sub)", withIntermediateDirectories: true)
        }
        let bb = "\(work)/busybox"
        try Command.run(["dpkg-deb", "-x", busybox, bb])
        try fm.copyItem(atPath: "\(bb)/bin/busybox", toPath: "\(initRoot)/bin/busybox")
        let moduleRoot = "\(root)/lib/modules/\(p.release)"
        let order = try GuestImageBuilder.moduleLoadOrder(
            Self.initramfsModules, modulesDep: String(contentsOfFile: "\(moduleRoot)/modules.dep", encoding: .utf8),
            builtin: (try? String(contentsOfFile: "\(moduleRoot)/modules.builtin", encoding: .utf8)) ?? "")
        var names: [String] = []
        for rel in order {
            // busybox's insmod takes plain .ko files only.
            let name = GuestImageBuilder.moduleName(rel) + ".ko"
            let out = "\(initRoot)/lib/modules/\(name)"
            if rel.hasSuffix(".xz") {
                try fm.copyItem(atPath: "\(moduleRoot)/\(rel)", toPath: out + ".xz")
                try Command.run(["xz", "-d", out + ".xz"])
            } else {
                try fm.copyItem(atPath: "\(moduleRoot)/\(rel)", toPath: out)
            }
            names.append(name)
        }
        try (names.joined(separator: "\n") + "\n").write(toFile: "\(initRoot)/lib/modules/order", atomically: true, encoding: .utf8)
        try initScript.write(to: URL(fileURLWithPath: "\(initRoot)/init"))
        chmod("\(initRoot)/init", 0o755)
        var archive = CPIOArchive()
        try archive.addTree(root: initRoot)
        let initramfs = "\(dir)/l1-initrd.cpio"
        try archive.finish().write(to: URL(fileURLWithPath: initramfs))

        // L1 boots the ELF kernel through its PVH entry when it has one, like the guests.
        let bootKernel = KernelImage.bootable(bzImage: kernel, elf: "\(dir)/vmlinux", scratch: work,
                                              what: "the L1 kernel", logger: logger)
        let k = VirtualHostKernel(release: p.release, packageVersion: p.version, root: root, kernel: bootKernel,
                                  initramfs: initramfs, mttyModule: mtty, hash: hash)
        try JSONEncoder().encode(k).write(to: URL(fileURLWithPath: manifest))
        logger.info("virtual host kernel \(p.release): mtty.ko built, L1 initramfs \(archive.size / 1024) KiB")
        return k
    }
}
