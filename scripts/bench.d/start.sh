# shellcheck shell=bash disable=SC2154  # runs and the other settings come from lib.sh
# start to running of a busybox machine, and ls with N running machines, beside machinectl.

# start to running: both tools return once the start job is done and machined lists the machine.
row_start() {
    local tool a b
    echo "== start to running (busybox payload, $runs runs each, median)"
    make_root bench-start
    for tool in nspawnctl machinectl; do
        rm -f "/tmp/start-$tool"
        for _ in $(seq 1 "$runs"); do
            timed "/tmp/start-$tool" "$tool" start bench-start >/dev/null
            [ "$(machinectl show bench-start -p State --value)" = running ] || row_fail "not running after $tool start"
            machinectl terminate bench-start
            wait_gone bench-start
            # A terminated Boot=no payload leaves the unit failed; clear it so systemd's start limit stays out of the numbers.
            systemctl reset-failed systemd-nspawn@bench-start.service 2>/dev/null || true
        done
    done
    a=$(median_ns /tmp/start-nspawnctl); b=$(median_ns /tmp/start-machinectl)
    echo "nspawnctl start   $(ms "$a") ms"
    echo "machinectl start  $(ms "$b") ms"
    echo "ratio nspawnctl/machinectl: $(ratio "$a" "$b")"
}

# time_runs FILE CMD...: CMD $runs times, output dropped.
time_runs() {
    local file=$1
    shift
    rm -f "$file"
    for _ in $(seq 1 "$runs"); do timed "$file" "$@" >/dev/null; done
}
list_and_images() { machinectl list; machinectl list-images; }

# ls with N running machines: nspawnctl ls vs machinectl list, and machinectl list + list-images
# (nspawnctl shows both in one view).
row_ls() {
    local i names=() rows nl nj ml mb
    echo "== ls with $machines running machines ($runs runs each, median)"
    for i in $(seq -w 1 "$machines"); do make_root "bench-$i"; names+=("bench-$i"); done
    machinectl start "${names[@]}"
    echo "running machines: $(machinectl list --no-legend | grep -c '^bench-')"
    time_runs /tmp/ls-nl nspawnctl ls
    time_runs /tmp/ls-nj nspawnctl ls --json
    time_runs /tmp/ls-ml machinectl list
    time_runs /tmp/ls-mb list_and_images
    nl=$(median_ns /tmp/ls-nl); nj=$(median_ns /tmp/ls-nj); ml=$(median_ns /tmp/ls-ml); mb=$(median_ns /tmp/ls-mb)
    rows=$(nspawnctl ls --json | grep -c '"name"')
    echo "nspawnctl ls                          $(ms "$nl") ms ($rows rows)"
    echo "nspawnctl ls --json                   $(ms "$nj") ms"
    echo "machinectl list                       $(ms "$ml") ms"
    echo "machinectl list + list-images         $(ms "$mb") ms"
    echo "ratio nspawnctl ls / machinectl list: $(ratio "$nl" "$ml")"
    echo "ratio nspawnctl ls / (list + list-images): $(ratio "$nl" "$mb")"
    for i in "${names[@]}"; do machinectl terminate "$i" 2>/dev/null || true; done
}
