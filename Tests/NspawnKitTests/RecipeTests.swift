import Testing
@testable import NspawnKit

@Suite struct RecipeTests {
    @Test func shippedRecipesParseAndVerifyByDefault() throws {
        let names = Recipe.available(searchDirectories: [repositoryRoot + "/images"])
        #expect(names == ["alpine", "archlinux", "ubuntu"])
        for name in names {
            let recipe = try Recipe.load(name, searchDirectories: [repositoryRoot + "/images"])
            #expect(recipe.keyring != nil, "\(name) must verify")
            #expect(recipe.signatureURL != nil || recipe.checksumsURL != nil)
            #expect(recipe.setup.contains(.setHostname) && recipe.setup.contains(.emptyMachineID))
        }
    }

    @Test func archlinuxFillsTheMirrorEverywhere() throws {
        let recipe = try Recipe.load("archlinux", searchDirectories: [repositoryRoot + "/images"])
            .resolved(mirror: "http://127.0.0.1:8080/arch/")
        #expect(recipe.url == "http://127.0.0.1:8080/arch/iso/latest/archlinux-bootstrap-x86_64.tar.zst")
        #expect(recipe.signatureURL == recipe.url + ".sig")
        #expect(recipe.setup.first == .prependLine(path: "/etc/pacman.d/mirrorlist",
                                                    line: "Server = http://127.0.0.1:8080/arch/$repo/os/$arch"))
        #expect(recipe.setup.contains(.run(["pacman-key", "--init"])))
        #expect(recipe.setup.contains(.commentOut(path: "/etc/pacman.conf", key: "CheckSpace")))
        #expect(throws: NspawnError.self) { try recipe.resolved(mirror: "ftp://x") }
    }

    @Test(arguments: [
        ("[Recipe]\nURL=http://x/a.tar\nSignatureURL=http://x/a.sig\n", "needs Keyring"),
        ("[Recipe]\nURL=http://x/a.tar\nKeyrig=/k\n", "unknown key Keyrig"),
        ("[Recipe]\nDescription=x\n", "needs URL"),
        ("[Recipes]\nURL=x\n", "unknown section"),
        ("[Recipe]\nURL=http://x/a.tar\n[Setup]\nRm=-rf /\n", "unknown setup step"),
        ("[Recipe]\nURL=http://x/a.tar\n[Setup]\nCommentOut=relative CheckSpace\n", "absolute path"),
        ("URL=http://x/a.tar\n", "outside a section"),
    ])
    func rejectsBadRecipes(_ text: String, _ message: String) {
        #expect {
            try Recipe.parse(text, name: "t", origin: "t.recipe")
        } throws: { error in
            "\(error)".contains(message) && (error as? NspawnError)?.category == .invalidInput
        }
    }

    @Test func findsTheTarballInAChecksumList() {
        let list = """
            \(String(repeating: "a", count: 64)) *ubuntu-base-24.04.3-base-arm64.tar.gz
            \(String(repeating: "b", count: 64)) *ubuntu-base-24.04.3-base-amd64.tar.gz
            """
        #expect(Recipe.digest(in: list, for: "ubuntu-base-24.04.3-base-amd64.tar.gz") == String(repeating: "b", count: 64))
        #expect(Recipe.digest(in: list, for: "other.tar.gz") == nil)
    }

    @Test func temporaryNamesBelongToExactlyOneImage() {
        #expect(ImageStore.owner(ofTemporary: ".#import.0123abcd.web") == "web")
        #expect(ImageStore.owner(ofTemporary: ".#import.0123abcd.web.old") == "web.old")
        #expect(ImageStore.owner(ofTemporary: ".#replaced.89abcdef.a") == "a")
        #expect(ImageStore.owner(ofTemporary: ".#import.xyz.web") == nil)
        #expect(ImageStore.owner(ofTemporary: ".#web.lck") == nil)
        #expect(ImageStore.owner(ofTemporary: "web") == nil)
    }
}
