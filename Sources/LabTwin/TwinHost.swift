import Foundation
import Libvirt
import Runner
import Synchronization

/// One hypervisor host of the twin lab: its guests, its event subscribers, and whether its
/// daemon is down (killed) or its link cut.
public final class TwinHost: HypervisorHost {
    public let name: String
    public var uri: String { "twin:///\(name)" }
    /// The URI the other host's daemon migrates to.
    public var peerURI: String { "twin://\(name)/system" }
    let lab = Mutex<TwinLab?>(nil)
    let domains = Mutex<[String: TwinDomain]>([:])
    let subscribers = Mutex<[UUID: AsyncStream<DomainEvent>.Continuation]>([:])
    let downUntil = Mutex<ContinuousClock.Instant?>(nil)
    let linkCut = Mutex(false)

    init(name: String) { self.name = name }

    var twinLab: TwinLab? { lab.withLock { $0 } }

    /// A killed daemon answers nothing until it is back.
    func checkUp() throws {
        if let t = downUntil.withLock({ $0 }), ContinuousClock.now < t {
            throw LibvirtError(code: LibvirtError.systemError, domain: 0, message: "Cannot write data: Broken pipe (the libvirt daemon of \(name) is down)",
                               operation: "twin \(uri)")
        }
    }

    func goDown(for d: Duration) { downUntil.withLock { $0 = .now + d } }

    func domain(_ name: String) -> TwinDomain? { domains.withLock { $0[name] } }
    func remove(_ name: String) { _ = domains.withLock { $0.removeValue(forKey: name) } }
    func add(_ d: TwinDomain) { domains.withLock { $0[d.name] = d } }

    func publish(_ domain: String, _ kind: DomainEvent.Kind) {
        let e = DomainEvent(domain: domain, kind: kind)
        for c in subscribers.withLock({ Array($0.values) }) { c.yield(e) }
    }

    public func guest(named name: String) throws -> (any GuestDomain)? {
        try checkUp()
        return domain(name)
    }

    public func defineGuest(xml: String) throws -> any GuestDomain {
        try checkUp()
        guard let name = xml.firstMatch(of: /<name>([^<]+)<\/name>/).map({ String($0.1) }) else {
            throw LibvirtError(code: LibvirtError.operationFailed, domain: 0, message: "XML error: missing domain name", operation: "twin define")
        }
        if let existing = domain(name) {
            existing.redefine(xml: xml)
            return existing
        }
        let d = TwinDomain(name: name, host: self, xml: xml)
        add(d)
        return d
    }

    public func domainEvents() throws -> AsyncStream<DomainEvent> {
        try checkUp()
        let (stream, cont) = AsyncStream.makeStream(of: DomainEvent.self, bufferingPolicy: .bufferingNewest(1024))
        let id = UUID()
        subscribers.withLock { $0[id] = cont }
        cont.onTermination = { [weak self] _ in _ = self?.subscribers.withLock { $0.removeValue(forKey: id) } }
        return stream
    }

    /// The twin's versions say what it is: no QEMU, no libvirt daemon.
    public func softwareVersions() -> (hypervisor: String?, libvirt: String?) { ("twin", "twin") }

    public func reopened() async throws -> any HypervisorHost {
        try checkUp()
        return self
    }
}

/// One migration job between two twin hosts.
final class TwinJob: Sendable {
    let source: TwinDomain
    let destination: TwinHost
    let started = ContinuousClock.now
    let outcome = Mutex<(code: Int32, message: String)?>(nil)
    let finished = Mutex(false)

    init(source: TwinDomain, destination: TwinHost) {
        self.source = source
        self.destination = destination
    }

    func fail(code: Int32, message: String) {
        outcome.withLock { if $0 == nil { $0 = (code, message) } }
    }

    var elapsedMs: Double {
        let d = (ContinuousClock.now - started).components
        return Double(d.seconds) * 1000 + Double(d.attoseconds) / 1e15
    }

