# shellcheck shell=bash
# export of the Debian root: 'nspawnctl export' as .tar.zst (with the peak RSS of its processes) and
# as .tar.gz, beside 'machinectl export-tar' as .tar.gz (Debian 12's machinectl has no zstd, and gz
# is the fastest it has), in rounds that interleave the tools; medians.

# export_peak FILE: nspawnctl export of bench-export to FILE, noting the largest VmHWM among
# nspawnctl and its nspawnctl-images child (the one that reads the tree and compresses).
export_peak() {
    local pid hwm=0 v p
    nspawnctl export bench-export "$1" >/dev/null & pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        for p in "$pid" $(pgrep -P "$pid" || true); do
            v=$(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
            [ -n "$v" ] && [ "$v" -gt "$hwm" ] && hwm=$v
        done
        sleep 0.05
    done
    wait "$pid"
    echo "$hwm" >> /tmp/peak-export
}

row_export() {
    local rounds=3 n g m
    echo "== export of the Debian root ($rounds interleaved runs each, median)"
    cp -a --reflink=auto /testbed/image /var/lib/machines/bench-export
    rm -f /tmp/export-zst /tmp/export-gz /tmp/export-machinectl /tmp/peak-export
    for _ in $(seq 1 $rounds); do
        rm -f /var/tmp/bench-export.*; sync
        timed /tmp/export-zst export_peak /var/tmp/bench-export.tar.zst
        mv /var/tmp/bench-export.tar.zst /var/tmp/bench-export.n.tar.zst; sync
        timed /tmp/export-gz nspawnctl export bench-export /var/tmp/bench-export.tar.gz >/dev/null
        mv /var/tmp/bench-export.tar.gz /var/tmp/bench-export.n.tar.gz; sync
        timed /tmp/export-machinectl machinectl -q export-tar bench-export /var/tmp/bench-export.tar.gz
    done
    n=$(median_ns /tmp/export-zst); g=$(median_ns /tmp/export-gz); m=$(median_ns /tmp/export-machinectl)
    echo "root: $(du -sm /var/lib/machines/bench-export | cut -f1) MB; archives: nspawnctl zst $(du -m /var/tmp/bench-export.n.tar.zst | cut -f1) MB," \
         "nspawnctl gz $(du -m /var/tmp/bench-export.n.tar.gz | cut -f1) MB, machinectl gz $(du -m /var/tmp/bench-export.tar.gz | cut -f1) MB"
    echo "nspawnctl export zst      $(ms "$n") ms (peak RSS $(sort -n /tmp/peak-export | tail -1) kB)"
    echo "nspawnctl export gz       $(ms "$g") ms"
    echo "machinectl export-tar gz  $(ms "$m") ms"
    echo "ratio export zst/machinectl gz: $(ratio "$n" "$m")"
    echo "ratio export gz/machinectl gz: $(ratio "$g" "$m")"
    nspawnctl remove bench-export
    rm -f /var/tmp/bench-export.*
}
