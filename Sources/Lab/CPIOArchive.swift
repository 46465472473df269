import Foundation

/// Writes a Linux initramfs: a cpio archive in the "newc" format, uncompressed (the kernel
/// unpacks it as is). Entries are sorted and carry fixed times and owners so that the same
/// tree gives the same bytes. Written here because it is 60 lines and the only cpio tool would
/// be another process to drive.
struct CPIOArchive {
    private var data = Data()
    private var inode: UInt32 = 1
    var size: Int { data.count }

    mutating func addTree(root: String) throws {
        let fm = FileManager.default
        guard let e = fm.enumerator(atPath: root) else { return }
        var paths: [String] = []
        while let p = e.nextObject() as? String { paths.append(p) }
        for rel in paths.sorted() {
            let full = "\(root)/\(rel)"
            var st = stat()
            guard lstat(full, &st) == 0 else { continue }
            let mode = UInt32(st.st_mode)
            switch mode & UInt32(S_IFMT) {
            case UInt32(S_IFDIR): add(name: rel, mode: mode, body: Data())
            case UInt32(S_IFLNK): add(name: rel, mode: mode, body: Data(try fm.destinationOfSymbolicLink(atPath: full).utf8))
            case UInt32(S_IFREG): add(name: rel, mode: mode, body: fm.contents(atPath: full) ?? Data())
            default: continue
            }
        }
    }

    private mutating func add(name: String, mode: UInt32, body: Data) {
        let nameBytes = Data(name.utf8) + [0]
        let fields: [UInt32] = [inode, mode, 0, 0, 1, 0, UInt32(body.count), 0, 0, 0, 0, UInt32(nameBytes.count), 0]
        inode += 1
        var header = "070701"
        for f in fields { header += String(format: "%08X", f) }
        data.append(Data(header.utf8))
        data.append(nameBytes)
        pad()
        data.append(body)
        pad()
    }

    private mutating func pad() {
        while data.count % 4 != 0 { data.append(0) }
    }

    mutating func finish() -> Data {
        add(name: "TRAILER!!!", mode: 0, body: Data())
        while data.count % 512 != 0 { data.append(0) }
        return data
    }
}
