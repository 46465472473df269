import VFIO

/// Checks of the migration state machine (include/uapi/linux/vfio.h, enum vfio_device_mig_state
/// and struct vfio_device_feature_migration; drivers/vfio/vfio_main.c, vfio_mig_get_next_state()).
enum StateMachineChecks {
    static let uapi = "include/uapi/linux/vfio.h"

    static var all: [Check] {
        [capabilities] + MigrationCapabilities.definedCombinations.map(pairs) + [
            errorNotRequestable, stopCopyToPreCopyRefused, errorExitOnlyByReset, resetReturnsRunning,
        ]
    }

    static let capabilities = Check(
        id: "fsm.capabilities",
        rule: "VFIO_DEVICE_FEATURE_MIGRATION reports STOP_COPY and a flag combination the uAPI defines.",
        source: "\(uapi), struct vfio_device_feature_migration: 'at least VFIO_MIGRATION_STOP_COPY must be set'; 'Other combinations of flags have behavior to be defined in the future'"
    ) { context in
        var seen: [String] = []
        for combination in context.target.capabilityCombinations {
            let reported = try context.open(combination).migrationCapabilities()
            try expect(reported.contains(.stopCopy), "flags \(reported) lack STOP_COPY")
            try expect(MigrationCapabilities.definedCombinations.contains(reported), "flags \(reported) are not a defined combination")
            try expect(reported == combination, "a device opened for \(combination) reports \(reported)")
            seen.append(reported.description)
        }
        return .pass("reports \(seen.joined(separator: ", "))")
    }

    /// Every (from, to) request for one capability combination.
    static func pairs(_ combination: MigrationCapabilities) -> Check {
        Check(
            id: "fsm.pairs.\(combination.slug)",
            rule: "With \(combination), every (from, to) request ends where vfio_mig_get_next_state() leads, returns a data fd exactly when an arc on its path opens a session, and a refused request leaves the state unchanged.",
            source: "drivers/vfio/vfio_main.c, vfio_mig_get_next_state(); \(uapi), enum vfio_device_mig_state comment ('Select the shortest path', 'The path cannot have saving group states as interior arcs', 'These arcs ... will return a new data_fd')"
        ) { context in
            guard context.target.capabilityCombinations.contains(combination) else {
                return .skip("the device offers \(context.capabilities), so \(combination) cannot be tested")
            }
            var failures: [String] = []
            var requests = 0
            var refusals = 0
            var pathsCompared = 0
            var notSent: [String] = []
            var unreachable: Set<MigrationState> = []
            // Requests out of RESUMING need a whole stream written first: leaving RESUMING
            // validates it.
            let resumeData = try saveStopCopyStream(of: try context.open(combination), limit: context.target.maxStreamBytes)
            for from in MigrationState.allCases where from == .error || combination.supports(from) {
                for to in MigrationState.allCases {
                    let device = try context.open(combination)
                    // Keep the session of `from` open while `to` is requested, as QEMU would.
                    let reached = try reach(from, on: device, resumeData: resumeData)
                    guard let fromSession = reached else {
                        unreachable.insert(from)
                        continue
                    }
                    _ = device.exerciser?.takeExecutedArcs()
                    requests += 1
                    let expected = MigrationFSM.transition(from: from, to: to, capabilities: combination)
                    let outcome = Result { () throws(VFIOError) in try device.setMigrationState(to) }
                    let after = try device.migrationState()
                    let request = "\(from) -> \(to)"
                    switch (expected, outcome) {
                    case (_, .failure(let error)) where error.wasNotSent:
                        notSent.append(request)
                    case (nil, .failure):
                        refusals += 1
                        if after != from { failures.append("\(request) refused but left the device in \(after)") }
                    case (nil, .success):
                        failures.append("\(request) accepted (device now in \(after)); it must be refused")
                    case (.some, .failure(let error)):
                        failures.append("\(request) refused: \(error)")
                    case (.some(let transition), .success(let stream)):
                        if after != to { failures.append("\(request) ended in \(after)") }
                        if (stream != nil) != transition.opensDataStream {
                            failures.append("\(request) " + (stream == nil ? "returned no data fd" : "returned a data fd, though no arc of \(transition.arcs) opens a session"))
                        }
                        if let exerciser = device.exerciser {
                            pathsCompared += 1
                            let taken = exerciser.takeExecutedArcs()
                            if taken != transition.arcs {
                                failures.append("\(request) took \(taken.map(\.description).joined(separator: ", ")); the kernel's path is \(transition.arcs.map(\.description).joined(separator: ", "))")
                            }
                        }
                    }
                    withExtendedLifetime(fromSession) {}
                }
            }
            guard failures.isEmpty else { return .fail("\(failures.count) of \(requests) requests wrong: \(summarize(failures))") }
            var detail = "\(requests) requests as the kernel's table says, \(refusals) of them refused"
            if pathsCompared > 0 { detail += "; arcs compared on \(pathsCompared) paths" }
            if !notSent.isEmpty {
                detail += "; not sent: \(notSent.joined(separator: ", ")) (the kernel would not return; fsm.stop-copy-to-pre-copy-refused says why)"
            }
            if !unreachable.isEmpty {
                detail += "; not tested from \(unreachable.map(\.description).sorted().joined(separator: ", ")) (a failed resume did not lead there)"
            }
            return .pass(detail)
        }
    }

