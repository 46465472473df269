import Foundation
import Journal
import Lab
import Libvirt
import Scenario
import Synchronization

/// A device of the guest that steps act on and `verify: devices` checks: an emulated device of
/// `guest.devices` or a function given by a hardware lab (`vf[0]`).
struct GuestDeviceRef: Sendable, Equatable {
    /// The scenario's name for it: `nic0`, or `vf[1]` for a passthrough requirement's function.
    var name: String
    /// How `miglab-guestctl` finds it: a MAC address or `pci=PATH`.
    var selector: String
    var check: FunctionalCheck

    /// What shows that the device works, beyond its identity and a bound driver.
    enum FunctionalCheck: String, Sendable, Equatable {
        /// An emulated NIC on user-mode networking: link up, frames sent without errors, and a
        /// DHCP lease (traffic both ways).
        case lease
        /// A network function: link up and frames sent without errors (a lease where a
        /// server answers).
        case network
        /// A serial device that loops its line back (mtty, the pci-serial stand-in): bytes
        /// written to each port come back.
        case serial
        /// Decided by the class code the guest reports (passthrough functions).
        case byClass
    }
}

/// Guest device actions and checks, done inside the guest by `miglab-guestctl` through the
/// guest agent (the same path a hardware guest offers).
extension ScenarioExecution {
    static let guestctl = GuestPaths.guestctl
    /// Register-level checks of 16550 ports (loopback, scratch registers).
    static let uart = GuestPaths.uart

    /// The guest's devices, located in the XML of the defined domain: emulated NICs by their
    /// MAC, everything else by its path in the PCI tree.
    func locateDevices(definedXML: String, bootHost: String) throws -> [GuestDeviceRef] {
        let paths = try GuestDeviceLocator.pciPaths(domainXML: definedXML)
        func path(_ alias: String, _ what: String) throws -> String {
            guard let p = paths[alias] else { throw RunnerError.step("\(what) has no PCI address in the guest's definition (alias \(alias))") }
            return "pci=" + p
        }
        var refs: [GuestDeviceRef] = []
        for (i, d) in scenario.guest.devices.enumerated() {
            if d.model.isNetwork {
                refs.append(GuestDeviceRef(name: d.name, selector: guestMAC(i), check: .lease))
            } else {
                refs.append(GuestDeviceRef(name: d.name, selector: try path(serialAlias(d.name), "device \(d.name)"), check: .serial))
            }
        }
        for d in passthrough?.plan.devices(on: bootHost) ?? [] {
            refs.append(GuestDeviceRef(name: "\(d.requirement)[\(d.index)]", selector: try path(d.alias, "passthrough device \(d.requirement)[\(d.index)]"),
                                       check: .byClass))
        }
        return refs
    }

    func currentDomain() throws -> (LabHost, any GuestDomain) {
        guard let here = location else { throw RunnerError.step("the guest runs nowhere") }
        let h = try host(here)
        guard let d = try h.hypervisor.guest(named: domainName), d.isActive else {
            throw RunnerError.step("guest \(domainName) is not running on \(here)")
        }
        return (h, d)
    }

    /// How long one guest tool run on a device may take. A nested guest on the virtual VFIO
    /// hosts (KVM inside a TCG guest) needs seconds per config-space read of a passed-through
    /// device, and `lspci -vv` makes many: waiting for the one run beats starting another
    /// beside it (each retry adds a process that slows the others down).
    static let deviceToolTime: Duration = .seconds(90)

    func deviceInfo(_ agent: GuestAgent, selector: String, until deadline: ContinuousClock.Instant? = nil) async throws -> DeviceInfo {
        let s = try await agent.run(Self.guestctl, ["info", selector], until: deadline ?? .now + Self.deviceToolTime)
        guard let info = DeviceInfo.parse(s.output), info.fields["bdf"] != nil else {
            throw RunnerError.step("miglab-guestctl info \(selector): \(s.output.prefix(200))")
        }
        return info
    }

