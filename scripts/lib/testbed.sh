# shellcheck shell=bash disable=SC2034  # the constants are for the scripts that source this
# What scripts/testbed and scripts/testbed-image share: where the testbed keeps its cached root and
# its instances, logging, and the helpers that unmount and remove trees. Sourced; sets nothing else.
# The sourcing script sets PROG (the name its messages start with) first.

readonly SUITE=bookworm
readonly CACHE_BASE=${NSPAWNCTL_TESTBED_CACHE:-/var/cache/nspawnctl-testbed}
# Per-instance data that must live on a real disk file system (the nested
# containers' /var/lib/machines); /run may be a tmpfs.
readonly DATA_BASE=${NSPAWNCTL_TESTBED_DATA:-/var/tmp/nspawnctl-testbed}
readonly RUN_BASE=/run/nspawnctl-testbed

# Repository root = two levels above this file (scripts/lib/).
REPO_DIR=$(cd -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/../.." && pwd -P)
readonly REPO_DIR

# Paths inside the testbed.
readonly TB_REPO=/nspawnctl          # the repository, read-only
readonly TB_IMAGE=/testbed/image     # the pristine cached root, read-only
readonly TB_SHARE=/testbed/share     # read-write, shared with the host's $DATA_BASE/NAME/share

die() { echo "$PROG: $*" >&2; exit 1; }
info() { echo "$PROG: $*" >&2; }

# Mount points at or below any of the given directories, deepest first.
mounts_under() {
    local d mp
    while read -r _ mp _; do
        mp=$(printf '%b' "${mp//\\/\\0}")   # undo \040-style octal escapes
        for d in "$@"; do
            if [[ $mp == "$d" || $mp == "$d"/* ]]; then echo "$mp"; fi
        done
    done </proc/mounts | sort -ru
}

umount_under() {
    local mp
    # Lazily detach, deepest first; loop as detaching may reveal more.
    for _ in 1 2 3; do
        mp=$(mounts_under "$@")
        [[ -z $mp ]] && return 0
        while read -r mp; do
            umount -l -- "$mp" 2>/dev/null || true
        done <<<"$mp"
    done
    mp=$(mounts_under "$@")
    [[ -z $mp ]] || die "could not unmount: $mp"
}

# Remove a directory tree without ever descending into another mount
# (protects the host if something is still bind-mounted below it).
remove_tree() {
    local d
    for d in "$@"; do
        [[ -e $d ]] || continue
        umount_under "$d"
        # nspawnctl marks plain-directory snapshots immutable (read-only); clear that only when
        # a removal needs it, since chattr -R walks the whole tree.
        rm -rf --one-file-system -- "$d" 2>/dev/null || {
            chattr -R -f -i "$d" 2>/dev/null || true
            rm -rf --one-file-system -- "$d"
        }
    done
}

# ensure_host_tools CMD...: install systemd-container and debootstrap (the
# only packages needed on the host) if any CMD is missing.
ensure_host_tools() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null && continue
        info "'$c' is missing; installing systemd-container and debootstrap"
        # stderr: a caller may be reading a path from stdout.
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y systemd-container debootstrap >&2
        break
    done
    for c in "$@"; do
        command -v "$c" >/dev/null || die "'$c' is still missing"
    done
}

