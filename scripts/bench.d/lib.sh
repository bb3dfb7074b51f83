# shellcheck shell=bash disable=SC2034  # the settings are for the rows that source this
# The bench's helpers, sourced by scripts/bench.d/run inside the testbed: the settings scripts/bench
# passes in, busybox machines, timing, errors, and the statistics. The shell only records
# timestamps; medians, percentiles, rates and ratios are worked out in awk.

# Settings from scripts/bench's flags (--runs, --machines, --import-runs, --socket-runs).
runs=${BENCH_RUNS:-20}
machines=${BENCH_MACHINES:-50}
import_runs=${BENCH_IMPORT_RUNS:-3}
socket_runs=${BENCH_SOCKET_RUNS:-10}
readonly runs machines import_runs socket_runs
readonly nspawnd_sock=/run/nspawnd/nspawnd.sock

# 0, or 3 once the row printed an error in place of figures (row_error); the row's exit status.
ROW_STATUS=0

# row_error MESSAGE: prints an error where the row's figures would be; the row goes on.
row_error() { echo "error: $*"; ROW_STATUS=3; }
# row_fail MESSAGE: prints an error where the row's figures would be and ends the row.
row_fail() { echo "error: $*"; exit 3; }

# make_root NAME: a busybox machine whose payload sleeps (Boot=no, the host's network).
make_root() {
    local root=/var/lib/machines/$1
    mkdir -p "$root"/bin "$root"/usr "$root"/etc "$root"/proc "$root"/sys "$root"/dev "$root"/run "$root"/tmp
    cp /bin/busybox "$root"/bin/busybox
    ln -sf busybox "$root"/bin/sh; ln -sf busybox "$root"/bin/sleep
    printf 'ID=busybox\nPRETTY_NAME="BusyBox bench"\n' > "$root"/etc/os-release
    mkdir -p /etc/systemd/nspawn
    printf '[Exec]\nBoot=no\nParameters=/bin/sleep 1000000\n[Network]\nVirtualEthernet=no\n' > "/etc/systemd/nspawn/$1.nspawn"
}

# wait_gone NAME: until machined no longer lists the machine.
wait_gone() { while machinectl show "$1" >/dev/null 2>&1; do sleep 0.05; done; }

now() { date +%s%N; }
# record FILE T0 T1: one sample, kept as its two timestamps (ns).
record() { echo "$2 $3" >> "$1"; }
# timed FILE CMD...: runs CMD and records how long it took; CMD's failure ends the row.
timed() {
    local file=$1 t0 t1
    shift
    t0=$(now); "$@"; t1=$(now)
    record "$file" "$t0" "$t1"
}

# An awk function: the ns from timestamp A to B (as now prints them), exact: the seconds and the
# nanoseconds are subtracted apart, since a double cannot hold a 19-digit timestamp to the ns.
readonly awk_elapsed='function elapsed(a, b) {
    return (substr(b, 1, length(b) - 9) - substr(a, 1, length(a) - 9)) * 1e9 + (substr(b, length(b) - 8) - substr(a, length(a) - 8)) }'
# durations FILE: each recorded sample's duration in ns.
durations() { awk "$awk_elapsed"' {printf "%.0f\n", elapsed($1, $2)}' "$1"; }
# median: of the numbers on stdin (no numbers: an error).
median() { sort -n | awk -v OFMT=%.12g '{a[NR] = $1} END {if (NR == 0) exit 1; if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
median_ns() { durations "$1" | median; }
slowest_ns() { durations "$1" | sort -n | tail -1; }
samples() { wc -l < "$1"; }
# percentile P FILE: the value at rank n * P (rounded) of a sorted FILE of n values.
percentile() { awk -v p="$1" -v n="$(wc -l < "$2")" 'NR == int(n * p + 0.5) {print; exit}' "$2"; }
ms() { awk -v ns="$1" 'BEGIN {printf "%.1f", ns / 1e6}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
