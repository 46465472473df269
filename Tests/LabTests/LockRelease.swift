import Foundation
@testable import Lab

/// Runs `acquire` until the locks it takes are free, for at most 30 s. Other tests spawn
/// processes in parallel, and a child between its fork and its exec holds a copy of every
/// descriptor, O_CLOEXEC ones included, so for that moment the flock of a descriptor this test
/// just closed is still held (CI saw it once in 220 tests). The product never re-takes a lock it
/// just released; only these tests do.
func acquireAfterRelease<T>(_ acquire: () throws -> T) throws -> T {
    let deadline = Date().addingTimeInterval(30)
    while true {
        do { return try acquire() } catch DeviceLockError.held where Date() < deadline {
            usleep(20_000)
        }
    }
}