    /// The device's PCI state as the guest sees it (`lspci -vvv` and its sysfs resource file):
    /// IDs, BAR sizes, command register, MSI/MSI-X, PCIe DevCtl and LnkSta, driver.
    /// For a serial device (class 0x0700) also the scratch register of each port, first set to
    /// `scratch` (one value per port, cycled) when given.
    func deviceSnapshot(_ agent: GuestAgent, selector: String, scratch: [UInt8]? = nil) async throws -> DeviceSnapshot {
        let info = try await deviceInfo(agent, selector: selector)
        guard let bdf = info.fields["bdf"] else { throw RunnerError.step("device \(selector) has no PCI address in the guest") }
        let lspci = try await agent.run("/usr/bin/lspci", ["-vvv", "-nn", "-s", bdf], until: .now + Self.deviceToolTime)
        let resource = try? await agent.run("/bin/cat", ["/sys/bus/pci/devices/\(bdf)/resource"], until: .now + Self.deviceToolTime)
        var snapshot = DeviceSnapshot.parse(lspci: lspci.output, resource: resource?.output)
        guestAddresses[selector] = bdf
        if info.fields["class"]?.hasPrefix("0x0700") == true {
            let values = (scratch ?? []).map { String(format: "0x%02x", $0) }
            let scr = try await agent.run(Self.uart, [bdf, "scr"] + values, until: .now + Self.deviceToolTime)
            snapshot.uartScratch = DeviceSnapshot.parseUARTScratch(scr.output)
        }
        return snapshot
    }

    /// Fresh scratch-register values for snapshot `generation`: never 0 (a reset port reads 0),
    /// different for each port (swapped ports are caught) and for consecutive generations.
    static func scratchValues(generation: Int, ports: Int = 8) -> [UInt8] {
        (0..<ports).map { p in UInt8((0x5a + 0x3b * generation + 0x6d * p) % 255 + 1) }
    }

    /// One line of what a snapshot holds, so a report shows the comparison was not empty.
    static func describe(_ s: DeviceSnapshot) -> String {
        let ids = [s.vendorID, s.deviceID].map { $0.map { String(format: "%04x", $0) } ?? "?" }.joined(separator: ":")
        let bars = s.bars.keys.sorted().map { "BAR\($0)=\(s.bars[$0]?.size.map(String.init) ?? "?")" }.joined(separator: ",")
        let msix = s.msix.map { "MSI-X \($0.enabled ? "on" : "off") x\($0.tableSize ?? 0)" } ?? "no MSI-X"
        let cmd = s.control.filter(\.value).keys.sorted().joined(separator: "+")
        let scratch = s.uartScratch.map { v in " scr=" + v.keys.sorted().compactMap { v[$0] }.joined(separator: ",") } ?? ""
        return "\(ids) \(bars) cmd=\(cmd) \(msix) driver=\(s.driver ?? "none")\(scratch)"
    }

    /// Snapshots of every guest device, taken before a migration for the comparison after it;
    /// serial devices' scratch registers get fresh values first.
    func snapshotDevices(_ agent: GuestAgent) async -> [String: DeviceSnapshot] {
        var out: [String: DeviceSnapshot] = [:]
        scratchGeneration += 1
        for d in deviceRefs {
            if let snap = try? await deviceSnapshot(agent, selector: d.selector, scratch: Self.scratchValues(generation: scratchGeneration)) {
                out[d.name] = snap
            }
        }
        return out
    }

    /// A fault kind used as a step: it acts where the guest runs (both sides of its target are
    /// that host). A guest program it starts must end by the step's deadline, exit 0 and
    /// report that it happened; the record carries its report.
    func inject(_ action: any FaultKind, kind: String, deadline: ContinuousClock.Instant) async throws {
        let (h, dom) = try currentDomain()
        let target = LabFaultTarget(execution: self, source: h, destination: h, domain: dom)
        var rec = FaultRecord(kind: kind, trigger: "step", firedAtMs: 0)
        rec.host = h.name
        let effect = try await action.fire(target)
        rec.result = effect.result
        var failure: String?
        if let process = effect.guestProcess {
            let agent = GuestAgent(domain: dom)
            let status = try await agent.waitForExit(process.pid, what: "\(action) in the guest", until: deadline)
            rec.result = status.output.trimmingCharacters(in: .whitespacesAndNewlines)
            if status.exitCode != 0 || !process.happened(Self.report(status.output)) { failure = rec.result }
        }
        var e = event(.fault)
        e.fault = rec
        journal.record(e)
        if let undo = effect.undo {
            try await Task.sleep(for: undo.after)
            try await undo.action()
        }
        if let after = effect.afterMigration {
            var n = event(.note)
            n.message = try await after()
            journal.record(n)
        }
        if let failure { throw RunnerError.step("\(action) in the guest failed: \(failure)") }
    }

