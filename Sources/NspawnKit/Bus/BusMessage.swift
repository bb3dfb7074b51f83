import CSystemd
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Owns one reference to an `sd_bus_message` and writes or reads `BusValue`s through it.
final class BusMessage {
    let handle: OpaquePointer

    /// Takes over a reference the caller already owns.
    init(owning handle: OpaquePointer) {
        self.handle = handle
    }

    /// Adds a reference to a message owned by someone else (for example inside a callback).
    init(retaining handle: OpaquePointer) {
        self.handle = sd_bus_message_ref(handle)
    }

    deinit {
        sd_bus_message_unref(handle)
    }

    var member: String? { sd_bus_message_get_member(handle).map { String(cString: $0) } }
    var path: String? { sd_bus_message_get_path(handle).map { String(cString: $0) } }
    var interface: String? { sd_bus_message_get_interface(handle).map { String(cString: $0) } }

    // MARK: Writing

    func append(_ values: [BusValue]) throws(BusError) {
        for value in values { try append(value) }
    }

    func append(_ value: BusValue) throws(BusError) {
        let r: Int32
        switch value {
        case .byte(var v): r = sd_bus_message_append_basic(handle, CChar(UInt8(ascii: "y")), &v)
        case .bool(let b):
            var v: Int32 = b ? 1 : 0
            r = sd_bus_message_append_basic(handle, CChar(UInt8(ascii: "b")), &v)
        case .int16(var v): r = sd_bus_message_append_basic(handle, CChar(UInt8(ascii: "n")), &v)
        case .uint16(var v): r = sd_bus_message_append_basic(handle, CChar(UInt8(ascii: "q")), &v)
        case .int32(var v): r = sd_bus_message_append_basic(handle, CChar(UInt8(ascii: "i")), &v)
        case .uint32(var v): r = sd_bus_message_append_basic(handle, CChar(UInt8(ascii: "u")), &v)
        case .int64(var v): r = sd_bus_message_append_basic(handle, CChar(UInt8(ascii: "x")), &v)
        case .uint64(var v): r = sd_bus_message_append_basic(handle, CChar(UInt8(ascii: "t")), &v)
        case .double(var v): r = sd_bus_message_append_basic(handle, CChar(UInt8(ascii: "d")), &v)
        case .string(let s): r = appendString(s, type: "s")
        case .objectPath(let s): r = appendString(s, type: "o")
        case .signature(let s): r = appendString(s, type: "g")
        case .array(let element, let items):
            try openContainer("a", contents: element)
            for item in items { try append(item) }
            try closeContainer()
            return
        case .structure(let fields):
            try openContainer("r", contents: fields.map(\.signature).joined())
            for field in fields { try append(field) }
            try closeContainer()
            return
        case .dictEntry(let key, let entryValue):
            try openContainer("e", contents: key.signature + entryValue.signature)
            try append(key)
            try append(entryValue)
            try closeContainer()
            return
        case .variant(let inner):
            try openContainer("v", contents: inner.signature)
            try append(inner)
            try closeContainer()
            return
        }
        if r < 0 { throw BusError(code: r, error: nil, operation: "append \(value.signature)") }
    }

    private func appendString(_ s: String, type: Character) -> Int32 {
        s.withCString { sd_bus_message_append_basic(handle, CChar(type.asciiValue!), $0) }
    }

    private func openContainer(_ type: Character, contents: String) throws(BusError) {
        let r = contents.withCString { sd_bus_message_open_container(handle, CChar(type.asciiValue!), $0) }
        if r < 0 { throw BusError(code: r, error: nil, operation: "open container \(type)\(contents)") }
    }

    private func closeContainer() throws(BusError) {
        let r = sd_bus_message_close_container(handle)
        if r < 0 { throw BusError(code: r, error: nil, operation: "close container") }
    }

    /// Seals the message as sending would and reads it back from the start.
    /// Lets tests exercise libsystemd's real marshalling without a peer.
    func sealAndRewindForReading() throws(BusError) -> [BusValue] {
        var r = sd_bus_message_seal(handle, 1, 0)
        if r < 0 { throw BusError(code: r, error: nil, operation: "seal") }
        r = sd_bus_message_rewind(handle, 1)
        if r < 0 { throw BusError(code: r, error: nil, operation: "rewind") }
        return try readAll()
    }

