#ifndef NSPAWNCTL_CLINUX_SHIM_H
#define NSPAWNCTL_CLINUX_SHIM_H
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <malloc.h>
#include <spawn.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

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
static inline int nspawnctl_spawn_close_from(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}
static inline int nspawnctl_pipe_cloexec(int fds[2]) { return (int)syscall(SYS_pipe2, fds, O_CLOEXEC); }
static inline int nspawnctl_memfd_create(const char *name) { return (int)syscall(SYS_memfd_create, name, 1U /* MFD_CLOEXEC */); }
static inline int nspawnctl_renameat2(int olddir, const char *old, int newdir, const char *new, unsigned flags) {
    return (int)syscall(SYS_renameat2, olddir, old, newdir, new, flags);
}
/* Defined here rather than with _GNU_SOURCE, which would change glibc's headers under the other C modules. */
static const int nspawnctl_o_path = 010000000; /* O_PATH */
static const unsigned nspawnctl_rename_noreplace = 1;
static const unsigned nspawnctl_rename_exchange = 2;
static const int nspawnctl_sock_stream_cloexec = SOCK_STREAM | SOCK_CLOEXEC;

static const uint64_t nspawnctl_resolve_in_root = RESOLVE_IN_ROOT;
static const uint64_t nspawnctl_resolve_no_magiclinks = RESOLVE_NO_MAGICLINKS;
#endif
