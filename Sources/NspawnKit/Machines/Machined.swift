/// A client for `org.freedesktop.machine1`, the registry of running machines and images.
///
/// Each method maps D-Bus errors onto `NspawnError`, keeping the original error
/// (and its D-Bus name) where no more specific case fits.
package struct Machined {
    package let bus: BusConnection

    package init(bus: BusConnection) { self.bus = bus }

    package static let destination = "org.freedesktop.machine1"
    package static let managerPath = "/org/freedesktop/machine1"
    package static let managerInterface = "org.freedesktop.machine1.Manager"
    package static let machineInterface = "org.freedesktop.machine1.Machine"
    package static let imageInterface = "org.freedesktop.machine1.Image"

    package struct MachineListing: Equatable, Sendable {
        package var name: String
        package var machineClass: String
        package var service: String
        package var path: String
    }

    package struct ImageListing: Equatable, Sendable {
        package var name: String
        package var type: String
        package var readOnly: Bool
        package var created: UInt64
        package var modified: UInt64
        package var usage: UInt64
        package var path: String
    }

    package static func managerCall(_ member: String, _ arguments: [BusValue] = []) -> MethodCall {
        MethodCall(destination: destination, path: managerPath, interface: managerInterface, member: member, arguments: arguments)
    }

    package static func propertiesCall(path: String, interface: String) -> MethodCall {
        .getAllProperties(destination: destination, path: path, interface: interface)
    }

    package func callManager(_ member: String, _ arguments: [BusValue] = [], subject: String,
                     timeout: BusTimeout = .standard) throws(NspawnError) -> [BusValue] {
        do {
            return try bus.call(Self.managerCall(member, arguments), timeout: timeout)
        } catch {
            throw Self.translate(error, subject: subject, action: member)
        }
    }

    // MARK: Listing

    package func listMachines() throws(NspawnError) -> [MachineListing] {
        let reply = try callManager("ListMachines", subject: "machines")
        guard let rows = reply.first?.elements else { throw .malformedReply("ListMachines") }
        return try rows.map { row throws(NspawnError) in
            guard let f = row.elements, f.count == 4,
                  let name = f[0].string, let cls = f[1].string, let service = f[2].string, let path = f[3].string
            else { throw .malformedReply("ListMachines row") }
            return MachineListing(name: name, machineClass: cls, service: service, path: path)
        }
    }

    package func listImages() throws(NspawnError) -> [ImageListing] {
        let reply = try callManager("ListImages", subject: "images")
        guard let rows = reply.first?.elements else { throw .malformedReply("ListImages") }
        return try rows.map { row throws(NspawnError) in
            guard let f = row.elements, f.count == 7,
                  let name = f[0].string, let type = f[1].string, let readOnly = f[2].bool,
                  let created = f[3].uint64, let modified = f[4].uint64, let usage = f[5].uint64, let path = f[6].string
            else { throw .malformedReply("ListImages row") }
            return ImageListing(name: name, type: type, readOnly: readOnly, created: created,
                                modified: modified, usage: usage, path: path)
        }
    }

    // MARK: One machine or image

    package func machinePath(_ name: MachineName) throws(NspawnError) -> String {
        guard let path = try callManager("GetMachine", [.string(name.rawValue)], subject: name.rawValue).first?.string
        else { throw .malformedReply("GetMachine") }
        return path
    }

    /// The machine's object path, or nil when no machine of that name runs.
    package func machinePathIfRunning(_ name: MachineName) throws(NspawnError) -> String? {
        do {
            return try machinePath(name)
        } catch .noSuchMachine {
            return nil
        }
    }

    package func imagePath(_ name: MachineName) throws(NspawnError) -> String {
        guard let path = try callManager("GetImage", [.string(name.rawValue)], subject: name.rawValue).first?.string
        else { throw .malformedReply("GetImage") }
        return path
    }

    /// The image's object path, or nil when there is no image of that name.
    package func imagePathIfExists(_ name: MachineName) throws(NspawnError) -> String? {
        do {
            return try imagePath(name)
        } catch .noSuchImage {
            return nil
        }
    }

    package func imageExists(_ name: MachineName) throws(NspawnError) -> Bool {
        try imagePathIfExists(name) != nil
    }

    /// The running machine's object path and whether an image of that name exists, asked in
    /// one round trip.
    package func machineAndImage(_ name: MachineName) throws(NspawnError) -> (machinePath: String?, imageExists: Bool) {
        let answers: [Result<[BusValue], BusError>]
        do {
            answers = try bus.callAll([Self.managerCall("GetMachine", [.string(name.rawValue)]),
                                       Self.managerCall("GetImage", [.string(name.rawValue)])])
        } catch {
            throw Self.translate(error, subject: name.rawValue, action: "GetMachine")
        }
        func path(_ answer: Result<[BusValue], BusError>, _ member: String) throws(NspawnError) -> String? {
            switch answer {
            case .success(let reply):
                guard let path = reply.first?.string else { throw .malformedReply(member) }
                return path
            case .failure(let error):
                let translated = Self.translate(error, subject: name.rawValue, action: member)
                switch translated {
                case .noSuchMachine, .noSuchImage: return nil
                default: throw translated
                }
            }
        }
        return (try path(answers[0], "GetMachine"), try path(answers[1], "GetImage") != nil)
    }

    /// Every property of the object at `path`. The object can go away between the lookup that
    /// gave `path` and this call (a machine that stops meanwhile): that is `vanished`, not a bus failure.
    package func properties(path: String, interface: String, subject: String,
                            vanished: NspawnError) throws(NspawnError) -> [String: BusValue] {
        try bus.allProperties(destination: Self.destination, path: path, interface: interface) {
            Self.isVanishedObject($0) ? vanished : Self.translate($0, subject: subject, action: "GetAll")
        }
    }

    package func machineProperties(_ name: MachineName, path: String) throws(NspawnError) -> MachineProperties {
        MachineProperties(try properties(path: path, interface: Self.machineInterface, subject: name.rawValue,
                                         vanished: .noSuchMachine(name.rawValue)))
    }

    /// The machine's properties, or nil when it stopped after `path` was looked up.
    package func machinePropertiesIfRunning(_ name: MachineName, path: String) throws(NspawnError) -> MachineProperties? {
        do {
            return try machineProperties(name, path: path)
        } catch .noSuchMachine {
            return nil
        }
    }

    package func imageProperties(_ name: MachineName, path: String) throws(NspawnError) -> ImageProperties {
        ImageProperties(try properties(path: path, interface: Self.imageInterface, subject: name.rawValue,
                                       vanished: .noSuchImage(name.rawValue)))
    }

    /// The image's properties, or nil when it went away after `path` was looked up.
    package func imagePropertiesIfExists(_ name: MachineName, path: String) throws(NspawnError) -> ImageProperties? {
        do {
            return try imageProperties(name, path: path)
        } catch .noSuchImage {
            return nil
        }
    }

    /// sd-bus answers a call on an object path that no longer exists with UnknownObject
    /// (machined removes a machine's object the moment it forgets the machine).
    package static func isVanishedObject(_ error: BusError) -> Bool {
        error.name == "org.freedesktop.DBus.Error.UnknownObject"
    }

    package func machineOSRelease(_ name: MachineName) throws(NspawnError) -> [String: String] {
        let reply = try callManager("GetMachineOSRelease", [.string(name.rawValue)], subject: name.rawValue)
        return Self.osRelease(from: reply)
    }

    package func machineAddresses(_ name: MachineName) throws(NspawnError) -> [String] {
        let reply = try callManager("GetMachineAddresses", [.string(name.rawValue)], subject: name.rawValue)
        return Self.addresses(from: reply)
    }

    // MARK: Actions

    package func terminateMachine(_ name: MachineName) throws(NspawnError) {
        _ = try callManager("TerminateMachine", [.string(name.rawValue)], subject: name.rawValue)
    }

    package func killMachine(_ name: MachineName, whom: KillWhom, signal: UnixSignal) throws(NspawnError) {
        _ = try callManager("KillMachine", [.string(name.rawValue), .string(whom.rawValue), .int32(signal.number)],
                            subject: name.rawValue)
    }

    package func removeImage(_ name: MachineName) throws(NspawnError) {
        _ = try callManager("RemoveImage", [.string(name.rawValue)], subject: name.rawValue, timeout: .none)
    }

    package func renameImage(_ name: MachineName, to newName: MachineName) throws(NspawnError) {
        do {
            _ = try callManager("RenameImage", [.string(name.rawValue), .string(newName.rawValue)], subject: name.rawValue,
                                timeout: .none)
        } catch .alreadyExists {
            throw .alreadyExists(newName.rawValue)
        }
    }

    package func cloneImage(_ name: MachineName, to newName: MachineName, readOnly: Bool) throws(NspawnError) {
        do {
            _ = try callManager("CloneImage", [.string(name.rawValue), .string(newName.rawValue), .bool(readOnly)],
                                subject: name.rawValue, timeout: .none)
        } catch .alreadyExists {
            throw .alreadyExists(newName.rawValue)
        }
    }

    /// A btrfs quota on the image's subvolume; `UInt64.max` removes it.
    package func setImageLimit(_ name: MachineName, bytes: UInt64) throws(NspawnError) {
        _ = try callManager("SetImageLimit", [.string(name.rawValue), .uint64(bytes)], subject: name.rawValue)
    }

    package func markImageReadOnly(_ name: MachineName, _ readOnly: Bool) throws(NspawnError) {
        _ = try callManager("MarkImageReadOnly", [.string(name.rawValue), .bool(readOnly)], subject: name.rawValue)
    }

    // MARK: Decoding helpers shared with pipelined calls

    package static func osRelease(from reply: [BusValue]) -> [String: String] {
        guard let dictionary = reply.first?.stringKeyedDictionary else { return [:] }
        return dictionary.compactMapValues(\.string)
    }

    package static func addresses(from reply: [BusValue]) -> [String] {
        guard let rows = reply.first?.elements else { return [] }
        return rows.compactMap { row in
            guard let fields = row.elements, fields.count == 2,
                  let family = fields[0].int64, let bytes = fields[1].bytes else { return nil }
            return IPAddressFormatter.format(family: Int32(family), bytes: bytes)
        }
    }

    /// Maps a machined error to the project's error, naming `subject`.
    package static func translate(_ error: BusError, subject: String, action: String) -> NspawnError {
        switch error.name {
        case "org.freedesktop.machine1.NoSuchMachine":
            return .noSuchMachine(subject)
        case "org.freedesktop.machine1.NoSuchImage":
            return .noSuchImage(subject)
        case "org.freedesktop.DBus.Error.AccessDenied",
             "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
             "System.Error.EPERM", "System.Error.EACCES":
            return .permissionDenied("\(action) on '\(subject)'", cause: error)
        case "System.Error.EEXIST", "org.freedesktop.DBus.Error.FileExists":
            return .alreadyExists(subject)
        case "System.Error.EBUSY", "System.Error.EROFS":
            return .busy(subject, reason: error.message.isEmpty ? error.name : error.message)
        case "org.freedesktop.DBus.Error.InvalidArgs":
            return .invalidArgument("\(action) on '\(subject)': \(error.message)")
        default:
            return .bus(error, context: "\(action) on '\(subject)'")
        }
    }
}

