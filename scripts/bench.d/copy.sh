# shellcheck shell=bash
# copy-machine of the Debian root through ssh to this testbed itself (its own sshd, ext4): a whole
# copy beside 'machinectl export-tar | ssh machinectl import-tar' (uncompressed, machinectl's
# fastest over a fast link), and copy-machine --refresh after a 1 MiB change against the whole
# copy, in bytes through ssh and in time; interleaved rounds, medians.

# copy_json FILE ARGS...: copy-machine --json ARGS, its bytes_sent appended to FILE.
copy_json() {
    local file=$1
    shift
    nspawnctl copy-machine --json "$@" </dev/null | awk -F': *' '/"bytes_sent"/ {gsub(/[ ,]/, "", $2); print $2}' >> "$file"
}

row_copy() {
    local rounds=3 host=ssh://root@127.0.0.1 w a r bw br
    echo "== copy-machine of the Debian root through ssh to this host ($rounds interleaved runs each, median)"
    ssh_to_self
    cp -a --reflink=auto /testbed/image /var/lib/machines/bench-copy
    rm -f /tmp/copy-whole /tmp/copy-anchor /tmp/copy-refresh /tmp/copy-whole-bytes /tmp/copy-refresh-bytes
    for _ in $(seq 1 $rounds); do
        nspawnctl remove bench-copy-there 2>/dev/null || true
        machinectl remove bench-copy-anchor 2>/dev/null || true
        sync
        timed /tmp/copy-whole copy_json /tmp/copy-whole-bytes bench-copy "$host/bench-copy-there"
        timed /tmp/copy-anchor sh -c 'machinectl -q export-tar bench-copy - | ssh root@127.0.0.1 machinectl -q import-tar - bench-copy-anchor'
        head -c 1M /dev/urandom > /var/lib/machines/bench-copy/srv/bench-megabyte
        sync
        timed /tmp/copy-refresh copy_json /tmp/copy-refresh-bytes --refresh bench-copy "$host/bench-copy-there"
    done
    w=$(median_ns /tmp/copy-whole); a=$(median_ns /tmp/copy-anchor); r=$(median_ns /tmp/copy-refresh)
    bw=$(median < /tmp/copy-whole-bytes); br=$(median < /tmp/copy-refresh-bytes)
    echo "root: $(du -sm /var/lib/machines/bench-copy | cut -f1) MB, $(find /var/lib/machines/bench-copy | wc -l) entries"
    echo "nspawnctl copy-machine (zst)              $(ms "$w") ms, $((bw / 1048576)) MiB through ssh"
    echo "machinectl export-tar | ssh import-tar    $(ms "$a") ms"
    echo "nspawnctl copy-machine --refresh (1 MiB)  $(ms "$r") ms, $((br / 1024)) KiB through ssh"
    echo "ratio copy-machine/machinectl pipe: $(ratio "$w" "$a")"
    echo "ratio refresh/whole copy, time: $(ratio "$r" "$w") ($(awk -v a="$r" -v b="$w" 'BEGIN {printf "%.1f", a * 100 / b}') %)"
    echo "ratio refresh/whole copy, bytes: $(ratio "$br" "$bw") ($(awk -v a="$br" -v b="$bw" 'BEGIN {printf "%.1f", a * 100 / b}') %)"
    nspawnctl remove bench-copy-there
    nspawnctl remove bench-copy
    machinectl remove bench-copy-anchor
}
