import Foundation
import Testing
@testable import Lab

@Suite struct DeviceLockTests {
    func directory() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("miglab-locks-\(UUID().uuidString)").path
    }

    @Test func twoRunsNeverGetTheSameDeviceAndTheLoserNamesTheOwner() throws {
        let dir = directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let first = try DeviceLockSet.acquire(["local-pci-0000:3b:00.2", "local-pci-0000:3b:00.3"], directory: dir,
                                              owner: .current(runID: "run-one"))
        // A second run in the same process, through its own open file descriptions.
        #expect {
            try DeviceLockSet.acquire(["local-pci-0000:3b:00.1", "local-pci-0000:3b:00.3"], directory: dir, owner: .current(runID: "run-two"))
        } throws: { error in
            guard case let DeviceLockError.held(device, path, owner)? = error as? DeviceLockError else { return false }
            return device == "local-pci-0000:3b:00.3" && path == "\(dir)/local-pci-0000:3b:00.3.lock"
                && owner?.runID == "run-one" && owner?.pid == getpid()
                && "\(error)".contains("run run-one (pid \(getpid())")
        }
        // All or nothing: the loser did not keep 00.1.
        let other = try acquireAfterRelease {
            try DeviceLockSet.acquire(["local-pci-0000:3b:00.1"], directory: dir, owner: .current(runID: "run-three"))
        }
        other.release()
        // Released on close: now the second run gets both.
        first.release()
        let second = try acquireAfterRelease {
            try DeviceLockSet.acquire(["local-pci-0000:3b:00.1", "local-pci-0000:3b:00.3"], directory: dir,
                                      owner: .current(runID: "run-two"))
        }
        #expect(second.takeovers.isEmpty)   // a clean release leaves no owner behind
        second.release()
    }

    @Test func aLockIsReleasedWhenItsObjectGoesAway() throws {
        let dir = directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let held = try DeviceLockSet.acquire(["d"], directory: dir, owner: .current(runID: "r1"))
            #expect(held.locks.first?.isHeld == true)
        }
        let again = try acquireAfterRelease { try DeviceLockSet.acquire(["d"], directory: dir, owner: .current(runID: "r2")) }
        again.release()
    }

    /// A run that died holding the lock, the way the kernel sees it: an open file description
    /// that took the flock and wrote its owner record, closed without clearing the record (what
    /// exit or SIGKILL does). Done in-process rather than with a child process: a fork while
    /// other tests write executable scripts makes their exec fail with ETXTBSY.
    func abandonLock(at path: String, pid: Int32, runID: String) throws {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        #expect(fd >= 0)
        #expect(flock(fd, LOCK_EX | LOCK_NB) == 0)
        let record = #"{"pid":\#(pid),"started":"2025-01-01T00:00:00Z","runID":"\#(runID)","hostname":"\#(ProcessInfo.processInfo.hostName)"}"# + "\n"
        #expect(record.withCString { write(fd, $0, strlen($0)) } == record.utf8.count)
        close(fd)
    }

    /// A pid no process can have (above the kernel's pid_max).
    var deadPID: Int32 {
        let max = (try? String(contentsOfFile: "/proc/sys/kernel/pid_max", encoding: .utf8))
            .flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 4_194_304
        return max + 1
    }

    @Test func aDeadRunsLockIsTakenOverAndReported() throws {
        let dir = directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = "\(dir)/local-pci-0000:3b:00.2.lock"
        try abandonLock(at: path, pid: deadPID, runID: "dead-run")
        let lock = try DeviceLock(device: "local-pci-0000:3b:00.2", directory: dir, owner: .current(runID: "successor"))
        defer { lock.release() }
        #expect(lock.takenOverFrom?.runID == "dead-run")
        #expect(lock.takenOverFrom?.isAlive == false)
        #expect(lock.takeoverMessage?.contains("took over the lock of run dead-run (pid \(deadPID)") == true)
        #expect(lock.takeoverMessage?.contains("is gone") == true)
        // The file now names the successor.
        let record = try String(contentsOfFile: path, encoding: .utf8)
        #expect(record.contains("successor") && !record.contains("dead-run"))
    }

    @Test func aHolderThatStillRunsIsNamedAndItsLockIsNotTaken() throws {
        let dir = directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // Another open file description holds the flock (another run).
        let holder = open("\(dir)/x.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        #expect(flock(holder, LOCK_EX | LOCK_NB) == 0)
        let record = #"{"pid":1,"started":"now","runID":"other-run","hostname":"h"}"# + "\n"
        _ = record.withCString { write(holder, $0, strlen($0)) }
        #expect {
            try DeviceLock(device: "x", directory: dir, owner: .current(runID: "me"))
        } throws: { "\($0)".contains("x is in use by run other-run (pid 1 on h") }
        close(holder)
        let lock = try acquireAfterRelease { try DeviceLock(device: "x", directory: dir, owner: .current(runID: "me")) }
        #expect(lock.takenOverFrom?.runID == "other-run")   // it ended without clearing its record
        lock.release()
    }
}
