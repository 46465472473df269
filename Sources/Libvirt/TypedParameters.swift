import CLibvirt

/// A value of a libvirt typed parameter (`virTypedParameter`), decoded.
public enum TypedValue: Sendable, Equatable, Codable {
    case int(Int64)
    case uint(UInt64)
    case double(Double)
    case bool(Bool)
    case string(String)

    public var uint64: UInt64? {
        switch self {
        case let .int(v): return v >= 0 ? UInt64(v) : nil
        case let .uint(v): return v
        case let .double(v): return v >= 0 ? UInt64(v) : nil
        case let .bool(v): return v ? 1 : 0
        case .string: return nil
        }
    }

    public var string: String? {
        if case let .string(s) = self { return s }
        return nil
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let v = try? c.decode(UInt64.self) { self = .uint(v) }
        else if let v = try? c.decode(Int64.self) { self = .int(v) }
        else if let v = try? c.decode(Double.self) { self = .double(v) }
        else if let v = try? c.decode(Bool.self) { self = .bool(v) }
        else { self = .string(try c.decode(String.self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case let .int(v): try c.encode(v)
        case let .uint(v): try c.encode(v)
        case let .double(v): try c.encode(v)
        case let .bool(v): try c.encode(v)
        case let .string(v): try c.encode(v)
        }
    }
}

/// Decodes a C array of typed parameters into a dictionary keyed by field name.
func decodeTypedParameters(_ params: UnsafePointer<virTypedParameter>?, count: Int32) -> [String: TypedValue] {
    guard let params, count > 0 else { return [:] }
    var out: [String: TypedValue] = [:]
    for i in 0..<Int(count) {
        var p = params[i]
        let name = withUnsafeBytes(of: &p.field) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        switch Int32(p.type) {
        case Int32(VIR_TYPED_PARAM_INT.rawValue): out[name] = .int(Int64(p.value.i))
        case Int32(VIR_TYPED_PARAM_UINT.rawValue): out[name] = .uint(UInt64(p.value.ui))
        case Int32(VIR_TYPED_PARAM_LLONG.rawValue): out[name] = .int(p.value.l)
        case Int32(VIR_TYPED_PARAM_ULLONG.rawValue): out[name] = .uint(p.value.ul)
        case Int32(VIR_TYPED_PARAM_DOUBLE.rawValue): out[name] = .double(p.value.d)
        case Int32(VIR_TYPED_PARAM_BOOLEAN.rawValue): out[name] = .bool(p.value.b != 0)
        case Int32(VIR_TYPED_PARAM_STRING.rawValue): out[name] = .string(p.value.s.map { String(cString: $0) } ?? "")
        default: continue
        }
    }
    return out
}

/// Owns a typed-parameter list being built for a libvirt call (virTypedParamsAdd*),
/// freeing it in deinit like the other handle wrappers.
final class TypedParameterList {
    private(set) var pointer: UnsafeMutablePointer<virTypedParameter>?
    private(set) var count: Int32 = 0
    private var capacity: Int32 = 0

    init() {}
    deinit { virTypedParamsFree(pointer, count) }

    func add(_ name: String, string value: String) throws {
        guard virTypedParamsAddString(&pointer, &count, &capacity, name, value) == 0 else {
            throw LibvirtError.last("virTypedParamsAddString(\(name))")
        }
    }

    func add(_ name: String, uint64 value: UInt64) throws {
        guard virTypedParamsAddULLong(&pointer, &count, &capacity, name, value) == 0 else {
            throw LibvirtError.last("virTypedParamsAddULLong(\(name))")
        }
    }

    func add(_ name: String, int32 value: Int32) throws {
        guard virTypedParamsAddInt(&pointer, &count, &capacity, name, value) == 0 else {
            throw LibvirtError.last("virTypedParamsAddInt(\(name))")
        }
    }
}
