import Foundation
import NspawnAPI
import NspawnKit
import SystemPackage
import Testing

/// The exec stream's frames: every type both ways, cut anywhere, and what a hostile peer sends.
@Suite("Exec stream frames")
struct ExecStreamFrameTests {
    static let fromClient: [ExecFrame] = [
        .stdin([1, 2, 3]), .stdin([]), .stdinEnd, .resize(TerminalSize(rows: 50, columns: 300)), .signal(15),
        .stdin([UInt8](repeating: 0xAB, count: ExecStream.maximumPayload)),
    ]
    static let fromServer: [ExecFrame] = [
        .stdout(Array("hello\n".utf8)), .stderr([0, 255]), .exit(.exited(0)), .exit(.exited(255)), .exit(.signaled(9)),
        .error(code: "not_found", message: "machine 'web' does not exist"),
    ]

    @Test func everyFrameRoundTripsWhateverTheCuts() throws {
        for (sender, frames) in [(ExecFrameDecoder.Sender.client, Self.fromClient), (.server, Self.fromServer)] {
            let bytes = frames.flatMap(\.encoded)
            for cut in [1, 2, 5, 7, 4096, bytes.count] {
                var decoder = ExecFrameDecoder(from: sender)
                var decoded: [ExecFrame] = []
                var offset = 0
                while offset < bytes.count {
                    decoder.feed(bytes[offset..<min(offset + cut, bytes.count)])
                    offset += cut
                    while let frame = try decoder.next() { decoded.append(frame) }
                }
                #expect(decoded == frames, "cut every \(cut) bytes")
                #expect(decoder.truncation == nil)
            }
        }
    }

    /// The layout the document gives, byte for byte.
    @Test func theBytesAreTheDocumentedLayout() {
        #expect(ExecFrame.stdin([0x61]).encoded == [0, 0, 0, 0, 1, 0x61])
        #expect(ExecFrame.stdinEnd.encoded == [5, 0, 0, 0, 0])
        #expect(ExecFrame.resize(TerminalSize(rows: 0x0102, columns: 0x0304)).encoded == [6, 0, 0, 0, 4, 1, 2, 3, 4])
        #expect(ExecFrame.signal(2).encoded == [7, 0, 0, 0, 4, 0, 0, 0, 2])
        #expect(ExecFrame.stderr([]).encoded == [2, 0, 0, 0, 0])
        #expect(ExecFrame.exit(.exited(3)).encoded == [3, 0, 0, 0, 5, 0, 0, 0, 0, 3])
        #expect(ExecFrame.exit(.signaled(9)).encoded == [3, 0, 0, 0, 5, 1, 0, 0, 0, 9])
        let error = ExecFrame.error(code: "failure", message: "x").encoded
        #expect(Array(error.prefix(5)) == [4, 0, 0, 0, UInt8(error.count - 5)])
        #expect(String(decoding: error.dropFirst(5), as: UTF8.self) == #"{"error":{"code":"failure","message":"x"}}"#)
    }

    static func firstError(_ bytes: [UInt8], from sender: ExecFrameDecoder.Sender) -> String? {
        var decoder = ExecFrameDecoder(from: sender)
        decoder.feed(bytes)
        do {
            while try decoder.next() != nil {}
            return nil
        } catch {
            return error.description
        }
    }

    @Test(arguments: [
        ("unknown type", [9, 0, 0, 0, 0], ExecFrameDecoder.Sender.client, "unknown frame type 9"),
        ("unknown type 255", [255, 0, 0, 0, 1, 0], .server, "unknown frame type 255"),
        ("huge length", [0, 0xff, 0xff, 0xff, 0xff], .client, "4294967295 bytes is over the limit of 65536"),
        ("one over the limit", [1, 0, 1, 0, 1], .server, "65537 bytes is over the limit"),
        ("a server's frame from a client", [1, 0, 0, 0, 1, 0x61], .client, "a client may not send stdout frames"),
        ("a client's frame from a server", [0, 0, 0, 0, 1, 0x61], .server, "a server may not send stdin frames"),
        ("short resize", [6, 0, 0, 0, 3, 0, 1, 0], .client, "a resize frame carries 4 bytes, not 3"),
        ("stdin-end with a payload", [5, 0, 0, 0, 1, 0], .client, "carries 0 bytes, not 1"),
        ("exit of an unknown kind", [3, 0, 0, 0, 5, 2, 0, 0, 0, 1], .server, "exit frame with kind 2"),
        ("exit status over 255", [3, 0, 0, 0, 5, 0, 0, 0, 1, 0], .server, "exit frame with kind 0 and value 256"),
        ("error frame that is not JSON", [4, 0, 0, 0, 2, 0x7b, 0x7d], .server, "not a JSON error body"),
    ] as [(String, [UInt8], ExecFrameDecoder.Sender, String)])
    func hostileFramesAreRefusedClearly(_ what: String, _ bytes: [UInt8], _ sender: ExecFrameDecoder.Sender, _ expected: String) {
        let error = Self.firstError(bytes, from: sender)
        #expect(error?.contains(expected) == true, "\(what): \(error ?? "accepted")")
    }

    /// A huge length is refused from its header: nothing waits for 4 GB to arrive.
    @Test func anOversizedFrameIsRefusedBeforeItsPayload() {
        var decoder = ExecFrameDecoder(from: .client)
        decoder.feed([0, 0x10, 0, 0, 0])
        #expect(throws: NspawnError.self) { try decoder.next() }
    }

