import Foundation
import Logging

/// The guest image miglab boots by direct kernel boot: a Debian kernel plus a small busybox
/// initramfs with the device modules, qemu-guest-agent and the memory workload.
public struct GuestImage: Sendable, Codable, Equatable {
    public let kernel: String
    public let initrd: String
    /// Content hash the image is cached under.
    public let hash: String
    public let kernelVersion: String

    public init(kernel: String, initrd: String, hash: String, kernelVersion: String) {
        self.kernel = kernel
        self.initrd = initrd
        self.hash = hash
        self.kernelVersion = kernelVersion
    }
}

/// Builds `GuestImage`s from Debian packages (downloaded with `apt-get download` and unpacked
/// with `dpkg-deb -x`, never installed system-wide), cached by a content hash of every input.
/// Where the runner gets its guest image: built (`GuestImageBuilder`), or a twin's.
public protocol GuestImageSource: Sendable {
    func build() throws -> GuestImage
}

public struct GuestImageBuilder: GuestImageSource {
    public let cacheRoot: String
    let logger: Logger

    /// Kernel modules every guest loads (dependencies are added from modules.dep): the agent's
    /// virtio-serial port and the guest's own NIC and disk.
    static let modules = ["virtio_pci", "virtio_net", "virtio_console", "virtio_blk"]
    /// Drivers of passed-through or emulated devices, loaded only when a PCI device of the guest
    /// matches one of the module's aliases: mlx5_core (3.9 MB, about 0.8 s of a TCG boot) drives
    /// ConnectX VFs on hardware nodes (mlx5_vfio_pci), e1000e the emulated NICs. The 8250 PCI
    /// serial driver (mtty, pci-serial) is built into Debian's kernel.
    static let deviceModules = ["e1000e", "mlx5_core"]
    /// Bump when the image layout changes in a way the inputs do not show.
    static let layoutVersion = "miglab-image-3"

    public init(cacheRoot: String = GuestImageBuilder.defaultCacheRoot, logger: Logger = Logger(label: "miglab.image")) {
        self.cacheRoot = cacheRoot
        self.logger = logger
    }

    public static var defaultCacheRoot: String {
        ProcessInfo.processInfo.environment["MIGLAB_CACHE_DIR"] ?? "/var/cache/miglab"
    }

    public struct ImageError: Error, CustomStringConvertible {
        public let description: String
    }

    /// The guest-side sources shipped with miglab (init script, workload source).
    static func guestResource(_ name: String) throws -> Data {
        try labResource("Guest", name)
    }

    /// Returns the cached image for the current inputs, building it when needed.
    public func build() throws -> GuestImage { try build(force: false) }

