/// The guest writes other values into a serial device's scratch registers after the runner's
/// snapshot: the negative control of the scratch-register check, which must then fail (the
/// device state that arrives is not the one the snapshot holds).
public struct GuestScratchWrite: FaultKind, Equatable {
    public static let name = "guest-scratch-write"
    public static let summary = "the guest rewrites a serial device's scratch registers (negative control)"
    public static let faultKeys = [FaultKeys.device]

    public var device: String
    public init(device: String) { self.device = device }

    public static func read(_ f: inout FaultFields) -> GuestScratchWrite? {
        f.guestDevice(FaultKeys.device, "a serial device of the guest").map(GuestScratchWrite.init)
    }

    public func fire(_ target: any FaultTarget) async throws -> FaultEffect {
        guard let (address, before) = try target.scratchRegisters(of: device) else {
            throw FaultError("`\(device)` has no scratch registers in the snapshot before the migration (not a serial device?)")
        }
        // Each port's snapshot value with bits 1-7 flipped: never the value the check expects.
        let values = before.map { hex2(($0 ^ 0xff) | 0x01) }
        let r = try await target.runInGuest(.uart, [address, "scr"] + values, until: .now + .seconds(60))
        return FaultEffect("guest wrote scr \(values.prefix(2).joined(separator: ",")): " + r.output.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    public var description: String { "guest rewrites the scratch registers of \(device)" }
}

private func hex2(_ v: UInt8) -> String {
    let digits = Array("0123456789abcdef")
    return "0x" + String(digits[Int(v >> 4)]) + String(digits[Int(v & 0xf)])
}