    /// The statistics libvirt would report now.
    func stats(_ script: TwinScript, completed: Bool = false) -> JobStats {
        // A failed or aborted job's figures are zero from then on.
        if !completed, outcome.withLock({ $0 }) != nil {
            return JobStats(type: JobStats.typeUnbounded, fields: [JobStats.Field.timeElapsed: .uint(UInt64(elapsedMs))])
        }
        let total = UInt64(script.guestMemoryMiB) << 20
        let ms = elapsedMs
        let fraction = completed ? 1 : min(0.98, script.neverConverges ? 0.9 : ms / Double(max(1, script.migrationMs)))
        let iterations = completed ? max(1, UInt64(ms) / UInt64(max(1, script.iterationMs)) + 1) : UInt64(ms) / UInt64(max(1, script.iterationMs)) + 1
        let remaining = completed ? 0 : UInt64(Double(total) * (1 - fraction))
        var f: [String: TypedValue] = [
            JobStats.Field.timeElapsed: .uint(UInt64(ms)),
            JobStats.Field.dataTotal: .uint(total),
            JobStats.Field.dataRemaining: .uint(remaining),
            JobStats.Field.dataProcessed: .uint(total - remaining),
            JobStats.Field.memoryTotal: .uint(total),
            JobStats.Field.memoryRemaining: .uint(remaining),
            JobStats.Field.memoryProcessed: .uint(total - remaining),
            JobStats.Field.memoryIteration: .uint(iterations),
            JobStats.Field.memoryBytesPerSecond: .uint(UInt64(Double(total) / max(0.001, Double(script.migrationMs) / 1000))),
        ]
        if completed {
            f[JobStats.Field.downtime] = .uint(12)
            f[JobStats.Field.setupTime] = .uint(1)
        }
        return JobStats(type: completed ? JobStats.typeCompleted : JobStats.typeUnbounded, fields: f)
    }
}

/// A guest of the twin lab.
public final class TwinDomain: GuestDomain {
    public let name: String
    let host: TwinHost
    let pid: Int32
    let model: Mutex<State>

    struct State {
        var xml: String
        var domainState: DomainState = .shutOff
        var reason: Int32 = 0
        /// The workload's counter: every page holds it (a consistent image).
        var counter: UInt32 = 7
        var touched: UInt64 = 1000
        var damaged: Set<Int> = []
        var completedStats: JobStats?
        var job: TwinJob?
        var files: [Int: Data] = [:]
        var execs: [Int: (exitCode: Int, output: String)] = [:]
        var nextHandle = 1
    }

    init(name: String, host: TwinHost, xml: String, state: State? = nil) {
        self.name = name
        self.host = host
        pid = Int32.random(in: 10_000...60_000)
        self.model = Mutex(state ?? State(xml: xml))
    }

    func redefine(xml: String) { model.withLock { $0.xml = xml } }

    var script: TwinScript { host.twinLab?.script ?? TwinScript() }
    func note(_ s: String) { host.twinLab?.note(s) }

    /// The workload's size from the kernel command line (`miglab.memtest=MiB`).
    var workloadPages: Int {
        let xml = model.withLock { $0.xml }
        let mib = xml.firstMatch(of: /miglab\.memtest=([0-9]+)/).flatMap { Int($0.1) } ?? 0
        return mib * 1024 * 1024 / MemoryOracle.pageSize
    }

    func crash() {
        model.withLock { $0.domainState = .shutOff; $0.reason = 3 }   // VIR_DOMAIN_SHUTOFF_CRASHED
        host.publish(name, .lifecycle(event: DomainEvent.stopped, detail: 2))
    }

    public var isActive: Bool { model.withLock { $0.domainState == .running || $0.domainState == .paused } }

    public func state() throws -> (state: DomainState, reason: Int32) {
        try host.checkUp()
        let slow = script.stateCallDuringMigrationMs
        if slow > 0, model.withLock({ $0.job != nil }) { Thread.sleep(forTimeInterval: Double(slow) / 1000) }
        return model.withLock { ($0.domainState, $0.reason) }
    }

    public func xml(migratable: Bool) throws -> String {
        try host.checkUp()
        return model.withLock { $0.xml }
    }

