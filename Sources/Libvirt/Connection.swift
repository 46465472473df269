import CLibvirt
import Foundation
import Synchronization

/// An open libvirt connection (`virConnectPtr`), closed in deinit.
///
/// libvirt documents connections as safe to use from several threads at once, which is what
/// makes the `@unchecked Sendable` true.
public final class Connection: @unchecked Sendable {
    let raw: OpaquePointer
    public let uri: String
    private let hub: EventHub

    /// `virConnectOpen`. Opening a remote URI can block; see `open(uri:)`.
    ///
    /// With `keepAlive`, `virConnectSetKeepAlive` (5 s, 6 misses, as virsh): a daemon that stops
    /// answering (its host hung) closes the connection within ~30 s, so no call, and no
    /// virConnectClose in deinit, waits forever. Only for connections that make one call at a
    /// time: with keepalive on, a call made while another is in flight on the same connection
    /// waited for the next keepalive tick (measured: job statistics every 5 s instead of every
    /// 100 ms during a migration).
    public init(uri: String, keepAlive: Bool = false) throws {
        Libvirt.initialize()
        guard let raw = virConnectOpen(uri) else { throw LibvirtError.last("virConnectOpen(\(uri))") }
        if keepAlive { _ = virConnectSetKeepAlive(raw, 5, 6) }
        self.raw = raw
        self.uri = uri
        self.hub = EventHub()
    }

    /// `virConnectOpen` on a blocking thread.
    public static func open(uri: String, keepAlive: Bool = false) async throws -> Connection {
        try await onBlockingThread("virConnectOpen") { try Connection(uri: uri, keepAlive: keepAlive) }
    }

    deinit {
        hub.deregisterAll(raw)
        virConnectClose(raw)
    }

    /// `virConnectIsAlive`.
    public var isAlive: Bool { virConnectIsAlive(raw) == 1 }

    /// `virConnectGetVersion`: the hypervisor's version (for QEMU, QEMU's version).
    public func hypervisorVersion() throws -> (major: Int, minor: Int, micro: Int) {
        var v: UInt = 0
        guard virConnectGetVersion(raw, &v) == 0 else { throw LibvirtError.last("virConnectGetVersion") }
        let t = Libvirt.version(v)
        return (t.0, t.1, t.2)
    }

    /// `virConnectGetLibVersion`: the daemon's libvirt version.
    public func libvirtVersion() throws -> (major: Int, minor: Int, micro: Int) {
        var v: UInt = 0
        guard virConnectGetLibVersion(raw, &v) == 0 else { throw LibvirtError.last("virConnectGetLibVersion") }
        let t = Libvirt.version(v)
        return (t.0, t.1, t.2)
    }

    public func softwareVersions() -> (hypervisor: String?, libvirt: String?) {
        func text(_ v: (major: Int, minor: Int, micro: Int)) -> String { "\(v.major).\(v.minor).\(v.micro)" }
        return ((try? hypervisorVersion()).map(text), (try? libvirtVersion()).map(text))
    }

    /// `virConnectGetHostname`.
    public func hostname() throws -> String {
        guard let s = virConnectGetHostname(raw) else { throw LibvirtError.last("virConnectGetHostname") }
        defer { free(s) }
        return String(cString: s)
    }

    /// `virConnectGetSysinfo` is not used: host identity comes from `virConnectGetCapabilities`.
    public func capabilitiesXML() throws -> String {
        guard let s = virConnectGetCapabilities(raw) else { throw LibvirtError.last("virConnectGetCapabilities") }
        defer { free(s) }
        return String(cString: s)
    }

    /// The host's UUID from `virConnectGetCapabilities` (`<host><uuid>`): the same machine
    /// reached by two URIs has one. nil when the capabilities say none.
    public func hostUUID() throws -> String? {
        let xml = try capabilitiesXML()
        guard let host = xml.range(of: "<host>"), let open = xml.range(of: "<uuid>", range: host.upperBound..<xml.endIndex),
              let close = xml.range(of: "</uuid>", range: open.upperBound..<xml.endIndex) else { return nil }
        return xml[open.upperBound..<close.lowerBound].trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
    }

