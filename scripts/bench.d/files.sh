# shellcheck shell=bash
# The file rows: copy-to of a 100 MB tree into a running machine, and snapshot of the Debian root,
# each beside machinectl's own (copy-to, clone), in interleaved rounds, medians.

# copy-to of a 100 MB tree (80 x 1 MiB + 2000 x 10 KiB) into a running busybox machine; machinectl
# copy-to needs it running. Fresh destinations each round, the source warm in the page cache.
row_copy_to() {
    local rounds=9 i tool n m method
    echo "== copy-to of a 100 MB tree ($rounds interleaved runs each, median)"
    rm -rf /var/tmp/bench-tree && mkdir -p /var/tmp/bench-tree/big /var/tmp/bench-tree/small
    for i in $(seq 1 80); do head -c 1048576 /dev/urandom > "/var/tmp/bench-tree/big/$i"; done
    for i in $(seq 1 2000); do head -c 10240 /dev/urandom > "/var/tmp/bench-tree/small/$i"; done
    make_root bench-copy && mkdir -p /var/lib/machines/bench-copy/srv && machinectl start bench-copy
    rm -f /tmp/copy-nspawnctl /tmp/copy-machinectl
    for _ in $(seq 1 $rounds); do
        for tool in nspawnctl machinectl; do
            rm -rf /var/lib/machines/bench-copy/srv/tree; sync
            timed "/tmp/copy-$tool" "$tool" copy-to bench-copy /var/tmp/bench-tree /srv/tree 2>/tmp/copy-out
        done
    done
    n=$(median_ns /tmp/copy-nspawnctl); m=$(median_ns /tmp/copy-machinectl)
    method=$(rm -rf /var/lib/machines/bench-copy/srv/tree; nspawnctl copy-to --json bench-copy /var/tmp/bench-tree /srv/tree | awk -F'"' '/"method"/ {print $4}')
    echo "tree: $(du -sm /var/tmp/bench-tree | cut -f1) MB, $(find /var/tmp/bench-tree -type f | wc -l) files"
    echo "nspawnctl copy-to   $(ms "$n") ms (method $method)"
    echo "machinectl copy-to  $(ms "$m") ms"
    echo "ratio nspawnctl/machinectl: $(ratio "$n" "$m")"
    machinectl terminate bench-copy 2>/dev/null || true
    wait_gone bench-copy
    rm -rf /var/lib/machines/bench-copy /var/tmp/bench-tree
}

# snapshot of the Debian root (a copy of /testbed/image) beside machinectl clone of the same image.
row_snapshot() {
    local rounds=3 i n c
    echo "== snapshot of the Debian root ($rounds interleaved runs each, median)"
    cp -a --reflink=auto /testbed/image /var/lib/machines/bench-snap
    rm -f /tmp/snap-nspawnctl /tmp/snap-clone /tmp/snap-method
    for i in $(seq 1 $rounds); do
        sync; timed /tmp/snap-nspawnctl nspawnctl snapshot --json bench-snap "s$i" > /tmp/snap-out
        awk -F'"' '/"method"/ {print $4; exit}' /tmp/snap-out >> /tmp/snap-method
        nspawnctl snapshot-remove bench-snap "s$i"
        sync; timed /tmp/snap-clone machinectl clone bench-snap bench-snap-clone
        machinectl remove bench-snap-clone
    done
    n=$(median_ns /tmp/snap-nspawnctl); c=$(median_ns /tmp/snap-clone)
    echo "root: $(du -sm /var/lib/machines/bench-snap | cut -f1) MB on $(stat -f -c %T /var/lib/machines)"
    echo "nspawnctl snapshot  $(ms "$n") ms (method $(sort -u /tmp/snap-method | tr '\n' ' '))"
    echo "machinectl clone    $(ms "$c") ms"
    echo "ratio snapshot/clone: $(ratio "$n" "$c")"
    nspawnctl remove bench-snap
}
