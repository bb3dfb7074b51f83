import Testing
@testable import NspawnKit

@Suite("Unit files")
struct UnitFileTests {
    /// Real-world shapes: comments, unknown keys, repeated Bind=, odd whitespace, a continuation
    /// line, a key before any section, CRLF-free but tab-indented lines and no final newline.
    static let files: [String] = [
        """
        # /etc/systemd/nspawn/web.nspawn, hand-written
        [Exec]
        Boot=yes
        PrivateUsers=pick
        ; an old-style comment
        Environment=LANG=C.UTF-8

        [Files]
        Bind=/srv/www:/var/www
        Bind=/srv/logs:/var/log/nginx:rbind
        BindReadOnly=/etc/ssl/certs
        TemporaryFileSystem=/tmp:size=64M

        [Network]
        VirtualEthernet=yes
        Port=tcp:8080:80
        Port=udp:5353:53
        SomeFutureKey=whatever

        """,
        "[Exec]\n  Boot = no  \n\tParameters=/bin/sh -c \\\n  'sleep 100'\nX-Custom=1\n[Network]\nPrivate=yes",
        "Stray=before any section\n\n[Exec]\nKillSignal=SIGRTMIN+3\n\n\n# trailing comment\n",
        "",
    ]

    @Test(arguments: files)
    func parseRenderIsByteForByte(_ text: String) {
        #expect(UnitFileDocument(parsing: text).rendered() == text)
        #expect(NspawnSettings(parsing: text).rendered() == text)
    }

    @Test func repeatedKeysAndContinuationsAreRead() {
        let document = UnitFileDocument(parsing: Self.files[0])
        #expect(document.values("Files", "Bind") == ["/srv/www:/var/www", "/srv/logs:/var/log/nginx:rbind"])
        #expect(document.values("Network", "Port") == ["tcp:8080:80", "udp:5353:53"])
        let continued = UnitFileDocument(parsing: Self.files[1])
        #expect(continued.value("Exec", "Boot") == "no")
        #expect(continued.value("Exec", "Parameters") == "/bin/sh -c 'sleep 100'")
    }