    @Test func aStreamEndingInsideAFrameSaysWhere() throws {
        var decoder = ExecFrameDecoder(from: .server)
        decoder.feed([1, 0, 0])
        #expect(try decoder.next() == nil)
        #expect(decoder.truncation == "exec stream ended inside a frame header (3 of 5 bytes)")
        decoder.feed([0, 4, 0x61])
        #expect(try decoder.next() == nil)
        #expect(decoder.truncation == "exec stream ended inside a frame (1 payload bytes received)")
    }

    @Test func aRequestLeftAtItsDefaultsIsTheSpecsDefaults() throws {
        let request = try WireJSON.decoder().decode(ExecRequest.self, from: Data(#"{"command": ["true"]}"#.utf8))
        #expect(request.spec == ExecSpec(command: ["true"]))
        let full = ExecSpec(command: ["sh"], user: "u", environment: ["A=1"], workingDirectory: "/w", interactive: true, tty: true,
                            terminal: "xterm", size: TerminalSize(rows: 1, columns: 2))
        let wire = try WireJSON.encoder(pretty: false).encode(ExecRequest(full))
        #expect(try WireJSON.decoder().decode(ExecRequest.self, from: wire).spec == full)
        #expect(String(decoding: wire, as: UTF8.self).contains(#""working_directory":"/w""#))
    }
}

/// The client against servers that misbehave after (or instead of) the switch.
@Suite("Exec stream against hostile servers", .timeLimit(.minutes(1)))
struct ExecHostileServerTests {
    static let switched = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: \(ExecStream.upgradeToken)\r\nNspawnd-Api: v1\r\n\r\n"

    static func exec(_ answer: [UInt8]) async -> (outcome: Result<ExitOutcome, NspawnError>, output: [UInt8]) {
        do {
            let (path, _) = try HostileServerTests.serve(answer, linger: .seconds(1))
            let client = APIClient(transport: StreamTransport(connector: UnixSocketConnector(path: path), patience: .seconds(2)))
            let process = try await client.exec(MachineName("web"), ExecSpec(command: ["true"]))
            defer { process.close() }
            let output = try await OSThread.run { () throws(NspawnError) in try readAll(process.output) }
            do throws(NspawnError) {
                return (.success(try process.wait()), output)
            } catch {
                return (.failure(error), output)
            }
        } catch {
            return (.failure(error as? NspawnError ?? .failed("\(error)")), [])
        }
    }

    @Test func framesBeforeTheExitArriveAndTheExitIsTheOutcome() async {
        let frames = ExecFrame.stdout(Array("hi".utf8)).encoded + ExecFrame.exit(.exited(3)).encoded
        let (outcome, output) = await Self.exec(Array(Self.switched.utf8) + frames)
        #expect(outcome == .success(.exited(3)))
        #expect(output == Array("hi".utf8))
    }

    @Test(arguments: [
        ("an unknown frame", switched.utf8 + [9, 0, 0, 0, 0], "sock: exec stream: unknown frame type 9"),
        ("a client's frame", switched.utf8 + [5, 0, 0, 0, 0], "a server may not send stdin-end frames"),
        ("a huge frame", switched.utf8 + [1, 0x7f, 0xff, 0xff, 0xff], "over the limit"),
        ("the end mid-frame", switched.utf8 + [1, 0, 0, 0, 9, 0x61], "ended the exec stream before the command ended; exec stream ended inside a frame"),
        ("the end without an exit", Array(switched.utf8), "ended the exec stream before the command ended"),
        ("another protocol", Array("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nNspawnd-Api: v1\r\n\r\n".utf8), "switched to 'websocket'"),
        ("an error frame", switched.utf8 + ExecFrame.error(code: "conflict", message: "machine 'web' is not running").encoded,
         "machine 'web' is not running"),
    ] as [(String, [UInt8], String)])
    func brokenStreamsEndInAClearError(_ what: String, _ answer: [UInt8], _ expected: String) async {
        let (outcome, _) = await Self.exec(answer)
        guard case .failure(let error) = outcome else {
            Issue.record("\(what): \(outcome)")
            return
        }
        #expect(error.description.contains(expected), "\(what): \(error)")
    }

    @Test func anErrorFrameKeepsItsCategory() async {
        let answer = Array(Self.switched.utf8) + ExecFrame.error(code: "conflict", message: "machine 'web' is not running").encoded
        let (outcome, _) = await Self.exec(answer)
        guard case .failure(let error) = outcome else {
            Issue.record("\(outcome)")
            return
        }
        #expect(error.category == .conflict)
    }

    @Test func aRefusalBeforeTheSwitchIsAnOrdinaryError() async {
        let body = #"{"error":{"code":"permission_denied","message":"permission denied: running commands in machines needs root"}}"#
        let answer = "HTTP/1.1 403 Forbidden\r\nNspawnd-Api: v1\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        let (outcome, _) = await Self.exec(Array(answer.utf8))
        guard case .failure(let error) = outcome else {
            Issue.record("\(outcome)")
            return
        }
        #expect(error.category == .permissionDenied)
        #expect(error.description.contains("running commands in machines needs root"))
    }
}

/// Reads a descriptor to its end.
func readAll(_ descriptor: FileDescriptor) throws(NspawnError) -> [UInt8] {
    do { return try descriptor.readAll(limit: .max) } catch { throw .failed("cannot read: \(error)") }
}