/// Which processes `KillMachine` signals.
public enum KillWhom: String, Sendable, Codable, CaseIterable {
    case leader
    case all
}

/// The Machine object's properties this project reads.
package struct MachineProperties: Sendable {
    package var state: String?
    package var leader: UInt32?
    package var rootDirectory: String?
    package var unit: String?
    package var machineClass: String?
    package var service: String?
    /// Microseconds since the epoch.
    package var timestamp: UInt64?
    package var networkInterfaces: [Int32]
    /// The machine ID as 32 hex digits; nil when machined does not know it.
    package var id: String?

    package init(_ p: [String: BusValue]) {
        state = p["State"]?.string
        leader = p["Leader"]?.uint64.map { UInt32(truncatingIfNeeded: $0) }
        rootDirectory = p["RootDirectory"]?.string
        unit = p["Unit"]?.string
        machineClass = p["Class"]?.string
        service = p["Service"]?.string
        timestamp = p["Timestamp"]?.uint64
        networkInterfaces = p["NetworkInterfaces"]?.elements?.compactMap { $0.int64.map { Int32(truncatingIfNeeded: $0) } } ?? []
        let idBytes = p["Id"]?.elements?.compactMap { $0.uint64.map { UInt8(truncatingIfNeeded: $0) } } ?? []
        id = idBytes.count == 16 && idBytes.contains { $0 != 0 }
            ? idBytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() : nil
    }
}

/// The Image object's properties this project reads.
package struct ImageProperties: Sendable {
    package var name: String?
    package var path: String?
    package var type: String?
    package var readOnly: Bool?
    package var created: UInt64?
    package var modified: UInt64?
    package var usage: UInt64?
    package var limit: UInt64?

    package init(_ p: [String: BusValue]) {
        name = p["Name"]?.string
        path = p["Path"]?.string
        type = p["Type"]?.string
        readOnly = p["ReadOnly"]?.bool
        created = p["CreationTimestamp"]?.uint64
        modified = p["ModificationTimestamp"]?.uint64
        usage = p["Usage"]?.uint64
        limit = p["Limit"]?.uint64
    }
}