    // MARK: Reading

    /// Reads every remaining value at the current level of the message.
    func readAll() throws(BusError) -> [BusValue] {
        var values: [BusValue] = []
        while let value = try readNext() { values.append(value) }
        return values
    }

    /// Reads the next value, or returns nil at the end of the current container.
    func readNext() throws(BusError) -> BusValue? {
        var type: CChar = 0
        var contentsPointer: UnsafePointer<CChar>?
        let r = sd_bus_message_peek_type(handle, &type, &contentsPointer)
        if r < 0 { throw BusError(code: r, error: nil, operation: "peek type") }
        if r == 0 { return nil }
        let typeChar = Character(Unicode.Scalar(UInt8(bitPattern: type)))
        switch typeChar {
        case "a", "r", "e", "v":
            let contents = contentsPointer.map { String(cString: $0) } ?? ""
            try enter(type, contents: contents)
            let items = try readAll()
            try exit()
            switch typeChar {
            case "a": return .array(elementSignature: contents, items)
            case "r": return .structure(items)
            case "e":
                guard items.count == 2 else { throw malformed("dict entry with \(items.count) fields") }
                return .dictEntry(items[0], items[1])
            default:
                guard items.count == 1 else { throw malformed("variant with \(items.count) values") }
                return .variant(items[0])
            }
        default:
            return try readBasic(type)
        }
    }

    /// Reads a `h` value and duplicates it (close-on-exec): the message owns the original.
    func readDescriptor() throws(BusError) -> FileDescriptor {
        var fd: Int32 = -1
        let r = sd_bus_message_read_basic(handle, CChar(UInt8(ascii: "h")), &fd)
        if r < 0 { throw BusError(code: r, error: nil, operation: "read file descriptor") }
        if r == 0 { throw malformed("no file descriptor") }
        do {
            return try FileDescriptor(rawValue: fd).closeOnExecDuplicate()
        } catch {
            throw BusError(code: -error.rawValue, error: nil, operation: "duplicate file descriptor")
        }
    }

    private func readBasic(_ type: CChar) throws(BusError) -> BusValue {
        func read<T: BitwiseCopyable>(_ initial: T) throws(BusError) -> T {
            try readFixed(type, initial)
        }
        switch Character(Unicode.Scalar(UInt8(bitPattern: type))) {
        case "y": return .byte(try read(UInt8(0)))
        case "b": return .bool(try read(Int32(0)) != 0)
        case "n": return .int16(try read(Int16(0)))
        case "q": return .uint16(try read(UInt16(0)))
        case "i": return .int32(try read(Int32(0)))
        case "u": return .uint32(try read(UInt32(0)))
        case "x": return .int64(try read(Int64(0)))
        case "t": return .uint64(try read(UInt64(0)))
        case "d": return .double(try read(Double(0)))
        case "s", "o", "g":
            var pointer: UnsafePointer<CChar>?
            let r = sd_bus_message_read_basic(handle, type, &pointer)
            if r < 0 { throw BusError(code: r, error: nil, operation: "read string") }
            let s = pointer.map { String(cString: $0) } ?? ""
            switch type {
            case CChar(UInt8(ascii: "o")): return .objectPath(s)
            case CChar(UInt8(ascii: "g")): return .signature(s)
            default: return .string(s)
            }
        default:
            throw malformed("unsupported type code \(type)")
        }
    }

    private func readFixed<T: BitwiseCopyable>(_ type: CChar, _ initial: T) throws(BusError) -> T {
        var value = initial
        let r = withUnsafeMutableBytes(of: &value) { sd_bus_message_read_basic(handle, type, $0.baseAddress) }
        if r < 0 { throw BusError(code: r, error: nil, operation: "read basic") }
        return value
    }

    private func enter(_ type: CChar, contents: String) throws(BusError) {
        let r = contents.withCString { sd_bus_message_enter_container(handle, type, $0) }
        if r < 0 { throw BusError(code: r, error: nil, operation: "enter container") }
    }

    private func exit() throws(BusError) {
        let r = sd_bus_message_exit_container(handle)
        if r < 0 { throw BusError(code: r, error: nil, operation: "exit container") }
    }

    private func malformed(_ what: String) -> BusError {
        BusError(name: "System.Error.EBADMSG", message: "malformed message: \(what)", errno: 74)
    }
}
