# shellcheck shell=bash disable=SC2154  # runs and the other settings come from lib.sh
# The exec round trip on a systemd guest: 'nspawnctl exec NAME -- true' (the leader's namespaces) vs
# 'systemd-run -M NAME --pipe --wait true' (a transient unit of the guest's systemd), in interleaved
# rounds, medians. A tool that does not work here skips the row, never the bench.

# works CMD...: CMD succeeds here; else says the row is skipped.
works() { timeout 30 "$@" </dev/null >/dev/null 2>&1 || { echo "skipped: '$*' does not work here"; return 1; }; }

row_exec() {
    local state a b
    echo "== exec round trip (systemd guest, $runs interleaved runs each, median)"
    cp -a --reflink=auto /testbed/image /var/lib/machines/bench-exec
    machinectl start bench-exec
    # The guest's bus comes up during its boot; systemctl -M fails until it does.
    for _ in $(seq 1 120); do
        state=$(timeout 60 systemctl -M bench-exec is-system-running --wait 2>/dev/null || true)
        case $state in running|degraded) break ;; esac
        sleep 0.5
    done
    if works nspawnctl exec bench-exec -- true && works systemd-run -M bench-exec --pipe --wait -q true; then
        rm -f /tmp/exec-tool /tmp/exec-run
        for _ in $(seq 1 "$runs"); do
            timed /tmp/exec-tool nspawnctl exec bench-exec -- true </dev/null
            timed /tmp/exec-run systemd-run -M bench-exec --pipe --wait -q true </dev/null
        done
        a=$(median_ns /tmp/exec-tool); b=$(median_ns /tmp/exec-run)
        echo "nspawnctl exec NAME true $(ms "$a") ms, systemd-run -M NAME --pipe --wait true $(ms "$b") ms, ratio $(ratio "$a" "$b")"
    fi
    machinectl poweroff bench-exec 2>/dev/null || true
    for _ in $(seq 1 300); do machinectl show bench-exec >/dev/null 2>&1 || break; sleep 0.1; done
    systemctl reset-failed systemd-nspawn@bench-exec.service 2>/dev/null || true
    machinectl remove bench-exec 2>/dev/null || true
}
