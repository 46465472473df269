import Foundation
import Lab
import Libvirt
import Scenario

/// Guest device actions and checks, done inside the guest by `miglab-guestctl` through the
/// guest agent (the same path a hardware guest offers).
extension ScenarioExecution {
    static let guestctl = "/bin/miglab-guestctl"

    func currentDomain() throws -> (LabHost, Domain) {
        guard let here = location else { throw RunnerError.step("the guest runs nowhere") }
        let h = try host(here)
        guard let d = try h.connection.domain(named: domainName), d.isActive else {
            throw RunnerError.step("guest \(domainName) is not running on \(here)")
        }
        return (h, d)
    }

    func deviceInfo(_ agent: GuestAgent, mac: String) async throws -> DeviceInfo {
        let s = try await agent.run(Self.guestctl, ["info", mac], until: .now + .seconds(10))
        guard let info = DeviceInfo.parse(s.output), info.fields["bdf"] != nil else {
            throw RunnerError.step("miglab-guestctl info \(mac): \(s.output.prefix(200))")
        }
        return info
    }

    /// The device's PCI state as the guest sees it (`lspci -vvv` and its sysfs resource file):
    /// IDs, BAR sizes, command register, MSI/MSI-X, PCIe DevCtl and LnkSta, driver.
    func deviceSnapshot(_ agent: GuestAgent, mac: String) async throws -> DeviceSnapshot {
        let info = try await deviceInfo(agent, mac: mac)
        guard let bdf = info.fields["bdf"] else { throw RunnerError.step("device \(mac) has no PCI address in the guest") }
        let lspci = try await agent.run("/usr/bin/lspci", ["-vvv", "-nn", "-s", bdf], until: .now + .seconds(10))
        let resource = try? await agent.run("/bin/cat", ["/sys/bus/pci/devices/\(bdf)/resource"], until: .now + .seconds(10))
        return DeviceSnapshot.parse(lspci: lspci.output, resource: resource?.output)
    }

    /// One line of what a snapshot holds, so a report shows the comparison was not empty.
    static func describe(_ s: DeviceSnapshot) -> String {
        let ids = [s.vendorID, s.deviceID].map { $0.map { String(format: "%04x", $0) } ?? "?" }.joined(separator: ":")
        let bars = s.bars.keys.sorted().map { "BAR\($0)=\(s.bars[$0]?.size.map(String.init) ?? "?")" }.joined(separator: ",")
        let msix = s.msix.map { "MSI-X \($0.enabled ? "on" : "off") x\($0.tableSize ?? 0)" } ?? "no MSI-X"
        let cmd = s.control.filter(\.value).keys.sorted().joined(separator: "+")
        return "\(ids) \(bars) cmd=\(cmd) \(msix) driver=\(s.driver ?? "none")"
    }

    /// Snapshots of every guest device, taken before a migration for the comparison after it.
    func snapshotDevices(_ agent: GuestAgent) async -> [String: DeviceSnapshot] {
        var out: [String: DeviceSnapshot] = [:]
        for d in scenario.guest.devices {
            if let mac = try? mac(of: d.name), let snap = try? await deviceSnapshot(agent, mac: mac) { out[d.name] = snap }
        }
        return out
    }

    /// A standalone FLR (flr != nil) or driver-reset step: runs `count` cycles and records the
    /// outcome as a fault record.
    func guestDeviceAction(flr: Fault.FLRMode?, device: String, count: Int, deadline: ContinuousClock.Instant) async throws {
        let (h, dom) = try currentDomain()
        let mac = try mac(of: device)
        let args = flr.map { ["flr", mac, $0.rawValue, "\(count)"] } ?? ["reset", mac, "\(count)"]
        let s = try await GuestAgent(domain: dom).run(Self.guestctl, args, until: deadline)
        var rec = FaultRecord(kind: flr == nil ? "guest-device-reset" : "guest-flr", trigger: "step", firedAtMs: 0)
        rec.host = h.name
        rec.result = s.output.trimmingCharacters(in: .whitespacesAndNewlines)
        var e = event(.fault)
        e.fault = rec
        journal.record(e)
        guard s.exitCode == 0, rec.result?.contains("failures=0") == true else {
            throw RunnerError.step("\(args.joined(separator: " ")) in the guest failed: \(rec.result ?? "")")
        }
    }

    /// Every device present with the identity it had after boot, its driver bound, link up,
    /// and a DHCP lease from the user-mode network (real traffic through the device).
    func verifyDevices(on h: LabHost, deadline: ContinuousClock.Instant) async throws -> VerificationRecord {
        guard let dom = try h.connection.domain(named: domainName), dom.isActive else {
            throw RunnerError.step("verify devices: guest \(domainName) is not running on \(h.name)")
        }
        if try dom.state().state == .paused { try dom.resume() }
        let agent = GuestAgent(domain: dom)
        var r = VerificationRecord(kind: "devices", verdict: "pass")
        r.host = h.name
        var findings: [String] = []
        var summary: [String] = []
        for d in scenario.guest.devices {
            let mac = try mac(of: d.name)
            guard let info = try? await deviceInfo(agent, mac: mac) else {
                findings.append("\(d.name): not found in the guest")
                continue
            }
            if let base = deviceBaseline[d.name], base.identity != info.identity {
                findings.append("\(d.name): identity changed from \(base.identity) to \(info.identity)")
            }
            if (info.fields["driver"] ?? "").isEmpty { findings.append("\(d.name): no driver bound") }
            // The link comes up shortly after a driver rebind: wait for it, with the deadline.
            let dhcp = try? await retry(until: min(deadline, .now + .seconds(20)), what: "DHCP on \(d.name)", every: .milliseconds(200)) {
                let s = try await agent.run(Self.guestctl, ["dhcp", mac], until: .now + .seconds(15))
                guard s.exitCode == 0 else { throw RunnerError.step(s.output) }
                return s
            }
            if dhcp == nil { findings.append("\(d.name): no DHCP lease (no traffic through the device)") }
            // The device's state on this host against its state on the source before the migration.
            if let before = devicesBeforeMigration[d.name], let now = try? await deviceSnapshot(agent, mac: mac) {
                for diff in DeviceSnapshot.diff(before, now) { findings.append("\(d.name): \(diff)") }
                summary.append("\(d.name) state compared with the source before the migration: " + Self.describe(now))
            }
            summary.append("\(d.name) \(info.identity) driver=\(info.fields["driver"] ?? "") link=\(info.fields["link"] ?? "?") dhcp=\(dhcp == nil ? "failed" : "ok")")
        }
        r.findings = findings + summary
        r.verdict = findings.isEmpty ? "pass" : "fail"
        r.detail = findings.isEmpty ? "\(scenario.guest.devices.count) devices working" : findings.joined(separator: "; ")
        return r
    }
}
