import Foundation
import Testing
@testable import Scenario

struct ScenarioParserTests {
    func parse(_ text: String) throws(ScenarioErrors) -> Scenario {
        try ScenarioParser().parse(text, file: "t.yaml")
    }

    func diagnostics(_ text: String) -> [Diagnostic] {
        do {
            _ = try parse(text)
            return []
        } catch {
            return error.diagnostics
        }
    }

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    @Test func libraryScenariosParse() throws {
        let smoke = try ScenarioParser().parse(file: Self.root + "/scenarios/smoke.yaml")
        #expect(smoke.name == "smoke")
        #expect(smoke.flattenedSteps.map(\.kind) == ["boot", "migrate", "verify", "migrate", "verify"])
        let pingpong = try ScenarioParser().parse(file: Self.root + "/scenarios/pingpong.yaml")
        let migrations = pingpong.flattenedSteps.filter { $0.kind == "migrate" }
        #expect(migrations.count == 20)
        #expect(pingpong.flattenedSteps.filter { $0.kind == "verify" }.count == 20)
    }

    /// A scenario that crashes its host on purpose: the mdev reuse flag, the host-kernel
    /// expectation, and no check after the crash; and the pre-copy device-state expectation.
    @Test func hostCrashAndPrecopyExpectations() throws {
        let s = try parse("""
        name: c
        guest: {passthrough: [{name: tty, kind: mdev, type: mtty-2}]}
        steps:
          - boot: a
          - migrate: {from: a, to: b, reuse_mdevs_after_failure: true, faults: [{abort: {}}]}
          - restart: b
        expect: {migrations: aborted, host_kernel: crashes}
        """)
        #expect(s.steps[2].action.isEqual(to: Step.Restart(host: "b")) && s.steps[2].kind == "restart")
        #expect(diagnostics("name: r\nsteps: [{restart: b}]").map(\.description).contains { $0.contains("`restart` before `boot`") })
        #expect(s.expect.hostKernel == .crashes)
        guard let m = s.steps[1].action(as: Step.Migrate.self) else { Issue.record("not a migration"); return }
        #expect(m.reuseMdevsAfterFailure)
        let d = diagnostics("""
        name: c
        steps: [{boot: a}]
        expect: {host_kernel: crashes, memory: intact}
        """)
        #expect(d.map(\.description).contains { $0.hasPrefix("t.yaml:3:23:") && $0.contains("nothing checks `memory` after it") }, "\(d)")
        #expect(try parse("name: p\nsteps: [{boot: a}]\nexpect: {vfio_precopy: sent}").expect.vfioPrecopy == .sent)
        #expect(diagnostics("name: p\nsteps: [{boot: a}]\nexpect: {vfio_precopy: maybe}").count == 1)
    }

    @Test func fullExample() throws {
        let s = try parse("""
        name: full
        tags: [a, b]
        guest: {memory_mib: 512, vcpus: 1, workload_mib: 128}
        steps:
          - boot: a
          - migrate: {from: a, to: b, bandwidth_mib_s: 100, max_downtime_ms: 500, suspend: true, timeout_s: 60}
          - verify: {memory: true, console: false}
        expect: {migrations: completed, memory: intact}
        """)
        #expect(s.guest == GuestSpec(memoryMiB: 512, vcpus: 1, workloadMiB: 128))
        guard let m = s.steps[1].action(as: Step.Migrate.self) else { Issue.record("not a migrate step"); return }
        #expect(m == Step.Migrate(from: "a", to: "b", bandwidthMiBps: 100, maxDowntimeMs: 500, suspend: true))
        #expect(s.steps[1].timeoutSeconds == 60)
        #expect(s.steps[1].location?.line == 6)
        guard let v = s.steps[2].action(as: Step.Verify.self) else { Issue.record("not a verify step"); return }
        #expect(v.memory && !v.console)
    }

    @Test func unknownKeyNamesFileLineColumnAndKey() {
        let d = diagnostics("""
        name: x
        steps:
          - boot: {on: a}
          - migrate: {from: a, to: b, bandwith_mib_s: 10}
        """)
        #expect(d.count == 1)
        #expect(d.first?.location == SourceLocation(file: "t.yaml", line: 4, column: 31))
        #expect(d.first?.message.contains("bandwith_mib_s") == true)
        #expect(d.first?.message.contains("did you mean `bandwidth_mib_s`") == true)
        #expect(d.first?.description.hasPrefix("t.yaml:4:31: error:") == true)
    }

    @Test func wrongTypesAreReportedWhereTheyAre() {
        let d = diagnostics("""
        name: x
        guest:
          memory_mib: lots
          vcpus: [1]
        steps:
          - boot: {on: a}
          - migrate: {from: a, to: b, suspend: maybe}
        """)
        #expect(d.map(\.location.line) == [3, 4, 7])
        #expect(d[0].message.contains("`memory_mib` must be a whole number"))
        #expect(d[2].message.contains("`suspend` must be true or false"))
    }

    @Test func missingRequiredKeys() {
        let d = diagnostics("description: nothing else\n")
        #expect(d.contains { $0.message.contains("needs the key `name`") })
        #expect(d.contains { $0.message.contains("needs the key `steps`") })
    }

    @Test func yamlSyntaxErrorsHaveALine() {
        let d = diagnostics("name: x\nsteps:\n  - boot: {on: a\n  - verify: memory\n")
        #expect(d.count == 1)
        #expect(d[0].location.line >= 3)
        #expect(d[0].message.hasPrefix("YAML syntax"))
    }

