import Foundation
import Scenario

/// A lab-file host reached with the OpenSSH client: the user's own ssh config and keys (or the
/// lab file's `ssh_config`), batch mode (never a password prompt), one shell script per call
/// with every value in it quoted. Used for what libvirt has no API for: killing a host's
/// processes, cutting its link, sysfs resets.
/// (swift-subprocess is not used here: every other command of the lab goes through `Command`,
/// whose blocking, captured runs are what these short calls need.)
public struct SSHClient: Sendable, Equatable {
    /// `user@host`, or a Host alias of the ssh config.
    public var target: String
    /// An ssh_config file (`ssh -F`); nil: the user's own.
    public var configFile: String?

    public init(target: String, configFile: String? = nil) {
        self.target = target
        self.configFile = configFile
    }

    /// The ssh command line that runs `script` with the remote user's shell.
    public func argv(_ script: String) -> [String] {
        ["ssh"] + (configFile.map { ["-F", $0] } ?? []) + ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "--", target, script]
    }

    /// Runs `script` on the host; throws with its stderr when it fails.
    @discardableResult
    public func run(_ script: String, what: String) throws -> String {
        let r = try Command.run(argv(script), check: false)
        guard r.status == 0 else {
            let why = r.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
            // ssh itself exits 255 when it cannot reach the host.
            let reach = r.status == 255 ? " (ssh could not reach \(target): check the lab file's `ssh` and your ssh config and keys)" : ""
            throw CommandError(command: ["ssh", target, what], status: r.status, stderr: (why.isEmpty ? "exit status \(r.status)" : why) + reach)
        }
        return r.stdout
    }
}

/// Fault actions on a lab-file host over ssh (labgrid's driver for process and link control):
/// its QEMU and libvirt daemon found by their pid files, its link cut with `ip`/`tc` on the
/// interface the lab file names. The host's service manager restarts a killed daemon (on the
/// built-in lab's daemons, their supervisor).
public struct SSHHostActions: HostActions {
    public let ssh: SSHClient
    public let host: LabFile.Host

    public init(ssh: SSHClient, host: LabFile.Host) {
        self.ssh = ssh
        self.host = host
    }

    /// A lab-file host with an ssh target gets these actions.
    public init?(host: LabFile.Host) {
        guard let target = host.sshTarget else { return nil }
        self.init(ssh: SSHClient(target: target, configFile: host.sshConfig), host: host)
    }

    public func killQEMU(domain: String) throws -> Int32 {
        try kill(pidFile: "\(host.qemuPidDirectory)/\(domain).pid", what: "QEMU of \(domain)")
    }

    public func killLibvirtd() throws -> Int32 {
        try kill(pidFile: host.daemonPidFile, what: "libvirt daemon")
    }

    /// SIGKILL to the live process a pid file names; its pid.
    func kill(pidFile: String, what: String) throws -> Int32 {
        let output = try ssh.run(Self.killScript(pidFile: pidFile, what: what), what: "kill \(what)")
        guard let pid = Int32(output.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw CommandError(command: ["ssh", ssh.target, "kill \(what)"], status: 0, stderr: "printed no pid: \(output.prefix(200))")
        }
        return pid
    }

    static func killScript(pidFile: String, what: String) -> String {
        let f = Command.shellQuoted(pidFile)
        let missing = Command.shellQuoted("no running \(what) on this host: no live process in \(pidFile) (set the lab file's qemu_pid_dir or daemon_pid_file)")
        return "pid=$(cat \(f) 2>/dev/null); case \"$pid\" in ''|*[!0-9]*) echo \(missing) >&2; exit 3;; esac; "
            + "kill -0 \"$pid\" 2>/dev/null || { echo \(missing) >&2; exit 3; }; kill -KILL \"$pid\" && echo \"$pid\""
    }

    public var offersLinkControl: Bool { host.link != nil }

    public func cutLink(lossOnly: Bool) throws {
        try ssh.run(try linkScript(cut: true, lossOnly: lossOnly), what: "cut link")
    }

    public func restoreLink(lossOnly: Bool) throws {
        try ssh.run(try linkScript(cut: false, lossOnly: lossOnly), what: "restore link")
    }

    func linkScript(cut: Bool, lossOnly: Bool) throws -> String {
        guard let link = host.link else {
            throw CommandError(command: ["ssh", ssh.target, "link"], status: -1, stderr: "host \(host.name) has no `link` in the lab file")
        }
        return Self.linkScript(link, cut: cut, lossOnly: lossOnly)
    }

    static func linkScript(_ link: LabFile.Link, cut: Bool, lossOnly: Bool) -> String {
        let ns = link.namespace.map { "-n \(Command.shellQuoted($0)) " } ?? ""
        let dev = Command.shellQuoted(link.interface)
        if lossOnly {
            return cut ? "tc \(ns)qdisc add dev \(dev) root netem loss 100%" : "tc \(ns)qdisc del dev \(dev) root"
        }
        return "ip \(ns)link set dev \(dev) \(cut ? "down" : "up")"
    }

    public var networkNamespacePath: String? { nil }
    public var secondaryAddress: String? { nil }
}

extension LabFile.Host {
    /// What this host offers beyond libvirt, as the lab file describes it: process control with
    /// an ssh target, link control with a `link` too.
    public var offers: Set<HostCapability> {
        var c: Set<HostCapability> = [.guestResetsReachDevices]
        if sshTarget != nil {
            c.insert(.processControl)
            if link != nil { c.insert(.linkControl) }
        }
        return c
    }
}
