import Foundation
import PCI
import Scenario

/// Every scenario a dry run could not plan; nothing was changed on any host.
public struct DryRunErrors: Error, Sendable, CustomStringConvertible {
    public var errors: [DevicePlanError]
    public var description: String { errors.map(\.description).joined(separator: "\n") }
}

/// What `miglab run --dry-run --lab FILE` prints: per scenario, which device the guest gets on
/// which host, and the domain XML each host would define. Reads inventories (`inventories`
/// decides how) and changes nothing: no lock taken, no driver bound, no mdev created.
///
/// `image` is the guest image when one is built; without it the XML names placeholder paths,
/// and the output says so. Throws `DryRunErrors` listing every scenario that cannot be planned.
public func dryRunPlan(scenarios: [Scenario], labFile: LabFile, inventories: any HostInventories,
                       image: GuestImage? = nil, emulator: String = "/usr/bin/qemu-system-x86_64",
                       newUUID: () -> UUID = { UUID() }) throws -> String {
    let planner = DevicePlanner(lab: labFile)
    var scanned: [String: PCIInventory] = [:]
    var errors: [DevicePlanError] = []
    var out = "Dry run against \(labFile.file): nothing is changed on any host.\n"
    let guestImage = image ?? GuestImage(kernel: "/PLACEHOLDER/vmlinuz", initrd: "/PLACEHOLDER/initrd.img",
                                         hash: "placeholder", kernelVersion: "placeholder")
    if image == nil {
        out += "No guest image is built: the domain XML names placeholder kernel and initrd paths (/PLACEHOLDER/...).\n"
    }
    for scenario in scenarios {
        var inventories: [String: PCIInventory] = [:]
        do {
            for name in DevicePlanner.visitedHosts(scenario) {
                guard let host = labFile[host: name] else { continue }   // the planner names the missing host
                if scanned[name] == nil { scanned[name] = try inventories_(of: host) }
                inventories[name] = scanned[name]
            }
            let plan = try planner.plan(scenario, inventories: inventories, newUUID: newUUID)
            out += "\n" + describe(plan, scenario: scenario, lab: labFile, inventories: inventories, image: guestImage, emulator: emulator)
        } catch let e as DevicePlanError {
            errors.append(e)
        } catch {
            errors.append(DevicePlanError(location: nil, message: "scenario `\(scenario.name)`: \(error)"))
        }
    }
    func inventories_(of host: LabFile.Host) throws -> PCIInventory {
        do { return try inventories.inventory(of: host) } catch {
            throw DevicePlanError(location: host.location, message: "cannot read the PCI devices of host `\(host.name)` (\(host.uri)): \(error)")
        }
    }
    if !errors.isEmpty { throw DryRunErrors(errors: errors) }
    return out
}

/// The domain of a scenario's guest as defined on `host`: the runner defines it, the dry run
/// prints it. Emulated NICs get `guestMAC(i)`, pci-serial devices a loopback UDP port, and the
/// host's passthrough functions of `plan` their hostdevs.
public func scenarioDomain(name: String, scenario: Scenario, plan: DevicePlan?, host: String, image: GuestImage,
                           emulator: String?, accelerator: DomainDefinition.Accelerator, consoleLog: String) -> DomainDefinition {
    // 8250.nr_uarts: Debian's kernel registers 4 UARTs at run time, all taken by the legacy
    // ports; PCI serial devices (mtty, pci-serial) need more. cryptomgr.notests: the crypto
    // self-tests take 0.3-0.4 s of a TCG boot and test nothing miglab relies on.
    var args = ["console=ttyS0", "panic=-1", "quiet", "8250.nr_uarts=16", "cryptomgr.notests"]
    if scenario.guest.workloadMiB > 0 { args.append("miglab.memtest=\(scenario.guest.workloadMiB)") }
    var def = DomainDefinition(name: name, memoryMiB: scenario.guest.memoryMiB, vcpus: scenario.guest.vcpus,
                               image: image, kernelArguments: args, emulator: emulator, consoleLog: consoleLog,
                               nics: scenario.guest.devices.enumerated().compactMap { i, d in
                                   d.model.isNetwork ? .init(model: d.model.libvirtModel, mac: guestMAC(i), linkDown: d.broken) : nil
                               },
                               hostdevs: plan?.hostdevs(on: host) ?? [])
    def.serialLoopbacks = scenario.guest.devices.enumerated().compactMap { i, d in
        d.model == .pciSerial ? .init(alias: serialAlias(d.name), port: serialLoopbackPort(domain: name, index: i), loops: !d.broken) : nil
    }
    def.accelerator = accelerator
    return def
}

/// MAC address of the guest's i-th device: how the guest tool finds an emulated NIC.
public func guestMAC(_ i: Int) -> String { String(format: "52:54:00:6d:6c:%02x", i + 1) }

/// The user alias of a pci-serial device, by which it is found in the domain XML.
public func serialAlias(_ name: String) -> String { "ua-serial-\(name)" }

/// The UDP port of a pci-serial loopback: one per device (at most 8), spread by the guest's
/// name so that guests of two runs on one host do not share a port; below libvirt's
/// migration ports (49152+).
public func serialLoopbackPort(domain: String, index i: Int) -> UInt16 {
    UInt16(30_000 + Int(fnv1a32(domain) % 2000) * 8 + i)
}

func describe(_ plan: DevicePlan, scenario: Scenario, lab: LabFile, inventories: [String: PCIInventory],
              image: GuestImage, emulator: String) -> String {
    var out = "scenario \(scenario.name) (\(scenario.file))\n"
    if scenario.guest.passthrough.isEmpty { out += "  no passthrough devices\n" }
    for r in scenario.guest.passthrough { out += "  needs \(r.summary)\n" }
    for h in plan.hosts {
        let host = lab[host: h.host]
        out += "  host \(h.host) (\(host?.uri ?? "?")):\n"
        if h.devices.isEmpty { out += "    no devices\n" }
        for d in h.devices {
            switch d.resource {
            case let .pci(f):
                let name = inventories[h.host]?[f.address]?.names.device.map { " \($0)" } ?? ""
                out += "    \(d.requirement)[\(d.index)] = \(f.address) [\(f.vendorID):\(f.deviceID)]\(name), pool \(d.pool), "
                out += "driver \(f.driver) (bound now: \(f.boundDriver ?? "none")), managed=\(f.managed ? "yes" : "no")\n"
            case let .mdev(m):
                out += "    \(d.requirement)[\(d.index)] = mdev \(m.type) on \(m.parent), uuid \(m.uuid.uuidString.lowercased()) (created for the run)\n"
            }
        }
    }
    for h in plan.hosts {
        // Guests on hosts with VFIO devices need KVM (a real IOMMU mapping of guest memory).
        let accelerator = lab[host: h.host]?.accelerator ?? (h.devices.isEmpty ? .tcg : .kvm)
        let def = scenarioDomain(name: "miglab-\(scenario.name)", scenario: scenario, plan: plan, host: h.host, image: image,
                                 emulator: lab[host: h.host]?.emulator ?? emulator, accelerator: accelerator,
                                 consoleLog: "\(HardwareLab.consoleLogDirectory)/miglab-\(scenario.name).console.log")
        out += "  domain XML on \(h.host):\n"
        out += def.xml().split(separator: "\n", omittingEmptySubsequences: false).map { "    \($0)" }.joined(separator: "\n") + "\n"
    }
    return out
}
