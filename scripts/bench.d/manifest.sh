# shellcheck shell=bash disable=SC2154  # runs and the other settings come from lib.sh
# 'nspawnctl apply' of a 20-machine manifest from scratch (clone, flavor, a setting, a guest file,
# start, a guarded command) vs a shell loop of nspawnctl calls doing the same work (create, copy-to,
# start, exec); then a no-op apply of the same manifest, median of $runs.

# The manifest: 20 busybox machines cloned from bench-mf-base.
bench_manifest() {
    local i
    echo "name: bench"
    echo "machines:"
    for i in $(seq -w 1 20); do
        echo "  bench-mf-$i:"
        echo "    image: { clone: bench-mf-base }"
        echo "    flavor: tiny"
        echo '    settings: { Environment: ["ROLE=bench"] }'
        echo "    state: running"
        printf '%s\n' '    files: [ { path: /etc/motd, content: "hello\n" } ]'
        echo "    run: [ { command: [/bin/touch, /var/ready], creates: /var/ready } ]"
    done
}

# The same work as nspawnctl calls, one machine after another.
manifest_as_calls() {
    local i
    for i in $(seq -w 1 20); do
        nspawnctl create "bench-sh-$i" --image bench-mf-base --flavor tiny --env ROLE=bench >/dev/null
        nspawnctl copy-to "bench-sh-$i" /tmp/bench-mf/motd /etc/motd --replace >/dev/null 2>&1
        nspawnctl start "bench-sh-$i"
        nspawnctl exec "bench-sh-$i" -- /bin/touch /var/ready
    done
}

row_manifest() {
    local a b name
    echo "== manifest apply (20 busybox machines from scratch; no-op apply: median of $runs)"
    make_root bench-mf-base
    ln -sf busybox /var/lib/machines/bench-mf-base/bin/touch
    rm -rf /tmp/bench-mf && mkdir -p /tmp/bench-mf
    printf 'hello\n' > /tmp/bench-mf/motd
    bench_manifest > /tmp/bench-mf/bench.yaml
    timed /tmp/bench-mf/apply nspawnctl apply -f /tmp/bench-mf/bench.yaml >/dev/null
    timed /tmp/bench-mf/calls manifest_as_calls
    a=$(median_ns /tmp/bench-mf/apply); b=$(median_ns /tmp/bench-mf/calls)
    echo "apply of 20 machines $(ms "$a") ms, the same as nspawnctl calls $(ms "$b") ms, ratio $(ratio "$a" "$b") (target <= 1.0)"
    for _ in $(seq 1 "$runs"); do
        timed /tmp/bench-mf/noop nspawnctl apply -f /tmp/bench-mf/bench.yaml >/dev/null
    done
    echo "no-op apply of the same manifest $(ms "$(median_ns /tmp/bench-mf/noop)") ms (target <= 500 ms); it reported $(nspawnctl apply -f /tmp/bench-mf/bench.yaml --json | grep -E '^  "changes" : [0-9]+' | tr -d ' ,')"
    for name in $(machinectl list --no-legend | awk '/^bench-(mf|sh)-/ {print $1}'); do machinectl terminate "$name"; done
    for _ in $(seq 1 100); do machinectl list --no-legend | grep -q '^bench-' || break; sleep 0.1; done
    for name in $(machinectl list-images --no-legend | awk '/^bench-(mf|sh)-/ {print $1}'); do
        machinectl remove "$name"; rm -rf "/etc/systemd/nspawn/$name.nspawn" "/etc/systemd/system/systemd-nspawn@$name.service.d"
    done
    systemctl daemon-reload
}
