import Testing
@testable import NspawnImages
@testable import NspawnKit

@Suite struct OCILayerTests {
    @Test func whiteoutsAreNamedByTheirLastComponent() {
        #expect(LayerState.Whiteout("etc/.wh.passwd") == .entry(directory: "etc", name: "passwd"))
        #expect(LayerState.Whiteout(".wh.top") == .entry(directory: "", name: "top"))
        #expect(LayerState.Whiteout("data/.wh..wh..opq") == .opaque(directory: "data"))
        #expect(LayerState.Whiteout("etc/passwd") == nil)
        #expect(LayerState.Whiteout(".whatever/file") == nil)
    }

    @Test func digestsAreSHA256InLowercaseHexOnly() throws {
        let hex = String(repeating: "ab", count: 32)
        #expect(try OCIDigest("sha256:\(hex)", source: "s").hex == hex)
        for bad in ["sha512:\(hex)", "sha256:\(hex.uppercased())", "sha256:../../etc", "sha256:\(hex)0", hex] {
            #expect(throws: NspawnError.self, "\(bad)") { try OCIDigest(bad, source: "s") }
        }
    }

    @Test func aPlatformMatchesByOSArchitectureAndAStatedVariant() {
        let arm = OCIPlatform(architecture: "arm64", os: "linux", variant: "v8")
        #expect(arm.matches(OCIPlatform(architecture: "arm64", os: "linux")))
        #expect(!arm.matches(OCIPlatform(architecture: "arm64", os: "linux", variant: "v7")))
        #expect(!arm.matches(OCIPlatform(architecture: "amd64", os: "linux")))
        #expect(!arm.matches(OCIPlatform(architecture: "arm64", os: "windows")))
        #expect(!arm.matches(nil))
    }
}
