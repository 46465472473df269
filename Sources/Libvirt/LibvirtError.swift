import CLibvirt
#if canImport(Glibc)
import Glibc
#endif

/// An error reported by libvirt, carrying libvirt's own classification.
///
/// `code` is a `virErrorNumber` (for example 78 = `VIR_ERR_OPERATION_ABORTED`),
/// `domain` a `virErrorDomain` (for example 10 = `VIR_FROM_QEMU`).
public struct LibvirtError: Error, Sendable, Equatable, CustomStringConvertible {
    public let code: Int32
    public let domain: Int32
    public let message: String
    /// The libvirt call that failed, as miglab called it.
    public let operation: String

    public init(code: Int32, domain: Int32, message: String, operation: String) {
        self.code = code
        self.domain = domain
        self.message = message
        self.operation = operation
    }

    /// The last error libvirt recorded on this thread (libvirt keeps errors thread-local),
    /// so call it on the thread that made the failing call, right after it.
    /// `operation` is evaluated only after the error was read: every public libvirt call
    /// (even virDomainGetName, used to name the domain) resets the thread's last error.
    static func last(_ operation: @autoclosure () -> String) -> LibvirtError {
        guard let err = virGetLastError() else {
            let op = operation()
            return LibvirtError(code: -1, domain: 0, message: "\(op) failed without a libvirt error", operation: op)
        }
        let code = err.pointee.code, domain = err.pointee.domain
        let message = err.pointee.message.map { String(cString: $0) } ?? "unknown error"
        return LibvirtError(code: code, domain: domain, message: message, operation: operation())
    }

    public var description: String { "\(operation): \(message) (libvirt error \(code), domain \(domain))" }

    // The codes miglab reacts to by name.
    public static let noDomain = Int32(VIR_ERR_NO_DOMAIN.rawValue)
    public static let operationInvalid = Int32(VIR_ERR_OPERATION_INVALID.rawValue)
    public static let agentUnresponsive = Int32(VIR_ERR_AGENT_UNRESPONSIVE.rawValue)
    public static let operationAborted = Int32(VIR_ERR_OPERATION_ABORTED.rawValue)
    public static let operationFailed = Int32(VIR_ERR_OPERATION_FAILED.rawValue)
    public static let systemError = Int32(VIR_ERR_SYSTEM_ERROR.rawValue)
}

/// Process-wide libvirt set-up. Call `Libvirt.initialize()` once before opening connections.
public enum Libvirt {
    /// Silences libvirt's default handler, which prints every error to stderr: miglab reports
    /// errors itself, as values. Starts the event loop (needed for events and for keepalive).
    public static func initialize() {
        _ = initialized
    }

    private static let initialized: Bool = {
        // libvirt writes to sockets whose peer may be gone (a killed daemon); as its docs ask,
        // the process ignores SIGPIPE and gets EPIPE instead of dying.
        signal(SIGPIPE, SIG_IGN)
        virSetErrorFunc(nil) { _, _ in }
        _ = virInitialize()
        EventLoop.shared.start()
        return true
    }()

    /// libvirt's own version as (major, minor, micro).
    public static var libraryVersion: (Int, Int, Int) {
        var v: UInt = 0
        _ = virGetVersion(&v, nil, nil)
        return version(v)
    }

    static func version(_ v: UInt) -> (Int, Int, Int) {
        (Int(v / 1_000_000), Int(v / 1000 % 1000), Int(v % 1000))
    }
}
