import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// What the runner asks for when it defines a test guest; `xml()` renders libvirt's domain XML
/// with Foundation's XML tree (never by pasting strings), so values are always escaped.
public struct DomainDefinition: Sendable, Equatable {
    public var name: String
    public var memoryMiB: Int
    public var vcpus: Int
    public var image: GuestImage
    public var kernelArguments: [String]
    /// QEMU binary (`<emulator>`); nil lets libvirt pick the host's default.
    public var emulator: String?
    /// The serial console is logged to this file on the host (append mode, so the source and
    /// the destination QEMU write one continuous file on a shared filesystem).
    public var consoleLog: String
    /// Network devices: (model, PCIe) pairs; q35 puts each PCIe device behind a root port.
    public var nics: [NIC]
    /// Passthrough devices (`<hostdev>`), from a `DevicePlan`.
    public var hostdevs: [Hostdev]
    /// PCI serial ports (QEMU's pci-serial) whose line loops back: a UDP chardev that sends to
    /// its own bound port on the host's loopback, so every byte the guest writes comes back.
    public var serialLoopbacks: [SerialLoopback] = []

    public struct SerialLoopback: Sendable, Equatable {
        /// A user alias (`ua-...`), so the device is found in the domain XML.
        public var alias: String
        /// The UDP port on 127.0.0.1.
        public var port: UInt16
        /// false: the line goes nowhere (a broken device on purpose).
        public var loops: Bool
        public init(alias: String, port: UInt16, loops: Bool = true) {
            self.alias = alias
            self.port = port
            self.loops = loops
        }
    }
    /// `<domain type=...>`: TCG for the built-in lab, KVM on hardware nodes.
    public var accelerator: Accelerator = .tcg

    public enum Accelerator: String, Sendable, Equatable {
        /// QEMU's emulator, `type='qemu'`: this machine's /dev/kvm cannot run ordinary guests.
        case tcg = "qemu"
        case kvm
    }

    public struct NIC: Sendable, Equatable {
        public var model: String
        public var mac: String
        /// `<link state='down'/>`: the guest sees no carrier (a broken device on purpose).
        public var linkDown: Bool
        public init(model: String, mac: String, linkDown: Bool = false) {
            self.model = model
            self.mac = mac
            self.linkDown = linkDown
        }
    }

    public init(name: String, memoryMiB: Int, vcpus: Int, image: GuestImage, kernelArguments: [String],
                emulator: String?, consoleLog: String, nics: [NIC] = [], hostdevs: [Hostdev] = []) {
        self.name = name
        self.memoryMiB = memoryMiB
        self.vcpus = vcpus
        self.image = image
        self.kernelArguments = kernelArguments
        self.emulator = emulator
        self.consoleLog = consoleLog
        self.nics = nics
        self.hostdevs = hostdevs
    }

    /// libvirt's XML namespace for QEMU-specific domain elements (`<qemu:override>`).
    public static let qemuNamespace = "http://libvirt.org/schemas/domain/qemu/1.0"

