#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A refused or failed device operation: the operation as the uAPI names it (an ioctl with its
/// feature, a read of the data fd, a virtio admin command) and the errno it ended with.
///
/// The real backend reports what the kernel returned; the reference device reports the errno a
/// conforming kernel driver returns in the same situation, so both read alike.
public struct VFIOError: Error, Sendable, Equatable, CustomStringConvertible {
    public let operation: String
    public let errorNumber: Int32
    public let detail: String?

    public init(_ operation: String, errorNumber: Int32, detail: String? = nil) {
        self.operation = operation
        self.errorNumber = errorNumber
        self.detail = detail
    }

    /// An operation miglab refused to send, because the kernel is known not to return from it.
    /// Never a device's answer: a check must not count it as a refusal.
    public static func notSent(_ operation: String, because why: String) -> VFIOError {
        VFIOError(operation + " (not sent)", errorNumber: ECANCELED, detail: why)
    }

    public var wasNotSent: Bool { errorNumber == ECANCELED && operation.hasSuffix(" (not sent)") }

    /// The symbolic errno name where miglab knows it ("EINVAL"), else the number.
    public var errorName: String { Self.names[errorNumber] ?? "errno \(errorNumber)" }

    public var description: String {
        let message = String(cString: strerror(errorNumber))
        return "\(operation): \(errorName) (\(message))" + (detail.map { ": \($0)" } ?? "")
    }

    static let names: [Int32: String] = [
        EPERM: "EPERM", ENOENT: "ENOENT", EINTR: "EINTR", EIO: "EIO", ENXIO: "ENXIO", EBADF: "EBADF",
        EAGAIN: "EAGAIN", ENOMEM: "ENOMEM", EACCES: "EACCES", EFAULT: "EFAULT", EBUSY: "EBUSY",
        EEXIST: "EEXIST", ENODEV: "ENODEV", ENOTDIR: "ENOTDIR", EINVAL: "EINVAL", ENOTTY: "ENOTTY",
        EFBIG: "EFBIG", ENOSPC: "ENOSPC", ERANGE: "ERANGE", ENOMSG: "ENOMSG", EOVERFLOW: "EOVERFLOW",
        EOPNOTSUPP: "EOPNOTSUPP", E2BIG: "E2BIG", ECANCELED: "ECANCELED",
    ]
}
