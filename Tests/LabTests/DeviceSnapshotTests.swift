import Foundation
import Testing
@testable import Lab

@Suite struct DeviceSnapshotTests {
    /// `lspci -vvv -nn -s 01:00.0` in a q35 guest for a virtio-net function behind a PCIe root port.
    static let virtioNet = """
    01:00.0 Ethernet controller [0200]: Red Hat, Inc. Virtio 1.0 network device [1af4:1041] (rev 01)
    \tSubsystem: Red Hat, Inc. Device [1af4:1100]
    \tPhysical Slot: 0
    \tControl: I/O+ Mem+ BusMaster+ SpecCycle- MemWINV- VGASnoop- ParErr- Stepping- SERR+ FastB2B- DisINTx+
    \tStatus: Cap+ 66MHz- UDF- FastB2B- ParErr- DEVSEL=fast >TAbort- <TAbort- <MAbort- >SERR- <PERR- INTx-
    \tLatency: 0
    \tInterrupt: pin A routed to IRQ 22
    \tRegion 1: Memory at fc840000 (32-bit, non-prefetchable) [size=4K]
    \tRegion 4: Memory at fea00000 (64-bit, prefetchable) [size=16K]
    \tExpansion ROM at fc800000 [disabled] [size=256K]
    \tCapabilities: [dc] MSI-X: Enable+ Count=3 Masked-
    \t\tVector table: BAR=1 offset=00000000
    \t\tPBA: BAR=1 offset=00000800
    \tCapabilities: [c8] Vendor Specific Information: VirtIO: <unknown>
    \t\tBAR=0 offset=00000000 size=00000000
    \tCapabilities: [b4] Power Management version 3
    \t\tFlags: PMEClk- DSI- D1- D2- AuxCurrent=0mA PME(D0+,D1-,D2-,D3hot+,D3cold+)
    \t\tStatus: D0 NoSoftRst+ PME-Enable- DSel=0 DScale=0 PME-
    \tCapabilities: [a0] MSI: Enable- Count=1/1 Maskable- 64bit+
    \t\tAddress: 0000000000000000  Data: 0000
    \tCapabilities: [6c] Express (v2) Endpoint, MSI 00
    \t\tDevCap:\tMaxPayload 128 bytes, PhantFunc 0, Latency L0s <64ns, L1 <1us
    \t\t\tExtTag- AttnBtn- AttnInd- PwrInd- RBE+ FLReset+ SlotPowerLimit 0W
    \t\tDevCtl:\tCorrErr- NonFatalErr- FatalErr- UnsupReq-
    \t\t\tRlxdOrd- ExtTag- PhantFunc- AuxPwr- NoSnoop- FLReset-
    \t\t\tMaxPayload 128 bytes, MaxReadReq 128 bytes
    \t\tDevSta:\tCorrErr- NonFatalErr- FatalErr- UnsupReq- AuxPwr- TransPend-
    \t\tLnkCap:\tPort #0, Speed 2.5GT/s, Width x1, ASPM L0s, Exit Latency L0s <64ns
    \t\t\tClockPM- Surprise- LLActRep- BwNot- ASPMOptComp-
    \t\tLnkCtl:\tASPM Disabled; RCB 64 bytes, Disabled- CommClk-
    \t\t\tExtSynch- ClockPM- AutWidDis- BWInt- AutBWInt-
    \t\tLnkSta:\tSpeed 2.5GT/s (ok), Width x1 (ok)
    \t\t\tTrErr- Train- SlotClk- DLActive- BWMgmt- ABWMgmt-
    \tCapabilities: [100 v1] Advanced Error Reporting
    \tKernel driver in use: virtio-pci
    \tKernel modules: virtio_pci

    """

