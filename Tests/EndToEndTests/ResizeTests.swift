import Foundation
import Testing

/// `status --json` as far as a resize shows in it.
private struct ResizeStatusJSON: Decodable {
    struct Pending: Decodable, Equatable {
        var from: String?
        var to: String
    }
    var flavor: String?
    var pendingResize: Pending?
}

/// Nova's resize: pending until confirmed or reverted, a timer that confirms it with nothing of
/// ours running, and a revert that puts back the drop-in byte for byte and the limits live.
extension EndToEndTests {
    private static func resizeStatus(_ name: String) throws -> ResizeStatusJSON {
        try decodeJSON(ResizeStatusJSON.self, from: try Testbed.nspawnctl("status", name, "--json").stdout)
    }

    private static func limits(_ name: String) throws -> String {
        try Testbed.run(["systemctl", "show", "-p", "MemoryMax,CPUQuotaPerSecUSec,TasksMax,IOWeight", "systemd-nspawn@\(name).service"]).stdout
    }

    private static func resizeFiles(_ name: String) throws -> String {
        try Testbed.sh("""
            cd /etc/systemd/system && ls -d nspawnctl-resize-\(name).* timers.target.wants/nspawnctl-resize-\(name).timer \
                systemd-nspawn@\(name).service.d/*.before-resize 2>/dev/null; true
            """).trimmed
    }

    @Test func aRevertPutsTheOldFlavorBackLiveAndByteForByte() throws {
        let name = "e2e-rs-rev"
        try Fixture.with([name]) {
            try Fixture.busybox(name)
            try Testbed.mustSh("nspawnctl config \(name) --flavor small >/dev/null && nspawnctl start \(name)")
            let dropIn = "/etc/systemd/system/systemd-nspawn@\(name).service.d/50-flavor.conf"
            let originalSum = try Testbed.mustSh("sha256sum \(dropIn)").stdout
            let originalLimits = try Self.limits(name)
            #expect(originalLimits.contains("MemoryMax=536870912"), "\(originalLimits)")

            let resize = try Testbed.nspawnctl("resize", name, "--flavor", "tiny")
            #expect(resize.status == Exit.ok, "\(resize)")
            #expect(resize.stdout.contains("resize pending: small → tiny since "), "\(resize)")
            #expect(try Self.limits(name).contains("MemoryMax=268435456"), "applied live")
            #expect(try Self.resizeStatus(name).pendingResize == .init(from: "small", to: "tiny"))
            #expect(try Testbed.nspawnctl("ls").stdout.contains("\(name): resize pending: small → tiny"))
            #expect(try Testbed.run(["systemctl", "is-active", "nspawnctl-resize-\(name).timer"]).trimmed == "active")

            // While it is pending, nothing else changes the flavor.
            let second = try Testbed.nspawnctl("resize", name, "--flavor", "medium")
            #expect(second.status == Exit.conflict && second.stderr.contains("has a pending resize (small → tiny since"), "\(second)")
            let config = try Testbed.nspawnctl("config", name, "--flavor", "medium")
            #expect(config.status == Exit.conflict, "\(config)")

            // It survives systemd reloading and re-executing itself.
            try Testbed.mustSh("systemctl daemon-reload && systemctl daemon-reexec")
            #expect(try Self.resizeStatus(name).pendingResize == .init(from: "small", to: "tiny"))
            #expect(try Testbed.run(["systemctl", "is-active", "nspawnctl-resize-\(name).timer"]).trimmed == "active")

            let revert = try Testbed.nspawnctl("resize", "--revert", name)
            #expect(revert.status == Exit.ok, "\(revert)")
            #expect(try Testbed.mustSh("sha256sum \(dropIn)").stdout == originalSum)
            #expect(try Self.limits(name) == originalLimits)
            let files = try Self.resizeFiles(name)
            #expect(files.isEmpty, "\(files)")
            #expect(try Self.resizeStatus(name).pendingResize == nil)
            let again = try Testbed.nspawnctl("resize", "--revert", name)
            #expect(again.status == Exit.conflict && again.stderr.contains("machine '\(name)' has no pending resize"), "\(again)")
        }
    }