    static let errorNotRequestable = Check(
        id: "fsm.error-not-requestable",
        rule: "Requesting ERROR fails from every state and leaves the state unchanged.",
        source: "\(uapi), enum vfio_device_mig_state comment: 'any -> ERROR: ERROR cannot be specified as a device state'"
    ) { context in
        for state in context.supportedStates {
            let device = try context.open()
            let session = try reach(state, on: device)
            if try refusal({ () throws(VFIOError) in try device.setMigrationState(.error) }) == nil {
                return .fail("\(state) -> ERROR was accepted (device now in \(try device.migrationState()))")
            }
            let after = try device.migrationState()
            try expect(after == state, "\(state) -> ERROR was refused but the device moved to \(after)")
            withExtendedLifetime(session) {}
        }
        return .pass("refused from \(context.supportedStates.map(\.description).joined(separator: ", "))")
    }

    static let stopCopyToPreCopyRefused = Check(
        id: "fsm.stop-copy-to-pre-copy-refused",
        rule: "STOP_COPY -> PRE_COPY and STOP_COPY -> PRE_COPY_P2P are refused and the device stays in STOP_COPY.",
        source: "\(uapi), enum vfio_device_mig_state comment: 'STOP_COPY -> PRE_COPY, STOP_COPY -> PRE_COPY_P2P: These arcs are not permitted and return error if requested'"
    ) { context in
        let targets = [MigrationState.preCopy, .preCopyP2P].filter(context.capabilities.supports)
        guard !targets.isEmpty else { return .skip("the device offers no PRE_COPY (\(context.capabilities))") }
        for target in targets {
            let device = try context.open()
            let stream = try reach(.stopCopy, on: device)
            if try refusal({ () throws(VFIOError) in try device.setMigrationState(target) }) == nil {
                return .fail("STOP_COPY -> \(target) was accepted (device now in \(try device.migrationState()))")
            }
            let after = try device.migrationState()
            try expect(after == .stopCopy, "STOP_COPY -> \(target) was refused but the device moved to \(after)")
            withExtendedLifetime(stream) {}
        }
        return .pass("refused: \(targets.map { "STOP_COPY -> \($0)" }.joined(separator: ", "))")
    }

