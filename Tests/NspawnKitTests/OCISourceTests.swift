import Testing
@testable import NspawnKit

@Suite struct OCISourceTests {
    @Test func skopeosTransportsNameOCISources() {
        #expect(ImageSource("oci:/srv/img:web") == .oci(.layout(path: "/srv/img", reference: "web")))
        #expect(ImageSource("oci:/srv/img") == .oci(.layout(path: "/srv/img", reference: nil)))
        #expect(ImageSource("oci-archive:web.tar:v1:extra") == .oci(.archive(path: "web.tar", reference: "v1:extra")))
        #expect(ImageSource("docker-archive:-") == .oci(.dockerArchive(path: "-")))
        #expect(ImageSource("ocifile.tar") == .file("ocifile.tar"))
        #expect(ImageSource("https://example.org/oci:x") == .url("https://example.org/oci:x"))
        #expect(ImageSource("oci-archive:web.tar:v1").description == "oci-archive:web.tar:v1")
    }

    @Test func onlyArchivesFromStdinReadIt() {
        #expect(ImportJob.file("docker-archive:-", checksum: nil, signature: nil, keyring: nil, force: false).readsStandardInput)
        #expect(ImportJob.file("oci-archive:-", checksum: nil, signature: nil, keyring: nil, force: false).readsStandardInput)
        #expect(!ImportJob.file("oci:-", checksum: nil, signature: nil, keyring: nil, force: false).readsStandardInput)
        #expect(!ImportJob.file("docker-archive:x.tar", checksum: nil, signature: nil, keyring: nil, force: false).readsStandardInput)
    }

    @Test func theConfigBecomesAnExecSection() {
        var info = OCIImageInfo(reference: "oci:/x:web", manifestDigest: "sha256:ab", platform: "linux/amd64", layers: 2)
        info.entrypoint = ["/bin/httpd"]
        info.cmd = ["-f", "-h", "/srv/my www"]
        info.environment = ["A=1", "B=two words", "C=back\\slash"]
        info.workingDirectory = "/srv"
        info.user = "www"
        info.stopSignal = "SIGQUIT"
        let text = info.settingsText()
        #expect(text.contains("\n[Exec]\nBoot=no\nParameters=/bin/httpd -f -h \"/srv/my www\"\nEnvironment=A=1\nEnvironment=\"B=two words\"\n"))
        #expect(text.hasSuffix("WorkingDirectory=/srv\nUser=www\nKillSignal=SIGQUIT\n"))
        #expect(!text.contains("back"), "a value a .nspawn file cannot hold is left out")
        #expect(info.unmapped.count == 1 && info.unmapped[0].hasPrefix("Env C=back"), "\(info.unmapped)")
    }
}
