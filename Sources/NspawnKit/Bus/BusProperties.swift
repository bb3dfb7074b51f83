extension MethodCall {
    static let propertiesInterface = "org.freedesktop.DBus.Properties"

    /// Properties.GetAll: every property of `interface` on the object at `path`.
    static func getAllProperties(destination: String, path: String, interface: String) -> MethodCall {
        MethodCall(destination: destination, path: path, interface: propertiesInterface,
                   member: "GetAll", arguments: [.string(interface)])
    }

    /// Properties.Get: one property of `interface` on the object at `path`.
    static func getProperty(_ name: String, destination: String, path: String, interface: String) -> MethodCall {
        MethodCall(destination: destination, path: path, interface: propertiesInterface,
                   member: "Get", arguments: [.string(interface), .string(name)])
    }
}

extension BusConnection {
    /// Every property of `interface` on the object at `path`, by name. A bus failure goes
    /// through the caller's `translate`, which knows the service's error names.
    func allProperties(destination: String, path: String, interface: String,
                       translate: (BusError) -> NspawnError) throws(NspawnError) -> [String: BusValue] {
        let reply: [BusValue]
        do {
            reply = try call(.getAllProperties(destination: destination, path: path, interface: interface))
        } catch {
            throw translate(error)
        }
        guard let dictionary = reply.first?.stringKeyedDictionary else { throw .malformedReply("GetAll \(interface)") }
        return dictionary
    }
}
