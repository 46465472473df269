import CSystem
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A host command miglab runs (ip, tc, apt-get, dpkg-deb, cc), with its output.
public struct CommandResult: Sendable {
    public let status: Int32
    public let stdout: String
    public let stderr: String
}

/// A host command failed; the message names the command and what it printed.
public struct CommandError: Error, CustomStringConvertible, Sendable {
    public let command: [String]
    public let status: Int32
    public let stderr: String
    public var description: String {
        let err = stderr.trimmingCharacters(in: .whitespacesAndNewlines)
        return "`\(command.joined(separator: " "))` exited with \(status)" + (err.isEmpty ? "" : ": \(err)")
    }
}

public enum Command {
    /// Runs `argv` to completion and returns what it printed. Uses Foundation's Process
    /// (swift-subprocess would do too, but Foundation is already linked and this is all we need).
    @discardableResult
    public static func run(_ argv: [String], input: Data? = nil, check: Bool = true,
                           environment: [String: String]? = nil, directory: String? = nil) throws -> CommandResult {
        precondition(!argv.isEmpty)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try resolve(argv[0]))
        p.arguments = Array(argv.dropFirst())
        if let environment { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        if let directory { p.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        let inPipe = Pipe()
        p.standardInput = input == nil ? FileHandle.nullDevice : inPipe
        try p.run()
        if let input {
            inPipe.fileHandleForWriting.write(input)
            try? inPipe.fileHandleForWriting.close()
        }
        // Read both pipes concurrently so that neither fills up and blocks the child.
        let errData = UncheckedSendableData()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async {
            errData.data = err.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        p.waitUntilExit()
        let r = CommandResult(status: p.terminationStatus,
                              stdout: String(decoding: outData, as: UTF8.self),
                              stderr: String(decoding: errData.data, as: UTF8.self))
        if check && r.status != 0 { throw CommandError(command: argv, status: r.status, stderr: r.stderr) }
        return r
    }

    /// `value` in single quotes for sh (a `'` inside becomes `'\\''`).
    public static func shellQuoted(_ value: String) -> String {
        "'" + value.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// The miglab executable that runs `lab host-supervisor`: this process's own binary, or
    /// MIGLAB_EXECUTABLE when the lab is driven from another program (tests).
    public static func miglabExecutable() throws -> String {
        if let e = ProcessInfo.processInfo.environment["MIGLAB_EXECUTABLE"] { return e }
        return try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
    }

    /// The absolute path of a program, searched in PATH (plus the sbin folders root uses).
    public static func resolve(_ name: String) throws -> String {
        if name.hasPrefix("/") { return name }
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "") + ":/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw CommandError(command: [name], status: 127, stderr: "\(name): not found in PATH; run ci/setup to install miglab's prerequisites")
    }

    /// Starts `argv` in a new session (so a Ctrl-C at the terminal does not reach it), with
    /// stdin from /dev/null and stdout+stderr appended to `logPath`, and does not wait for it.
    public static func spawnDetached(_ argv: [String], logPath: String) throws -> pid_t {
        try spawn(argv, newSession: true, logPath: logPath)
    }

    /// posix_spawn of `argv`, not waited for. Foundation's Process cannot start a new session
    /// and swift-subprocess always waits for its child, hence this.
    /// The child gets an empty signal mask and default dispositions: the caller runs on Swift's
    /// and Dispatch's threads, which block most signals, and a child inherits the caller's mask
    /// (a libvirtd started that way never sees the SIGTERM that should stop it).
    public static func spawn(_ argv: [String], newSession: Bool, logPath: String?) throws -> pid_t {
        let exe = try resolve(argv[0])
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        let session = newSession ? miglab_posix_spawn_setsid_flag() : 0
        posix_spawnattr_setflags(&attr, session | Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attr, &all)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let logPath {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        var pid: pid_t = 0
        let cargs = argv.map { strdup($0) } + [nil]
        defer { cargs.forEach { free($0) } }
        let rc = posix_spawn(&pid, exe, &actions, &attr, cargs, environ)
        guard rc == 0 else {
            throw CommandError(command: argv, status: rc, stderr: String(cString: strerror(rc)))
        }
        return pid
    }
}

final class UncheckedSendableData: @unchecked Sendable {
    var data = Data()
}

/// Process helpers for processes miglab started and may not be the parent of.
public enum ProcessTable {
    /// True while `pid` exists and is not a zombie (this machine's PID 1 reaps orphans late,
    /// so kill(pid, 0) alone would report a dead daemon as alive for seconds).
    public static func isRunning(_ pid: pid_t) -> Bool {
        guard pid > 0, kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(close, offsetBy: 2)...].first
        return state != "Z" && state != "X"
    }

    /// The command line of `pid`, arguments joined by spaces.
    public static func commandLine(_ pid: pid_t) -> String {
        guard let d = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return "" }
        return String(decoding: d, as: UTF8.self).replacingOccurrences(of: "\0", with: " ")
    }

    /// Every pid whose command line contains `marker`.
    public static func pids(commandLineContaining marker: String) -> [pid_t] {
        let me = getpid()
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { pid_t($0) }.filter { $0 != me && commandLine($0).contains(marker) }
    }

    /// Reads a pid file; nil when missing or malformed.
    public static func readPidFile(_ path: String) -> pid_t? {
        guard let s = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return pid_t(s.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Sends SIGTERM, waits up to `grace`, then SIGKILL. Waiting is for the process to vanish.
    public static func terminate(_ pid: pid_t, grace: Duration = .seconds(5)) async {
        guard isRunning(pid) else { return }
        kill(pid, SIGTERM)
        let deadline = ContinuousClock.now + grace
        while isRunning(pid), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        if isRunning(pid) { kill(pid, SIGKILL) }
        let hard = ContinuousClock.now + .seconds(2)
        while isRunning(pid), ContinuousClock.now < hard {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}