    public func build(force: Bool) throws -> GuestImage {
        let downloads = "\(cacheRoot)/debs"
        try FileManager.default.createDirectory(atPath: downloads, withIntermediateDirectories: true)
        let kernelPackage = try resolveKernelPackage()
        let debs = try [kernelPackage, "qemu-guest-agent", "busybox-static"].map { try download($0, into: downloads) }
        let initScript = try Self.guestResource("init")
        let workload = try Self.guestResource("memtest.c")
        let guestctl = try Self.guestResource("miglab-guestctl")
        let uart = try Self.guestResource("miglab-uart.c")
        let tools = ["/usr/bin/lspci", "/usr/bin/setpci"]
        var hasher = ContentHash()
        hasher.add(Self.layoutVersion)
        for d in debs { hasher.add((d as NSString).lastPathComponent) }
        hasher.add(initScript)
        hasher.add(workload)
        hasher.add(guestctl)
        hasher.add(uart)
        hasher.add(Self.modules.joined(separator: ","))
        hasher.add(Self.deviceModules.joined(separator: ","))
        for t in tools { hasher.add(FileManager.default.contents(atPath: t) ?? Data()) }
        let hash = hasher.hex
        let dir = "\(cacheRoot)/images/\(hash)"
        let manifest = "\(dir)/image.json"
        if !force, let d = FileManager.default.contents(atPath: manifest),
           let image = try? JSONDecoder().decode(GuestImage.self, from: d),
           FileManager.default.fileExists(atPath: image.kernel), FileManager.default.fileExists(atPath: image.initrd) {
            return image
        }
        logger.info("building guest image \(hash)")
        let work = "\(cacheRoot)/work-\(getpid())"
        try? FileManager.default.removeItem(atPath: work)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let pkgRoot = "\(work)/pkgs"
        try FileManager.default.createDirectory(atPath: pkgRoot, withIntermediateDirectories: true)
        for d in debs { try Command.run(["dpkg-deb", "-x", d, pkgRoot]) }

        let moduleRoot = try firstDirectory(in: "\(pkgRoot)/lib/modules")
        let kernelVersion = (moduleRoot as NSString).lastPathComponent
        // The package ships no modules.dep (depmod writes it when the package is installed).
        if !FileManager.default.fileExists(atPath: "\(moduleRoot)/modules.dep") {
            try Command.run(["depmod", "-b", pkgRoot, kernelVersion])
        }
        let r = "\(work)/root"
        let fm = FileManager.default
        for sub in ["bin", "sbin", "usr/bin", "usr/sbin", "lib/modules/miglab", "proc", "sys", "dev", "tmp", "run", "etc", "usr/share/misc"] {
            try fm.createDirectory(atPath: "\(r)/\(sub)", withIntermediateDirectories: true)
        }
        try fm.createSymbolicLink(atPath: "\(r)/var", withDestinationPath: "run")
        try fm.copyItem(atPath: "\(pkgRoot)/bin/busybox", toPath: "\(r)/bin/busybox")
        try initScript.write(to: URL(fileURLWithPath: "\(r)/init"))
        chmod("\(r)/init", 0o755)
        try guestctl.write(to: URL(fileURLWithPath: "\(r)/bin/miglab-guestctl"))
        chmod("\(r)/bin/miglab-guestctl", 0o755)
        try "root:x:0:0:root:/:/bin/sh\n".write(toFile: "\(r)/etc/passwd", atomically: true, encoding: .utf8)

        // The workload: a static C program, compiled here so it needs nothing in the guest.
        try workload.write(to: URL(fileURLWithPath: "\(work)/memtest.c"))
        try Command.run(["cc", "-O2", "-static", "-o", "\(r)/bin/miglab-memtest", "\(work)/memtest.c"])
        // Register-level checks of serial devices (loopback, scratch registers), also static C.
        try uart.write(to: URL(fileURLWithPath: "\(work)/miglab-uart.c"))
        try Command.run(["cc", "-O2", "-static", "-o", "\(r)/bin/miglab-uart", "\(work)/miglab-uart.c"])

        // Kernel modules in dependency order, device drivers with the aliases that load them.
        let lines = try Self.moduleLines(always: Self.modules, onDevice: Self.deviceModules,
                                         modulesDep: String(contentsOfFile: "\(moduleRoot)/modules.dep", encoding: .utf8),
                                         builtin: (try? String(contentsOfFile: "\(moduleRoot)/modules.builtin", encoding: .utf8)) ?? "",
                                         aliases: (try? String(contentsOfFile: "\(moduleRoot)/modules.alias", encoding: .utf8)) ?? "")
        for line in lines {
            try fm.copyItem(atPath: "\(moduleRoot)/\(line.path)", toPath: "\(r)/lib/modules/miglab/\((line.path as NSString).lastPathComponent)")
        }
        try lines.map(\.text).joined().write(toFile: "\(r)/etc/miglab-modules", atomically: true, encoding: .utf8)

        // qemu-guest-agent and host tools with the shared libraries they need.
        try fm.copyItem(atPath: "\(pkgRoot)/usr/sbin/qemu-ga", toPath: "\(r)/usr/sbin/qemu-ga")
        var binaries = ["\(r)/usr/sbin/qemu-ga"]
        for t in tools where fm.fileExists(atPath: t) {
            try fm.copyItem(atPath: t, toPath: "\(r)\(t)")
            binaries.append("\(r)\(t)")
        }
        if fm.fileExists(atPath: "/usr/share/misc/pci.ids") {
            try? fm.copyItem(atPath: "/usr/share/misc/pci.ids", toPath: "\(r)/usr/share/misc/pci.ids")
        }
        for b in binaries {
            for lib in try sharedLibraries(of: b) where !fm.fileExists(atPath: "\(r)\(lib)") {
                try fm.createDirectory(atPath: "\(r)\((lib as NSString).deletingLastPathComponent)", withIntermediateDirectories: true)
                try fm.copyItem(atPath: URL(fileURLWithPath: lib).resolvingSymlinksInPath().path, toPath: "\(r)\(lib)")
            }
        }

        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let kernel = "\(dir)/vmlinuz"
        let initrd = "\(dir)/initrd.cpio"
        try? fm.removeItem(atPath: kernel)
        try fm.copyItem(atPath: "\(pkgRoot)/boot/vmlinuz-\(kernelVersion)", toPath: kernel)
        let bootKernel = KernelImage.bootable(bzImage: kernel, elf: "\(dir)/vmlinux", scratch: work,
                                              what: "the guest kernel", logger: logger)
        var archive = CPIOArchive()
        try archive.addTree(root: r)
        try archive.finish().write(to: URL(fileURLWithPath: initrd))
        let image = GuestImage(kernel: bootKernel, initrd: initrd, hash: hash, kernelVersion: kernelVersion)
        try JSONEncoder().encode(image).write(to: URL(fileURLWithPath: manifest))
        logger.info("guest image \(hash): kernel \(kernelVersion), initrd \(archive.size / 1024) KiB")
        return image
    }

