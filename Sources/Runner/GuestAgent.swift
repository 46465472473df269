import Foundation
import Libvirt

/// Guest control through qemu-guest-agent, via libvirt's agent API (`virDomainQemuAgentCommand`):
/// the same path users' own distro images offer.
struct GuestAgent {
    let domain: Domain

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

/// The workload's status line (see memtest.c), read through the guest agent.
struct WorkloadStatus: Equatable {
    var pass: UInt64
    var page: UInt64
    var touched: UInt64
    var errors: UInt64
    var pageCount: UInt64

    static let path = "/run/miglab-memtest.status"

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
