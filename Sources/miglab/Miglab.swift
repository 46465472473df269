import ArgumentParser
import Foundation
import Lab
import Libvirt
import Logging

@main
struct Miglab: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "miglab",
        abstract: "Live-migration test lab for VMs with passthrough PCI devices.",
        subcommands: [RunCommand.self, ListCommand.self, ValidateCommand.self, SchemaCommand.self, ReportCommand.self, MergeCommand.self, CompareCommand.self, LabCommand.self, ImageCommand.self, QualifyCommand.self, InventoryCommand.self,
                      StreamProxyCommand.self]
    )

    @Flag(help: "Print miglab's version, the commit it was built from, and the libvirt and QEMU it sees.")
    var version = false

    mutating func run() async throws {
        guard version else { throw CleanExit.helpRequest(self) }
        print(VersionInfo.text())
    }

    /// ArgumentParser's entry point, after `GLibSliceAllocator.turnOff()`.
    static func main() async {
        GLibSliceAllocator.turnOff()
        await main(nil)
    }
}

/// GLib 2.74 (Debian 12's, under libvirt's client library) hands out small blocks from
/// per-thread magazines of its slice allocator. miglab makes libvirt calls from many
/// short-lived threads, and its test process has died twice in `g_slice_alloc` on such a
/// thread (a corrupted magazine); GLib 2.76 and later use plain malloc instead. With
/// `G_SLICE=always-malloc` GLib 2.74 does the same. GLib reads the variable in its load-time
/// constructor, before any Swift code runs, so miglab sets it and executes itself again
/// (`execv` of /proc/self/exe: same pid, same arguments). A G_SLICE the user set is kept.
enum GLibSliceAllocator {
    static func turnOff() {
        guard getenv("G_SLICE") == nil else { return }
        setenv("G_SLICE", "always-malloc", 1)
        var argv: [UnsafeMutablePointer<CChar>?] = CommandLine.arguments.map { strdup($0) } + [nil]
        execv("/proc/self/exe", &argv)
        // Only reached when the exec failed: run on with the slice allocator, as before.
        for p in argv { free(p) }
    }
}

/// Logging to stderr; --verbose for debug.
func bootstrapLogging(verbose: Bool) {
    LoggingSystem.bootstrap { label in
        var h = StreamLogHandler.standardError(label: label)
        h.logLevel = verbose ? .debug : .info
        return h
    }
}

struct LabCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lab",
        abstract: "The built-in two-host lab on this machine, and the virtual VFIO hosts.",
        subcommands: [Up.self, Down.self, Status.self, HostSupervisorCommand.self]
    )

    struct Up: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Bring the built-in lab (or with --vfio the virtual VFIO hosts) up (idempotent).")
        @Flag(help: "Run on a QEMU older than 10 (QEMU 7.2 loses guest memory under TCG: results are not trustworthy).")
        var allowOldQemu = false
        @Flag(help: "The virtual VFIO hosts: a VM whose kernel has VFIO and the kernel's mtty, with two libvirt hosts; prints the lab file to run with.")
        var vfio = false
        @Option(help: "With --vfio: the Debian kernel package version the virtual hosts boot (bookworm or bookworm-backports).")
        var kernel = VirtualHostKernelBuilder.defaultPackageVersion
        @Option(help: "With --vfio: the Debian libvirt package version the virtual hosts run (`host`: this machine's own).")
        var libvirt = VirtualHostLibvirtBuilder.defaultPackageVersion
        func run() async throws {
            bootstrapLogging(verbose: false)
            if vfio {
                let lab = VirtualVFIOLab()
                let file = try await lab.up(kernel: kernel, libvirt: libvirt)
                print("virtual VFIO hosts up; lab file: \(file)")
                printStatus(await lab.status())
                return
            }
            let lab = BuiltinLab()
            let started = try await lab.up(allowOldQEMU: allowOldQemu)
            print(started ? "built-in lab up" : "built-in lab already up")
            printStatus(await lab.status())
        }
    }

    struct Down: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove everything the built-in lab and the virtual VFIO hosts made, leftovers of crashed runs included.")
        func run() async throws {
            bootstrapLogging(verbose: false)
            try await BuiltinLab().down()
            try await VirtualVFIOLab().down()
            print("built-in lab and virtual VFIO hosts down")
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List what the built-in lab runs.")
        @Flag(help: "Print JSON.") var json = false
        func run() async throws {
            let s = await BuiltinLab().status()
            let v = await VirtualVFIOLab().status()
            if json {
                struct Both: Encodable { let builtin: BuiltinLab.Status; let vfio: VirtualVFIOLab.Status }
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                enc.keyEncodingStrategy = .convertToSnakeCase
                print(String(decoding: try enc.encode(Both(builtin: s, vfio: v)), as: UTF8.self))
            } else {
                printStatus(s)
                printStatus(v)
            }
        }
    }

    /// Started by `lab up` inside a host's network namespace; not for users.
    struct HostSupervisorCommand: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "host-supervisor", shouldDisplay: false)
        @Option var hostDir: String
        func run() throws { HostSupervisor.run(hostDirectory: hostDir) }
    }
}

func printStatus(_ s: VirtualVFIOLab.Status) {
    print("virtual VFIO hosts: \(s.root), L1 \(s.machinePid.map { "running (pid \($0))" } ?? "not running")")
    for h in s.hosts where s.machinePid != nil {
        print("host \(h.name): \(h.daemonRunning ? "libvirtd running" : "libvirtd not answering"), \(h.controlURI)")
        for d in h.domains { print("  domain \(d)") }
    }
}

func printStatus(_ s: BuiltinLab.Status) {
    print("lab folder: \(s.root)")
    print("QEMU: \(s.qemu ?? "not found")")
    for h in s.hosts {
        let daemon = h.daemonRunning ? "libvirtd running (supervisor pid \(h.supervisorPid ?? 0))" : (h.supervisorPid != nil ? "supervisor alive, libvirtd not answering" : "no daemon")
        print("host \(h.name): namespace \(h.namespace ? "present" : "absent"), \(daemon), \(h.controlURI)")
        if !h.qemuProcesses.isEmpty { print("  QEMU processes: \(h.qemuProcesses.map(String.init).joined(separator: " "))") }
        for d in h.domains { print("  domain \(d)") }
    }
}

struct ImageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image", abstract: "The guest image.", subcommands: [Build.self])

    struct Build: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Build (or find in the cache) the guest kernel and initramfs.")
        @Flag(help: "Rebuild even when the cache has the image.") var force = false
        func run() async throws {
            bootstrapLogging(verbose: false)
            let image = try GuestImageBuilder().build(force: force)
            print("kernel \(image.kernel) (\(image.kernelVersion))")
            print("initrd \(image.initrd)")
            print("hash   \(image.hash)")
        }
    }
}