    /// The versioned kernel package the `linux-image-amd64` meta-package points at.
    func resolveKernelPackage() throws -> String {
        let out = try Command.run(["apt-cache", "depends", "linux-image-amd64"]).stdout
        guard let line = out.split(separator: "\n").first(where: { $0.contains("Depends: linux-image-") }) else {
            throw ImageError(description: "apt-cache does not know linux-image-amd64; run `apt-get update` (ci/setup does)")
        }
        return String(line.split(separator: ":").last!.trimmingCharacters(in: .whitespaces))
    }

    /// `apt-get download PACKAGE[=VERSION]` into `dir`, unless a .deb of it is there already.
    func download(_ package: String, version: String? = nil, into dir: String) throws -> String {
        // apt names the file PACKAGE_VERSION_ARCH.deb, an epoch's colon written as %3a.
        let prefix = "\(package)_" + (version.map { $0.replacingOccurrences(of: ":", with: "%3a") + "_" } ?? "")
        func existing() -> String? {
            ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [])
                .filter { $0.hasPrefix(prefix) && $0.hasSuffix(".deb") }.sorted().last.map { "\(dir)/\($0)" }
        }
        if let e = existing() { return e }
        let spec = version.map { "\(package)=\($0)" } ?? package
        let r = try Command.run(["apt-get", "download", "-q", spec], check: false, directory: dir)
        guard r.status == 0, let e = existing() else {
            throw ImageError(description: "apt-get download \(spec) failed (\(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines))); "
                             + "run ci/setup (it adds bookworm-backports and runs apt-get update)")
        }
        return e
    }

    func firstDirectory(in path: String) throws -> String {
        guard let name = try FileManager.default.contentsOfDirectory(atPath: path).sorted().first else {
            throw ImageError(description: "\(path) is empty: the kernel package has no modules")
        }
        return "\(path)/\(name)"
    }

    /// Shared libraries a dynamic binary needs (absolute paths, as `ldd` prints them).
    func sharedLibraries(of binary: String) throws -> [String] {
        let out = try Command.run(["ldd", binary], check: false).stdout
        if out.contains("not found") {
            throw ImageError(description: "\(binary) needs libraries this machine lacks:\n\(out)\nrun ci/setup")
        }
        return out.split(separator: "\n").compactMap { line in
            line.split(whereSeparator: { $0 == " " || $0 == "\t" }).first { $0.hasPrefix("/") }.map(String.init)
        }
    }

    /// The .ko files (relative to the module root) to load, dependencies before dependents.
    /// Modules built into the kernel are skipped.
    static func moduleLoadOrder(_ wanted: [String], modulesDep: String, builtin: String) throws -> [String] {
        var deps: [String: [String]] = [:]   // path -> dependency paths
        var byName: [String: String] = [:]   // module name -> path
        for line in modulesDep.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard let path = parts.first.map(String.init) else { continue }
            deps[path] = parts.count > 1 ? parts[1].split(separator: " ").map(String.init) : []
            byName[moduleName(path)] = path
        }
        let builtinNames = Set(builtin.split(separator: "\n").map { moduleName(String($0)) })
        var order: [String] = []
        var seen: Set<String> = []
        func visit(_ path: String) {
            guard seen.insert(path).inserted else { return }
            for d in deps[path] ?? [] { visit(d) }
            order.append(path)
        }
        for name in wanted {
            if let path = byName[name] { visit(path) }
            else if !builtinNames.contains(name) {
                throw ImageError(description: "kernel module \(name) is neither in modules.dep nor built in")
            }
        }
        return order
    }

    /// One line of the guest's /etc/miglab-modules: a module file, and the modules.alias
    /// patterns of PCI devices that make /init load it (none: always loaded).
    struct ModuleLine: Equatable {
        var path: String
        var patterns: [String]
        var text: String { ([(path as NSString).lastPathComponent] + patterns).joined(separator: " ") + "\n" }
    }

    /// The modules to put in the image, in load order: `always` and their dependencies without
    /// patterns; each of `onDevice` and its dependencies (unless `always` needs them anyway)
    /// with the PCI aliases of every `onDevice` module that needs them.
    static func moduleLines(always: [String], onDevice: [String], modulesDep: String, builtin: String,
                            aliases: String) throws -> [ModuleLine] {
        let base = try moduleLoadOrder(always, modulesDep: modulesDep, builtin: builtin)
        var patterns: [String: [String]] = [:]   // path -> patterns
        var order = base
        // module name -> its PCI aliases, from "alias pci:PATTERN MODULE" lines.
        var pciAliases: [String: [String]] = [:]
        for line in aliases.split(separator: "\n") {
            let f = line.split(separator: " ")
            guard f.count == 3, f[0] == "alias", f[1].hasPrefix("pci:") else { continue }
            pciAliases[moduleName(String(f[2])), default: []].append(String(f[1]))
        }
        for name in onDevice {
            let pci = pciAliases[name] ?? []
            let chain = try moduleLoadOrder([name], modulesDep: modulesDep, builtin: builtin)
            guard !chain.isEmpty else { continue }   // built in
            guard !pci.isEmpty else {
                throw ImageError(description: "kernel module \(name) has no PCI alias in modules.alias: nothing would ever load it")
            }
            for path in chain where !base.contains(path) {
                if patterns[path] == nil { order.append(path) }
                patterns[path, default: []] += pci.filter { !(patterns[path] ?? []).contains($0) }
            }
        }
        return order.map { ModuleLine(path: $0, patterns: patterns[$0] ?? []) }
    }

    static func moduleName(_ path: String) -> String {
        var base = (path as NSString).lastPathComponent
        for ext in [".xz", ".zst", ".gz", ".ko"] where base.hasSuffix(ext) { base.removeLast(ext.count) }
        return base.replacingOccurrences(of: "-", with: "_")
    }
}

/// A file miglab ships in the Lab target's resources (`Guest/`, `VirtualHost/`).
func labResource(_ folder: String, _ name: String) throws -> Data {
    guard let url = Bundle.module.url(forResource: "\(folder)/\(name)", withExtension: nil)
            ?? Bundle.module.url(forResource: name, withExtension: nil, subdirectory: folder),
          let data = FileManager.default.contents(atPath: url.path) else {
        throw GuestImageBuilder.ImageError(description: "miglab's file \(folder)/\(name) is missing from its resources (\(Bundle.module.bundlePath))")
    }
    return data
}

/// 64-bit FNV-1a over the image inputs. It only names a cache folder, so a cryptographic hash
/// (swift-crypto, a large dependency) is not needed; inputs are length-prefixed.
struct ContentHash {
    private var h: UInt64 = 0xcbf29ce484222325
    mutating func add(_ d: Data) {
        add(bytes: withUnsafeBytes(of: UInt64(d.count).littleEndian, Array.init))
        add(bytes: [UInt8](d))
    }
    mutating func add(_ s: String) { add(Data(s.utf8)) }
    private mutating func add(bytes: [UInt8]) {
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100000001b3 }
    }
    var hex: String { String(format: "%016llx", h) }
}
