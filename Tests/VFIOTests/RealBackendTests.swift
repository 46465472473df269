#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
@testable import VFIO

/// The real backend where it can run without VFIO: address parsing, finding the device through a
/// fake sysfs, clean errors, and the ioctl plumbing on an ordinary fd.
struct RealBackendTests {
    @Test func pciAddresses() {
        #expect(PCIAddress("0000:3b:00.1")?.description == "0000:3b:00.1")
        #expect(PCIAddress("3B:1f.7")?.description == "0000:3b:1f.7")
        #expect(PCIAddress("10000:00:00.0")?.domain == 0x10000)
        for bad in ["", "3b:00", "0000:3b:00.8", "0000:3b:20.0", "../../etc", "0000:3b:00.1/..", "0000:3b:0.1", "0000:3b:00.1 ", "zzzz:00:00.0"] {
            #expect(PCIAddress(bad) == nil, "\(bad)")
        }
    }

    /// A sysfs and /dev laid out in a temporary folder.
    final class FakeHost {
        let root: String
        var sysfs: String { root + "/sys" }
        var dev: String { root + "/dev" }
        var locator: VFIODeviceLocator { VFIODeviceLocator(sysfsRoot: sysfs, devRoot: dev) }
        let files = FileManager.default

        init() throws {
            root = FileManager.default.temporaryDirectory.appendingPathComponent("miglab-vfio-\(UUID().uuidString)").path
            try files.createDirectory(atPath: sysfs + "/bus/pci/devices", withIntermediateDirectories: true)
            try files.createDirectory(atPath: sysfs + "/bus/pci/drivers", withIntermediateDirectories: true)
            try files.createDirectory(atPath: dev, withIntermediateDirectories: true)
        }

        deinit { try? FileManager.default.removeItem(atPath: root) }

        func device(_ address: String, driver: String? = nil, group: Int? = nil, cdev: String? = nil) throws {
            let path = sysfs + "/bus/pci/devices/" + address
            try files.createDirectory(atPath: path, withIntermediateDirectories: true)
            if let driver {
                try files.createDirectory(atPath: sysfs + "/bus/pci/drivers/" + driver, withIntermediateDirectories: true)
                try files.createSymbolicLink(atPath: path + "/driver", withDestinationPath: "../../../bus/pci/drivers/" + driver)
            }
            if let group {
                try files.createSymbolicLink(atPath: path + "/iommu_group", withDestinationPath: "../../../kernel/iommu_groups/\(group)")
            }
            if let cdev {
                try files.createDirectory(atPath: path + "/vfio-dev/" + cdev, withIntermediateDirectories: true)
            }
        }

        func node(_ relative: String) throws {
            let path = dev + "/" + relative
            try files.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            #expect(files.createFile(atPath: path, contents: Data()))
        }
    }

    @Test func refusesWhatIsNotAVFIODevice() throws {
        let host = try FakeHost()
        try host.device("0000:00:01.0", driver: "piix4_smbus", group: 1)
        try host.device("0000:00:02.0")
        let address = try #require(PCIAddress("0000:00:01.0"))
        #expect(throws: VFIOOpenError.notBoundToVFIO(.pci(address), driver: "piix4_smbus", vfioPresent: false)) { try host.locator.route(to: address) }
        let unbound = try #require(PCIAddress("0000:00:02.0"))
        #expect(throws: VFIOOpenError.notBoundToVFIO(.pci(unbound), driver: nil, vfioPresent: false)) { try host.locator.route(to: unbound) }
        let missing = try #require(PCIAddress("0000:00:09.0"))
        #expect(throws: VFIOOpenError.noSuchDevice(.pci(missing))) { try host.locator.route(to: missing) }
        #expect(throws: VFIOOpenError.invalidAddress("../x")) { try VFIODevice.open("../x", locator: host.locator) }
        // The messages say what to do.
        let message = VFIOOpenError.notBoundToVFIO(.pci(address), driver: "piix4_smbus", vfioPresent: false).description
        #expect(message.contains("driverctl set-override 0000:00:01.0 vfio-pci") && message.contains("modprobe vfio-pci"))
    }