    public func start(paused: Bool) async throws {
        try host.checkUp()
        model.withLock { $0.domainState = paused ? .paused : .running; $0.reason = 1 }
        note("\(host.name): start \(name)")
        host.publish(name, .lifecycle(event: DomainEvent.started, detail: 0))
        host.publish(name, .agentLifecycle(state: DomainEvent.agentConnected, reason: 2))
    }

    public func remove() async throws {
        try host.checkUp()
        model.withLock { $0.domainState = .shutOff }
        host.remove(name)
    }

    public func suspend() throws {
        try host.checkUp()
        model.withLock { $0.domainState = .paused }
    }

    public func resume() throws {
        try host.checkUp()
        model.withLock { $0.domainState = .running }
    }

    public func migrate(to destinationURI: String, parameters: MigrationParameters, flags: MigrationFlags) async throws {
        try host.checkUp()
        guard let lab = host.twinLab, let destination = lab.host(peerURI: destinationURI) else {
            throw LibvirtError(code: LibvirtError.operationFailed, domain: 0, message: "no twin host at \(destinationURI)", operation: "twin migrate")
        }
        guard isActive else {
            throw LibvirtError(code: LibvirtError.operationInvalid, domain: 0, message: "domain is not running", operation: "twin migrate")
        }
        let job = TwinJob(source: self, destination: destination)
        model.withLock { $0.job = job }
        lab.state.withLock { $0.jobs.append(job) }
        note("\(host.name): migrate \(name) to \(destination.name)")
        defer {
            lab.state.withLock { $0.jobs.removeAll { $0 === job } }
            model.withLock { $0.job = nil }
        }
        // The destination's incoming guest exists while the job runs.
        let incoming = TwinDomain(name: name, host: destination, xml: model.withLock { $0.xml })
        incoming.model.withLock { $0.domainState = .paused }
        destination.add(incoming)
        while true {
            if let failure = job.outcome.withLock({ $0 }) {
                if script.cancellingMs > 0 { try? await Task.sleep(for: .milliseconds(script.cancellingMs)) }
                if !script.leavesGuestOnDestinationAfterFailure { destination.remove(name) }
                throw LibvirtError(code: failure.code, domain: 10, message: failure.message, operation: "virDomainMigrateToURI3(\(name))")
            }
            if !script.neverConverges && job.elapsedMs >= Double(script.migrationMs) { break }
            try? await Task.sleep(for: .milliseconds(5))
        }
        // Completed: the guest runs on the destination with the memory it had here (and the
        // damage the script asks for), and is gone from here.
        let final = job.stats(script, completed: true)
        let damage = script.damagedPagesPerMigration
        let pages = workloadPages
        incoming.model.withLock { s in
            s.counter = model.withLock { $0.counter }
            s.touched = model.withLock { $0.touched }
            s.damaged = model.withLock { $0.damaged }
            // qemu-ga's state (open files, exec table) moves with the guest.
            (s.files, s.execs, s.nextHandle) = model.withLock { ($0.files, $0.execs, $0.nextHandle) }
            for i in 0..<min(damage, pages) { s.damaged.insert(i * 7 % max(1, pages)) }
            s.domainState = flags.contains(.suspend) ? .paused : .running
            s.completedStats = final
        }
        model.withLock { $0.domainState = .shutOff }
        host.remove(name)
        host.publish(name, .jobCompleted(final.fields))
        destination.publish(name, .lifecycle(event: DomainEvent.resumed, detail: 1))
    }

    public func jobStats(completed: Bool) throws -> JobStats {
        try host.checkUp()
        if completed { return model.withLock { $0.completedStats } ?? JobStats(type: JobStats.typeNone, fields: [:]) }
        guard let job = model.withLock({ $0.job }) else { return JobStats(type: JobStats.typeNone, fields: [:]) }
        return job.stats(script)
    }

