# shellcheck shell=bash disable=SC2154  # runs and the other settings come from lib.sh
# ls through nspawnd and over ssh, with 20 running machines, in interleaved rounds: 'nspawnctl ls --api'
# vs 'nspawnctl ls' (through nspawnd vs the library; target at most 1.1x), and
# 'nspawnctl --host ssh://root@127.0.0.1 ls' vs 'machinectl -H root@127.0.0.1 list' (D-Bus through ssh
# and systemd-stdio-bridge): the testbed's own sshd, same host and user, a new ssh connection for
# every call (no ControlMaster).

# root logs in to the testbed's own sshd (127.0.0.1:22) with a throw-away key; host key checking
# stays on, and every call makes a new connection.
ssh_to_self() {
    systemctl is-active -q ssh.service || row_fail "sshd does not run in the testbed"
    install -d -m 700 /root/.ssh
    [ -s /root/.ssh/id_ed25519 ] || ssh-keygen -q -t ed25519 -N '' -C nspawnctl-bench -f /root/.ssh/id_ed25519
    cat /root/.ssh/id_ed25519.pub > /root/.ssh/authorized_keys
    printf '127.0.0.1 %s\n' "$(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)" > /root/.ssh/known_hosts
    printf 'Host 127.0.0.1\n    ControlMaster no\n    ControlPath none\n' > /root/.ssh/config
}

# lists_rem01 CMD...: CMD works and lists rem-01, before it is timed (this also activates nspawnd).
lists_rem01() {
    local out
    out=$(timeout 60 "$@" </dev/null 2>&1) || row_fail "'$*' failed: $out"
    grep -q rem-01 <<<"$out" || row_fail "'$*' does not list rem-01: $out"
}

row_remote() {
    local i names=() host=ssh://root@127.0.0.1 d a s m
    echo "== ls through nspawnd and over ssh (20 running machines, $runs interleaved runs each, median)"
    for i in $(seq -w 1 20); do make_root "rem-$i"; names+=("rem-$i"); done
    machinectl start "${names[@]}"
    echo "running machines: $(machinectl list --no-legend | grep -c '^rem-')"
    ssh_to_self
    lists_rem01 nspawnctl ls
    lists_rem01 nspawnctl ls --api
    lists_rem01 nspawnctl --host "$host" ls
    lists_rem01 machinectl -H root@127.0.0.1 list
    rm -f /tmp/rem-*
    # Rounds interleave the four commands, so background drift hits them alike.
    for _ in $(seq 1 "$runs"); do
        timed /tmp/rem-direct nspawnctl ls >/dev/null </dev/null
        timed /tmp/rem-api nspawnctl ls --api >/dev/null </dev/null
        timed /tmp/rem-ssh nspawnctl --host "$host" ls >/dev/null </dev/null
        timed /tmp/rem-machinectl machinectl -H root@127.0.0.1 list >/dev/null </dev/null
    done
    d=$(median_ns /tmp/rem-direct); a=$(median_ns /tmp/rem-api); s=$(median_ns /tmp/rem-ssh); m=$(median_ns /tmp/rem-machinectl)
    echo "nspawnctl ls (library)                     $(ms "$d") ms"
    echo "nspawnctl ls --api (nspawnd)               $(ms "$a") ms"
    echo "nspawnctl --host ssh://root@127.0.0.1 ls   $(ms "$s") ms"
    echo "machinectl -H root@127.0.0.1 list          $(ms "$m") ms"
    echo "ratio nspawnctl ls --api / nspawnctl ls: $(ratio "$a" "$d") (target <= 1.10)"
    echo "ratio nspawnctl --host ls / machinectl -H list: $(ratio "$s" "$m")"
    for i in "${names[@]}"; do machinectl terminate "$i" 2>/dev/null || true; done
}
