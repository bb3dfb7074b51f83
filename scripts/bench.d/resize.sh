# shellcheck shell=bash
# The resize row: on a running busybox machine, `nspawnctl resize` (pending), `resize --confirm`
# and `resize --revert` beside `systemctl set-property --runtime` of the same limits (the anchor:
# what a hand-made resize does), in interleaved rounds, medians.

row_resize() {
    local rounds=15 unit=systemd-nspawn@bench-resize.service r s c v
    echo "== resize of a running machine ($rounds interleaved rounds, median)"
    make_root bench-resize
    nspawnctl config bench-resize --flavor tiny >/dev/null
    nspawnctl start bench-resize
    rm -f /tmp/resize-pending /tmp/resize-confirm /tmp/resize-revert /tmp/resize-setprop
    for _ in $(seq 1 "$rounds"); do
        timed /tmp/resize-pending nspawnctl resize bench-resize --flavor small >/dev/null
        timed /tmp/resize-revert nspawnctl resize --revert bench-resize >/dev/null
        timed /tmp/resize-setprop systemctl set-property --runtime "$unit" MemoryMax=512M CPUQuota=50% TasksMax=512 IOWeight=100
        timed /tmp/resize-pending nspawnctl resize bench-resize --flavor small >/dev/null
        timed /tmp/resize-confirm nspawnctl resize --confirm bench-resize >/dev/null
        timed /tmp/resize-setprop systemctl set-property --runtime "$unit" MemoryMax=256M CPUQuota=25% TasksMax=256 IOWeight=50
        nspawnctl config bench-resize --flavor tiny >/dev/null
    done
    r=$(median_ns /tmp/resize-pending); c=$(median_ns /tmp/resize-confirm); v=$(median_ns /tmp/resize-revert)
    s=$(median_ns /tmp/resize-setprop)
    echo "nspawnctl resize (pending)      $(ms "$r") ms"
    echo "nspawnctl resize --confirm      $(ms "$c") ms"
    echo "nspawnctl resize --revert       $(ms "$v") ms"
    echo "systemctl set-property --runtime $(ms "$s") ms"
    echo "ratio resize/set-property: $(ratio "$r" "$s"), confirm/set-property: $(ratio "$c" "$s"), revert/set-property: $(ratio "$v" "$s")"
    nspawnctl remove --force bench-resize >/dev/null
}