    @Test func editsTouchOnlyTheirOwnLines() throws {
        var settings = NspawnSettings(parsing: Self.files[0])
        var edit = SettingsEdit()
        edit.ports = ["9000:90"]
        edit.binds = ["/srv/www:/var/www"]  // already there: not added twice
        edit.environment = ["LANG=de_DE.UTF-8", "TZ=UTC"]
        try settings.apply(edit)
        let text = settings.rendered()
        #expect(text.contains("# /etc/systemd/nspawn/web.nspawn, hand-written\n"))
        #expect(text.contains("; an old-style comment\n"))
        #expect(text.contains("SomeFutureKey=whatever"))
        #expect(text.contains("Port=tcp:8080:80\nPort=udp:5353:53\nPort=9000:90\nSomeFutureKey=whatever\n"))
        #expect(settings.values(.bind) == ["/srv/www:/var/www", "/srv/logs:/var/log/nginx:rbind"])
        #expect(settings.values(.environment) == ["LANG=de_DE.UTF-8", "TZ=UTC"])
        // Everything but the changed lines is as it was.
        let before = Self.files[0].split(separator: "\n", omittingEmptySubsequences: false)
        let after = Set(text.split(separator: "\n", omittingEmptySubsequences: false))
        for line in before where !line.hasPrefix("Environment=") { #expect(after.contains(line)) }
    }

    @Test func newSectionsAreAppendedAfterABlankLine() throws {
        var settings = NspawnSettings(parsing: "[Exec]\nBoot=yes\n")
        var edit = SettingsEdit()
        edit.readOnlyBinds = ["/etc/ssl"]
        edit.network = .zone("web")
        try settings.apply(edit)
        #expect(settings.rendered() == "[Exec]\nBoot=yes\n\n[Files]\nBindReadOnly=/etc/ssl\n\n[Network]\nZone=web\n")
    }

    @Test func bootAndExecReplaceEachOther() throws {
        var settings = NspawnSettings(parsing: "[Exec]\nBoot=yes\n")
        var edit = SettingsEdit()
        edit.boot = .exec(["/bin/sleep", "100", "two words", #"a"quote"#])
        try settings.apply(edit)
        #expect(settings.value(.boot) == "no")
        #expect(settings.value(.parameters) == #"/bin/sleep 100 "two words" 'a"quote'"#)
        edit.boot = .boot
        try settings.apply(edit)
        #expect(settings.rendered() == "[Exec]\nBoot=yes\n")
    }

    @Test func networkModesAreConsistent() throws {
        var settings = NspawnSettings(parsing: "[Network]\nBridge=br0\nPort=80\n")
        var edit = SettingsEdit()
        edit.network = .host
        #expect(throws: NspawnError.self) { try settings.apply(edit) }
        #expect(settings.rendered() == "[Network]\nBridge=br0\nPort=80\n", "a refused edit changes nothing")
        edit.network = .private
        #expect(throws: NspawnError.self, "a private network without veth has no link to forward to") { try settings.apply(edit) }
        edit.network = .veth
        try settings.apply(edit)
        #expect(settings.value(.bridge) == nil && settings.value(.virtualEthernet) == "yes")

        // nspawn takes network keys as a group: Private=no alone means no veth, so no Port=.
        var hostOnly = NspawnSettings(parsing: "[Network]\nPrivate=no\n")
        var ports = SettingsEdit()
        ports.ports = ["80"]
        #expect(throws: NspawnError.self) { try hostOnly.apply(ports) }
        var plain = NspawnSettings(parsing: "[Exec]\nBoot=yes\n")
        try plain.apply(ports)
        #expect(plain.ports == ["80"], "no network keys: systemd-nspawn@.service's --network-veth applies")
    }

    @Test func continuationFollowsSystemdsBackslashCounting() {
        // Two backslashes are one escaped backslash, not a continuation.
        let even = UnitFileDocument(parsing: "[Exec]\nEnvironment=P=C:\\\\\nBoot=no\n")
        #expect(even.value("Exec", "Boot") == "no")
        let odd = UnitFileDocument(parsing: "[Exec]\nParameters=a \\\n# comment inside\n b\nBoot=no\n")
        #expect(odd.value("Exec", "Parameters") == "a b" && odd.value("Exec", "Boot") == "no")
        let spaced = UnitFileDocument(parsing: "[Exec]\nParameters=a \\ \nBoot=no\n")
        #expect(spaced.value("Exec", "Boot") == "no", "a blank after the backslash ends the line")
    }

    @Test func anEmptyAssignmentResetsAList() {
        let document = UnitFileDocument(parsing: "[Files]\nBind=/a\nBind=\nBind=/b\n[Exec]\nHostname=x\nHostname=\n")
        #expect(document.values("Files", "Bind") == ["/b"])
        #expect(document.value("Exec", "Hostname") == nil)
    }

    @Test func environmentIsWordsAsNspawnReadsThem() throws {
        var settings = NspawnSettings(parsing: "[Exec]\nEnvironment=A=1 B=2\n")
        var edit = SettingsEdit()
        edit.environment = ["A=5", "MSG=hello world"]
        try settings.apply(edit)
        #expect(settings.values(.environment) == ["B=2", "A=5", #""MSG=hello world""#])
        for bad in [#"X=it's "quoted""#, #"X=C:\dir"#, "X=a\tb"] {
            var hostile = SettingsEdit()
            hostile.environment = [bad]
            #expect(throws: NspawnError.self, "\(bad)") { try settings.apply(hostile) }
        }
        var injected = SettingsEdit()
        injected.assignments = [(.environment, "A=1 2B=x")]
        #expect(throws: NspawnError.self) { try settings.apply(injected) }
    }

    @Test func execStartKeepsSpecifiersAndVariablesLiteral() throws {
        #expect(try quoteExecStart(["/bin/sh", "-c", "echo $$ ${HOME} 100%"]) == #"/bin/sh -c "echo $$$$ $${HOME} 100%%""#)
        #expect(try quoteExecStart(["/bin/printf", #"a"b\c"#]) == #"/bin/printf "a\"b\\c""#)
        #expect(try quoteExecStart(["/bin/echo", ";"]) == #"/bin/echo ";""#)
    }

    @Test func filesThatCannotBeRewrittenFaithfullyAreRefused() {
        #expect(UnitFileDocument.rewriteProblem(Array("[Exec]\r\nBoot=yes\r\n".utf8)) != nil)
        #expect(UnitFileDocument.rewriteProblem([0x23, 0x20, 0xE9, 0x0A]) != nil, "Latin-1 comment")
        #expect(UnitFileDocument.rewriteProblem(Array("# caf\u{e9}\n[Exec]\nBoot=yes\n".utf8)) == nil)
    }

    static let hostileValues: [(String, String)] = [
        ("Network.Port", "0"), ("Network.Port", "65536"), ("Network.Port", "sctp:80"), ("Network.Port", "80:80:80"),
        ("Files.Bind", "relative/path"), ("Files.Bind", "/a/../etc:/x"), ("Files.Bind", "/a:/b:bogus"),
        ("Files.Bind", "/a\n[Exec]\nParameters=/bin/evil"), ("Exec.Boot", "maybe"), ("Exec.Environment", "NOEQUALS"),
        ("Exec.Environment", "1X=y"), ("Exec.KillSignal", "SIGNOPE"), ("Exec.Hostname", "-bad-"),
        ("Exec.WorkingDirectory", "tmp"), ("Network.Bridge", "a-name-that-is-too-long"), ("Network.Zone", "with space"),
        ("Exec.Parameters", "ends with\\"), ("Exec.User", "-root"), ("Exec.PrivateUsers", "lots"), ("Exec.Boot", ""),
        ("Files.Bind", "/srv/x\\:/etc"), ("Files.TemporaryFileSystem", "/a\\b"), ("Exec.Environment", "A='1"),
    ]

    @Test(arguments: hostileValues)
    func badValuesAreRefusedWithTheKeyNamed(_ key: String, _ value: String) throws {
        let settingKey = try SettingKey(named: key)
        var settings = NspawnSettings(parsing: "[Exec]\nBoot=yes\n")
        var edit = SettingsEdit()
        edit.assignments = [(settingKey, value)]
        do {
            try settings.apply(edit)
            Issue.record("accepted \(key)=\(value)")
        } catch {
            #expect(error.description.contains("\(settingKey.name)="))
            #expect(error.category == .invalidInput)
        }
        #expect(settings.rendered() == "[Exec]\nBoot=yes\n")
    }

    @Test func unknownSettingNamesAreRefused() {
        #expect(throws: NspawnError.self) { try SettingKey(named: "Exec.Bogus") }
        #expect(throws: NspawnError.self) { try SettingKey(named: "boot") }
        #expect((try? SettingKey(named: "Boot")) == .boot)
        #expect((try? SettingKey(named: "Network.Port")) == .port)
    }

    static let listenCases: [(String, String?)] = [
        ("8080", "8080"), ("127.0.0.1:8080", "127.0.0.1:8080"), ("[::1]:443", "[::1]:443"),
        ("0", nil), ("65536", nil), ("localhost:80", nil), ("127.0.0.1", nil), ("1.2.3.4:", nil),
        ("256.1.1.1:80", nil), ("[::1]80", nil), ("01.2.3.4:80", nil), (":80", nil), ("80\n", nil),
    ]

    @Test(arguments: listenCases)
    func listenAddresses(_ text: String, _ expected: String?) {
        #expect((try? ListenAddress(parsing: text))?.description == expected)
    }

    @Test func socketUnitsListTheSameAddressesOnBothSides() throws {
        let activation = try SocketActivation(
            machine: try MachineName("web"),
            addresses: [try ListenAddress(parsing: "127.0.0.1:8080"), try ListenAddress(parsing: "[::1]:8443")],
            handler: .exec(["/usr/bin/printf", "100%% sure"]))
        let host = UnitFileDocument(parsing: activation.hostSocketText())
        let guest = UnitFileDocument(parsing: activation.guestSocketText())
        #expect(host.values("Socket", "ListenStream") == ["127.0.0.1:8080", "[::1]:8443"])
        #expect(guest.values("Socket", "ListenStream") == host.values("Socket", "ListenStream"))
        #expect(guest.value("Socket", "Accept") == "yes")
        #expect(host.value("Install", "WantedBy") == "sockets.target")
        let service = UnitFileDocument(parsing: try #require(try activation.guestServiceText()))
        #expect(service.value("Service", "ExecStart") == #"/usr/bin/printf "100%%%% sure""#)
        #expect(service.value("Service", "StandardInput") == "socket")

        let byUnit = try SocketActivation(machine: try MachineName("web"), addresses: [try ListenAddress(parsing: "80")], handler: .unit("nginx.service"))
        #expect(UnitFileDocument(parsing: byUnit.guestSocketText()).value("Socket", "Service") == "nginx.service")
        #expect(try byUnit.guestServiceText() == nil)
    }

    @Test func exposeRefusesBadHandlersAndDuplicatePorts() throws {
        let name = try MachineName("web")
        let port = try ListenAddress(parsing: "80")
        #expect(throws: NspawnError.self) { try SocketActivation(machine: name, addresses: [], handler: .exec(["/bin/true"])) }
        #expect(throws: NspawnError.self) { try SocketActivation(machine: name, addresses: [port, port], handler: .exec(["/bin/true"])) }
        #expect(throws: NspawnError.self) { try SocketActivation(machine: name, addresses: [port], handler: .exec(["relative"])) }
        #expect(throws: NspawnError.self) { try SocketActivation(machine: name, addresses: [port], handler: .exec(["/bin/echo", "a\nb"])) }
        #expect(throws: NspawnError.self) { try SocketActivation(machine: name, addresses: [port], handler: .unit("nginx")) }
        #expect(throws: NspawnError.self) { try SocketActivation(machine: name, addresses: [port], handler: .unit("a b.service")) }
    }

    @Test func flavorsParseAndRender() throws {
        let flavor = try Flavor.parse("# c\n[Flavor]\nDescription=x\nMemoryMax=512M\nCPUQuota=150%\nTasksMax=64\nIOWeight=10\n", name: "s", origin: "s.flavor")
        #expect(flavor.memoryMax == 512 * 1024 * 1024 && flavor.cpuQuotaPercent == 150 && flavor.tasksMax == 64 && flavor.ioWeight == 10)
        let dropIn = UnitFileDocument(parsing: flavor.dropIn())
        #expect(dropIn.value("Service", "MemoryMax") == "536870912")
        #expect(dropIn.value("Service", "CPUQuota") == "150%")
        #expect(Flavor.name(inDropIn: flavor.dropIn()) == "s")
        #expect(flavor.unitProperties.map(\.0) == ["MemoryMax", "CPUQuotaPerSecUSec", "TasksMax", "IOWeight"])
        #expect(flavor.unitProperties[1].1 == .uint64(1_500_000))
        for bad in ["[Flavor]\nMemoryMax=lots\n", "[Flavor]\nCPUQuota=50\n", "[Flavor]\nIOWeight=0\n", "[Flavor]\nMemoryMaxx=1G\n",
                    "[Service]\nMemoryMax=1G\n", "[Flavor]\nDescription=nothing\n", "[Flavor]\nMemoryMax=99999999999T\n"] {
            #expect(throws: NspawnError.self, "\(bad)") { try Flavor.parse(bad, name: "bad", origin: "bad.flavor") }
        }
    }

    @Test func shippedFlavorsParse() throws {
        let directory = "\(#filePath)".split(separator: "/").dropLast(3).joined(separator: "/")
        let names = Flavor.available(searchDirectories: ["/\(directory)/units/flavors"])
        #expect(names == ["large", "medium", "small", "tiny"])
        for name in names {
            let flavor = try Flavor.load(name, searchDirectories: ["/\(directory)/units/flavors"])
            #expect(flavor.memoryMax != nil && flavor.cpuQuotaPercent != nil && flavor.tasksMax != nil && flavor.ioWeight != nil)
        }
        #expect(throws: NspawnError.self) { try Flavor.load("../etc/passwd", searchDirectories: ["/\(directory)/units/flavors"]) }
    }
}
