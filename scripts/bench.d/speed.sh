# shellcheck shell=bash disable=SC2154  # runs and the other settings come from lib.sh
# Issue 14's table in one run, every row beside its anchor, interleaved rounds, medians: start of
# 100 busybox machines in one call vs systemctl start --no-block x100 until machined lists all, stop
# of the 100 in one call, ls with 100 running vs machinectl list, single start vs machinectl start,
# and nspawnd under 50 clients (5 runs: p99, RSS, curl's own CPU share). scripts/bench --speed-only
# runs the import row after it, for the table's import lines.

readonly speed_n=100 speed_rounds=3

# machined's own list, without machinectl's per-machine questions, so polling costs the anchor little.
speed_listed() {
    busctl call org.freedesktop.machine1 /org/freedesktop/machine1 org.freedesktop.machine1.Manager ListMachines \
        | { grep -o '"sp-[0-9]*" "container"' || true; } | wc -l
}

# Stop all sp-* machines in one call, timed; none may be left.
speed_stop_all() {
    local left
    timed /tmp/sp-stop nspawnctl stop "${speed_names[@]}"
    left=$(speed_listed); [ "$left" = 0 ] || row_fail "$left machines left after stop"
    systemctl reset-failed "${speed_units[@]}" 2>/dev/null || true
}

# Where the CPU goes during a bulk start, in ms: the whole testbed busy and idle (/proc/stat), PID 1,
# dbus-daemon, machined, and the client side (the shell's children); the rest of "busy" is mostly
# the systemd-nspawn processes themselves.
ticks_ms() { if [ -n "${1:-}" ]; then awk '{print ($14 + $15) * 10}' "/proc/$1/stat" 2>/dev/null || echo 0; else echo 0; fi; }
cpu_now() {
    echo "$(awk '/^cpu / {print ($2 + $3 + $4 + $7 + $8) * 10, ($5 + $6) * 10}' /proc/stat)" \
         "$(ticks_ms 1) $(ticks_ms "$(pidof -s dbus-daemon)") $(ticks_ms "$(pidof -s systemd-machined)")"
}

# The anchor of a bulk start: systemctl start --no-block for each unit, until machined lists all.
start_units() {
    local u
    for u in "${speed_units[@]}"; do systemctl start --no-block "$u"; done
    while [ "$(speed_listed)" -lt $speed_n ]; do sleep 0.01; done
}

# speed_start_round WHO: one bulk start by nspawnctl (tool) or the anchor, with its CPU breakdown.
speed_start_round() {
    local who=$1 c0 c1 t0 t1 running
    c0=$(cpu_now)
    t0=$(now)
    if [ "$who" = tool ]; then
        ( nspawnctl start "${speed_names[@]}"; times > /tmp/sp-client-times )
    else
        ( start_units; times > /tmp/sp-client-times )
    fi
    t1=$(now)
    c1=$(cpu_now)
    echo "$c0 $c1 $(tail -1 /tmp/sp-client-times)" | awk -v who="$who" -v t0="$t0" -v t1="$t1" "$awk_elapsed"' {
        client = $11 " " $12; gsub(/[ms]/, " ", client); split(client, c, " ")
        printf "  %s round: %d ms; CPU ms: busy %d, idle %d, of which PID 1 %d, dbus-daemon %d, machined %d, client side %d\n",
            who, elapsed(t0, t1) / 1e6, $6 - $1, $7 - $2, $8 - $3, $9 - $4, $10 - $5, ((c[1] * 60 + c[2]) + (c[3] * 60 + c[4])) * 1000 }'
    running=$(speed_listed); [ "$running" = $speed_n ] || row_fail "$running of $speed_n running after $who start"
    record "/tmp/sp-start-$who" "$t0" "$t1"
    speed_stop_all
}

