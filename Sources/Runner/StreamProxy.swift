import CSystem
import Foundation
import Scenario
#if canImport(Glibc)
import Glibc
#endif

/// Damages a migration stream on its way from the source to the destination QEMU, byte-exact
/// and deterministic. Pure: it only sees the bytes, so it is unit-tested on synthetic streams.
public struct StreamCorruptor: Sendable {
    public let mode: StreamCorruption
    public let everyBytes: UInt64
    /// Bytes seen so far.
    public private(set) var offset: UInt64 = 0
    /// Bytes flipped so far.
    public private(set) var flips = 0
    /// Workload pages whose body was damaged (payload mode), or chunks of device state
    /// (device-state mode).
    public private(set) var pagesHit = 0
    /// Absolute stream offsets still to flip (ascending).
    private var pending: [UInt64] = []
    /// The last bytes of the previous chunk, to find a page magic split across two chunks.
    private var tail: [UInt8] = []

    /// The workload page magic as it appears in memory (and so in the RAM stream).
    static let magicBytes: [UInt8] = withUnsafeBytes(of: MemoryOracle.magic.littleEndian, Array.init)
    /// Where in a workload page the payload mode flips a byte: inside the fixed body, away from
    /// the counter and header, so QEMU's framing is never touched and only the oracle sees it.
    static let payloadFlipOffset: UInt64 = 1000

    /// QEMU's marker before each chunk of a VFIO device's state (hw/vfio/migration.c,
    /// VFIO_MIG_FLAG_DEV_DATA_STATE, written big-endian); a be64 length and the driver's bytes follow.
    static let deviceStateMarker: [UInt8] = withUnsafeBytes(of: UInt64(0xffff_ffff_ef10_0004).bigEndian, Array.init)

    public init(mode: StreamCorruption, everyMiB: Int = 1) {
        self.mode = mode
        self.everyBytes = UInt64(max(everyMiB, 1)) << 20
        if mode == .header { pending = [0, 1, 2, 3] }
    }

    private mutating func record(match p: UInt64) {
        if mode == .deviceState {
            // The marker at p, its length at p + 8, the device's first byte at p + 16.
            pending.append(p + 16)
            pagesHit += 1
            return
        }
        guard p >= 8 else { return }
        pending.append(p - 8 + Self.payloadFlipOffset)
        pagesHit += 1
    }

    public mutating func process(_ buf: inout [UInt8]) {
        let start = offset
        let end = start + UInt64(buf.count)
        switch mode {
        case .header:
            break
        case .flipEvery:
            var k = (start / everyBytes + 1) * everyBytes
            while k < end {
                buf[Int(k - start)] ^= 0xFF
                flips += 1
                k += everyBytes
            }
        case .payload, .deviceState:
            // Payload: a match at absolute position p means a workload page starts at p - 8;
            // flip a byte of its body. Device state: a match is QEMU's marker; flip the first
            // byte after its length. The last bytes of the previous chunk are searched together
            // with the first bytes of this one, for a pattern split across the two.
            let magic = mode == .payload ? Self.magicBytes : Self.deviceStateMarker
            let m = magic.count
            if !tail.isEmpty {
                let joint = tail + buf.prefix(m - 1)
                for i in 0..<max(0, joint.count - m + 1) where Array(joint[i..<i + m]) == magic {
                    record(match: start - UInt64(tail.count) + UInt64(i))
                }
            }
            var hits = [Int](repeating: 0, count: buf.count / m + 1)
            let n = buf.withUnsafeBufferPointer { hay in
                magic.withUnsafeBufferPointer { needle in
                    hits.withUnsafeMutableBufferPointer { out in
                        miglab_find_all(hay.baseAddress, hay.count, needle.baseAddress, m, out.baseAddress, out.count)
                    }
                }
            }
            for i in 0..<n { record(match: start + UInt64(hits[i])) }
            tail = Array((tail + buf).suffix(m - 1))
        }
        // Apply flips that fall in this chunk.
        var keep: [UInt64] = []
        for p in pending {
            if p >= start && p < end {
                buf[Int(p - start)] ^= 0xFF
                flips += 1
            } else if p >= end {
                keep.append(p)
            }
        }
        pending = keep
        offset = end
    }
}

/// A TCP proxy between the source and the destination QEMU that damages the stream. In the
/// runner (built-in lab) its sockets live in the destination host's network namespace: one
/// thread enters the namespace (setns only changes the calling thread) and creates them there.
/// On a host the runner reaches only remotely it runs as `miglab stream-proxy` on that host
/// (`namespacePath` nil: the process already is in the host's network).
public final class StreamProxy: @unchecked Sendable {
    public struct Summary: Sendable, Codable, Equatable {
        public var bytes: UInt64
        public var flips: Int
        public var pagesHit: Int
        public var error: String?
    }

