#ifndef NSPAWNCTL_CLINUX_QUOTA_H
#define NSPAWNCTL_CLINUX_QUOTA_H
/* Project quotas (XFS, ext4) by file descriptor: quotactl_fd has no glibc wrapper, and the
   FS_IOC_FS[GS]ETXATTR ioctls are variadic. Each returns 0, or -1 with errno set. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/quota.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/dqblk_xfs.h>
#include <linux/fs.h>
#include <linux/magic.h>

static const long nspawnctl_xfs_magic = XFS_SUPER_MAGIC;
static const long nspawnctl_ext4_magic = EXT4_SUPER_MAGIC;
static const long nspawnctl_tmpfs_magic = TMPFS_MAGIC;
static const long nspawnctl_overlayfs_magic = OVERLAYFS_SUPER_MAGIC;

/* syncfs is declared only under _GNU_SOURCE; btrfs quota groups count what is committed. */
static inline int nspawnctl_syncfs(int fd) { return (int)syscall(SYS_syncfs, fd); }

/* Whether project quotas are accounted and enforced on the file system of `fd`. */
static inline int nspawnctl_project_quota_state(int fd, int *accounted, int *enforced) {
    struct fs_quota_statv state;
    memset(&state, 0, sizeof state);
    state.qs_version = FS_QSTATV_VERSION1;
    if (syscall(SYS_quotactl_fd, fd, QCMD(Q_XGETQSTATV, PRJQUOTA), 0, &state) != 0) return -1;
    *accounted = (state.qs_flags & FS_QUOTA_PDQ_ACCT) != 0;
    *enforced = (state.qs_flags & FS_QUOTA_PDQ_ENFD) != 0;
    return 0;
}

/* The project of the file or directory `fd`. */
static inline int nspawnctl_get_project(int fd, uint32_t *project) {
    struct fsxattr attributes;
    if (ioctl(fd, FS_IOC_FSGETXATTR, &attributes) != 0) return -1;
    *project = attributes.fsx_projid;
    return 0;
}

/* Puts `fd` in `project`; a directory also passes it to what is created in it. */
static inline int nspawnctl_set_project(int fd, uint32_t project, int isDirectory) {
    struct fsxattr attributes;
    if (ioctl(fd, FS_IOC_FSGETXATTR, &attributes) != 0) return -1;
    attributes.fsx_projid = project;
    if (isDirectory) attributes.fsx_xflags |= FS_XFLAG_PROJINHERIT;
    return ioctl(fd, FS_IOC_FSSETXATTR, &attributes);
}

/* The hard block limit (bytes, 0 = none), the bytes and the inodes in use of `project`. */
static inline int nspawnctl_get_project_quota(int fd, uint32_t project, uint64_t *limit, uint64_t *used, uint64_t *inodes) {
    struct if_dqblk quota;
    memset(&quota, 0, sizeof quota);
    if (syscall(SYS_quotactl_fd, fd, QCMD(Q_GETQUOTA, PRJQUOTA), project, &quota) != 0) return -1;
    *limit = quota.dqb_bhardlimit * 1024;  /* in 1 KiB quota blocks */
    *used = quota.dqb_curspace;
    *inodes = quota.dqb_curinodes;
    return 0;
}

/* Sets the hard and soft block limits of `project` to `limit` bytes (0 = none). */
static inline int nspawnctl_set_project_quota(int fd, uint32_t project, uint64_t limit) {
    struct if_dqblk quota;
    memset(&quota, 0, sizeof quota);
    quota.dqb_bhardlimit = (limit + 1023) / 1024;
    quota.dqb_bsoftlimit = quota.dqb_bhardlimit;
    quota.dqb_valid = QIF_BLIMITS;
    return (int)syscall(SYS_quotactl_fd, fd, QCMD(Q_SETQUOTA, PRJQUOTA), project, &quota);
}
#endif