    /// `virDomainDefineXML`: a persistent domain, not started.
    public func defineDomain(xml: String) throws -> Domain {
        guard let d = virDomainDefineXML(raw, xml) else { throw LibvirtError.last("virDomainDefineXML") }
        return Domain(owning: d, connection: self)
    }

    /// `virDomainLookupByName`; nil when no such domain exists.
    public func domain(named name: String) throws -> Domain? {
        guard let d = virDomainLookupByName(raw, name) else {
            let err = LibvirtError.last("virDomainLookupByName(\(name))")
            if err.code == LibvirtError.noDomain { return nil }
            throw err
        }
        return Domain(owning: d, connection: self)
    }

    /// `virConnectListAllDomains` (active and inactive).
    public func allDomains() throws -> [Domain] {
        var list: UnsafeMutablePointer<OpaquePointer?>?
        let n = virConnectListAllDomains(raw, &list, 0)
        guard n >= 0 else { throw LibvirtError.last("virConnectListAllDomains") }
        defer { free(list) }
        return (0..<Int(n)).compactMap { i in list?[i].map { Domain(owning: $0, connection: self) } }
    }

    /// Domain events of this connection, from the process's single libvirt event-loop thread.
    /// Each call returns an independent stream; it ends when the consumer stops iterating.
    public func events() throws -> AsyncStream<DomainEvent> {
        try hub.registerIfNeeded(raw)
        return hub.subscribe()
    }
}

/// One libvirt event (`virConnectDomainEventRegisterAny`), reduced to what miglab uses.
public struct DomainEvent: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// `VIR_DOMAIN_EVENT_ID_LIFECYCLE`: event (`virDomainEventType`) and its detail.
        case lifecycle(event: Int32, detail: Int32)
        /// `VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE`: 1 connected, 2 disconnected.
        case agentLifecycle(state: Int32, reason: Int32)
        /// `VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION`.
        case migrationIteration(Int32)
        /// `VIR_DOMAIN_EVENT_ID_JOB_COMPLETED` with the completed job's statistics.
        case jobCompleted([String: TypedValue])
    }
    public let domain: String
    public let kind: Kind
    public let at: ContinuousClock.Instant

    public init(domain: String, kind: Kind, at: ContinuousClock.Instant = .now) {
        self.domain = domain
        self.kind = kind
        self.at = at
    }

    // virDomainEventType values used by miglab.
    public static let started: Int32 = 2
    public static let suspended: Int32 = 3
    public static let resumed: Int32 = 4
    public static let stopped: Int32 = 5
    public static let crashed: Int32 = 8
    public static let agentConnected: Int32 = 1
}

/// Fans the connection's libvirt callbacks out to any number of AsyncStream subscribers.
/// Each callback holds a reference to this object as its `opaque`, released by libvirt's
/// `freecb` when libvirt drops the callback. Deregistering does not wait for a callback that
/// the event-loop thread is running at that moment: with an unretained `opaque`, a Connection
/// closed meanwhile freed the hub under it (a use after free on the event-loop thread).
final class EventHub: Sendable {
    private struct State {
        var subscribers: [UInt64: AsyncStream<DomainEvent>.Continuation] = [:]
        var next: UInt64 = 0
        var callbackIDs: [Int32] = []
        var registered = false
    }
    private let state = Mutex(State())

