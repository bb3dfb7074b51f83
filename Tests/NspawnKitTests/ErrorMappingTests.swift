import Foundation
import Testing
@testable import NspawnKit

@Suite struct ErrorMappingTests {
    @Test func noSuchMachineNamesTheMachine() {
        let error = Machined.translate(
            BusError(name: "org.freedesktop.machine1.NoSuchMachine", message: "No machine 'web' known", errno: 6),
            subject: "web", action: "GetMachine")
        #expect(error == .noSuchMachine("web"))
        #expect(error.category == .notFound)
        #expect(error.description.contains("'web'"))
    }

    @Test(arguments: [
        ("org.freedesktop.machine1.NoSuchImage", NspawnError.Category.notFound),
        ("org.freedesktop.DBus.Error.AccessDenied", .permissionDenied),
        ("org.freedesktop.DBus.Error.InteractiveAuthorizationRequired", .permissionDenied),
        ("System.Error.EEXIST", .conflict),
        ("System.Error.EBUSY", .conflict),
        ("org.freedesktop.DBus.Error.InvalidArgs", .invalidInput),
        ("org.freedesktop.DBus.Error.ServiceUnknown", .failure),
    ])
    func busErrorNamesMapToCategories(_ name: String, _ category: NspawnError.Category) {
        let cause = BusError(name: name, message: "text from the peer", errno: 1)
        let error = Machined.translate(cause, subject: "web", action: "Act")
        #expect(error.category == category)
    }

    @Test func unmappedErrorsKeepTheirBusName() {
        let cause = BusError(name: "org.freedesktop.DBus.Error.ServiceUnknown", message: "not activatable", errno: 2)
        let error = Machined.translate(cause, subject: "web", action: "ListMachines")
        #expect(error.busError?.name == "org.freedesktop.DBus.Error.ServiceUnknown")
        #expect(error.description.contains("org.freedesktop.DBus.Error.ServiceUnknown"))
    }

    @Test func localErrnoFailuresGetSystemErrorNames() {
        #expect(BusError.systemErrorName(2) == "System.Error.ENOENT")
        #expect(BusError.systemErrorName(13) == "System.Error.EACCES")
    }
}

@Suite struct EnablementCandidateTests {
    @Test func findsInstanceLinksInWantsDirectoriesOnly() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("nspawnkit-enable-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let files = FileManager.default
        try files.createDirectory(atPath: root + "/etc/machines.target.wants", withIntermediateDirectories: true)
        try files.createDirectory(atPath: root + "/etc/multi-user.target.requires", withIntermediateDirectories: true)
        try files.createDirectory(atPath: root + "/etc/systemd-nspawn@ignored.service.d", withIntermediateDirectories: true)
        try files.createSymbolicLink(atPath: root + "/etc/machines.target.wants/systemd-nspawn@web.service",
                                     withDestinationPath: "/lib/systemd/system/systemd-nspawn@.service")
        try files.createSymbolicLink(atPath: root + "/etc/multi-user.target.requires/systemd-nspawn@db.service",
                                     withDestinationPath: "/lib/systemd/system/systemd-nspawn@.service")
        try files.createSymbolicLink(atPath: root + "/etc/machines.target.wants/other.service", withDestinationPath: "/dev/null")
        let found = SystemdManager.enablementCandidates(configDirectories: [root + "/etc", root + "/missing"])
        #expect(found == ["web", "db"])
    }
}
