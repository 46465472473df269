import CLibvirt
import Foundation

/// The run state of a domain (`virDomainState`).
public enum DomainState: Int32, Sendable, Codable, CustomStringConvertible {
    case noState = 0, running, blocked, paused, shutdown, shutOff, crashed, pmSuspended

    public var description: String {
        switch self {
        case .noState: "no state"
        case .running: "running"
        case .blocked: "blocked"
        case .paused: "paused"
        case .shutdown: "shutting down"
        case .shutOff: "shut off"
        case .crashed: "crashed"
        case .pmSuspended: "pm-suspended"
        }
    }
}

/// A libvirt domain (`virDomainPtr`), freed in deinit.
public final class Domain: @unchecked Sendable {
    let raw: OpaquePointer
    /// Keeps the connection open for as long as the domain handle is used.
    public let connection: Connection

    init(owning raw: OpaquePointer, connection: Connection) {
        self.raw = raw
        self.connection = connection
    }
    deinit { virDomainFree(raw) }

    /// `virDomainGetName`.
    public var name: String { virDomainGetName(raw).map { String(cString: $0) } ?? "" }

    /// `virDomainIsActive`.
    public var isActive: Bool { virDomainIsActive(raw) == 1 }

    /// `virDomainGetState`.
    public func state() throws -> (state: DomainState, reason: Int32) {
        var s: Int32 = 0, r: Int32 = 0
        guard virDomainGetState(raw, &s, &r, 0) == 0 else { throw LibvirtError.last("virDomainGetState(\(name))") }
        return (DomainState(rawValue: s) ?? .noState, r)
    }


    /// `virDomainGetXMLDesc`; with `migratable`, `VIR_DOMAIN_XML_MIGRATABLE` (the form a
    /// destination definition must be based on).
    public func xml(migratable: Bool = false) throws -> String {
        let flags = migratable ? VIR_DOMAIN_XML_MIGRATABLE.rawValue | VIR_DOMAIN_XML_SECURE.rawValue : 0
        guard let s = virDomainGetXMLDesc(raw, flags) else { throw LibvirtError.last("virDomainGetXMLDesc(\(name))") }
        defer { free(s) }
        return String(cString: s)
    }

    /// `virDomainCreateWithFlags`: starts a defined domain; with `paused`
    /// (`VIR_DOMAIN_START_PAUSED`) its vCPUs wait for `resume()`, so that a console reader can
    /// attach before the guest prints its first line.
    public func start(paused: Bool = false) async throws {
        let flags = paused ? VIR_DOMAIN_START_PAUSED.rawValue : 0
        try await onBlockingThread("virDomainCreateWithFlags") { [self] in
            guard virDomainCreateWithFlags(raw, flags) == 0 else { throw LibvirtError.last("virDomainCreateWithFlags(\(name))") }
        }
    }

    /// `virDomainDestroy`: stops the domain at once.
    public func destroy() async throws {
        try await onBlockingThread("virDomainDestroy") { [self] in
            guard virDomainDestroy(raw) == 0 else { throw LibvirtError.last("virDomainDestroy(\(name))") }
        }
    }

    /// `virDomainUndefineFlags`, also removing managed-save images and snapshots metadata.
    /// (miglab's guests boot their kernel directly and have no NVRAM to remove.)
    public func undefine() throws {
        let flags = VIR_DOMAIN_UNDEFINE_MANAGED_SAVE.rawValue | VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA.rawValue
        guard virDomainUndefineFlags(raw, flags) == 0 else { throw LibvirtError.last("virDomainUndefineFlags(\(name))") }
    }

    /// Stops the domain if it runs (`virDomainDestroy`) and removes its definition
    /// (`virDomainUndefineFlags`). Both are tried; the first error is thrown.
    public func remove() async throws {
        var first: Error?
        if isActive {
            do { try await destroy() } catch { first = error }
        }
        do { try undefine() } catch { first = first ?? error }
        if let first { throw first }
    }

    /// `virDomainSuspend`.
    public func suspend() throws {
        guard virDomainSuspend(raw) == 0 else { throw LibvirtError.last("virDomainSuspend(\(name))") }
    }

    /// `virDomainResume`.
    public func resume() throws {
        guard virDomainResume(raw) == 0 else { throw LibvirtError.last("virDomainResume(\(name))") }
    }

    /// `virDomainMigrateToURI3` (peer-to-peer when `flags` has `.peerToPeer`; then
    /// `destinationURI` is the destination libvirt URI as the source daemon reaches it).
    /// Returns when libvirt finished the migration; throws libvirt's error when it failed.
    public func migrate(to destinationURI: String, parameters: MigrationParameters, flags: MigrationFlags) async throws {
        let list = try parameters.typedParameters()
        let box = UncheckedBox(list)
        try await onBlockingThread("virDomainMigrateToURI3") { [self] in
            guard virDomainMigrateToURI3(raw, destinationURI, box.value.pointer, UInt32(box.value.count), flags.rawValue) == 0 else {
                throw LibvirtError.last("virDomainMigrateToURI3(\(name) -> \(destinationURI))")
            }
        }
    }

