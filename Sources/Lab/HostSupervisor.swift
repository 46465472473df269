import CSystem
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The process that runs one built-in lab host's libvirtd, started by `BuiltinLab.up()` as
/// `ip netns exec NS miglab lab host-supervisor --host-dir DIR` (so it is already inside the
/// host's network namespace and in a private mount namespace).
///
/// It bind-mounts the host's own folders over /etc/libvirt, /run/libvirt, /var/lib/libvirt,
/// /var/log/libvirt and /var/cache/libvirt (libvirtd running as root has these paths built in),
/// becomes a child subreaper, runs libvirtd in the foreground and reaps every orphan at once:
/// QEMU daemonizes, and this machine's PID 1 reaps orphans only every 1.5-2 s, which libvirt
/// pays on every destroy and every migrated-away source.
/// SIGTERM/SIGINT go to libvirtd; when libvirtd has exited, QEMU processes left behind are killed.
public enum HostSupervisor {
    static let daemonPid = Atomic<Int32>(0)
    static let stopRequested = Atomic<Bool>(false)
    /// A daemon that dies on its own (a crash, or miglab's kill-libvirtd fault) is restarted,
    /// with its QEMU processes left running, at most this many times.
    static let maximumRestarts = 20

    public static func run(hostDirectory dir: String) -> Never {
        let mounts = [("etc", "/etc/libvirt"), ("run", "/run/libvirt"), ("lib", "/var/lib/libvirt"),
                      ("log", "/var/log/libvirt"), ("cache", "/var/cache/libvirt")]
        // Keep our mounts out of the root namespace even if `ip netns exec` ever stops making
        // the namespace a slave.
        _ = mount("none", "/", nil, UInt(MS_REC | MS_SLAVE), nil)
        for (sub, target) in mounts {
            try? FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
            guard mount("\(dir)/\(sub)", target, nil, UInt(MS_BIND), nil) == 0 else {
                fail("bind mount \(dir)/\(sub) on \(target): \(String(cString: strerror(errno)))")
            }
        }
        guard miglab_set_child_subreaper() == 0 else {
            fail("prctl(PR_SET_CHILD_SUBREAPER): \(String(cString: strerror(errno)))")
        }
        let forward: @convention(c) (Int32) -> Void = { sig in
            HostSupervisor.stopRequested.store(true, ordering: .relaxed)
            let pid = HostSupervisor.daemonPid.load(ordering: .relaxed)
            if pid > 0 { kill(pid, sig) }
        }
        signal(SIGTERM, forward)
        signal(SIGINT, forward)
        signal(SIGHUP, SIG_IGN)

        var daemonStatus: Int32 = 0
        var restarts = 0
        let binary = (try? String(contentsOfFile: BuiltinLab.libvirtdBinaryFile(hostDirectory: dir), encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? BuiltinLab.systemLibvirtd
        while true {
            let pid = spawnLibvirtd(binary)
            daemonPid.store(pid, ordering: .relaxed)
            FileHandle.standardError.write(Data("miglab host supervisor: libvirtd pid \(pid) under \(dir)\n".utf8))
            // Reap everything; libvirtd's own exit ends the loop.
            while true {
                var status: Int32 = 0
                let r = waitpid(-1, &status, 0)
                if r == pid { daemonStatus = status; break }
                if r < 0 && errno == ECHILD { break }
            }
            if stopRequested.load(ordering: .relaxed) || restarts >= maximumRestarts { break }
            restarts += 1
            FileHandle.standardError.write(Data("miglab host supervisor: libvirtd exited (status \(daemonStatus)), restart \(restarts)\n".utf8))
        }
        // libvirtd is gone: nothing may keep running in this host.
        daemonPid.store(0, ordering: .relaxed)
        for child in children() { kill(child, SIGKILL) }
        var status: Int32 = 0
        while waitpid(-1, &status, 0) > 0 {}
        exit(daemonStatus == 0 ? 0 : 1)
    }

    static func spawnLibvirtd(_ binary: String) -> pid_t {
        do {
            return try Command.spawn([binary, "--listen", "--config", "/etc/libvirt/libvirtd.conf",
                                      "--pid-file", "/run/libvirt/libvirtd.pid"], newSession: false, logPath: nil)
        } catch {
            fail("cannot start libvirtd: \(error)")
        }
    }

    /// Processes whose parent is this supervisor (orphans re-parented to it included).
    static func children() -> [pid_t] {
        let me = getpid()
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { pid_t($0) }.filter { pid in
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return false }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 1 && pid_t(fields[1]) == me
        }
    }

    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("miglab host supervisor: \(message)\n".utf8))
        exit(1)
    }
}
