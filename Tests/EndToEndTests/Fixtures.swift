import Foundation
import Testing

/// Container roots built inside the testbed for one test, and removed after it.
///
/// Set-up and clean-up use machinectl and systemctl, never nspawnctl, so a bug in
/// nspawnctl cannot hide behind its own fixtures.
enum Fixture {
    /// A busybox-static root whose payload is a long `sleep` that ignores SIGTERM
    /// (it is PID 1 of its namespace with no handler), so stopping it needs escalation.
    static func busybox(_ name: String) throws {
        try Testbed.mustSh("""
            set -e
            root=/var/lib/machines/\(name)
            mkdir -p "$root"/bin "$root"/usr/bin "$root"/etc "$root"/proc "$root"/sys "$root"/dev "$root"/run "$root"/tmp "$root"/var
            cp /bin/busybox "$root"/bin/busybox
            for tool in sh sleep cat ls; do ln -sf busybox "$root"/bin/$tool; done
            printf 'ID=busybox\\nNAME=BusyBox\\nPRETTY_NAME="BusyBox sleeper"\\n' > "$root"/etc/os-release
            mkdir -p /etc/systemd/nspawn
            printf '[Exec]\\nBoot=no\\nParameters=/bin/sleep 1000000\\n' > /etc/systemd/nspawn/\(name).nspawn
            """)
    }

    /// A busybox root with `touch`, `true` and accounts, so files can be owned by someone other than root.
    static func busyboxWithAccounts(_ name: String) throws {
        try busybox(name)
        try Testbed.mustSh("""
            root=/var/lib/machines/\(name)
            for tool in touch true; do ln -sf busybox "$root"/bin/$tool; done
            printf 'root:x:0:0:root:/root:/bin/sh\\nnobody:x:65534:65534:nobody:/:/bin/sh\\n' > "$root"/etc/passwd
            printf 'root:x:0:\\nnogroup:x:65534:\\n' > "$root"/etc/group
            """)
    }

    /// A Debian root that boots systemd: a copy of the testbed's own pristine root.
    static func systemdRoot(_ name: String) throws {
        try Testbed.mustSh("/nspawnctl/Tests/Fixtures/systemd-guest \(name)")
    }

    /// Removes machines and everything set up for them, whatever state a test left them in.
    static func remove(_ names: [String]) {
        for name in names {
            _ = try? Testbed.sh("""
                # A stop also ends a restart policy's loop, which would start it again under the remove.
                systemctl stop systemd-nspawn@\(name).service >/dev/null 2>&1
                if [ -e /etc/systemd/system/systemd-nspawn@\(name).socket ] || [ -e /etc/systemd/system/systemd-nspawn@\(name).service.d ]; then
                    systemctl stop systemd-nspawn@\(name).socket >/dev/null 2>&1
                    systemctl disable systemd-nspawn@\(name).socket >/dev/null 2>&1
                    rm -rf /etc/systemd/system/systemd-nspawn@\(name).socket /etc/systemd/system/systemd-nspawn@\(name).service.d \
                        /run/systemd/system.control/systemd-nspawn@\(name).service.d
                    systemctl daemon-reload
                fi
                if [ -e /etc/systemd/system/nspawnctl-resize-\(name).timer ]; then
                    systemctl disable --now nspawnctl-resize-\(name).timer >/dev/null 2>&1
                    rm -f /etc/systemd/system/nspawnctl-resize-\(name).timer /etc/systemd/system/nspawnctl-resize-\(name).service
                    systemctl daemon-reload
                fi
                if [ -e /etc/systemd/system/nspawnctl-health-\(name).timer ]; then
                    systemctl stop nspawnctl-health-\(name).timer >/dev/null 2>&1
                    rm -f /etc/systemd/system/nspawnctl-health-\(name).timer /etc/systemd/system/nspawnctl-health-\(name).service
                    systemctl daemon-reload
                    systemctl reset-failed nspawnctl-health-\(name).service >/dev/null 2>&1
                fi
                rm -f /run/nspawnctl/health/\(name).json
                if [ -e /etc/systemd/system/nspawnctl-snapshots-\(name).timer ] || [ -e /etc/systemd/system/nspawnctl-snapshots-\(name).service ]; then
                    systemctl disable --now nspawnctl-snapshots-\(name).timer >/dev/null 2>&1
                    rm -f /etc/systemd/system/nspawnctl-snapshots-\(name).timer /etc/systemd/system/nspawnctl-snapshots-\(name).service
                    systemctl daemon-reload
                    systemctl reset-failed nspawnctl-snapshots-\(name).service >/dev/null 2>&1
                fi
                machinectl terminate \(name) 2>/dev/null
                for i in $(seq 1 100); do machinectl show \(name) >/dev/null 2>&1 || break; sleep 0.1; done
                systemctl disable systemd-nspawn@\(name).service >/dev/null 2>&1
                systemctl reset-failed systemd-nspawn@\(name).service >/dev/null 2>&1
                machinectl read-only \(name) no >/dev/null 2>&1
                machinectl remove \(name) >/dev/null 2>&1
                rm -rf /var/lib/machines/\(name) /etc/systemd/nspawn/\(name).nspawn
                true
                """)
        }
    }

    /// Runs `body` with fixtures named after the test, removing them afterwards even on failure.
    static func with(_ names: [String], _ body: () throws -> Void) throws {
        remove(names)
        defer { remove(names) }
        try body()
    }

    static func machinedState(_ name: String) throws -> String? {
        let result = try Testbed.run(["machinectl", "show", name, "-p", "State", "--value"])
        return result.status == 0 ? result.trimmed : nil
    }

    static func imageNames() throws -> [String] {
        try Testbed.run(["machinectl", "list-images", "--no-legend", "--no-pager"]).stdout
            .split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }.sorted()
    }
}