    public func abortJob() throws {
        try host.checkUp()
        guard let job = model.withLock({ $0.job }) else {
            throw LibvirtError(code: LibvirtError.operationInvalid, domain: 10, message: "Requested operation is not valid: no job is active on the domain",
                               operation: "virDomainAbortJob(\(name))")
        }
        note("\(host.name): abort \(name)")
        job.fail(code: LibvirtError.operationAborted, message: "operation aborted: migration out: canceled by client")
    }

    public func setMaxDowntime(milliseconds: UInt64) throws {
        try host.checkUp()
        note("\(host.name): max downtime \(milliseconds)")
    }

    public func setMaxSpeed(mibPerSecond: UInt) throws {
        try host.checkUp()
        note("\(host.name): max speed \(mibPerSecond)")
    }

    public func dumpMemory(to path: String) async throws {
        throw LibvirtError(code: LibvirtError.operationInvalid, domain: 0, message: "the twin lab shares no folder with its hosts", operation: "twin dump")
    }

    /// The guest RAM region: the workload's pages from frame 256 on, then 1 MiB of zeros.
    static let firstFrame: UInt64 = 256
    var iomem: String {
        let end = (Self.firstFrame + UInt64(workloadPages) + 256) * UInt64(MemoryOracle.pageSize) - 1
        return "00000000-00000fff : Reserved\n00001000-0009ffff : System RAM\n\(String(Self.firstFrame * 4096, radix: 16, uppercase: false).leftPadded(8))-\(String(end, radix: 16).leftPadded(8)) : System RAM\n"
    }