    /// Every device present with the identity it had after boot, its driver bound, working
    /// (its functional check), and in the PCI state it had on the source before the migration.
    func verifyDevices(on h: LabHost, deadline: ContinuousClock.Instant) async throws -> VerificationRecord {
        guard let dom = try h.hypervisor.guest(named: domainName), dom.isActive else {
            throw RunnerError.step("verify devices: guest \(domainName) is not running on \(h.name)")
        }
        if try dom.state().state == .paused { try dom.resume() }
        let agent = GuestAgent(domain: dom)
        var r = VerificationRecord(kind: "devices", verdict: .pass)
        r.host = h.name
        var findings: [String] = []
        var summary: [String] = []
        for d in deviceRefs {
            guard let info = try? await deviceInfo(agent, selector: d.selector) else {
                findings.append("\(d.name): not found in the guest")
                continue
            }
            if let base = deviceBaseline[d.name], base.identity != info.identity {
                findings.append("\(d.name): identity changed from \(base.identity) to \(info.identity)")
            }
            if (info.fields["driver"] ?? "").isEmpty { findings.append("\(d.name): no driver bound") }
            let (problem, works) = await functionalCheck(d, info: info, agent: agent, deadline: deadline)
            if let problem { findings.append("\(d.name): \(problem)") }
            // The device's state on this host against its state on the source before the
            // migration. After a migration a comparison that could not be made is a finding:
            // an unchecked state must not pass as an equal one.
            if lastMigration != nil {
                if let before = devicesBeforeMigration[d.name] {
                    do {
                        let now = try await deviceSnapshot(agent, selector: d.selector)
                        for diff in DeviceSnapshot.diff(before, now) { findings.append("\(d.name): \(diff)") }
                        summary.append("\(d.name) state compared with the source before the migration: " + Self.describe(now))
                    } catch {
                        findings.append("\(d.name): its PCI state could not be read to compare with the source's: \(error)")
                    }
                } else {
                    findings.append("\(d.name): no snapshot of its PCI state was taken on the source before the migration, so the state was not compared")
                }
            }
            summary.append("\(d.name) \(info.identity) driver=\(info.fields["driver"] ?? "") link=\(info.fields["link"] ?? "?") \(works)")
        }
        r.findings = findings + summary
        r.verdict = findings.isEmpty ? .pass : .fail
        r.detail = findings.isEmpty ? "\(deviceRefs.count) devices working" : findings.joined(separator: "; ")
        return r
    }

    /// The check that shows the device works: a problem (nil: none) and what was seen.
    func functionalCheck(_ d: GuestDeviceRef, info: DeviceInfo, agent: GuestAgent,
                         deadline: ContinuousClock.Instant) async -> (problem: String?, seen: String) {
        var check = d.check
        if check == .byClass {
            let cls = info.fields["class"] ?? ""
            check = cls.hasPrefix("0x02") ? .network : cls.hasPrefix("0x0700") ? .serial : .byClass
        }
        // Links come up, and leases arrive, shortly after a driver rebind: wait, with the deadline.
        func attempt(_ args: [String], what: String) async -> (ok: Bool, output: String) {
            let last = Mutex("")
            // One window for all attempts; an attempt may use all that is left of it (under TCG
            // on a loaded machine one run of the tool has taken more than 15 s), and each
            // attempt gets 15 s at least, so that every check runs once to its end even when
            // the step's deadline is near (a negative control's short `timeout_s`).
            let window = min(deadline, .now + .seconds(30))
            do {
                _ = try await retry(until: window, what: what, every: .milliseconds(200)) {
                    let s = try await agent.run(Self.guestctl, args, until: max(window, .now + .seconds(15)))
                    let output = s.output.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "MIGLAB-GUESTCTL ", with: "")
                    last.withLock { $0 = output }
                    guard s.exitCode == 0 else { throw RunnerError.step(output) }
                    return true
                }
                return (true, last.withLock { $0 })
            } catch {
                // No report from the tool at all: say why, never an empty finding.
                let seen = last.withLock { $0 }
                return (false, seen.isEmpty ? "no report from the guest (\(error))" : seen)
            }
        }
        switch check {
        case .lease, .network:
            let needsLease = check == .lease
            let r = await attempt(["net", d.selector] + (needsLease ? ["lease"] : []), what: "traffic on \(d.name)")
            guard r.ok else {
                return ("network check failed (" + (needsLease ? "link down, no frame sent or no DHCP lease" : "link down or no frame sent") + "): \(r.output)", r.output)
            }
            return (nil, r.output)
        case .serial:
            let r = await attempt(["serial", d.selector], what: "serial loopback on \(d.name)")
            return (r.ok ? nil : "serial loopback failed: \(r.output)", r.output)
        case .byClass:
            return (nil, "no functional check for class \(info.fields["class"] ?? "?") (identity, driver and PCI state checked)")
        }
    }
}