    public func xml() -> String {
        let domain = XMLElement(name: "domain")
        domain.addAttribute(attr("type", accelerator.rawValue))
        domain.addChild(XMLElement(name: "name", stringValue: name))
        domain.addChild(el("memory", memoryMiB.description, ["unit": "MiB"]))
        domain.addChild(el("vcpu", vcpus.description))
        let os = XMLElement(name: "os")
        os.addChild(el("type", "hvm", ["arch": "x86_64", "machine": "q35"]))
        os.addChild(XMLElement(name: "kernel", stringValue: image.kernel))
        os.addChild(XMLElement(name: "initrd", stringValue: image.initrd))
        os.addChild(XMLElement(name: "cmdline", stringValue: kernelArguments.joined(separator: " ")))
        domain.addChild(os)
        let features = XMLElement(name: "features")
        features.addChild(XMLElement(name: "acpi"))
        domain.addChild(features)
        let cpu = el("cpu", nil, ["mode": "maximum", "migratable": "on"])
        if accelerator == .kvm {
            // The test guest never runs guests of its own. With nested virtualization offered,
            // KVM migrates the vCPUs' nested state too, and a destination that is itself a nested
            // hypervisor (the virtual VFIO hosts) refuses it ("Failed to set nested state").
            for feature in ["svm", "vmx"] { cpu.addChild(el("feature", nil, ["policy": "disable", "name": feature])) }
        }
        domain.addChild(cpu)
        domain.addChild(el("clock", nil, ["offset": "utc"]))
        // A guest that stops must stay stopped: the verdict is read from the state.
        for event in ["on_poweroff", "on_reboot", "on_crash"] {
            domain.addChild(XMLElement(name: event, stringValue: "destroy"))
        }
        let devices = XMLElement(name: "devices")
        if let emulator { devices.addChild(XMLElement(name: "emulator", stringValue: emulator)) }
        for nic in nics {
            let iface = el("interface", nil, ["type": "user"])
            iface.addChild(el("mac", nil, ["address": nic.mac]))
            iface.addChild(el("model", nil, ["type": nic.model]))
            if nic.linkDown { iface.addChild(el("link", nil, ["state": "down"])) }
            devices.addChild(iface)
        }
        for hostdev in hostdevs { devices.addChild(hostdev.xmlElement()) }
        let serial = el("serial", nil, ["type": "pty"])
        serial.addChild(el("log", nil, ["file": consoleLog, "append": "on"]))
        serial.addChild(el("target", nil, ["port": "0"]))
        devices.addChild(serial)
        for (i, loop) in serialLoopbacks.enumerated() {
            // A broken line is a null chardev: it takes every byte and returns none.
            let serial = el("serial", nil, ["type": loop.loops ? "udp" : "null"])
            if loop.loops {
                serial.addChild(el("source", nil, ["mode": "bind", "host": "127.0.0.1", "service": "\(loop.port)"]))
                serial.addChild(el("source", nil, ["mode": "connect", "host": "127.0.0.1", "service": "\(loop.port)"]))
            }
            serial.addChild(el("target", nil, ["type": "pci-serial", "port": "\(i + 1)"]))
            serial.addChild(el("alias", nil, ["name": loop.alias]))
            devices.addChild(serial)
        }
        let console = el("console", nil, ["type": "pty"])
        console.addChild(el("target", nil, ["type": "serial", "port": "0"]))
        devices.addChild(console)
        let channel = el("channel", nil, ["type": "unix"])
        channel.addChild(el("target", nil, ["type": "virtio", "name": "org.qemu.guest_agent.0"]))
        devices.addChild(channel)
        devices.addChild(el("memballoon", nil, ["model": "none"]))
        domain.addChild(devices)
        let overrides = hostdevs.compactMap(\.qemuOverride)
        if !overrides.isEmpty {
            // libvirt's QEMU namespace: properties of a device QEMU has and libvirt does not model.
            domain.addNamespace(XMLNode.namespace(withName: "qemu", stringValue: Self.qemuNamespace) as! XMLNode)
            let override = XMLElement(name: "qemu:override")
            for (alias, properties) in overrides {
                let device = el("qemu:device", nil, ["alias": alias])
                let frontend = XMLElement(name: "qemu:frontend")
                for p in properties {
                    frontend.addChild(el("qemu:property", nil, ["name": p.name, "type": "string", "value": p.value]))
                }
                device.addChild(frontend)
                override.addChild(device)
            }
            domain.addChild(override)
        }
        return XMLDocument(rootElement: domain).xmlString(options: [.nodePrettyPrint])
    }

    private func el(_ name: String, _ value: String?, _ attributes: KeyValuePairs<String, String> = [:]) -> XMLElement {
        let e = value.map { XMLElement(name: name, stringValue: $0) } ?? XMLElement(name: name)
        for (k, v) in attributes { e.addAttribute(attr(k, v)) }
        return e
    }

    private func attr(_ name: String, _ value: String) -> XMLNode {
        XMLNode.attribute(withName: name, stringValue: value) as! XMLNode
    }
}
