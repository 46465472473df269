import Foundation
import Logging
import Synchronization

/// Who holds a device lock, as written into the lock file, so that a contender can say who
/// it waits for and a successor can tell whether the previous owner is gone.
public struct DeviceLockOwner: Codable, Sendable, Equatable, CustomStringConvertible {
    public var pid: Int32
    /// The process start time in clock ticks since boot (`/proc/PID/stat` field 22): with the
    /// pid it names one process, even after the pid is reused.
    public var processStartTicks: UInt64?
    /// When the run started (ISO 8601).
    public var started: String
    public var runID: String
    public var hostname: String
    /// What the run changed on the device and has not undone yet: a run that takes the lock
    /// over from a dead one undoes it first.
    public var leftover: Leftover?

    /// A change to a device that outlives its run if the run dies.
    public enum Leftover: Codable, Sendable, Equatable, CustomStringConvertible {
        /// The function was detached from this host driver (nil: it had none) to a vfio driver.
        case detached(fromDriver: String?)
        /// A mediated device with this UUID was created.
        case mdev(uuid: String)

        public var description: String {
            switch self {
            case let .detached(driver): "detached from \(driver ?? "no driver")"
            case let .mdev(uuid): "mdev \(uuid) created"
            }
        }
    }

    public init(pid: Int32, processStartTicks: UInt64?, started: String, runID: String, hostname: String, leftover: Leftover? = nil) {
        self.pid = pid
        self.processStartTicks = processStartTicks
        self.started = started
        self.runID = runID
        self.hostname = hostname
        self.leftover = leftover
    }

    /// This process, for run `runID`.
    public static func current(runID: String) -> DeviceLockOwner {
        let pid = getpid()
        return DeviceLockOwner(pid: pid, processStartTicks: processStartTicks(of: pid),
                               started: ISO8601DateFormatter().string(from: Date()), runID: runID,
                               hostname: ProcessInfo.processInfo.hostName)
    }

    public var description: String { "run \(runID) (pid \(pid) on \(hostname), started \(started))" }

    /// The recorded process still runs (same pid and start time), on this machine.
    public var isAlive: Bool {
        guard hostname == ProcessInfo.processInfo.hostName else { return false }
        guard kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let recorded = processStartTicks else { return true }
        return Self.processStartTicks(of: pid) == recorded
    }

    static func processStartTicks(of pid: Int32) -> UInt64? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        // Fields after the command (which may hold spaces and parentheses): state is field 3,
        // starttime field 22.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 19 ? UInt64(fields[19]) : nil
    }
}

public enum DeviceLockError: Error, Sendable, CustomStringConvertible {
    /// Another run holds the device.
    case held(device: String, path: String, owner: DeviceLockOwner?)
    /// The lock file could not be created or locked.
    case io(path: String, operation: String, errno: Int32)

    public var description: String {
        switch self {
        case let .held(device, path, owner):
            let who = owner.map { "\($0)" } ?? "another run (it has not written its name yet)"
            return "\(device) is in use by \(who); lock file \(path). Wait for that run to end, or pick other devices (pools in the lab file)."
        case let .io(path, operation, e):
            return "\(operation) \(path): \(String(cString: strerror(e))); create the lock directory (or set `locks:` in the lab file to a writable one)"
        }
    }
}

/// One device's lock: an flock(2) on `<directory>/<device>.lock`, held for the run.
///
/// The kernel drops an flock when the last descriptor of the open file description closes, so
/// the lock of a run that died (killed, crashed) is free again at once; its owner record stays
/// in the file, which is how the next run sees it took a dead run's lock over. The file is
/// truncated on release but never unlinked: unlinking while another process has it open would
/// let two processes lock two different inodes of the same name.
public final class DeviceLock: Sendable {
    public let device: String
    public let path: String
    /// The owner recorded by a previous run that ended without releasing (it died).
    public let takenOverFrom: DeviceLockOwner?
    public let owner: DeviceLockOwner
    private let fd: Mutex<Int32?>

