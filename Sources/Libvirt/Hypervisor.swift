import Foundation

/// What the scenario runner needs of a hypervisor host: its guests by name, defining one, its
/// domain events, and a new connection after its daemon restarted. `Connection` is the real
/// one (libvirt's C API); `LabTwin` has an in-memory twin that scripts job statistics, events
/// and fault effects, as `ReferenceDevice` twins `VFIODevice`.
public protocol HypervisorHost: AnyObject, Sendable {
    /// A stable name for messages (the URI).
    var uri: String { get }
    /// `virDomainLookupByName`; nil when there is none.
    func guest(named name: String) throws -> (any GuestDomain)?
    /// `virDomainDefineXML`.
    func defineGuest(xml: String) throws -> any GuestDomain
    /// Domain events from now on (`virConnectDomainEventRegisterAny`).
    func domainEvents() throws -> AsyncStream<DomainEvent>
    /// A new connection once the daemon answers again (after it was restarted).
    func reopened() async throws -> any HypervisorHost
    /// `virConnectGetVersion` and `virConnectGetLibVersion` as "major.minor.micro": the
    /// hypervisor's (QEMU's default emulator) and the daemon's libvirt; nil where it does not say.
    func softwareVersions() -> (hypervisor: String?, libvirt: String?)
}

/// What the runner needs of one guest domain. Each call names the libvirt call it maps to on
/// `Domain`.
public protocol GuestDomain: AnyObject, Sendable {
    var name: String { get }
    /// `virDomainIsActive`.
    var isActive: Bool { get }
    /// `virDomainGetState`.
    func state() throws -> (state: DomainState, reason: Int32)
    /// `virDomainGetXMLDesc`.
    func xml(migratable: Bool) throws -> String
    /// `virDomainCreateWithFlags`.
    func start(paused: Bool) async throws
    /// Destroy and undefine.
    func remove() async throws
    /// `virDomainSuspend`, `virDomainResume`.
    func suspend() throws
    func resume() throws
    /// `virDomainMigrateToURI3`, peer to peer; returns when the job ended.
    func migrate(to destinationURI: String, parameters: MigrationParameters, flags: MigrationFlags) async throws
    /// `virDomainGetJobStats`.
    func jobStats(completed: Bool) throws -> JobStats
    /// `virDomainAbortJob`.
    func abortJob() throws
    /// `virDomainMigrateSetMaxDowntime`, `virDomainMigrateSetMaxSpeed`.
    func setMaxDowntime(milliseconds: UInt64) throws
    func setMaxSpeed(mibPerSecond: UInt) throws
    /// `virDomainCoreDumpWithFormat`, memory only (a file the host writes).
    func dumpMemory(to path: String) async throws
    /// `virDomainMemoryPeek`, physical, block after block.
    func readPhysicalMemory(from start: UInt64, count: UInt64, blockSize: Int,
                            _ body: @escaping @Sendable (UInt64, UnsafeRawBufferPointer) throws -> Void) async throws
    /// `virDomainQemuAgentCommand`.
    func agentCommand(_ json: String, timeoutSeconds: Int32) async throws -> String
    /// `virDomainOpenConsole`: copies the guest's console to `path` until stopped.
    func captureConsole(appendingTo path: String) throws -> any ConsoleReader
}

extension GuestDomain {
    public func xml() throws -> String { try xml(migratable: false) }
    public func start() async throws { try await start(paused: false) }
    public func jobStats() throws -> JobStats { try jobStats(completed: false) }
    public func agentCommand(_ json: String) async throws -> String { try await agentCommand(json, timeoutSeconds: 5) }
    public func readPhysicalMemory(from start: UInt64, count: UInt64,
                                   _ body: @escaping @Sendable (UInt64, UnsafeRawBufferPointer) throws -> Void) async throws {
        try await readPhysicalMemory(from: start, count: count, blockSize: Domain.memoryPeekLimit, body)
    }
}

/// A console being copied to a file.
public protocol ConsoleReader: Sendable {
    func stop()
}

extension Connection: HypervisorHost {
    public func guest(named name: String) throws -> (any GuestDomain)? { try domain(named: name) }
    public func defineGuest(xml: String) throws -> any GuestDomain { try defineDomain(xml: xml) }
    public func domainEvents() throws -> AsyncStream<DomainEvent> { try events() }

    /// A new connection to the same URI, once the daemon lists its domains (it has finished
    /// starting then).
    public func reopened() async throws -> any HypervisorHost {
        let c = try await Connection.open(uri: uri)
        _ = try c.allDomains()
        return c
    }
}

extension Domain: GuestDomain {
    public func captureConsole(appendingTo path: String) throws -> any ConsoleReader {
        try ConsoleCapture(domain: self, appendingTo: path)
    }
}

extension ConsoleCapture: ConsoleReader {}
