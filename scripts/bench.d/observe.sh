# shellcheck shell=bash disable=SC2154  # runs and the other settings come from lib.sh
# The observing rows: stats of 100 running machines beside systemd-cgtop, logs beside journalctl,
# and GET /v1/metrics with nspawnd's RSS.

# request PATH: one GET to nspawnd over its socket, the body dropped; a non-2xx fails.
observe_get() { curl -sf -o /dev/null --unix-socket "$nspawnd_sock" "http://nspawnd$1"; }

# log_lines NAME N: N lines in the guest's journal, through its own logger.
log_lines() { systemd-run -M "$1" --wait -q /bin/sh -c "for i in \$(seq 1 $2); do logger -t bench line-\$i; done"; }

row_observe() {
    local i names=() st cg lg jc met rows
    echo "== observing 100 running machines ($runs runs each, median)"
    for i in $(seq -w 1 100); do make_root "obs-$i"; names+=("obs-$i"); done
    machinectl start "${names[@]}"
    rm -rf /var/lib/machines/obs-deb
    cp -a --reflink=auto /testbed/image /var/lib/machines/obs-deb
    machinectl start obs-deb
    for _ in $(seq 1 120); do
        case $(timeout 60 systemctl -M obs-deb is-system-running --wait 2>/dev/null) in running|degraded) break ;; esac
        sleep 0.5
    done
    log_lines obs-deb 300 || row_fail "cannot log in the Debian guest"
    echo "running machines: $(machinectl list --no-legend | grep -c '^obs-')"
    rows=$(nspawnctl stats --json | grep -c '"name"')
    [ "$rows" -ge 100 ] || row_fail "stats showed $rows machines"
    rm -f /tmp/obs-*
    for _ in $(seq 1 "$runs"); do
        timed /tmp/obs-stats nspawnctl stats --json >/dev/null
        timed /tmp/obs-cgtop systemd-cgtop -b -n 1 >/dev/null
    done
    for _ in $(seq 1 "$runs"); do
        timed /tmp/obs-logs nspawnctl logs obs-deb -n 100 >/dev/null
        timed /tmp/obs-journalctl journalctl -M obs-deb -n 100 --no-pager >/dev/null
    done
    observe_get /v1/metrics || row_fail "GET /v1/metrics failed"
    for _ in $(seq 1 "$runs"); do timed /tmp/obs-metrics observe_get /v1/metrics; done
    st=$(median_ns /tmp/obs-stats); cg=$(median_ns /tmp/obs-cgtop)
    lg=$(median_ns /tmp/obs-logs); jc=$(median_ns /tmp/obs-journalctl); met=$(median_ns /tmp/obs-metrics)
    echo "nspawnctl stats --json ($rows machines)   $(ms "$st") ms"
    echo "systemd-cgtop -b -n 1                    $(ms "$cg") ms"
    echo "ratio stats / cgtop: $(ratio "$st" "$cg")"
    echo "nspawnctl logs -n 100                    $(ms "$lg") ms"
    echo "journalctl -M NAME -n 100                $(ms "$jc") ms"
    echo "ratio logs / journalctl: $(ratio "$lg" "$jc")"
    echo "GET /v1/metrics (curl, $rows machines)    $(ms "$met") ms"
    echo "nspawnd RSS after the scrapes: $(awk '/VmRSS/ {now = $2} /VmHWM/ {peak = $2} END {printf "%s kB now, %s kB peak", now, peak}' "/proc/$(systemctl show -p MainPID --value nspawnd.service)/status")"
    for i in "${names[@]}" obs-deb; do machinectl terminate "$i" 2>/dev/null || true; done
}
