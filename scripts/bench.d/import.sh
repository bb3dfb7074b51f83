# shellcheck shell=bash disable=SC2154  # import_runs and the other settings come from lib.sh
# Import of the testbed's Debian root as .tar.gz and .tar.zst: 'nspawnctl import' (with its peak RSS)
# vs 'machinectl import-tar' (gz only: Debian 12's refuses zstd) and 'bsdtar -x' into the same file
# system, in rounds that interleave the tools, so page-cache and writeback drift hits them alike.

import_clean() { rm -rf --one-file-system /var/lib/machines/imp-n /var/lib/machines/imp-m /var/lib/machines/imp-b; sync; }

# import_nspawnctl ARCHIVE FMT: the import, and its peak RSS (the last VmHWM seen before it exits).
import_nspawnctl() {
    local pid hwm=0 v
    nspawnctl import -q imp-n "$1" & pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        v=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true); [ -n "$v" ] && hwm=$v; sleep 0.05
    done
    wait "$pid"
    echo "$hwm" >> "/tmp/peak-$2"
}

# import_with TOOL FMT: one import of the archive by TOOL.
import_with() {
    case $1 in
        nspawnctl) import_nspawnctl "/var/tmp/root.tar.$2" "$2" ;;
        machinectl) machinectl -q import-tar "/var/tmp/root.tar.$2" imp-m ;;
        bsdtar) mkdir /var/lib/machines/imp-b && bsdtar -xpf "/var/tmp/root.tar.$2" -C /var/lib/machines/imp-b ;;
    esac
}

row_import() {
    local fmt tools tool n b m
    echo "== import of a debootstrapped root ($import_runs runs each, median)"
    tar --numeric-owner -C /testbed/image -cf /var/tmp/root.tar .
    gzip -6 -c /var/tmp/root.tar > /var/tmp/root.tar.gz
    zstd -q -T0 -c /var/tmp/root.tar > /var/tmp/root.tar.zst
    echo "root: $(du -sm /testbed/image | cut -f1) MB, $(tar -tf /var/tmp/root.tar | wc -l) entries;" \
         "gz $(du -m /var/tmp/root.tar.gz | cut -f1) MB, zst $(du -m /var/tmp/root.tar.zst | cut -f1) MB"
    rm -f /var/tmp/root.tar
    for fmt in gz zst; do
        tools="nspawnctl bsdtar"; [ $fmt = gz ] && tools="nspawnctl machinectl bsdtar"
        rm -f "/tmp/peak-$fmt" /tmp/times-*-"$fmt"
        for _ in $(seq 1 "$import_runs"); do
            for tool in $tools; do
                import_clean
                timed "/tmp/times-$tool-$fmt" import_with "$tool" "$fmt"
            done
        done
        n=$(median_ns "/tmp/times-nspawnctl-$fmt"); b=$(median_ns "/tmp/times-bsdtar-$fmt")
        echo "$fmt: nspawnctl import $(ms "$n") ms (peak RSS $(sort -n "/tmp/peak-$fmt" | tail -1) kB), bsdtar -x $(ms "$b") ms"
        echo "$fmt: ratio nspawnctl/bsdtar: $(ratio "$n" "$b")"
        if [ $fmt = gz ]; then
            m=$(median_ns /tmp/times-machinectl-gz)
            echo "gz: machinectl import-tar $(ms "$m") ms; ratio nspawnctl/machinectl: $(ratio "$n" "$m")"
        fi
    done
    import_clean
}
