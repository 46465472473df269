import Foundation
import Libvirt

/// Guest control through qemu-guest-agent, via libvirt's agent API (`virDomainQemuAgentCommand`):
/// the same path users' own distro images offer.
struct GuestAgent {
    let domain: any GuestDomain

    struct AgentError: Error, CustomStringConvertible {
        let description: String
    }

    /// Sends one command; returns the `return` member of the reply.
    func command(_ name: String, _ arguments: [String: Any]? = nil, timeoutSeconds: Int32 = 5) async throws -> Any? {
        var cmd: [String: Any] = ["execute": name]
        if let arguments { cmd["arguments"] = arguments }
        let json = String(decoding: try JSONSerialization.data(withJSONObject: cmd), as: UTF8.self)
        let reply = try await domain.agentCommand(json, timeoutSeconds: timeoutSeconds)
        guard let obj = try JSONSerialization.jsonObject(with: Data(reply.utf8)) as? [String: Any] else {
            throw AgentError(description: "guest agent: reply to \(name) is not a JSON object: \(reply.prefix(200))")
        }
        if let err = obj["error"] { throw AgentError(description: "guest agent: \(name) failed: \(err)") }
        return obj["return"]
    }

    func ping() async throws { _ = try await command("guest-ping", timeoutSeconds: 2) }

    /// Reads a (small) file from the guest with guest-file-open/read/close.
    func readFile(_ path: String, maxBytes: Int = 4096) async throws -> Data {
        guard let handle = try await command("guest-file-open", ["path": path, "mode": "r"]) as? Int else {
            throw AgentError(description: "guest agent: guest-file-open \(path) returned no handle")
        }
        let reply: Any?
        do {
            reply = try await command("guest-file-read", ["handle": handle, "count": maxBytes])
        } catch {
            _ = try? await command("guest-file-close", ["handle": handle])
            throw error
        }
        _ = try? await command("guest-file-close", ["handle": handle])
        guard let r = reply as? [String: Any], let b64 = r["buf-b64"] as? String, let data = Data(base64Encoded: b64) else {
            throw AgentError(description: "guest agent: guest-file-read \(path) returned no data")
        }
        return data
    }
}

extension GuestAgent {
    /// guest-exec: starts a program in the guest, returns its guest pid. qemu-ga keeps the
    /// child's status in the guest, so it can be collected after a live migration.
    func exec(_ path: String, _ args: [String]) async throws -> Int {
        guard let r = try await command("guest-exec", ["path": path, "arg": args, "capture-output": true]) as? [String: Any],
              let pid = r["pid"] as? Int else {
            throw AgentError(description: "guest agent: guest-exec \(path) returned no pid")
        }
        return pid
    }

    struct ExecStatus {
        var exited: Bool
        var exitCode: Int?
        var output: String
    }

    func execStatus(_ pid: Int) async throws -> ExecStatus {
        guard let r = try await command("guest-exec-status", ["pid": pid]) as? [String: Any] else {
            throw AgentError(description: "guest agent: guest-exec-status \(pid) returned nothing")
        }
        let out = (r["out-data"] as? String).flatMap { Data(base64Encoded: $0) }.map { String(decoding: $0, as: UTF8.self) } ?? ""
        let err = (r["err-data"] as? String).flatMap { Data(base64Encoded: $0) }.map { String(decoding: $0, as: UTF8.self) } ?? ""
        return ExecStatus(exited: r["exited"] as? Bool ?? false, exitCode: r["exitcode"] as? Int, output: out + err)
    }

    /// Runs a program in the guest to its end (or the deadline); returns its output.
    func run(_ path: String, _ args: [String], until deadline: ContinuousClock.Instant) async throws -> ExecStatus {
        let pid = try await exec(path, args)
        return try await waitForExit(pid, what: "\(path) \(args.joined(separator: " ")) in the guest", until: deadline)
    }

    /// Waits for guest program `pid` (started with guest-exec) to end, until `deadline`;
    /// `beforeEachLook` runs before each guest-exec-status (telling a loop to stop).
    func waitForExit(_ pid: Int, what: String, until deadline: ContinuousClock.Instant, every: Duration = .milliseconds(20),
                     beforeEachLook: (@Sendable () async -> Void)? = nil) async throws -> ExecStatus {
        try await retry(until: deadline, what: what, every: every) {
            await beforeEachLook?()
            let s = try await self.execStatus(pid)
            guard s.exited else { throw AgentError(description: "still running") }
            return s
        }
    }
}

/// One guest device as `miglab-guestctl info` reports it.
struct DeviceInfo: Equatable, Sendable {
    var fields: [String: String]
    var identity: String { ["bdf", "vendor", "device", "class"].map { "\($0)=\(fields[$0] ?? "?")" }.joined(separator: " ") }

    /// Parses "MIGLAB-GUESTCTL key=value ..."; nil for anything else.
    static func parse(_ text: String) -> DeviceInfo? {
        guard let line = text.split(whereSeparator: \.isNewline).first(where: { $0.hasPrefix("MIGLAB-GUESTCTL ") }) else { return nil }
        var f: [String: String] = [:]
        for part in line.split(separator: " ").dropFirst() {
            let kv = part.split(separator: "=", maxSplits: 1)
            if kv.count == 2 { f[String(kv[0])] = String(kv[1]) }
        }
        return f.isEmpty ? nil : DeviceInfo(fields: f)
    }
}

/// Where miglab's guest image keeps its tools and the workload's status (a twin of the guest
/// answers for the same paths).
public enum GuestPaths {
    /// Device FLR, reset and info (miglab-guestctl).
    public static let guestctl = "/bin/miglab-guestctl"
    /// Register-level checks of 16550 ports (loopback, scratch registers).
    public static let uart = "/bin/miglab-uart"
    /// The memory workload's status line.
    public static let workloadStatus = "/run/miglab-memtest.status"
    /// Where the workload's pages lie in guest physical memory (runs of frames).
    public static let workloadFrames = "/run/miglab-memtest.frames"
}

/// The workload's status line (see memtest.c), read through the guest agent.
struct WorkloadStatus: Equatable {
    var pass: UInt64
    var page: UInt64
    var touched: UInt64
    var errors: UInt64
    var pageCount: UInt64

    static let path = GuestPaths.workloadStatus

    /// Parses "MIGLAB-MEMTEST pass=P page=I touched=T errors=E npages=N"; nil for anything else
    /// (guest output is never trusted to be well-formed).
    static func parse(_ text: String) -> WorkloadStatus? {
        let line = text.split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
        guard line.hasPrefix("MIGLAB-MEMTEST ") else { return nil }
        var f: [String: UInt64] = [:]
        for part in line.split(separator: " ").dropFirst() {
            let kv = part.split(separator: "=", maxSplits: 1)
            guard kv.count == 2, let v = UInt64(kv[1].trimmingCharacters(in: .controlCharacters)) else { return nil }
            f[String(kv[0])] = v
        }
        guard let pass = f["pass"], let page = f["page"], let touched = f["touched"], let errors = f["errors"],
              let n = f["npages"] else { return nil }
        return WorkloadStatus(pass: pass, page: page, touched: touched, errors: errors, pageCount: n)
    }
}
