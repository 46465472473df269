import CLibvirt
import Foundation
import Synchronization

/// libvirt's default event loop, driven by one dedicated thread for the whole process.
///
/// libvirt needs a running event loop to deliver domain events and to send keepalives on
/// remote connections. It must be registered before the first connection is opened, which
/// `Libvirt.initialize()` guarantees.
final class EventLoop: Sendable {
    static let shared = EventLoop()
    private let started = Mutex(false)

    func start() {
        let first = started.withLock { s in
            defer { s = true }
            return !s
        }
        guard first else { return }
        guard virEventRegisterDefaultImpl() == 0 else {
            // Without an event loop events never arrive; waits still end at their deadlines.
            return
        }
        let thread = Thread {
            while virEventRunDefaultImpl() == 0 {}
        }
        thread.name = "libvirt-event-loop"
        thread.start()
    }
}

/// Runs a blocking call (libvirt, a child process, a sysfs scan) on its own thread and resumes
/// the caller when it returns.
///
/// libvirt calls such as a migration block for seconds; they must not occupy a thread of
/// Swift's cooperative pool (2 cores here: two blocked calls would stall every task).
/// libvirt's errors are thread-local, so `body` reads them on the same thread.
public func onBlockingThread<T: Sendable>(_ name: String, _ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (cont: CheckedContinuation<T, Error>) in
        let thread = Thread {
            do { cont.resume(returning: try body()) } catch { cont.resume(throwing: error) }
        }
        thread.name = name
        thread.start()
    }
}