    func subscribe() -> AsyncStream<DomainEvent> {
        let (stream, cont) = AsyncStream.makeStream(of: DomainEvent.self, bufferingPolicy: .bufferingNewest(1024))
        let id = state.withLock { s in
            s.next += 1
            s.subscribers[s.next] = cont
            return s.next
        }
        cont.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) }
        }
        return stream
    }

    func publish(_ event: DomainEvent) {
        let subs = state.withLock { Array($0.subscribers.values) }
        for s in subs { s.yield(event) }
    }

    func registerIfNeeded(_ conn: OpaquePointer) throws {
        try state.withLock { s in
            guard !s.registered else { return }
            // Released by libvirt (`release`) once the callback is gone for good.
            let release: @convention(c) (UnsafeMutableRawPointer?) -> Void = { opaque in
                if let opaque { Unmanaged<EventHub>.fromOpaque(opaque).release() }
            }
            // The callbacks have different C signatures; libvirt takes them as the generic
            // callback type (the VIR_DOMAIN_EVENT_CALLBACK macro is a plain cast).
            let lifecycle: @convention(c) (OpaquePointer?, OpaquePointer?, Int32, Int32, UnsafeMutableRawPointer?) -> Void = { _, dom, a, b, opaque in
                EventHub.deliver(opaque, dom, .lifecycle(event: a, detail: b))
            }
            let agent: @convention(c) (OpaquePointer?, OpaquePointer?, Int32, Int32, UnsafeMutableRawPointer?) -> Void = { _, dom, a, b, opaque in
                EventHub.deliver(opaque, dom, .agentLifecycle(state: a, reason: b))
            }
            let iteration: @convention(c) (OpaquePointer?, OpaquePointer?, Int32, UnsafeMutableRawPointer?) -> Void = { _, dom, n, opaque in
                EventHub.deliver(opaque, dom, .migrationIteration(n))
            }
            let job: @convention(c) (OpaquePointer?, OpaquePointer?, UnsafeMutablePointer<virTypedParameter>?, Int32, UnsafeMutableRawPointer?) -> Void = { _, dom, params, n, opaque in
                EventHub.deliver(opaque, dom, .jobCompleted(decodeTypedParameters(params, count: n)))
            }
            let table: [(Int32, virConnectDomainEventGenericCallback)] = [
                (Int32(VIR_DOMAIN_EVENT_ID_LIFECYCLE.rawValue), unsafeBitCast(lifecycle, to: virConnectDomainEventGenericCallback.self)),
                (Int32(VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE.rawValue), unsafeBitCast(agent, to: virConnectDomainEventGenericCallback.self)),
                (Int32(VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION.rawValue), unsafeBitCast(iteration, to: virConnectDomainEventGenericCallback.self)),
                (Int32(VIR_DOMAIN_EVENT_ID_JOB_COMPLETED.rawValue), unsafeBitCast(job, to: virConnectDomainEventGenericCallback.self)),
            ]
            for (eventID, cb) in table {
                let opaque = Unmanaged.passRetained(self).toOpaque()
                let id = virConnectDomainEventRegisterAny(conn, nil, eventID, cb, opaque, release)
                guard id >= 0 else {
                    Unmanaged<EventHub>.fromOpaque(opaque).release()
                    throw LibvirtError.last("virConnectDomainEventRegisterAny(\(eventID))")
                }
                s.callbackIDs.append(id)
            }
            s.registered = true
        }
    }

    func deregisterAll(_ conn: OpaquePointer) {
        let ids = state.withLock { s in
            defer { s.callbackIDs = []; s.registered = false }
            for c in s.subscribers.values { c.finish() }
            return s.callbackIDs
        }
        for id in ids { virConnectDomainEventDeregisterAny(conn, id) }
    }

    private static func deliver(_ opaque: UnsafeMutableRawPointer?, _ dom: OpaquePointer?, _ kind: DomainEvent.Kind) {
        guard let opaque else { return }
        let hub = Unmanaged<EventHub>.fromOpaque(opaque).takeUnretainedValue()
        let name = dom.flatMap { virDomainGetName($0) }.map { String(cString: $0) } ?? ""
        hub.publish(DomainEvent(domain: name, kind: kind, at: .now))
    }
}
