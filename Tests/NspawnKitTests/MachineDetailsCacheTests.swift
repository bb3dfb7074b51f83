import Testing
@testable import NspawnKit

@Suite("Machine details cache")
struct MachineDetailsCacheTests {
    @Test func osReleaseOutlivesAddressesAndANewLeaderForgetsBoth() {
        let cache = MachineDetailsCache(addressTTL: .seconds(2), osTTL: .seconds(60))
        let start = ContinuousClock.now
        cache.storeOS("web", leader: 100, "Debian GNU/Linux 12 (bookworm)", now: start)
        cache.storeAddresses("web", leader: 100, ["10.0.0.2"], now: start)
        cache.storeOS("bare", leader: 200, nil, now: start)

        #expect(cache.fresh(now: start + .seconds(1))["web"] == .init(leader: 100, os: .some("Debian GNU/Linux 12 (bookworm)"), addresses: ["10.0.0.2"]))
        // Past the address TTL only os-release is left to reuse.
        #expect(cache.fresh(now: start + .seconds(3))["web"] == .init(leader: 100, os: .some("Debian GNU/Linux 12 (bookworm)"), addresses: nil))
        // A machine without os-release is remembered as such, not asked again.
        #expect(cache.fresh(now: start + .seconds(3))["bare"] == .init(leader: 200, os: .some(nil), addresses: nil))
        #expect(cache.fresh(now: start + .seconds(61))["web"] == nil)

        // Restarted: a new leader drops what was known of the old one.
        cache.storeAddresses("web", leader: 101, ["10.0.0.3"], now: start + .seconds(1))
        #expect(cache.fresh(now: start + .seconds(1))["web"] == .init(leader: 101, os: nil, addresses: ["10.0.0.3"]))

        cache.forget(except: ["bare"])
        #expect(cache.fresh(now: start + .seconds(1))["web"] == nil)
        #expect(cache.fresh(now: start + .seconds(1))["bare"] != nil)
    }
}
