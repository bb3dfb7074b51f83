# shellcheck shell=bash disable=SC2154  # runs and the other settings come from lib.sh
# nspawnd: cold socket activation to the first response, warm requests beside machined's own
# ListMachines over D-Bus (busctl), one process per call, and GET /v1/machines under load.

# request PATH: GET PATH from nspawnd; a refused or failed request ends the row.
request() {
    curl -sf --unix-socket "$nspawnd_sock" -o /dev/null "http://nspawnd$1" || row_fail "GET $1 failed (curl exit $?)"
}

# cpu_ticks PID: the user and system time PID has used so far, in clock ticks (100 a second).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# daemon_load PREFIX: 10,000 GET /v1/machines from 50 parallel transfers of one curl process, whose
# own CPU time is shown since it shares the 2 cores with nspawnd. The same URL each time: nspawnd
# refuses query parameters it does not know, so a [1-10000] range in the URL would time 400s.
# Prints PREFIX and the run's figures, appending its p99 to /tmp/load-p99; or PREFIX and an error
# instead of figures when any request did not get a 200 (the row then exits with 3).
daemon_load() {
    local prefix=$1 pid d0 d1 t0 t1 ok
    pid=$(systemctl show -p MainPID --value nspawnd.service)
    if [ "$pid" = 0 ]; then printf '%s' "$prefix"; row_error "nspawnd is not running"; return 0; fi
    [ -s /tmp/load-urls ] || for _ in $(seq 1 10000); do printf 'url = "http://nspawnd/v1/machines"\noutput = "/dev/null"\n'; done > /tmp/load-urls
    d0=$(cpu_ticks "$pid")
    t0=$(now)
    ( curl -s --no-progress-meter --unix-socket "$nspawnd_sock" --parallel --parallel-immediate --parallel-max 50 \
        -w '%{http_code} %{time_total}\n' -K /tmp/load-urls > /tmp/load-out; times > /tmp/load-times )
    t1=$(now)
    d1=$(cpu_ticks "$pid")
    if [ "$(systemctl show -p MainPID --value nspawnd.service)" != "$pid" ]; then
        printf '%s' "$prefix"; row_error "nspawnd restarted during the load"; return 0
    fi
    ok=$(grep -c '^200 ' /tmp/load-out || true)
    if [ "$ok" != 10000 ]; then
        printf '%s' "$prefix"
        row_error "$ok of 10000 requests got 200 (answers: $(awk '{print $1}' /tmp/load-out | sort | uniq -c | awk '{printf "%s%d x %s", sep, $1, $2; sep = ", "}'))"
        return 0
    fi
    awk '{print $2 * 1000}' /tmp/load-out | sort -n > /tmp/load-lat
    percentile 0.99 /tmp/load-lat >> /tmp/load-p99
    tail -1 /tmp/load-times | awk -v t0="$t0" -v t1="$t1" -v d0="$d0" -v d1="$d1" \
        -v p50="$(percentile 0.50 /tmp/load-lat)" -v p99="$(percentile 0.99 /tmp/load-lat)" -v prefix="$prefix" "$awk_elapsed"' {
        gsub(/[ms]/, " "); curl = ($1 * 60 + $2) + ($3 * 60 + $4); wall = elapsed(t0, t1) / 1e9
        printf "%s10000 of 10000 ok, %.0f requests/s, p50 %s ms, p99 %s ms; CPU over %.3f s: curl %s s, nspawnd %s s (of %.3f s on 2 cores)\n",
            prefix, 10000 / wall, p50, p99, wall, curl, (d1 - d0) / 100, 2 * wall }'
}

# rss PID: "N kB now, N kB peak"
rss() { awk '/VmRSS/ {now = $2} /VmHWM/ {peak = $2} END {printf "%s kB now, %s kB peak", now, peak}' "/proc/$1/status"; }

row_api() {
    local i names=() cold version listing bus
    echo "== nspawnd (socket-activated; $runs runs each for single requests, median)"
    for i in $(seq -w 1 20); do make_root "api-$i"; names+=("api-$i"); done
    machinectl start "${names[@]}"
    echo "running machines: $(machinectl list --no-legend | grep -c '^api-')"
    rm -f /tmp/api-* /tmp/load-p99
    for _ in $(seq 1 "$runs"); do
        systemctl stop nspawnd.service 2>/dev/null
        # Twenty starts in a few seconds would trip systemd's start limit (5 in 10 s) on purpose.
        systemctl reset-failed nspawnd.service nspawnd.socket 2>/dev/null || true
        systemctl start nspawnd.socket
        timed /tmp/api-cold request /v1/version
    done
    for _ in $(seq 1 "$runs"); do timed /tmp/api-warm-version request /v1/version; done
    for _ in $(seq 1 "$runs"); do timed /tmp/api-warm-machines request /v1/machines; done
    for _ in $(seq 1 "$runs"); do
        timed /tmp/api-busctl busctl call org.freedesktop.machine1 /org/freedesktop/machine1 org.freedesktop.machine1.Manager ListMachines >/dev/null
    done
    cold=$(median_ns /tmp/api-cold); version=$(median_ns /tmp/api-warm-version)
    listing=$(median_ns /tmp/api-warm-machines); bus=$(median_ns /tmp/api-busctl)
    echo "cold activation to first response (GET /v1/version): $(ms "$cold") ms"
    echo "warm GET /v1/version (curl):      $(ms "$version") ms"
    echo "warm GET /v1/machines (curl):     $(ms "$listing") ms"
    echo "machined ListMachines (busctl):   $(ms "$bus") ms"
    echo "ratio cold activation / busctl ListMachines: $(ratio "$cold" "$bus")"
    echo "ratio warm GET /v1/machines / busctl ListMachines: $(ratio "$listing" "$bus")"
    daemon_load "GET /v1/machines, 50 concurrent, 10000 requests: "
    echo "nspawnd RSS: $(rss "$(systemctl show -p MainPID --value nspawnd.service)")"
    for i in "${names[@]}"; do machinectl terminate "$i" 2>/dev/null || true; done
}
