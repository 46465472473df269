import CVFIO

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `MIGLAB_VFIO_TRACE=1`: every VFIO request, read and write is written to stderr before it is
/// made, unbuffered, so when a driver hangs or crashes the host the last line names the call.
let vfioTraceEnabled: Bool = getenv("MIGLAB_VFIO_TRACE").map { String(cString: $0) == "1" } ?? false

func vfioTrace(_ message: @autoclosure () -> String) {
    guard vfioTraceEnabled else { return }
    let line = "vfio: " + message() + "\n"
    _ = line.withCString { Glibc.write(2, $0, strlen($0)) }
}

/// An open file descriptor this process owns: closed exactly once, in `close()` or in deinit.
final class FileDescriptor {
    private(set) var rawValue: Int32
    /// What was opened, for error messages.
    let path: String

    private init(rawValue: Int32, path: String) {
        self.rawValue = rawValue
        self.path = path
    }

    /// Takes ownership of an fd the kernel handed out (a data fd, a group's device fd).
    static func adopting(_ rawValue: Int32, path: String) -> FileDescriptor {
        FileDescriptor(rawValue: rawValue, path: path)
    }

    /// `open(path, O_RDWR | O_CLOEXEC)`.
    static func open(_ path: String) throws(VFIOError) -> FileDescriptor {
        let result = cvfio_open(path)
        guard result >= 0 else { throw VFIOError("open(\(path))", errorNumber: -result) }
        return FileDescriptor(rawValue: result, path: path)
    }

    deinit { close() }

    func close() {
        guard rawValue >= 0 else { return }
        _ = cvfio_close(rawValue)
        rawValue = -1
    }

    /// Sends `request`, with its embedded buffers at stable addresses, and copies back everything
    /// the kernel wrote. Returns ioctl's non-negative result (a new fd for some requests).
    @discardableResult
    func perform(_ request: inout VFIORequest) throws(VFIOError) -> Int32 {
        vfioTrace("\(request.name) on \(path)")
        let result: Int32
        switch request.argument {
        case .none:
            result = cvfio_ioctl_value(rawValue, request.number, 0)
        case .value(let value):
            result = cvfio_ioctl_value(rawValue, request.number, value)
        case .buffer(var bytes, var pointers):
            let embedded = pointers.map { UnsafeMutableRawBufferPointer.allocate(byteCount: max($0.bytes.count, 8), alignment: 8) }
            defer { embedded.forEach { $0.deallocate() } }
            for (buffer, pointer) in zip(embedded, pointers) {
                buffer.copyBytes(from: pointer.bytes)
                var address: [UInt8] = []
                address.appendHostOrder(UInt64(UInt(bitPattern: buffer.baseAddress)))
                bytes.replaceSubrange(pointer.addressOffset..<pointer.addressOffset + 8, with: address)
            }
            let argument = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 8), alignment: 8)
            defer { argument.deallocate() }
            argument.copyBytes(from: bytes)
            result = cvfio_ioctl(rawValue, request.number, argument.baseAddress)
            bytes = Array(argument.prefix(bytes.count))
            for index in pointers.indices {
                pointers[index].bytes = Array(embedded[index].prefix(pointers[index].bytes.count))
            }
            request.argument = .buffer(bytes, pointers: pointers)
        }
        guard result >= 0 else { throw VFIOError(request.name, errorNumber: -result, detail: path) }
        return result
    }

    func read(upTo count: Int, operation: String) throws(VFIOError) -> [UInt8] {
        vfioTrace("\(operation): read up to \(count) bytes")
        var buffer = [UInt8](repeating: 0, count: count)
        let result = buffer.withUnsafeMutableBytes { cvfio_read(rawValue, $0.baseAddress, count) }
        guard result >= 0 else { throw VFIOError(operation, errorNumber: Int32(-result)) }
        return Array(buffer.prefix(result))
    }

    func write(_ bytes: [UInt8], operation: String) throws(VFIOError) -> Int {
        vfioTrace("\(operation): write \(bytes.count) bytes")
        let result = bytes.withUnsafeBytes { cvfio_write(rawValue, $0.baseAddress, bytes.count) }
        guard result >= 0 else { throw VFIOError(operation, errorNumber: Int32(-result)) }
        return result
    }
}