    /// Locks `device` without waiting; throws `.held` naming the owner when another run has it.
    public init(device: String, directory: String, owner: DeviceLockOwner) throws(DeviceLockError) {
        let path = "\(directory)/\(device).lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else { throw .io(path: path, operation: "open", errno: errno) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let e = errno
            let holder = Self.readOwner(fd)
            close(fd)
            if e == EWOULDBLOCK { throw .held(device: device, path: path, owner: holder) }
            throw .io(path: path, operation: "flock", errno: e)
        }
        let previous = Self.readOwner(fd)
        do {
            try Self.write(owner, to: fd, path: path)
        } catch {
            close(fd)
            throw error
        }
        self.device = device
        self.path = path
        self.takenOverFrom = previous
        self.owner = owner
        self.fd = Mutex(fd)
    }

    /// Records in the lock file what this run changed on the device (nil: nothing left to
    /// undo), before the change is made, so that a dead run's changes are known to its successor.
    public func record(_ leftover: DeviceLockOwner.Leftover?) throws(DeviceLockError) {
        var updated = owner
        updated.leftover = leftover
        let result: Result<Void, DeviceLockError> = fd.withLock { fd in
            guard let f = fd else { return .failure(.io(path: path, operation: "record in released lock", errno: EBADF)) }
            do throws(DeviceLockError) { try Self.write(updated, to: f, path: path) } catch { return .failure(error) }
            return .success(())
        }
        try result.get()
    }

    private static func write(_ owner: DeviceLockOwner, to fd: Int32, path: String) throws(DeviceLockError) {
        guard var record = try? JSONEncoder().encode(owner) else {
            throw .io(path: path, operation: "encode owner for", errno: EINVAL)
        }
        record.append(0x0a)
        let written = record.withUnsafeBytes { buf in
            ftruncate(fd, 0) == 0 ? pwrite(fd, buf.baseAddress, buf.count, 0) : -1
        }
        guard written == record.count else { throw .io(path: path, operation: "write owner to", errno: errno) }
    }

    deinit { release() }

    /// Clears the owner record (unless `keepRecord`: changes left to undo stay on record for
    /// the next run) and drops the lock; a second call does nothing.
    public func release(keepRecord: Bool = false) {
        fd.withLock { fd in
            guard let f = fd else { return }
            if !keepRecord { _ = ftruncate(f, 0) }
            close(f)
            fd = nil
        }
    }

    public var isHeld: Bool { fd.withLock { $0 != nil } }

    /// What a takeover means, for logs.
    public var takeoverMessage: String? {
        guard let prev = takenOverFrom else { return nil }
        let state = prev.isAlive ? "still runs but no longer holds the lock" : "is gone"
        let left = prev.leftover.map { " and left the device \($0) (undone before use)" } ?? ""
        return "\(device): took over the lock of \(prev), which \(state) (it ended without releasing\(left); check that its guest is gone)"
    }

    private static func readOwner(_ fd: Int32) -> DeviceLockOwner? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return nil }
        return try? JSONDecoder().decode(DeviceLockOwner.self, from: Data(buffer[0..<n]))
    }
}

/// The locks of one run: all of them or none.
public final class DeviceLockSet: Sendable {
    public let locks: [DeviceLock]

    init(locks: [DeviceLock]) { self.locks = locks }

    /// Locks every device in `devices` (sorted, so that two runs asking for overlapping sets
    /// do not each take half); when one is held, releases the ones taken and throws.
    public static func acquire(_ devices: [String], directory: String, owner: DeviceLockOwner,
                               logger: Logger = Logger(label: "miglab.locks")) throws(DeviceLockError) -> DeviceLockSet {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw .io(path: directory, operation: "create directory", errno: errno == 0 ? EACCES : errno)
        }
        var taken: [DeviceLock] = []
        for device in Set(devices).sorted() {
            do {
                let lock = try DeviceLock(device: device, directory: directory, owner: owner)
                if let message = lock.takeoverMessage { logger.warning("\(message)") }
                taken.append(lock)
            } catch {
                for lock in taken { lock.release() }
                throw error
            }
        }
        return DeviceLockSet(locks: taken)
    }

    public func release(keepRecords: Bool = false) { for lock in locks { lock.release(keepRecord: keepRecords) } }

    public func lock(named device: String) -> DeviceLock? { locks.first { $0.device == device } }

    public var takeovers: [String] { locks.compactMap(\.takeoverMessage) }
}
