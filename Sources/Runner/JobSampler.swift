import Foundation
import Libvirt
import Synchronization

/// Reads a running migration's job statistics, then whether the source still runs, over and
/// over on a thread of its own, and keeps the latest of each for the migrate step's loop.
///
/// The loop fires the faults, watches the deadline and Ctrl-C; it must not wait for libvirt.
/// Measured on the built-in lab (libvirt 9.0, QEMU 10): `virDomainGetState` on the source
/// answered after exactly 5 s about once per migration, early in the bulk pass, and while the
/// loop made that call itself a fault due 1500 ms into the migration fired at 6.0 s. A
/// dedicated thread rather than a task: the calls block, and the cooperative pool has one
/// thread per core (two here), which the fault actions need.
final class JobSampler: Sendable {
    /// One reading: the statistics, and whether the source ran when they had been read (the
    /// state is read after them, so `sourceRunning` true means they were taken in pre-copy).
    struct Sample: Sendable {
        var stats: JobStats
        var sourceRunning: Bool?
        /// Counts readings, so that the loop journals each once.
        var number: Int
    }

    private let latest = Mutex<(stats: JobStats?, sample: Sample?)>((nil, nil))
    private let stopped = Mutex(false)

    /// Starts reading `domain` every `interval` until `stop()`.
    init(domain: any GuestDomain, interval: Duration) {
        let thread = Thread { [self] in
            var number = 0
            while !stopped.withLock({ $0 }) {
                number += 1
                let stats = try? domain.jobStats()
                latest.withLock { $0.stats = stats }
                // Only a running job's progress is journaled with its phase.
                if let s = stats, s.isActive {
                    let running = (try? domain.state()).map { $0.state == .running }
                    latest.withLock { $0.sample = Sample(stats: s, sourceRunning: running, number: number) }
                }
                Thread.sleep(forTimeInterval: interval.seconds)
            }
        }
        thread.name = "migration job sampler"
        thread.start()
    }

    /// The statistics last read (nil: no job, or the call failed), as soon as they are read.
    var stats: JobStats? { latest.withLock { $0.stats } }

    /// The last reading of a running job with the source's state read after it.
    var sample: Sample? { latest.withLock { $0.sample } }

    /// Ends the readings; a call in flight finishes on its own, and nothing reads its result.
    func stop() { stopped.withLock { $0 = true } }
}