    public func readPhysicalMemory(from start: UInt64, count: UInt64, blockSize: Int,
                                   _ body: @escaping @Sendable (UInt64, UnsafeRawBufferPointer) throws -> Void) async throws {
        try host.checkUp()
        let (counter, damaged) = model.withLock { ($0.counter, $0.damaged) }
        let pages = workloadPages
        let page = MemoryOracle.pageSize
        var at = start
        let end = start + count
        var buffer = [UInt8](repeating: 0, count: blockSize)
        while at < end {
            let n = Int(min(UInt64(blockSize), end - at))
            buffer.withUnsafeMutableBytes { raw in
                raw.initializeMemory(as: UInt8.self, repeating: 0)
                var offset = 0
                while offset + page <= n {
                    let frame = (at + UInt64(offset)) / UInt64(page)
                    if frame >= Self.firstFrame, frame - Self.firstFrame < UInt64(pages) {
                        let index = frame - Self.firstFrame
                        let p = UnsafeMutableRawBufferPointer(rebasing: raw[offset..<(offset + page)])
                        Self.writePage(p, index: index, frame: frame, pageCount: UInt64(pages), counter: counter)
                        if damaged.contains(Int(index)) { p[100] ^= 0xff }
                    }
                    offset += page
                }
            }
            try buffer.withUnsafeBytes { try body(at, UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            at += UInt64(n)
        }
    }

    /// One workload page as memtest.c writes it.
    static func writePage(_ p: UnsafeMutableRawBufferPointer, index: UInt64, frame: UInt64, pageCount: UInt64, counter: UInt32) {
        p.storeBytes(of: counter.littleEndian, toByteOffset: 0, as: UInt32.self)
        p.storeBytes(of: UInt32(0), toByteOffset: 4, as: UInt32.self)
        p.storeBytes(of: MemoryOracle.magic.littleEndian, toByteOffset: 8, as: UInt64.self)
        p.storeBytes(of: index.littleEndian, toByteOffset: 16, as: UInt64.self)
        p.storeBytes(of: frame.littleEndian, toByteOffset: 24, as: UInt64.self)
        p.storeBytes(of: pageCount.littleEndian, toByteOffset: 32, as: UInt64.self)
        p.storeBytes(of: MemoryOracle.checkWord(index: index, pfn: frame, pageCount: pageCount).littleEndian, toByteOffset: 40, as: UInt64.self)
        for w in MemoryOracle.bodyWords {
            p.storeBytes(of: MemoryOracle.bodyWord(index: index, word: UInt64(w)).littleEndian, toByteOffset: w * 8, as: UInt64.self)
        }
    }

    public func agentCommand(_ json: String, timeoutSeconds: Int32) async throws -> String {
        try host.checkUp()
        guard model.withLock({ $0.domainState == .running }) else {
            throw LibvirtError(code: LibvirtError.agentUnresponsive, domain: 10, message: "Guest agent is not responding: QEMU guest agent is not connected",
                               operation: "virDomainQemuAgentCommand(\(name))")
        }
        guard let cmd = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any], let execute = cmd["execute"] as? String else {
            return #"{"error":{"class":"GenericError","desc":"bad command"}}"#
        }
        let args = cmd["arguments"] as? [String: Any] ?? [:]
        func reply(_ value: Any) throws -> String {
            String(decoding: try JSONSerialization.data(withJSONObject: ["return": value]), as: UTF8.self)
        }
        switch execute {
        case "guest-ping", "guest-file-close":
            return try reply([String: Any]())
        case "guest-file-open":
            let path = args["path"] as? String ?? ""
            let content: String
            switch path {
            case GuestPaths.workloadStatus:
                let touched = model.withLock { s -> UInt64 in s.touched += 4096; return s.touched }
                content = "MIGLAB-MEMTEST pass=3 page=0 touched=\(touched) errors=0 npages=\(workloadPages)\n"
            case "/proc/iomem":
                content = iomem
            case GuestPaths.workloadFrames where script.framesReport != .missing:
                let first = Self.firstFrame + (script.framesReport == .shifted ? 1 : 0)
                content = "MIGLAB-MEMTEST-FRAMES npages=\(workloadPages) runs=1\n\(first) \(workloadPages)\n"
            default:
                return #"{"error":{"class":"GenericError","desc":"No such file or directory"}}"#
            }
            let handle = model.withLock { s -> Int in
                s.nextHandle += 1
                s.files[s.nextHandle] = Data(content.utf8)
                return s.nextHandle
            }
            return try reply(handle)
        case "guest-file-read":
            let data = model.withLock { $0.files[args["handle"] as? Int ?? -1] } ?? Data()
            return try reply(["count": data.count, "buf-b64": data.base64EncodedString(), "eof": true])
        case "guest-exec":
            let path = args["path"] as? String ?? ""
            let argv = args["arg"] as? [String] ?? []
            note("\(host.name): guest-exec \(([path] + argv).joined(separator: " "))")
            let result = program(path, argv)
            let pid = model.withLock { s -> Int in
                s.nextHandle += 1
                s.execs[s.nextHandle] = result
                return s.nextHandle
            }
            return try reply(["pid": pid])
        case "guest-exec-status":
            guard let r = model.withLock({ $0.execs[args["pid"] as? Int ?? -1] }) else {
                return #"{"error":{"class":"GenericError","desc":"Invalid parameter 'pid'"}}"#
            }
            return try reply(["exited": true, "exitcode": r.exitCode, "out-data": Data(r.output.utf8).base64EncodedString()])
        default:
            return #"{"error":{"class":"CommandNotFound","desc":"The command has not been found"}}"#
        }
    }

    /// What the guest's programs print.
    func program(_ path: String, _ argv: [String]) -> (exitCode: Int, output: String) {
        switch (path, argv.first) {
        case (GuestPaths.guestctl, "info"):
            return (0, "MIGLAB-GUESTCTL bdf=0000:01:00.0 vendor=0x1af4 device=0x1041 class=0x020000 driver=virtio-pci link=1 lease=yes\n")
        case (GuestPaths.guestctl, _):
            return (0, script.guestctlReport + "\n")
        default:
            return (0, "")
        }
    }

    public func captureConsole(appendingTo path: String) throws -> any ConsoleReader {
        try host.checkUp()
        if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        if let f = FileHandle(forWritingAtPath: path) {
            f.seekToEndOfFile()
            f.write(Data("MIGLAB-GUEST-BOOT twin\nMIGLAB-MEMTEST START\n".utf8))
            try? f.close()
        }
        return TwinConsole()
    }
}

struct TwinConsole: ConsoleReader {
    func stop() {}
}

extension String {
    func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}