    @Test func aConfirmKeepsTheNewFlavorAndTheTimerConfirmsWithNothingOfOursRunning() throws {
        let name = "e2e-rs-conf"
        try Fixture.with([name, name + "2"]) {
            try Fixture.busybox(name)
            // No flavor before: the revert target is none.
            #expect(try Testbed.nspawnctl("resize", name, "--flavor", "tiny").status == Exit.ok)
            #expect(try Self.resizeStatus(name).pendingResize == .init(from: nil, to: "tiny"))
            let rename = try Testbed.nspawnctl("rename", name, name + "2")
            #expect(rename.status == Exit.conflict && rename.stderr.contains("pending resize"), "\(rename)")
            let confirm = try Testbed.nspawnctl("resize", "--confirm", name)
            #expect(confirm.status == Exit.ok && confirm.stdout.contains("resize to tiny confirmed"), "\(confirm)")
            #expect(try Self.resizeFiles(name).isEmpty)
            #expect(try Self.resizeStatus(name).flavor == "tiny")

            // The timer's own confirmation, 3 s later, with no nspawnctl or nspawnd running.
            try Testbed.mustSh("systemctl stop nspawnd.service nspawnd.socket")
            defer { _ = try? Testbed.sh("systemctl start nspawnd.socket") }
            #expect(try Testbed.nspawnctl("resize", name, "--flavor", "small", "--confirm-after", "3s").status == Exit.ok)
            let waited = try Testbed.sh("""
                for i in $(seq 1 150); do
                    systemctl -q is-active nspawnctl-resize-\(name).service nspawnctl-resize-\(name).timer || \\
                        [ -e /etc/systemd/system/nspawnctl-resize-\(name).timer ] || break
                    sleep 0.1
                done
                journalctl -u nspawnctl-resize-\(name).service -o cat --no-pager
                """)
            #expect(waited.stdout.contains("\(name): resize to small confirmed"), "the timer's service confirmed it: \(waited)")
            #expect(try Self.resizeFiles(name).isEmpty)
            #expect(try Self.resizeStatus(name).flavor == "small")
            try Testbed.mustSh("systemctl start nspawnd.socket")

            // Through nspawnd, whose event stream shows each step, and confirmed at once with a window of 0.
            try Testbed.mustSh("""
                systemd-run --quiet --collect --unit=e2e-rs-events sh -c \\
                    'exec curl -sN --unix-socket /run/nspawnd/nspawnd.sock http://nspawnd/v1/events > /tmp/e2e-rs-events'
                for i in $(seq 1 50); do grep -q subscribed /tmp/e2e-rs-events 2>/dev/null && exit 0; sleep 0.1; done; exit 1
                """)
            defer { _ = try? Testbed.sh("systemctl stop e2e-rs-events; rm -f /tmp/e2e-rs-events") }
            let api = try Testbed.nspawnctl("resize", "--api", "--json", name, "--flavor", "tiny", "--confirm-after", "1h")
            #expect(api.status == Exit.ok && api.stdout.contains("\"pending\""), "\(api)")
            #expect(try Testbed.nspawnctl("resize", "--api", "--revert", name).status == Exit.ok)
            let events = try Testbed.sh("sleep 0.3; grep '^event: resize' /tmp/e2e-rs-events").stdout
            #expect(events == "event: resize_pending\nevent: resize_reverted\n", "\(events)")
            #expect(try Self.resizeStatus(name).flavor == "small")
            #expect(try Testbed.nspawnctl("resize", name, "--flavor", "tiny", "--confirm-after", "0").status == Exit.ok)
            #expect(try Self.resizeStatus(name).pendingResize == nil)
            #expect(try Self.resizeFiles(name).isEmpty)

            // A machine removed with its resize pending takes the timer with it.
            #expect(try Testbed.nspawnctl("resize", name, "--flavor", "medium").status == Exit.ok)
            #expect(try Testbed.nspawnctl("remove", name).status == Exit.ok)
            let left = try Self.resizeFiles(name)
            #expect(left.isEmpty, "\(left)")
            #expect(try Testbed.sh("ls -d /etc/systemd/system/systemd-nspawn@\(name).service.d 2>/dev/null").trimmed.isEmpty)
        }
    }
}