    @Test func parsesEveryFieldOfAGuestLspci() {
        let s = DeviceSnapshot.parse(lspci: Self.virtioNet)
        #expect(s.address == "01:00.0")
        #expect(s.vendorID == 0x1af4 && s.deviceID == 0x1041)
        #expect(s.subsystemVendorID == 0x1af4 && s.subsystemDeviceID == 0x1100)
        #expect(s.deviceClass == 0x0200 && s.revision == 1)
        #expect(s.bars[1] == .init(kind: .memory, size: 4096, address: 0xfc84_0000))
        #expect(s.bars[4] == .init(kind: .memory, size: 16384, address: 0xfea0_0000, is64Bit: true, prefetchable: true))
        #expect(s.bars[6]?.size == 256 * 1024 && s.bars[6]?.disabled == true)
        #expect(s.control["I/O"] == true && s.control["Mem"] == true && s.control["BusMaster"] == true && s.control["DisINTx"] == true)
        #expect(s.msi?.enabled == false && s.msi?.allocatedVectors == 1 && s.msi?.maximumVectors == 1)
        #expect(s.msix?.enabled == true && s.msix?.tableSize == 3 && s.msix?.masked == false)
        #expect(s.msix?.tableBAR == 1 && s.msix?.pbaOffset == 0x800)
        #expect(s.deviceControl?["MaxPayload"] == "128 bytes" && s.deviceControl?["MaxReadReq"] == "128 bytes")
        #expect(s.deviceControl?["FLReset"] == "-" && s.deviceControl?["CorrErr"] == "-")
        #expect(s.linkStatus?["Speed"] == "2.5GT/s (ok)" && s.linkStatus?["Width"] == "x1 (ok)" && s.linkStatus?["DLActive"] == "-")
        #expect(s.driver == "virtio-pci")
    }

    @Test func identicalSnapshotsDoNotDiffer() {
        let a = DeviceSnapshot.parse(lspci: Self.virtioNet)
        #expect(DeviceSnapshot.diff(a, DeviceSnapshot.parse(lspci: Self.virtioNet)).isEmpty)
    }

    func diff(_ change: (String) -> String) -> [DeviceDifference] {
        DeviceSnapshot.diff(DeviceSnapshot.parse(lspci: Self.virtioNet), DeviceSnapshot.parse(lspci: change(Self.virtioNet)))
    }

    @Test func aChangedBARSizeIsCaught() {
        let d = diff { $0.replacingOccurrences(of: "prefetchable) [size=16K]", with: "prefetchable) [size=32K]") }
        #expect(d == [DeviceDifference(field: "BAR 4 size", source: "16K (16384 bytes)", destination: "32K (32768 bytes)")])
    }

    @Test func aChangedIDIsCaught() {
        let d = diff { $0.replacingOccurrences(of: "[1af4:1041]", with: "[1af4:1000]") }
        #expect(d == [DeviceDifference(field: "device ID", source: "1041", destination: "1000")])
        let sub = diff { $0.replacingOccurrences(of: "Device [1af4:1100]", with: "Device [1af4:1101]") }
        #expect(sub.map(\.field) == ["subsystem device ID"])
    }

    @Test func msixDisabledOrResizedIsCaught() {
        let disabled = diff { $0.replacingOccurrences(of: "MSI-X: Enable+ Count=3", with: "MSI-X: Enable- Count=3") }
        #expect(disabled == [DeviceDifference(field: "MSI-X enable", source: "enabled", destination: "disabled")])
        let resized = diff { $0.replacingOccurrences(of: "MSI-X: Enable+ Count=3", with: "MSI-X: Enable+ Count=5") }
        #expect(resized == [DeviceDifference(field: "MSI-X table size", source: "3", destination: "5")])
        let gone = diff { $0.replacingOccurrences(of: "[dc] MSI-X: Enable+ Count=3 Masked-", with: "[dc] Null") }
        #expect(gone.map(\.field) == ["MSI-X"])
    }

    @Test func commandRegisterMSILinkAndDriverChangesAreCaught() {
        let d = diff {
            $0.replacingOccurrences(of: "BusMaster+", with: "BusMaster-")
                .replacingOccurrences(of: "MSI: Enable- Count=1/1", with: "MSI: Enable+ Count=1/1")
                .replacingOccurrences(of: "MaxPayload 128 bytes, MaxReadReq 128 bytes", with: "MaxPayload 128 bytes, MaxReadReq 512 bytes")
                .replacingOccurrences(of: "Width x1 (ok)", with: "Width x1 (downgraded)")
                .replacingOccurrences(of: "Kernel driver in use: virtio-pci\n", with: "")
        }
        #expect(d.map(\.field) == ["command register BusMaster", "MSI enable", "DevCtl MaxReadReq", "LnkSta Width", "driver"])
        #expect(d.last?.description == "driver: virtio-pci on the source, none on the destination")
    }

