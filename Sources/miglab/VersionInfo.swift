import Foundation
import Lab
import Libvirt

/// What `miglab --version` prints: miglab's version, the commit it was built from, and the
/// libvirt and QEMU it sees.
enum VersionInfo {
    static let version = "0.18.0"

    /// The commit of the source tree miglab was built from, with `+changes` when the tree has
    /// uncommitted changes; "unknown" when the tree is gone. SwiftPM has no build-time
    /// variables without a plugin, so the tree is asked where the compiler found this file.
    static func commit() -> String {
        let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        guard let head = try? Command.run(["git", "-C", sources, "rev-parse", "--short=12", "HEAD"]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines), !head.isEmpty else { return "unknown" }
        let dirty = (try? Command.run(["git", "-C", sources, "status", "--porcelain", "--untracked-files=no"]).stdout)
            .map { !$0.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty } ?? false
        return head + (dirty ? "+changes" : "")
    }

    static func text() -> String {
        let l = Libvirt.libraryVersion
        let lab = BuiltinLab()
        let qemu = (try? lab.qemuVersion()).map { "QEMU \($0.text) (\(lab.qemuBinary))" } ?? "QEMU not found at \(lab.qemuBinary)"
        return """
        miglab \(version) (commit \(commit()))
        libvirt \(l.0).\(l.1).\(l.2) (the library miglab runs with)
        \(qemu)
        """
    }
}