    /// `virDomainGetJobStats`: the running job, or with `completed` the last completed one
    /// (`VIR_DOMAIN_JOB_STATS_COMPLETED`).
    public func jobStats(completed: Bool = false) throws -> JobStats {
        var type: Int32 = 0
        var params: UnsafeMutablePointer<virTypedParameter>?
        var n: Int32 = 0
        let flags = completed ? VIR_DOMAIN_JOB_STATS_COMPLETED.rawValue : 0
        guard virDomainGetJobStats(raw, &type, &params, &n, flags) == 0 else {
            throw LibvirtError.last("virDomainGetJobStats(\(name))")
        }
        defer { virTypedParamsFree(params, n) }
        return JobStats(type: type, fields: decodeTypedParameters(params, count: n))
    }

    /// `virDomainAbortJob`.
    public func abortJob() throws {
        guard virDomainAbortJob(raw) == 0 else { throw LibvirtError.last("virDomainAbortJob(\(name))") }
    }

    /// `virDomainMigrateSetMaxDowntime` (milliseconds), effective on a running migration too.
    public func setMaxDowntime(milliseconds: UInt64) throws {
        guard virDomainMigrateSetMaxDowntime(raw, milliseconds, 0) == 0 else {
            throw LibvirtError.last("virDomainMigrateSetMaxDowntime(\(name))")
        }
    }

    /// `virDomainMigrateSetMaxSpeed` (MiB/s).
    public func setMaxSpeed(mibPerSecond: UInt) throws {
        guard virDomainMigrateSetMaxSpeed(raw, mibPerSecond, 0) == 0 else {
            throw LibvirtError.last("virDomainMigrateSetMaxSpeed(\(name))")
        }
    }

    /// `virDomainCoreDumpWithFormat` with `VIR_DUMP_MEMORY_ONLY` in ELF format: guest RAM with
    /// its physical addresses, written by the hypervisor to `path` on the host that runs it.
    public func dumpMemory(to path: String) async throws {
        try await onBlockingThread("virDomainCoreDumpWithFormat") { [self] in
            let format = UInt32(VIR_DOMAIN_CORE_DUMP_FORMAT_RAW.rawValue)
            guard virDomainCoreDumpWithFormat(raw, path, format, VIR_DUMP_MEMORY_ONLY.rawValue) == 0 else {
                throw LibvirtError.last("virDomainCoreDumpWithFormat(\(name))")
            }
        }
    }

    /// The largest block one `virDomainMemoryPeek` may read through libvirt's remote protocol
    /// (`REMOTE_DOMAIN_MEMORY_PEEK_BUFFER_MAX`).
    public static let memoryPeekLimit = 65_536

    /// `virDomainMemoryPeek` with `VIR_MEMORY_PHYSICAL`, block after block: guest physical
    /// memory read through libvirt, so it works on a host whose files the caller cannot read.
    /// `body` gets each block with its guest physical address, in order, on one blocking thread.
    public func readPhysicalMemory(from start: UInt64, count: UInt64,
                                   blockSize: Int = Domain.memoryPeekLimit,
                                   _ body: @escaping @Sendable (UInt64, UnsafeRawBufferPointer) throws -> Void) async throws {
        precondition(blockSize > 0 && blockSize <= Self.memoryPeekLimit)
        try await onBlockingThread("virDomainMemoryPeek") { [self] in
            var buffer = [UInt8](repeating: 0, count: blockSize)
            var at = start
            let end = start + count
            while at < end {
                let n = Int(min(UInt64(blockSize), end - at))
                let rc = buffer.withUnsafeMutableBytes { virDomainMemoryPeek(raw, at, n, $0.baseAddress, UInt32(VIR_MEMORY_PHYSICAL.rawValue)) }
                guard rc == 0 else { throw LibvirtError.last("virDomainMemoryPeek(\(name), 0x\(String(at, radix: 16)), \(n))") }
                try buffer.withUnsafeBytes { try body(at, UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                at += UInt64(n)
            }
        }
    }

    /// `virDomainQemuAgentCommand`: one qemu-guest-agent command (JSON), answered in JSON.
    public func agentCommand(_ json: String, timeoutSeconds: Int32 = 5) async throws -> String {
        try await onBlockingThread("virDomainQemuAgentCommand") { [self] in
            guard let s = virDomainQemuAgentCommand(raw, json, timeoutSeconds, 0) else {
                throw LibvirtError.last("virDomainQemuAgentCommand(\(name))")
            }
            defer { free(s) }
            return String(cString: s)
        }
    }
}

/// Carries a non-Sendable value into a blocking thread that is its only user.
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