    @Test func sysfsResourceSizesWin() {
        let resource = """
        0x0000000000000000 0x0000000000000000 0x0000000000000000
        0x00000000fc840000 0x00000000fc840fff 0x0000000000040200
        0x0000000000000000 0x0000000000000000 0x0000000000000000
        0x0000000000000000 0x0000000000000000 0x0000000000000000
        0x00000000fea00000 0x00000000fea07fff 0x000000000014220c
        """
        let s = DeviceSnapshot.parse(lspci: Self.virtioNet, resource: resource)
        #expect(s.bars[1]?.size == 4096)
        #expect(s.bars[4]?.size == 32768)
        #expect(s.bars[0] == nil)
    }

    @Test func garbageNeverCrashes() {
        let inputs = ["", "\n\n", "garbage", "[", "]:[", "01:00.0 x [zzzz:1234]: y [1af4:] (rev ",
                      "01:00.0 A [0200]: B [1af4:1041]\n\tRegion 9: Memory at zz [size=99999999999999999999T]\n\tCapabilities: [x MSI: Count=/\n\tCapabilities: [dc] MSI-X: Count=\n\t\tVector table: BAR=\n\tCapabilities: [6c] Express\n\t\tDevCtl:\n\t\tLnkSta:\t,,, + - ;;",
                      String(repeating: "\t", count: 1000) + "Control: + -",
                      String(Self.virtioNet.reversed())]
        for text in inputs {
            let s = DeviceSnapshot.parse(lspci: text, resource: text)
            _ = DeviceSnapshot.diff(s, DeviceSnapshot.parse(lspci: Self.virtioNet))
        }
        let s = DeviceSnapshot.parse(lspci: "01:00.0 A [0200]: B [1af4:1041]\n\tRegion 9: Memory at 0 [size=4K]\n\tRegion 0: Memory at 0 [size=99999999999999999999T]")
        #expect(s.vendorID == 0x1af4 && s.bars[9] == nil && s.bars[0]?.size == nil)
    }
}

/// The scratch registers of a serial device's ports: the values written before a migration
/// must be there after it; a port that lost them (a fresh device, a reset, state that did not
/// cross) is a difference.
@Suite struct UARTScratchTests {
    static let output = """
    MIGLAB-UART scr port=0 base=0xc000 value=0x5a
    MIGLAB-UART scr port=1 base=0xc008 value=0xa5
    """

    @Test func scratchValuesAreReadPerPort() {
        #expect(DeviceSnapshot.parseUARTScratch(Self.output) == [0: "0x5a", 1: "0xa5"])
        #expect(DeviceSnapshot.parseUARTScratch("MIGLAB-UART error=no-io-ports bdf=0000:03:00.0") == nil)
    }

    @Test func lostSwappedOrMissingScratchValuesAreDifferences() {
        var before = DeviceSnapshot(address: "0000:03:00.0")
        before.uartScratch = [0: "0x5a", 1: "0xa5"]
        var same = before
        same.address = "0000:03:00.0"
        #expect(DeviceSnapshot.diff(before, same).isEmpty)
        var lost = before
        lost.uartScratch = [0: "0x00", 1: "0xa5"]
        #expect(DeviceSnapshot.diff(before, lost).map(\.description) == ["UART port 0 scratch register: 0x5a on the source, 0x00 on the destination"])
        var swapped = before
        swapped.uartScratch = [0: "0xa5", 1: "0x5a"]
        #expect(DeviceSnapshot.diff(before, swapped).count == 2)
        var unread = before
        unread.uartScratch = nil
        #expect(DeviceSnapshot.diff(before, unread).map(\.field) == ["UART port 0 scratch register", "UART port 1 scratch register"])
    }
}
