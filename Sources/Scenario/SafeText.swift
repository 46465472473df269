/// Text that came from outside (a guest's console or tool output, a device, a file, a journal)
/// made safe where miglab shows or writes it: a terminal must not take an escape sequence from
/// a guest as a command (colours, an OSC title, a cursor move, a backspace hiding text), and
/// one line of a message stays one line of bounded length.
public enum SafeText {
    /// One line for a terminal or a message: control characters (C0, DEL, C1), the line and
    /// paragraph separators and the bidirectional overrides shown as `\u{..}`; at most
    /// `limit` characters, then `...`.
    public static func line(_ s: String, limit: Int = 200) -> String {
        var out = ""
        var n = 0
        for u in s.unicodeScalars {
            if n >= limit { return out + "..." }
            out += isUnsafe(u) ? "\\u{\(String(u.value, radix: 16))}" : String(u)
            n += 1
        }
        return out
    }

    /// Several lines for a terminal: each line as `line` makes it (newlines and tabs kept).
    public static func lines(_ s: String, limit: Int = 100_000) -> String {
        var out = ""
        var n = 0
        for u in s.unicodeScalars {
            if n >= limit { return out + "..." }
            out += (u == "\n" || u == "\t") ? String(u) : (isUnsafe(u) ? "\\u{\(String(u.value, radix: 16))}" : String(u))
            n += 1
        }
        return out
    }

    static func isUnsafe(_ u: Unicode.Scalar) -> Bool {
        switch u.value {
        case 0x00...0x1F, 0x7F...0x9F: true
        case 0x2028, 0x2029: true                       // line and paragraph separators
        case 0x202A...0x202E, 0x2066...0x2069: true     // bidirectional embeddings, overrides, isolates
        case 0xFFFE, 0xFFFF: true                       // noncharacters
        default: false
        }
    }

    /// Whether XML 1.0 allows the character (JUnit files are XML 1.0).
    public static func isXMLCharacter(_ u: Unicode.Scalar) -> Bool {
        switch u.value {
        case 0x9, 0xA, 0xD, 0x20...0xD7FF, 0xE000...0xFFFD, 0x10000...0x10FFFF: true
        default: false
        }
    }
}
