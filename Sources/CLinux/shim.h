#ifndef NSPAWNCTL_CLINUX_SHIM_H
#define NSPAWNCTL_CLINUX_SHIM_H
#include <errno.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/fs.h>
#include <linux/openat2.h>
#include <linux/magic.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_addr.h>
#include <malloc.h>
#include <stdio.h>
#include <spawn.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/vfs.h>
#include <sys/xattr.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <sys/wait.h>

/* glibc 2.36 has no openat2 wrapper and syscall(2) is variadic, which Swift cannot call.
   Returns the fd, or -1 with errno set. */
static inline int nspawnctl_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve) {
    struct open_how how = { .flags = flags, .mode = mode, .resolve = resolve };
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

/* Gives the calling thread its own working directory (and umask), so extraction can chdir safely. */
static inline int nspawnctl_unshare_fs(void) { return (int)syscall(SYS_unshare, 0x00000200 /* CLONE_FS */); }

/* GNU extensions the Swift Glibc module does not expose. */
/* glibc 2.34+ declares this only under _GNU_SOURCE. */
extern int posix_spawn_file_actions_addclosefrom_np(posix_spawn_file_actions_t *actions, int from);
/* glibc declares these only for _GNU_SOURCE, and si_pid is a macro. */
static inline int nspawnctl_spawn_chdir(posix_spawn_file_actions_t *actions, const char *path) {
    return posix_spawn_file_actions_addchdir_np(actions, path);
}
/* 1 when the child has exited (left unreaped), 0 while it runs, -1 with errno on error. */
static inline int nspawnctl_child_has_exited(pid_t pid) {
    siginfo_t info = { 0 };
    if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOWAIT | WNOHANG) < 0) return -1;
    return info.si_pid == pid;
}
static inline int nspawnctl_spawn_close_from(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}
/* prctl(2) is variadic. */
static inline int nspawnctl_set_parent_death_signal(int sig) { return prctl(PR_SET_PDEATHSIG, (unsigned long)sig, 0UL, 0UL, 0UL); }
static inline int nspawnctl_pipe_cloexec(int fds[2]) { return (int)syscall(SYS_pipe2, fds, O_CLOEXEC); }
static inline int nspawnctl_memfd_create(const char *name) { return (int)syscall(SYS_memfd_create, name, 1U /* MFD_CLOEXEC */); }
static inline int nspawnctl_renameat2(int olddir, const char *old, int newdir, const char *new, unsigned flags) {
    return (int)syscall(SYS_renameat2, olddir, old, newdir, new, flags);
}
/* Defined here rather than with _GNU_SOURCE, which would change glibc's headers under the other C modules. */
static const int nspawnctl_o_path = 010000000; /* O_PATH */
/* Reading without changing the access time (the owner or CAP_FOWNER only). */
static const int nspawnctl_o_noatime = 01000000; /* O_NOATIME */
/* utimensat: leave this time as it is. */
static const long nspawnctl_utime_omit = UTIME_OMIT;
static const unsigned nspawnctl_rename_noreplace = 1;
static const unsigned nspawnctl_rename_exchange = 2;
static const int nspawnctl_sock_stream_cloexec = SOCK_STREAM | SOCK_CLOEXEC;