    /// An mdev (the kernel's mtty, a vendor's vGPU) is found under the mdev bus by its UUID and
    /// opened through its own IOMMU group; it has no vfio-pci driver to check.
    @Test func findsAnMdevByItsUUID() throws {
        let host = try FakeHost()
        let uuid = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001"
        let path = host.sysfs + "/bus/mdev/devices/" + uuid
        try host.files.createDirectory(atPath: path, withIntermediateDirectories: true)
        try host.files.createSymbolicLink(atPath: path + "/iommu_group", withDestinationPath: "../../../kernel/iommu_groups/7")
        try host.node("vfio/vfio")
        try host.node("vfio/7")
        let name = try #require(VFIODeviceName(uuid.uppercased()))
        #expect(name == .mdev(uuid) && name.description == uuid)
        #expect(try host.locator.route(to: name) == .group(group: host.dev + "/vfio/7", container: host.dev + "/vfio/vfio"))
        let other = try #require(VFIODeviceName("00000000-0000-0000-0000-000000000001"))
        #expect(throws: VFIOOpenError.noSuchDevice(other)) { try host.locator.route(to: other) }
        #expect(VFIOOpenError.noSuchDevice(other).description.contains("mdevctl list"))
        #expect(VFIODeviceName("83b8f4f2-509f-382f-3c1e") == nil && VFIODeviceName("../83b8f4f2-509f-382f-3c1e-e6bfe0fa1001") == nil)
    }

    @Test func prefersTheDeviceCdevAndFallsBackToTheGroup() throws {
        let host = try FakeHost()
        try host.device("0000:3b:00.1", driver: "mlx5_vfio_pci", group: 42, cdev: "vfio3")
        let address = try #require(PCIAddress("0000:3b:00.1"))
        // No /dev/vfio yet.
        #expect(throws: VFIOOpenError.vfioUnavailable(.pci(address), reason: "\(host.dev)/vfio/vfio does not exist")) { try host.locator.route(to: address) }
        try host.node("vfio/vfio")
        try host.node("vfio/42")
        #expect(try host.locator.route(to: address) == .group(group: host.dev + "/vfio/42", container: host.dev + "/vfio/vfio"))
        try host.node("vfio/devices/vfio3")
        try host.node("iommu")
        #expect(try host.locator.route(to: address) == .deviceCdev(device: host.dev + "/vfio/devices/vfio3", iommu: host.dev + "/iommu"))
    }

    @Test func openingAFakeNodeFailsCleanly() throws {
        let host = try FakeHost()
        try host.device("0000:3b:00.1", driver: "vfio-pci", group: 42, cdev: "vfio3")
        try host.node("vfio/devices/vfio3")
        try host.node("iommu")
        // Regular files answer every ioctl with ENOTTY: the open must fail with the request named.
        do {
            _ = try VFIODevice.open("0000:3b:00.1", locator: host.locator)
            Issue.record("opening a regular file as a VFIO device succeeded")
        } catch {
            guard case .system(_, let cause) = error else {
                Issue.record("unexpected \(error)")
                return
            }
            #expect(cause.operation == "VFIO_DEVICE_BIND_IOMMUFD")
            #expect(cause.errorNumber == ENOTTY)
        }
    }

    @Test func performCopiesTheKernelsAnswerBack() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        let reader = FileDescriptor.adopting(fds[0], path: "pipe")
        let writer = FileDescriptor.adopting(fds[1], path: "pipe")
        #expect(try writer.write([1, 2, 3, 4, 5], operation: "write") == 5)
        // FIONREAD writes an int through the argument pointer, as VFIO ioctls write their structs.
        var request = VFIORequest(name: "FIONREAD", number: UInt(FIONREAD), argument: .buffer([0, 0, 0, 0], pointers: []))
        try reader.perform(&request)
        #expect(request.bytes.loadHostOrder(Int32.self, at: 0) == 5)
        #expect(try reader.read(upTo: 16, operation: "read") == [1, 2, 3, 4, 5])
        var unknown = VFIORequests.reset()
        #expect(throws: VFIOError("VFIO_DEVICE_RESET", errorNumber: ENOTTY, detail: "pipe")) { try reader.perform(&unknown) }
        reader.close()
        reader.close()  // closing twice is harmless
    }
}