    let namespacePath: String?
    let listen: (address: String, port: UInt16)
    let target: (address: String, port: UInt16)
    private var corruptor: StreamCorruptor
    private let lock = NSLock()
    private var listenFD: Int32 = -1
    private var startError: String?
    private var summary = Summary(bytes: 0, flips: 0, pagesHit: 0)
    private let done = DispatchSemaphore(value: 0)
    private var finished = false

    /// Whether the proxy has ended: its stream closed, or it never started.
    public var isFinished: Bool { lock.withLock { finished } }

    public init(namespacePath: String?, listen: (String, UInt16), target: (String, UInt16), corruptor: StreamCorruptor) {
        self.namespacePath = namespacePath
        self.listen = listen
        self.target = target
        self.corruptor = corruptor
    }

    public struct ProxyError: Error, CustomStringConvertible { public let description: String }

    /// Starts listening; returns once the listening socket exists.
    public func start() throws {
        let ready = DispatchSemaphore(value: 0)
        let thread = Thread { [self] in
            defer {
                lock.withLock { finished = true }
                done.signal()
            }
            if let ns = namespacePath, miglab_enter_network_namespace(ns) != 0 {
                lock.withLock { startError = "setns \(ns): \(String(cString: strerror(errno)))" }
                ready.signal()
                return
            }
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            var addr = Self.inetAddress(listen.address, listen.port)
            let bound = withUnsafePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard fd >= 0, bound == 0, Glibc.listen(fd, 1) == 0 else {
                lock.withLock { startError = "listen on \(listen.address):\(listen.port): \(String(cString: strerror(errno)))" }
                close(fd)
                ready.signal()
                return
            }
            lock.withLock { listenFD = fd }
            ready.signal()
            serve(fd)
        }
        thread.name = "miglab-stream-proxy"
        thread.start()
        ready.wait()
        if let e = lock.withLock({ startError }) { throw ProxyError(description: e) }
    }

    /// Stops accepting (if nothing connected) and waits for the forwarding to end.
    public func stop(timeout: DispatchTime = .now() + 10) -> Summary {
        lock.withLock {
            if listenFD >= 0 { shutdown(listenFD, Int32(SHUT_RDWR)) }
        }
        _ = done.wait(timeout: timeout)
        return lock.withLock { summary }
    }

    private func serve(_ lfd: Int32) {
        let client = accept(lfd, nil, nil)
        lock.withLock {
            close(lfd)
            listenFD = -1
        }
        guard client >= 0 else { return }
        let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = Self.inetAddress(target.address, target.port)
        let connected = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            lock.withLock { summary.error = "connect to \(target.address):\(target.port): \(String(cString: strerror(errno)))" }
            close(client)
            close(server)
            return
        }
        // The return path (destination -> source) passes through untouched.
        let back = Thread {
            var buf = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(server, &buf, buf.count)
                if n <= 0 || !Self.writeAll(client, buf, n) { break }
            }
            shutdown(client, Int32(SHUT_WR))
        }
        back.start()
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = read(client, &buf, buf.count)
            if n <= 0 { break }
            var chunk = Array(buf[0..<n])
            corruptor.process(&chunk)
            if !Self.writeAll(server, chunk, n) { break }
        }
        shutdown(server, Int32(SHUT_WR))
        lock.withLock {
            summary.bytes = corruptor.offset
            summary.flips = corruptor.flips
            summary.pagesHit = corruptor.pagesHit
        }
        // Give the return path a moment to drain, then close both.
        Thread.sleep(forTimeInterval: 0.2)
        close(client)
        close(server)
    }

    static func writeAll(_ fd: Int32, _ buf: [UInt8], _ n: Int) -> Bool {
        var off = 0
        while off < n {
            // MSG_NOSIGNAL: a peer that went away is an error here, not a SIGPIPE for the runner.
            let w = buf.withUnsafeBytes { send(fd, $0.baseAddress! + off, n - off, Int32(MSG_NOSIGNAL)) }
            if w < 0 && errno == EINTR { continue }
            if w <= 0 { return false }
            off += w
        }
        return true
    }

    static func inetAddress(_ address: String, _ port: UInt16) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        inet_pton(AF_INET, address, &a.sin_addr)
        return a
    }
}