speed_bulk() {
    local r order who a b
    for r in $(seq 1 $speed_rounds); do
        order="tool anchor"; [ $((r % 2)) = 0 ] && order="anchor tool"
        for who in $order; do speed_start_round "$who"; done
    done
    a=$(median_ns /tmp/sp-start-tool); b=$(median_ns /tmp/sp-start-anchor)
    echo "start $speed_n in one call: nspawnctl start $(ms "$a") ms, systemctl start --no-block x$speed_n until machined lists all $(ms "$b") ms, ratio $(ratio "$a" "$b") (target <= 0.6); runs (ms): $(durations /tmp/sp-start-tool | sort -n | awk '{printf "%.0f ", $1 / 1e6}')/ $(durations /tmp/sp-start-anchor | sort -n | awk '{printf "%.0f ", $1 / 1e6}')"
    echo "stop $speed_n busybox machines in one call: median $(ms "$(median_ns /tmp/sp-stop)") ms, slowest $(ms "$(slowest_ns /tmp/sp-stop)") ms over $(samples /tmp/sp-stop) calls, none left (target < 10 s)"
}

speed_ls() {
    local rows a b
    nspawnctl start "${speed_names[@]}"
    for _ in $(seq 1 "$runs"); do
        timed /tmp/sp-ls-tool nspawnctl ls >/dev/null
        timed /tmp/sp-ls-anchor machinectl list >/dev/null
    done
    rows=$(nspawnctl ls | grep -c '^sp-.*running')
    a=$(median_ns /tmp/sp-ls-tool); b=$(median_ns /tmp/sp-ls-anchor)
    echo "ls with $rows running machines: nspawnctl ls $(ms "$a") ms, machinectl list $(ms "$b") ms, ratio $(ratio "$a" "$b") (target <= 0.25)"
    speed_stop_all
}

speed_single() {
    local tool a b
    for _ in $(seq 1 "$runs"); do
        for tool in nspawnctl machinectl; do
            timed "/tmp/sp-single-$tool" "$tool" start sp-001 >/dev/null
            [ "$(machinectl show sp-001 -p State --value)" = running ] || row_fail "not running after $tool start"
            machinectl terminate sp-001
            while machinectl show sp-001 >/dev/null 2>&1; do sleep 0.02; done
            systemctl reset-failed systemd-nspawn@sp-001.service 2>/dev/null || true
        done
    done
    a=$(median_ns /tmp/sp-single-nspawnctl); b=$(median_ns /tmp/sp-single-machinectl)
    echo "single start until running: nspawnctl start $(ms "$a") ms, machinectl start $(ms "$b") ms, ratio $(ratio "$a" "$b") (target <= 1.0)"
}

# The daemon: 20 running machines, 5 runs of daemon_load.
speed_daemon() {
    local first20=("${speed_names[@]:0:20}") r pid
    nspawnctl start "${first20[@]}"
    systemctl stop nspawnd.service 2>/dev/null || true
    systemctl reset-failed nspawnd.service nspawnd.socket 2>/dev/null || true
    systemctl start nspawnd.socket
    request /v1/machines
    pid=$(systemctl show -p MainPID --value nspawnd.service)
    rm -f /tmp/load-p99
    for r in 1 2 3 4 5; do daemon_load "  run $r: "; done
    printf 'daemon GET /v1/machines, 50 clients, 10000 requests: '
    if [ "$(samples /tmp/load-p99 2>/dev/null || echo 0)" = 5 ]; then
        echo "median p99 $(median < /tmp/load-p99) ms over 5 runs (target < 5 ms); nspawnd RSS $(rss "$pid") (target < 30 MB)"
    else
        row_error "requests failed in some runs (above); no figures"
    fi
    nspawnctl stop "${first20[@]}"
}

row_speed() {
    local i
    speed_names=() speed_units=()
    echo "== speed table ($speed_n busybox machines; start/stop: $speed_rounds interleaved rounds; ls and single start: $runs rounds; medians)"
    for i in $(seq -w 1 $speed_n); do make_root "sp-$i"; speed_names+=("sp-$i"); speed_units+=("systemd-nspawn@sp-$i.service"); done
    rm -f /tmp/sp-*
    speed_bulk
    speed_ls
    speed_single
    speed_daemon
}