static const uint64_t nspawnctl_resolve_in_root = RESOLVE_IN_ROOT;
static const uint64_t nspawnctl_resolve_no_magiclinks = RESOLVE_NO_MAGICLINKS;
/* Tree copies and snapshots: ioctls are variadic, and copy_file_range is declared only under _GNU_SOURCE. */
static inline long nspawnctl_copy_file_range(int in, int out, size_t length) {
    return syscall(SYS_copy_file_range, in, (void *)0, out, (void *)0, length, 0U);
}
static inline long nspawnctl_sendfile(int in, int out, size_t length) {
    return syscall(SYS_sendfile, out, in, (void *)0, length);
}
static inline int nspawnctl_ficlone(int destination, int source) { return ioctl(destination, FICLONE, source); }
static inline int nspawnctl_get_inode_flags(int fd, unsigned *flags) { return ioctl(fd, FS_IOC_GETFLAGS, flags); }
static inline int nspawnctl_set_inode_flags(int fd, unsigned flags) { return ioctl(fd, FS_IOC_SETFLAGS, &flags); }
static const unsigned nspawnctl_fs_immutable_fl = FS_IMMUTABLE_FL;
/* The file system's magic number (statfs f_type), or -1 with errno set. */
static inline long nspawnctl_fs_type(int fd) {
    struct statfs buffer;
    if (fstatfs(fd, &buffer) != 0) return -1;
    return (long)buffer.f_type;
}
static const long nspawnctl_btrfs_magic = BTRFS_SUPER_MAGIC;
/* A snapshot of the subvolume `source` named `name` in the directory `directory`; ENAMETOOLONG past the ioctl's limit. */
static inline int nspawnctl_btrfs_snapshot(int source, int directory, const char *name, int readOnly) {
    struct btrfs_ioctl_vol_args_v2 args;
    memset(&args, 0, sizeof args);
    if (strlen(name) > BTRFS_SUBVOL_NAME_MAX) { errno = ENAMETOOLONG; return -1; }
    args.fd = source;
    args.flags = readOnly ? BTRFS_SUBVOL_RDONLY : 0;
    strncpy(args.name, name, BTRFS_SUBVOL_NAME_MAX);
    return ioctl(directory, BTRFS_IOC_SNAP_CREATE_V2, &args);
}
/* A new, empty subvolume `name` in `directory`. */
static inline int nspawnctl_btrfs_subvolume_create(int directory, const char *name) {
    struct btrfs_ioctl_vol_args args;
    memset(&args, 0, sizeof args);
    if (strlen(name) > BTRFS_PATH_NAME_MAX) { errno = ENAMETOOLONG; return -1; }
    strncpy(args.name, name, BTRFS_PATH_NAME_MAX);
    return ioctl(directory, BTRFS_IOC_SUBVOL_CREATE, &args);
}
/* Deletes the subvolume `name` in `directory`, read-only or not. */
static inline int nspawnctl_btrfs_destroy(int directory, const char *name) {
    struct btrfs_ioctl_vol_args args;
    memset(&args, 0, sizeof args);
    if (strlen(name) > BTRFS_PATH_NAME_MAX) { errno = ENAMETOOLONG; return -1; }
    strncpy(args.name, name, BTRFS_PATH_NAME_MAX);
    return ioctl(directory, BTRFS_IOC_SNAP_DESTROY, &args);
}
static const int nspawnctl_at_empty_path = 0x1000; /* AT_EMPTY_PATH */
static const uint64_t nspawnctl_resolve_beneath = RESOLVE_BENEATH;
static const uint64_t nspawnctl_resolve_no_symlinks = RESOLVE_NO_SYMLINKS;
static const uint64_t nspawnctl_resolve_no_xdev = RESOLVE_NO_XDEV;
/* Machine probes (os-release and addresses without machined's fork). setns is declared only under
   _GNU_SOURCE; a socket belongs to the network namespace of the thread that creates it. */
static inline int nspawnctl_setns(int fd, int nstype) { return (int)syscall(SYS_setns, fd, nstype); }
static inline int nspawnctl_netlink_route_socket(void) {
    return socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
}
/* An unnamed file in a directory (O_TMPFILE): gone with its last descriptor, whatever ends the process. */
static inline int nspawnctl_open_tmpfile(int dirfd) { return openat(dirfd, ".", __O_TMPFILE | __O_DIRECTORY | O_RDWR | O_CLOEXEC, 0600); }

/* Gives an O_TMPFILE file its name in `dirfd`; fails with EEXIST rather than replace. */
static inline int nspawnctl_link_tmpfile(int fd, int dirfd, const char *name) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    return linkat(AT_FDCWD, path, dirfd, name, AT_SYMLINK_FOLLOW);
}
static const uint16_t nspawnctl_nlmsg_error = NLMSG_ERROR;
static const uint16_t nspawnctl_nlmsg_done = NLMSG_DONE;
static const uint16_t nspawnctl_nlm_f_request = NLM_F_REQUEST;
static const uint16_t nspawnctl_nlm_f_dump = NLM_F_DUMP;
static const uint16_t nspawnctl_rtm_newaddr = RTM_NEWADDR;
static const uint16_t nspawnctl_rtm_getaddr = RTM_GETADDR;
static const uint16_t nspawnctl_ifa_address = IFA_ADDRESS;
static const uint16_t nspawnctl_ifa_local = IFA_LOCAL;
static const uint8_t nspawnctl_ifa_f_deprecated = IFA_F_DEPRECATED;
static const uint8_t nspawnctl_rt_scope_host = RT_SCOPE_HOST;
static const uint8_t nspawnctl_rt_scope_nowhere = RT_SCOPE_NOWHERE;
#endif
