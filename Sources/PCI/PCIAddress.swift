// The PCI address type lives in the VFIO target (the lowest layer that needs it); the PCI
// inventory, the lab and the CLI use the same type through this module.
@_exported import struct VFIO.PCIAddress

/// Lower-case hexadecimal, zero-padded to `width` digits.
func hex(_ value: some BinaryInteger, width: Int) -> String {
    let digits = String(value, radix: 16)
    return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
}