    @Test func flowErrors() {
        let d = diagnostics("""
        name: x
        steps:
          - migrate: {from: a, to: b}
          - boot: a
          - migrate: {from: b, to: a}
          - migrate: {from: a, to: a}
        """)
        #expect(d.contains { $0.location.line == 3 && $0.message.contains("before `boot`") })
        #expect(d.contains { $0.location.line == 5 && $0.message.contains("the guest is on a") })
        #expect(d.contains { $0.location.line == 6 && $0.message.contains("two different hosts") })
    }

    @Test func badValues() {
        let d = diagnostics("""
        name: "bad name!"
        guest: {memory_mib: 128, workload_mib: 64}
        steps:
          - boot: {on: A}
          - verify: [memory, disk]
          - repeat: {times: 0, steps: []}
          - dance: {}
        expect: {migrations: maybe}
        """)
        let lines = Set(d.map(\.location.line))
        #expect(lines.isSuperset(of: [1, 2, 4, 5, 6, 7, 8]))
    }

    @Test func wrongVersionIsRefused() {
        let d = diagnostics("version: 7\nname: x\nsteps: [{boot: a}]\n")
        #expect(d.first?.message.contains("format versions 1 to 2; the file says 7") == true)
    }

    /// No input crashes the parser: every prefix of a valid file and a set of hostile inputs
    /// either parse or give diagnostics with a location.
    @Test func neverCrashesOnMalformedInput() throws {
        let valid = try String(contentsOfFile: Self.root + "/scenarios/pingpong.yaml", encoding: .utf8)
        var inputs = (0...valid.utf8.count).map { String(decoding: Array(valid.utf8.prefix($0)), as: UTF8.self) }
        inputs += ["", "---", "- 1\n- 2", "name: [", "{{{{", "name: x\nsteps: 7", "\u{0}\u{1}\u{2}", "name: x\nsteps:\n  - boot:\n",
                   "&a [*a]", "name: &n x\nsteps: [{boot: *n}]", String(repeating: "[", count: 5000),
                   "name: x\nsteps:\n  - repeat: {times: 99999999999999999999, steps: [{boot: a}]}",
                   "name: x\nguest: {memory_mib: -1}\nsteps: [{boot: a}]", "a: b\na: c", "? [x]\n: y"]
        for input in inputs {
            if ProcessInfo.processInfo.environment["DEBUG_PARSE"] != nil { FileHandle.standardError.write(Data("INPUT>> \(input.debugDescription.prefix(60))\n".utf8)) }
            do {
                _ = try ScenarioParser().parse(input, file: "f.yaml")
            } catch {
                #expect(!error.diagnostics.isEmpty)
                for d in error.diagnostics { #expect(d.location.file == "f.yaml") }
            }
        }
    }

    @Test func unreadableFileIsADiagnostic() {
        #expect(throws: ScenarioErrors.self) { try ScenarioParser().parse(file: "/nonexistent/x.yaml") }
    }
}

struct FaultSyntaxTests {
    func diagnostics(_ text: String) -> [Diagnostic] {
        do {
            _ = try ScenarioParser().parse(text, file: "f.yaml")
            return []
        } catch {
            return error.diagnostics
        }
    }

    @Test func faultScenarioParses() throws {
        let s = try ScenarioParser().parse("""
        name: x
        guest: {devices: [{name: nic0, model: virtio-net}, {name: nic1, model: e1000e}]}
        steps:
          - boot: a
          - guest-flr: {device: nic0, mode: bound, count: 3}
          - migrate:
              from: a
              to: b
              corrupt_stream: {mode: flip-every, every_mib: 4}
              destination: {change_model: {device: nic1, model: virtio-net}}
              faults:
                - abort: {side: destination, at: {remaining_below_fraction: 0.5}}
                - network-partition: {mode: loss, duration_ms: 2000, at: {iteration: 3}}
                - guest-device-reset: {device: nic1, loop: true, every_ms: 500}
                - set-max-downtime: {max_downtime_ms: 900, at: {remaining_below_mib: 12.5}}
        expect: {migrations: failed, error: {code: [1, 9], message: "Unable to .*"}, guest: {on: source, state: running}}
        """, file: "f.yaml")
        guard let m = s.steps[2].action(as: Step.Migrate.self) else { Issue.record("no migrate"); return }
        #expect(m.corruptStream == .flipEvery && m.corruptEveryMiB == 4)
        #expect(m.destinationChange == .changeModel(device: "nic1", model: .virtioNet))
        #expect(m.faults.map(\.kind) == ["abort", "network-partition", "guest-device-reset", "set-max-downtime"])
        #expect(m.faults[0].action.isEqual(to: AbortMigration(side: .destination)))
        #expect(m.faults[0].trigger == .remainingBelowFraction(0.5))
        #expect(m.faults[2].everyMs == 500)
        #expect(s.expect.errorCodes == [1, 9])
        #expect(s.expect.guestOn == .source)
    }

    @Test func flrOnADeviceWithoutFLRIsRefused() {
        let d = diagnostics("""
        name: x
        guest: {devices: [{name: nic1, model: e1000e}]}
        steps:
          - boot: a
          - guest-flr: {device: nic1}
          - migrate: {from: a, to: b, faults: [{guest-flr: {device: nic1}}]}
        """)
        #expect(d.count == 2)
        #expect(d.allSatisfy { $0.message.contains("has no FLR") })
        #expect(d.map(\.location.line) == [5, 6])
    }

    @Test func badFaults() {
        let d = diagnostics("""
        name: x
        steps:
          - boot: a
          - migrate:
              from: a
              to: b
              faults:
                - explode: {}
                - abort: {at: {after_ms: 1, iteration: 2}}
                - kill-qemu: {side: sideways}
                - guest-flr: {device: nic9}
        """)
        // Line 4: an abort (the one read) ends the migration, which the scenario expects to complete.
        #expect(d.map(\.location.line) == [8, 9, 10, 11, 4])
    }
}
