# shellcheck shell=bash disable=SC2154  # socket_runs and the other settings come from lib.sh
# Socket activation of a Debian guest booting systemd, and create to running: nspawnctl beside the
# same units written by hand and beside machinectl clone + start.

# sa-tool: a copy of the Debian root exposed with nspawnctl expose on 127.0.0.1:18100.
exposed_guest() {
    if [ -d /var/lib/machines/sa-tool ]; then return 0; fi
    cp -a --reflink=auto /testbed/image /var/lib/machines/sa-tool
    nspawnctl expose sa-tool --listen 127.0.0.1:18100 --exec /bin/echo hello >/dev/null
}

# sa-hand: the same guest, handler and address shape on 127.0.0.1:18101; only who wrote the units differs.
hand_written_guest() {
    local g=/var/lib/machines/sa-hand/etc/systemd/system
    if [ -d /var/lib/machines/sa-hand ]; then return 0; fi
    cp -a --reflink=auto /testbed/image /var/lib/machines/sa-hand
    mkdir -p $g/sockets.target.wants
    printf '[Socket]\nListenStream=127.0.0.1:18101\nAccept=yes\n[Install]\nWantedBy=sockets.target\n' > $g/hello.socket
    printf '[Service]\nExecStart=/bin/echo hello\nStandardInput=socket\nStandardOutput=socket\n' > $g/hello@.service
    ln -sf /etc/systemd/system/hello.socket $g/sockets.target.wants/hello.socket
    printf '[Socket]\nListenStream=127.0.0.1:18101\n[Install]\nWantedBy=sockets.target\n' > /etc/systemd/system/systemd-nspawn@sa-hand.socket
    systemctl daemon-reload
    systemctl enable --now systemd-nspawn@sa-hand.socket 2>/dev/null
}

# reply FILE PORT: the time to the guest's "hello" on PORT; no reply ends the row.
reply() {
    local t0 t1 out
    t0=$(now); out=$(timeout 30 busybox nc 127.0.0.1 "$2" </dev/null || true); t1=$(now)
    [ "$out" = hello ] || row_fail "no reply on port $2 (got '$out')"
    record "$1" "$t0" "$t1"
}

# power_off NAME: the guest down, and its socket listening again.
power_off() {
    machinectl poweroff "$1" 2>/dev/null || true
    wait_gone "$1"
    systemctl reset-failed "systemd-nspawn@$1.service" 2>/dev/null || true
    [ "$(systemctl show -p ActiveState --value "systemd-nspawn@$1.socket")" = active ] || systemctl restart "systemd-nspawn@$1.socket"
}

row_socket() {
    local i order m name port kind t h
    echo "== socket activation: first reply of a systemd guest ($socket_runs runs each, interleaved, median)"
    exposed_guest
    hand_written_guest
    rm -f /tmp/sa-*
    # Rounds alternate which machine goes first, and warm replies are taken once the boot that
    # the cold connection started has settled, so neither side inherits the other's activity.
    for i in $(seq 1 "$socket_runs"); do
        order="tool:18100 hand:18101"; [ $((i % 2)) = 0 ] && order="hand:18101 tool:18100"
        for m in $order; do
            name=sa-${m%%:*}; port=${m##*:}
            power_off "$name"
            reply "/tmp/sa-cold-$name" "$port"
            timeout 20 systemctl -M "$name" is-system-running --wait >/dev/null 2>&1 || true
            for _ in 1 2 3; do reply "/tmp/sa-warm-$name" "$port"; done
        done
    done
    power_off sa-tool; power_off sa-hand
    for kind in cold warm; do
        t=$(median_ns "/tmp/sa-$kind-sa-tool"); h=$(median_ns "/tmp/sa-$kind-sa-hand")
        echo "$kind: nspawnctl expose $(ms "$t") ms, hand-written units $(ms "$h") ms, ratio $(ratio "$t" "$h")"
    done
}

# machinectl clone + start of sa-new, until machined says it runs.
clone_and_start() {
    machinectl clone sa-hand sa-new && machinectl start sa-new
    while [ "$(machinectl show sa-new -p State --value 2>/dev/null)" != running ]; do sleep 0.01; done
}

row_create() {
    local a b
    echo "== create to running (systemd guest, $socket_runs runs each, interleaved, median)"
    hand_written_guest
    rm -f /tmp/sa-create-*
    for _ in $(seq 1 "$socket_runs"); do
        timed /tmp/sa-create-tool nspawnctl create sa-new --image sa-hand --flavor small --start >/dev/null
        [ "$(machinectl show sa-new -p State --value)" = running ] || row_fail "sa-new is not running after create"
        nspawnctl remove --force --timeout 30 sa-new >/dev/null
        timed /tmp/sa-create-hand clone_and_start
        machinectl poweroff sa-new; wait_gone sa-new
        # The unit may still be deactivating and hold the image for a moment after machined lets go.
        while systemctl is-active -q systemd-nspawn@sa-new.service; do sleep 0.05; done
        for _ in 1 2 3 4 5; do machinectl remove sa-new 2>/dev/null && break; sleep 0.2; done
        systemctl reset-failed systemd-nspawn@sa-new.service 2>/dev/null || true
    done
    a=$(median_ns /tmp/sa-create-tool); b=$(median_ns /tmp/sa-create-hand)
    echo "nspawnctl create --start $(ms "$a") ms, machinectl clone + start $(ms "$b") ms, ratio $(ratio "$a" "$b")"
}
