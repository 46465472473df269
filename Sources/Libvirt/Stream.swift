import CLibvirt
import Foundation
import Synchronization

/// A libvirt data stream (`virStreamPtr`), freed in deinit. Streams carry bulk data over the
/// daemon connection: a guest's serial console, a volume upload.
///
/// Used in blocking mode, each stream by one thread at a time (libvirt's rule for blocking
/// streams); the callers below keep every call on one dedicated thread.
public final class Stream: @unchecked Sendable {
    let raw: OpaquePointer
    public let connection: Connection

    /// `virStreamNew` (blocking).
    public init(connection: Connection) throws {
        guard let raw = virStreamNew(connection.raw, 0) else { throw LibvirtError.last("virStreamNew") }
        self.raw = raw
        self.connection = connection
    }
    deinit { virStreamFree(raw) }

    /// `virStreamRecv`: up to `buffer.count` bytes; 0 at the end of the stream.
    func receive(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = virStreamRecv(raw, buffer.baseAddress?.assumingMemoryBound(to: CChar.self), buffer.count)
        guard n >= 0 else { throw LibvirtError.last("virStreamRecv") }
        return Int(n)
    }

    /// `virStreamSend`, repeated until all of `bytes` went out.
    func send(_ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            let n = virStreamSend(raw, bytes.baseAddress!.advanced(by: offset).assumingMemoryBound(to: CChar.self), bytes.count - offset)
            guard n > 0 else { throw LibvirtError.last("virStreamSend") }
            offset += Int(n)
        }
    }

    /// `virStreamFinish`: the transfer is complete; the daemon reports any error it saw.
    func finish() throws {
        guard virStreamFinish(raw) == 0 else { throw LibvirtError.last("virStreamFinish") }
    }

    /// `virStreamAbort`.
    func abort() { _ = virStreamAbort(raw) }
}

/// Copies a guest's serial console into a local file through libvirt (`virDomainOpenConsole`),
/// for hosts whose console log the runner cannot read. One reader thread; it ends when the
/// console closes (the domain stopped or migrated away) or after `stop()`.
///
/// The capture opens a connection of its own: a blocking stream read holds its connection's
/// I/O loop while it waits for console output, and calls of other threads on that connection
/// (a memory read while the guest is paused and prints nothing) would wait behind it.
public final class ConsoleCapture: Sendable {
    public let path: String
    private let stopped = Mutex(false)
    private let ended = Mutex<(done: Bool, error: String?)>((false, nil))

    /// Opens the console of `domain` (taking it over from any other reader) and appends what
    /// it prints to `path`.
    public init(domain: Domain, appendingTo path: String) throws {
        self.path = path
        let connection = try Connection(uri: domain.connection.uri)
        guard let own = try connection.domain(named: domain.name) else {
            throw LibvirtError(code: LibvirtError.noDomain, domain: 0, message: "domain \(domain.name) is gone", operation: "virDomainOpenConsole")
        }
        let stream = try Stream(connection: connection)
        guard virDomainOpenConsole(own.raw, nil, stream.raw, UInt32(VIR_DOMAIN_CONSOLE_FORCE.rawValue)) == 0 else {
            throw LibvirtError.last("virDomainOpenConsole(\(domain.name))")
        }
        if !FileManager.default.fileExists(atPath: path) {
            _ = FileManager.default.createFile(atPath: path, contents: nil)
        }
        guard let file = FileHandle(forWritingAtPath: path) else {
            stream.abort()
            throw LibvirtError(code: -1, domain: 0, message: "cannot write \(path)", operation: "console capture")
        }
        file.seekToEndOfFile()
        let box = UncheckedBox((stream, file))
        let thread = Thread { [self] in
            let (stream, file) = box.value
            var buffer = [UInt8](repeating: 0, count: 4096)
            var failure: String?
            while !stopped.withLock({ $0 }) {
                do {
                    let n = try buffer.withUnsafeMutableBytes { try stream.receive(into: $0) }
                    if n == 0 { break }
                    file.write(Data(buffer[0..<n]))
                } catch {
                    failure = "\(error)"
                    break
                }
            }
            stream.abort()
            try? file.close()
            ended.withLock { $0 = (true, failure) }
        }
        thread.name = "console-capture"
        thread.start()
    }

    /// Asks the reader to stop after its current read (which ends when the console closes).
    public func stop() { stopped.withLock { $0 = true } }

    /// The reader has ended, and why (nil: the console closed normally).
    public var ending: (done: Bool, error: String?) { ended.withLock { $0 } }
}
