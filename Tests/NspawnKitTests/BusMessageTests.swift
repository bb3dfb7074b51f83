import Testing
@testable import NspawnKit

/// Encoding and decoding through libsystemd's real marshaller: build a message,
/// seal it as if it were sent, and read it back.
@Suite struct BusMessageTests {
    func roundTrip(_ values: [BusValue]) throws -> [BusValue] {
        let bus = try BusConnection.unconnected()
        let message = try bus.makeMessage(MethodCall(
            destination: "org.example.Test", path: "/org/example/Test",
            interface: "org.example.Test", member: "Echo", arguments: values))
        return try message.sealAndRewindForReading()
    }

    @Test func basicTypesSurviveARoundTrip() throws {
        let values: [BusValue] = [
            .byte(255), .bool(true), .bool(false), .int16(-2), .uint16(65535), .int32(Int32.min),
            .uint32(UInt32.max), .int64(Int64.min), .uint64(UInt64.max), .double(-1.5),
            .string("héllo wörld"), .string(""), .objectPath("/org/freedesktop/machine1/machine/web"),
            .signature("a(ssso)"),
        ]
        #expect(try roundTrip(values) == values)
    }

    @Test func containersSurviveARoundTrip() throws {
        let listMachinesShape: BusValue = .array(elementSignature: "(ssso)", [
            .structure([.string("web"), .string("container"), .string("nspawn"), .objectPath("/org/freedesktop/machine1/machine/web")]),
            .structure([.string("db"), .string("container"), .string("nspawn"), .objectPath("/org/freedesktop/machine1/machine/db")]),
        ])
        let properties: BusValue = .array(elementSignature: "{sv}", [
            .dictEntry(.string("State"), .variant(.string("running"))),
            .dictEntry(.string("Leader"), .variant(.uint32(4242))),
            .dictEntry(.string("NetworkInterfaces"), .variant(.array(elementSignature: "i", [.int32(3), .int32(7)]))),
        ])
        let empty: BusValue = .array(elementSignature: "(sss)", [])
        let addresses: BusValue = .array(elementSignature: "(iay)", [
            .structure([.int32(2), .array(elementSignature: "y", [10, 0, 0, 2].map(BusValue.byte))]),
        ])
        let values = [listMachinesShape, properties, empty, addresses, .strings(["a.service", "machines.target"])]
        #expect(try roundTrip(values) == values)
    }

    @Test func typedAccessorsReadDecodedReplies() throws {
        let decoded = try roundTrip([.array(elementSignature: "{sv}", [
            .dictEntry(.string("State"), .variant(.string("opening"))),
            .dictEntry(.string("Leader"), .variant(.uint32(4242))),
            .dictEntry(.string("Timestamp"), .variant(.uint64(1_700_000_000_000_000))),
            .dictEntry(.string("NetworkInterfaces"), .variant(.array(elementSignature: "i", [.int32(3)]))),
        ])])
        let properties = MachineProperties(try #require(decoded.first?.stringKeyedDictionary))
        #expect(properties.state == "opening")
        #expect(properties.leader == 4242)
        #expect(properties.timestamp == 1_700_000_000_000_000)
        #expect(properties.networkInterfaces == [3])
        #expect(MachineState(machinedState: properties.state) == .starting)
    }

    @Test func signatureDescribesNestedValues() {
        let value: BusValue = .array(elementSignature: "{sv}", [])
        #expect(value.signature == "a{sv}")
        #expect(BusValue.structure([.int32(1), .array(elementSignature: "y", [])]).signature == "(iay)")
        #expect(BusValue.variant(.bool(true)).signature == "v")
    }

    @Test func addressesFromMachinedAreFormatted() {
        let reply: [BusValue] = [.array(elementSignature: "(iay)", [
            .structure([.int32(2), .array(elementSignature: "y", [192, 168, 1, 20].map(BusValue.byte))]),
            .structure([.int32(10), .array(elementSignature: "y", ([0xfe, 0x80] + Array(repeating: 0, count: 13) + [1]).map(BusValue.byte))]),
            .structure([.int32(2), .array(elementSignature: "y", [1, 2, 3].map(BusValue.byte))]),
        ])]
        #expect(Machined.addresses(from: reply) == ["192.168.1.20", "fe80::1"])
    }
}
