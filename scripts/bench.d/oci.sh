# shellcheck shell=bash disable=SC2154  # repo, testbed, data and import_runs come from scripts/bench and lib.sh
# The OCI pull row, run on the host by scripts/bench (skopeo and umoci are host tools): a 3-layer
# image of about 120 MB pushed to Debian's docker-registry, served in the testbed's network on
# 127.0.0.1:5000, then in interleaved rounds 'nspawnctl import NAME docker://…' inside the testbed
# (with its peak RSS) vs what a user does by hand today, 'skopeo copy docker://… oci:DIR' and
# 'umoci raw unpack' into the same file system; and a re-pull of the unchanged digest.

# oci_in_testbed CMD...: CMD inside the testbed.
oci_in_testbed() { "$repo/scripts/testbed" exec --name "$testbed" -- "$@"; }

# oci_image DIR: the image, built with umoci from host directories, one layer each.
oci_image() {
    local dir=$1 part
    umoci init --layout "$dir/layout" && umoci new --image "$dir/layout:big"
    for part in /usr/share/locale /usr/share/doc /usr/sbin; do
        rm -rf "$dir/bundle"
        umoci unpack --image "$dir/layout:big" "$dir/bundle" >/dev/null
        mkdir -p "$dir/bundle/rootfs$part"
        cp -a "$part/." "$dir/bundle/rootfs$part/"
        umoci repack --image "$dir/layout:big" "$dir/bundle" >/dev/null
    done
    rm -rf "$dir/bundle"
}

row_oci() {
    local share=$data/share/bench-oci machines=$data/machines pid ref t0 t1 nn nu rss
    echo "== OCI pull from a registry ($import_runs runs each, interleaved, median)"
    rm -rf "$share" && mkdir -p "$share"
    oci_image "$share" || { echo "error: umoci could not build the image"; return 3; }
    cp /usr/bin/docker-registry "$share/"
    printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: /testbed/share/bench-oci/storage\nhttp:\n  addr: 127.0.0.1:5000\n' >"$share/registry.yml"
    oci_in_testbed systemd-run --quiet --collect --unit=bench-registry /testbed/share/bench-oci/docker-registry serve /testbed/share/bench-oci/registry.yml
    oci_in_testbed sh -c 'mkdir -p /etc/nspawnctl/registries && printf "[Registry]\nPlainHTTP=yes\n" >/etc/nspawnctl/registries/127.0.0.1:5000.conf'
    pid=$("$repo/scripts/testbed" status "$testbed" | sed -n 's/.*systemd PID \([0-9]*\).*/\1/p')
    ref=docker://127.0.0.1:5000/bench/big:latest
    for _ in $(seq 1 100); do nsenter -t "$pid" -n -- bash -c 'exec 3<>/dev/tcp/127.0.0.1/5000' 2>/dev/null && break; sleep 0.1; done
    nsenter -t "$pid" -n -- skopeo copy --quiet --dest-tls-verify=false "oci:$share/layout:big" "$ref"
    echo "image: $(du -sm "$share/layout/blobs" | cut -f1) MB compressed in 3 layers, $(du -sm --apparent-size /usr/share/locale /usr/share/doc /usr/sbin | awk '{s += $1} END {print s}') MB unpacked"
    rm -f /tmp/bench-oci-*
    for _ in $(seq 1 "$import_runs"); do
        oci_in_testbed nspawnctl remove bench-oci >/dev/null 2>&1 || true
        rm -rf "$share/pulled" "$machines/bench-umoci"; sync
        t0=$(now)
        rss=$(oci_in_testbed python3 -c 'import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if r.returncode == 0 else "failed")' nspawnctl import -q bench-oci "$ref")
        t1=$(now)
        [ "$rss" != failed ] || { echo "error: nspawnctl import failed"; return 3; }
        record /tmp/bench-oci-nspawnctl "$t0" "$t1"; echo "$rss" >> /tmp/bench-oci-rss
        sync
        t0=$(now)
        nsenter -t "$pid" -n -- skopeo copy --quiet --src-tls-verify=false "$ref" "oci:$share/pulled:big"
        umoci raw unpack --image "$share/pulled:big" "$machines/bench-umoci" >/dev/null 2>&1
        t1=$(now)
        record /tmp/bench-oci-manual "$t0" "$t1"
        t0=$(now); oci_in_testbed nspawnctl import -q --force bench-oci "$ref"; t1=$(now)
        record /tmp/bench-oci-repull "$t0" "$t1"
    done
    nn=$(median_ns /tmp/bench-oci-nspawnctl); nu=$(median_ns /tmp/bench-oci-manual)
    printf '%-44s %9s ms\n' "nspawnctl import docker://…" "$(ms "$nn")"
    printf '%-44s %9s ms\n' "skopeo copy + umoci raw unpack" "$(ms "$nu")"
    printf '%-44s %9s    (target <= 0.5)\n' "ratio nspawnctl / by hand" "$(awk -v a="$nn" -v b="$nu" 'BEGIN {printf "%.2f", a / b}')"
    printf '%-44s %9s ms (target <= 200)\n' "re-pull, digest unchanged" "$(ms "$(median_ns /tmp/bench-oci-repull)")"
    printf '%-44s %9s MB (target < 64; the helper, the largest process)\n' "peak RSS of the import" "$(sort -n /tmp/bench-oci-rss | tail -1 | awk '{printf "%.1f", $1 / 1024}')"
    oci_in_testbed nspawnctl remove bench-oci >/dev/null 2>&1 || true
    oci_in_testbed systemctl stop bench-registry
    rm -rf "$share" "$machines/bench-umoci" /tmp/bench-oci-*
}