    static let errorExitOnlyByReset = Check(
        id: "fsm.error-exit-only-by-reset",
        rule: "In ERROR every state request fails, and VFIO_DEVICE_RESET returns the device to RUNNING.",
        source: "\(uapi), enum vfio_device_mig_state comment: 'To recover from ERROR VFIO_DEVICE_RESET must be used to return the device_state back to RUNNING'"
    ) { context in
        let device = try context.open()
        guard try enterErrorState(device) else {
            return .skip("a failed RESUMING -> STOP left the device in \(try device.migrationState()), not ERROR; ERROR cannot be reached to test")
        }
        for state in context.supportedStates {
            if try refusal({ () throws(VFIOError) in try device.setMigrationState(state) }) == nil {
                return .fail("ERROR -> \(state) was accepted (device now in \(try device.migrationState()))")
            }
            let after = try device.migrationState()
            try expect(after == .error, "ERROR -> \(state) was refused but the device moved to \(after)")
        }
        try device.reset()
        let after = try device.migrationState()
        try expect(after == .running, "VFIO_DEVICE_RESET from ERROR left the device in \(after)")
        return .pass("\(context.supportedStates.count) requests refused in ERROR; reset led to RUNNING")
    }

    static let resetReturnsRunning = Check(
        id: "fsm.reset-returns-running",
        rule: "VFIO_DEVICE_RESET returns the device to RUNNING from every state.",
        source: "\(uapi), enum vfio_device_mig_state comment ('VFIO_DEVICE_RESET ... return the device_state back to RUNNING') and struct vfio_device_feature_mig_state ('must not generate asynchronous device state transitions outside of ... the VFIO_DEVICE_RESET ioctl')"
    ) { context in
        var tested: [String] = []
        for state in context.supportedStates + [.error] {
            let device = try context.open()
            guard let session = try reach(state, on: device) else { continue }
            try device.reset()
            let after = try device.migrationState()
            try expect(after == .running, "VFIO_DEVICE_RESET in \(state) left the device in \(after)")
            tested.append(state.description)
            withExtendedLifetime(session) {}
        }
        return .pass("RUNNING after a reset in \(tested.joined(separator: ", "))")
    }

    static let openStartsRunning = Check(
        id: "fsm.open-starts-running",
        rule: "A device opened after its last user closed it in the middle of a migration starts in RUNNING.",
        source: "drivers/vfio/pci/mlx5/main.c mlx5vf_pci_open_device ('mvdev->mig_state = VFIO_DEVICE_STATE_RUNNING'), hisi_acc_vfio_pci.c hisi_acc_vfio_pci_open_device, pds/vfio_dev.c pds_vfio_open_device (Linux 6.12); QEMU opens a device and expects RUNNING"
    ) { context in
        // A failed incoming migration: RESUMING, a stream the device refuses, then the user
        // (QEMU) goes away.
        do {
            let device = try context.open()
            try move(device, to: .stop)
            let stream = try openSession(device, in: .resuming)
            let foreign = try context.target.foreignStream()
            _ = try refusal { () throws(VFIOError) in try stream.write(foreign) }
            withExtendedLifetime(stream) {}
        }
        // The next user opens it and only looks: leaving a kept RESUMING is what crashes mtty.
        let again = try context.target.openDevice(context.capabilities)
        let state = try again.migrationState()
        if state != .running {
            try again.reset()
            return .fail("reopened after a closed, refused resume the device is in \(state), not RUNNING: its close kept the migration state but not the data session, so the next user's first state change leaves \(state) with no session (mtty, samples/vfio-mdev/mtty.c mtty_close; RESUMING -> STOP then runs mtty_load_state on the freed resume file, a NULL pointer dereference). VFIO_DEVICE_RESET returned it to RUNNING")
        }
        let earlier = context.openings.entries
        guard earlier.isEmpty else {
            return .fail("\(earlier.count) opens during the run found the device not in RUNNING: \(earlier.prefix(4).joined(separator: "; "))")
        }
        return .pass("reopened in RUNNING after a closed, refused resume; every open of the run found RUNNING")
    }
}
