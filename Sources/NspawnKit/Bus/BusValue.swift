/// A D-Bus value with its type, as written to or read from a message.
///
/// Containers carry enough type information to be written even when empty
/// (an empty array still needs its element signature).
public indirect enum BusValue: Sendable, Equatable {
    case byte(UInt8)
    case bool(Bool)
    case int16(Int16)
    case uint16(UInt16)
    case int32(Int32)
    case uint32(UInt32)
    case int64(Int64)
    case uint64(UInt64)
    case double(Double)
    case string(String)
    case objectPath(String)
    case signature(String)
    case array(elementSignature: String, [BusValue])
    case structure([BusValue])
    case dictEntry(BusValue, BusValue)
    case variant(BusValue)

    /// The D-Bus type signature of this value.
    public var signature: String {
        switch self {
        case .byte: "y"
        case .bool: "b"
        case .int16: "n"
        case .uint16: "q"
        case .int32: "i"
        case .uint32: "u"
        case .int64: "x"
        case .uint64: "t"
        case .double: "d"
        case .string: "s"
        case .objectPath: "o"
        case .signature: "g"
        case .array(let element, _): "a" + element
        case .structure(let fields): "(" + fields.map(\.signature).joined() + ")"
        case .dictEntry(let key, let value): "{" + key.signature + value.signature + "}"
        case .variant: "v"
        }
    }

    /// An array of strings, the most common argument shape in the APIs used here.
    public static func strings(_ values: [String]) -> BusValue {
        .array(elementSignature: "s", values.map(BusValue.string))
    }
}

// MARK: - Typed access, returning nil when the value has another type.

extension BusValue {
    public var string: String? {
        switch self {
        case .string(let s), .objectPath(let s), .signature(let s): s
        case .variant(let inner): inner.string
        default: nil
        }
    }

    public var bool: Bool? {
        switch self {
        case .bool(let b): b
        case .variant(let inner): inner.bool
        default: nil
        }
    }

    /// Any unsigned or non-negative signed integer, widened.
    public var uint64: UInt64? {
        switch self {
        case .byte(let v): UInt64(v)
        case .uint16(let v): UInt64(v)
        case .uint32(let v): UInt64(v)
        case .uint64(let v): v
        case .int16(let v): v >= 0 ? UInt64(v) : nil
        case .int32(let v): v >= 0 ? UInt64(v) : nil
        case .int64(let v): v >= 0 ? UInt64(v) : nil
        case .variant(let inner): inner.uint64
        default: nil
        }
    }

    public var int64: Int64? {
        switch self {
        case .int16(let v): Int64(v)
        case .int32(let v): Int64(v)
        case .int64(let v): v
        case .byte(let v): Int64(v)
        case .uint16(let v): Int64(v)
        case .uint32(let v): Int64(v)
        case .uint64(let v): v <= UInt64(Int64.max) ? Int64(v) : nil
        case .variant(let inner): inner.int64
        default: nil
        }
    }

    /// Elements of an array, or fields of a structure.
    public var elements: [BusValue]? {
        switch self {
        case .array(_, let items): items
        case .structure(let fields): fields
        case .variant(let inner): inner.elements
        default: nil
        }
    }

    /// An `a{sX}` array as a dictionary keyed by string; nil for any other shape.
    public var stringKeyedDictionary: [String: BusValue]? {
        guard case .array(_, let items) = unwrappedVariant else { return nil }
        var result: [String: BusValue] = [:]
        for item in items {
            guard case .dictEntry(let key, let value) = item, let keyString = key.string else { return nil }
            result[keyString] = value
        }
        return result
    }

    /// The bytes of an `ay` array.
    public var bytes: [UInt8]? {
        guard case .array("y", let items) = unwrappedVariant else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(items.count)
        for item in items {
            guard case .byte(let b) = item else { return nil }
            out.append(b)
        }
        return out
    }

    public var unwrappedVariant: BusValue {
        if case .variant(let inner) = self { return inner.unwrappedVariant }
        return self
    }
}
