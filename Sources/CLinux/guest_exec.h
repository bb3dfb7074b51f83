#ifndef NSPAWNCTL_CLINUX_GUEST_EXEC_H
#define NSPAWNCTL_CLINUX_GUEST_EXEC_H
/* Running a command inside a machine: enter the leader's cgroup, namespaces and root, then
   fork the command so it is inside the PID namespace too. Swift prepares every value before
   the fork; after it only async-signal-safe calls run (raw syscalls, memcpy, strlen). */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

/* CLONE_NEW* without _GNU_SOURCE, which would change glibc's headers under the other C modules. */
static const int nspawnctl_clone_newns = 0x00020000;
static const int nspawnctl_clone_newcgroup = 0x02000000;
static const int nspawnctl_clone_newuts = 0x04000000;
static const int nspawnctl_clone_newipc = 0x08000000;
static const int nspawnctl_clone_newuser = 0x10000000;
static const int nspawnctl_clone_newpid = 0x20000000;
static const int nspawnctl_clone_newnet = 0x40000000;

/* One message on the control socket (SOCK_SEQPACKET) between us and the intermediate child. */
struct nspawnctl_guest_message {
    int32_t kind;
    int32_t a;
    int32_t b;
};

enum {
    NSPAWNCTL_GUEST_PTY = 1,     /* carries the terminal's master side (SCM_RIGHTS) */
    NSPAWNCTL_GUEST_STARTED = 2, /* a = the command's pid, as we see it */
    NSPAWNCTL_GUEST_FAILED = 3,  /* a = stage, b = errno */
    NSPAWNCTL_GUEST_EXITED = 4,  /* a = raw wait status */
    NSPAWNCTL_GUEST_SIGNAL = 5,  /* to the intermediate: send signal a to the command */
};

/* Where starting the command failed. */
enum {
    NSPAWNCTL_STAGE_CGROUP = 1,
    NSPAWNCTL_STAGE_NAMESPACES = 2,
    NSPAWNCTL_STAGE_ROOT = 3,
    NSPAWNCTL_STAGE_TERMINAL = 4,
    NSPAWNCTL_STAGE_PIPE = 5,
    NSPAWNCTL_STAGE_FORK = 6,
    NSPAWNCTL_STAGE_STDIO = 7,
    NSPAWNCTL_STAGE_CAPABILITIES = 8,
    NSPAWNCTL_STAGE_GROUPS = 9,
    NSPAWNCTL_STAGE_GID = 10,
    NSPAWNCTL_STAGE_UID = 11,
    NSPAWNCTL_STAGE_DIRECTORY = 12,
    NSPAWNCTL_STAGE_EXEC = 13,
};

#define NSPAWNCTL_GUEST_MAX_CGROUPS 16
static const int nspawnctl_guest_max_cgroups = NSPAWNCTL_GUEST_MAX_CGROUPS;

struct nspawnctl_guest_spawn {
    int leader_pidfd;
    int namespaces;        /* CLONE_NEW* flags that differ from ours */
    int root_fd;           /* /proc/LEADER/root, a directory */
    const int *cgroup_procs_fds; /* the leader's cgroup.procs in each hierarchy to join, open for writing */
    int cgroup_count;      /* at most NSPAWNCTL_GUEST_MAX_CGROUPS */
    int control_fd;        /* the intermediate's end of the control socket */
    int stdio[3];          /* the command's stdin, stdout, stderr; unused with tty */
    int tty;               /* allocate a terminal inside the machine */
    unsigned short rows, columns;
    uint64_t capability_bounding; /* the leader's CapBnd */
    uint32_t uid, gid;
    const uint32_t *groups;
    int group_count;
    const char *directory;
    int directory_required; /* otherwise fall back to / */
    const char *search_path; /* PATH for a command without '/'; NULL to run file as given */
    const char *file;
    char *const *argv;
    char *const *envp;
};

static inline void nspawnctl_guest_send(int control, int32_t kind, int32_t a, int32_t b, int fd) {
    struct nspawnctl_guest_message message = { kind, a, b };
    struct iovec iov = { &message, sizeof message };
    union { char buffer[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } control_buffer;
    struct msghdr header;
    memset(&header, 0, sizeof header);
    header.msg_iov = &iov;
    header.msg_iovlen = 1;
    if (fd >= 0) {
        memset(&control_buffer, 0, sizeof control_buffer);
        header.msg_control = control_buffer.buffer;
        header.msg_controllen = sizeof control_buffer.buffer;
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&header);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cmsg), &fd, sizeof fd);
    }
    while (sendmsg(control, &header, MSG_NOSIGNAL) < 0 && errno == EINTR) {}
}

/* Receives one message, and a descriptor if one came with it (else *fd = -1).
   Returns the bytes received (0 at end of stream) or -errno. */
static inline int nspawnctl_guest_receive(int control, struct nspawnctl_guest_message *message, int *fd) {
    struct iovec iov = { message, sizeof *message };
    union { char buffer[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } control_buffer;
    struct msghdr header;
    memset(&header, 0, sizeof header);
    header.msg_iov = &iov;
    header.msg_iovlen = 1;
    header.msg_control = control_buffer.buffer;
    header.msg_controllen = sizeof control_buffer.buffer;
    *fd = -1;
    ssize_t n;
    do {
        n = recvmsg(control, &header, 0x40000000 /* MSG_CMSG_CLOEXEC */);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&header); cmsg; cmsg = CMSG_NXTHDR(&header, cmsg)) {
        if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS && cmsg->cmsg_len == CMSG_LEN(sizeof(int))) {
            memcpy(fd, CMSG_DATA(cmsg), sizeof(int));
        }
    }
    return (int)n;
}

/* Closes every descriptor from 3 up except those in keep. */
static inline void nspawnctl_close_all_but(const int *keep, int count) {
    unsigned from = 3;
    for (;;) {
        int next = -1;
        for (int i = 0; i < count; i++) {
            if (keep[i] >= (int)from && (next < 0 || keep[i] < next)) next = keep[i];
        }
        if (next < 0) {
            syscall(SYS_close_range, from, ~0U, 0);
            return;
        }
        if ((unsigned)next > from) syscall(SYS_close_range, from, (unsigned)next - 1, 0);
        from = (unsigned)next + 1;
    }
}

/* execve, searching search_path as execvp would but in the environment given. */
static inline void nspawnctl_guest_execute(const struct nspawnctl_guest_spawn *s) {
    if (!s->search_path) {
        execve(s->file, s->argv, s->envp);
        return;
    }
    char candidate[4096];
    size_t file_length = strlen(s->file);
    int denied = 0;
    const char *entry = s->search_path;
    for (;;) {
        const char *end = entry;
        while (*end && *end != ':') end++;
        size_t length = (size_t)(end - entry);
        if (length == 0) { entry = "."; length = 1; }
        if (length + 1 + file_length + 1 <= sizeof candidate) {
            memcpy(candidate, entry, length);
            candidate[length] = '/';
            memcpy(candidate + length + 1, s->file, file_length + 1);
            execve(candidate, s->argv, s->envp);
            switch (errno) {
            case EACCES: denied = 1; break;
            case ENOENT: case ENOTDIR: case ENODEV: case ETIMEDOUT: case ESTALE: case ELOOP: case ENAMETOOLONG: break;
            default: return;
            }
        }
        if (!*end) break;
        entry = end + 1;
    }
    errno = denied ? EACCES : ENOENT;
}

/* The command's process: inside every namespace, with its own stdio and credentials. */
static inline __attribute__((noreturn)) void nspawnctl_guest_command(
    const struct nspawnctl_guest_spawn *s, int in, int out, int err, int error_fd) {
    int stage = NSPAWNCTL_STAGE_STDIO;
    if (error_fd < 3) {
        int moved = fcntl(error_fd, F_DUPFD_CLOEXEC, 3);
        if (moved < 0) _exit(127);
        error_fd = moved;
    }
    if (s->tty) {
        if (setsid() < 0 || ioctl(in, TIOCSCTTY, 0) < 0) goto fail;
        /* The terminal belongs to whoever logs in on it, as login(1) arranges. */
        (void)fchown(in, s->uid, (gid_t)-1);
    }
    int source[3] = { in, out, err };
    int moved[3];
    for (int i = 0; i < 3; i++) {
        moved[i] = fcntl(source[i], F_DUPFD_CLOEXEC, 3);
        if (moved[i] < 0) goto fail;
    }
    for (int i = 0; i < 3; i++) {
        if (dup2(moved[i], i) < 0) goto fail;
    }
    /* Nothing of ours survives the exec but fds 0-2 (the error pipe is close-on-exec too). */
    syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */);

    stage = NSPAWNCTL_STAGE_CAPABILITIES;
    for (int cap = 0; cap < 64; cap++) {
        if (s->capability_bounding & ((uint64_t)1 << cap)) continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL) goto fail;
    }
    stage = NSPAWNCTL_STAGE_GROUPS;
    if (syscall(SYS_setgroups, (size_t)s->group_count, s->groups) < 0) goto fail;
    stage = NSPAWNCTL_STAGE_GID;
    if (syscall(SYS_setresgid, s->gid, s->gid, s->gid) < 0) goto fail;
    stage = NSPAWNCTL_STAGE_UID;
    if (syscall(SYS_setresuid, s->uid, s->uid, s->uid) < 0) goto fail;
    stage = NSPAWNCTL_STAGE_DIRECTORY;
    if (chdir(s->directory) < 0) {
        if (s->directory_required || chdir("/") < 0) goto fail;
    }
    stage = NSPAWNCTL_STAGE_EXEC;
    nspawnctl_guest_execute(s);
fail:;
    int32_t report[2] = { stage, errno };
    while (write(error_fd, report, sizeof report) < 0 && errno == EINTR) {}
    _exit(127);
}

#define NSPAWNCTL_GUEST_FAIL(stage) do { \
        nspawnctl_guest_send(s->control_fd, NSPAWNCTL_GUEST_FAILED, (stage), errno, -1); \
        _exit(1); \
    } while (0)

/* The intermediate child: joins the machine, starts the command, forwards signals to it and
   reports how it ended. It stays in our PID namespace, so the pids it reports are ours. */
static inline __attribute__((noreturn)) void nspawnctl_guest_intermediate(const struct nspawnctl_guest_spawn *s) {
    struct sigaction defaults;
    memset(&defaults, 0, sizeof defaults);
    defaults.sa_handler = SIG_DFL;
    for (int signal = 1; signal < 65; signal++) (void)sigaction(signal, &defaults, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    int cgroups = s->cgroup_count < NSPAWNCTL_GUEST_MAX_CGROUPS ? s->cgroup_count : NSPAWNCTL_GUEST_MAX_CGROUPS;
    int keep[6 + NSPAWNCTL_GUEST_MAX_CGROUPS] = { s->leader_pidfd, s->root_fd, s->control_fd, s->stdio[0], s->stdio[1], s->stdio[2] };
    for (int i = 0; i < cgroups; i++) keep[6 + i] = s->cgroup_procs_fds[i];
    nspawnctl_close_all_but(keep, 6 + cgroups);

    /* Before the namespaces: the cgroup paths are the ones we see. "0" is the writer. */
    for (int i = 0; i < cgroups; i++) {
        if (write(s->cgroup_procs_fds[i], "0", 1) < 0) NSPAWNCTL_GUEST_FAIL(NSPAWNCTL_STAGE_CGROUP);
        close(s->cgroup_procs_fds[i]);
    }
    if (s->namespaces && syscall(SYS_setns, s->leader_pidfd, s->namespaces) < 0) NSPAWNCTL_GUEST_FAIL(NSPAWNCTL_STAGE_NAMESPACES);
    close(s->leader_pidfd);
    if (fchdir(s->root_fd) < 0 || chroot(".") < 0) NSPAWNCTL_GUEST_FAIL(NSPAWNCTL_STAGE_ROOT);
    close(s->root_fd);

    int in = s->stdio[0], out = s->stdio[1], err = s->stdio[2];
    if (s->tty) {
        /* The machine's own devpts, so the command sees its terminal under /dev/pts. */
        int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (master < 0) NSPAWNCTL_GUEST_FAIL(NSPAWNCTL_STAGE_TERMINAL);
        int unlock = 0;
        if (ioctl(master, TIOCSPTLCK, &unlock) < 0) NSPAWNCTL_GUEST_FAIL(NSPAWNCTL_STAGE_TERMINAL);
        if (s->rows && s->columns) {
            struct winsize size = { s->rows, s->columns, 0, 0 };
            (void)ioctl(master, TIOCSWINSZ, &size);
        }
        int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (slave < 0) NSPAWNCTL_GUEST_FAIL(NSPAWNCTL_STAGE_TERMINAL);
        nspawnctl_guest_send(s->control_fd, NSPAWNCTL_GUEST_PTY, 0, 0, master);
        close(master);
        in = out = err = slave;
    }

    int error_pipe[2];
    if (syscall(SYS_pipe2, error_pipe, O_CLOEXEC) < 0) NSPAWNCTL_GUEST_FAIL(NSPAWNCTL_STAGE_PIPE);
    pid_t child = fork();
    if (child < 0) NSPAWNCTL_GUEST_FAIL(NSPAWNCTL_STAGE_FORK);
    if (child == 0) {
        close(error_pipe[0]);
        nspawnctl_guest_command(s, in, out, err, error_pipe[1]);
    }
    close(error_pipe[1]);
    /* Our copies would keep the command's streams (or its terminal) open after it ends. */
    if (s->tty) {
        close(in);
    } else {
        for (int i = 0; i < 3; i++) close(s->stdio[i]);
    }

    int32_t report[2];
    size_t got = 0;
    while (got < sizeof report) {
        ssize_t n = read(error_pipe[0], (char *)report + got, sizeof report - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(error_pipe[0]);
    int status = 0;
    if (got == sizeof report) {
        while (waitpid(child, &status, 0) < 0 && errno == EINTR) {}
        nspawnctl_guest_send(s->control_fd, NSPAWNCTL_GUEST_FAILED, report[0], report[1], -1);
        _exit(0);
    }
    nspawnctl_guest_send(s->control_fd, NSPAWNCTL_GUEST_STARTED, child, 0, -1);

    int child_fd = (int)syscall(SYS_pidfd_open, child, 0);
    struct pollfd watched[2] = { { child_fd, POLLIN, 0 }, { s->control_fd, POLLIN, 0 } };
    int watching = 2;
    while (child_fd >= 0) {
        if (poll(watched, (nfds_t)watching, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (watched[0].revents) break;
        if (watching == 2 && watched[1].revents) {
            struct nspawnctl_guest_message message;
            ssize_t n = recv(s->control_fd, &message, sizeof message, 0);
            if (n == (ssize_t)sizeof message && message.kind == NSPAWNCTL_GUEST_SIGNAL) {
                (void)kill(child, message.a);
            } else if (n <= 0 && !(n < 0 && errno == EINTR)) {
                /* Our caller went away; the command carries on until it ends. */
                watching = 1;
            }
        }
    }
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {}
    nspawnctl_guest_send(s->control_fd, NSPAWNCTL_GUEST_EXITED, status, 0, -1);
    _exit(0);
}
#undef NSPAWNCTL_GUEST_FAIL

/* Forks the intermediate child. Returns its pid, or -errno. Signals stay blocked across the
   fork so none of our handlers can run in the child before it resets them. */
static inline int nspawnctl_guest_spawn(const struct nspawnctl_guest_spawn *s) {
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    pid_t pid = fork();
    if (pid == 0) nspawnctl_guest_intermediate(s);
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    return pid < 0 ? -saved : pid;
}

static inline int nspawnctl_pidfd_open(int pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

/* A seqpacket socket pair, close-on-exec, for the control channel. */
static inline int nspawnctl_seqpacket_pair(int fds[2]) {
    return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds);
}

static inline int nspawnctl_send_signal_request(int control, int signal) {
    struct nspawnctl_guest_message message = { NSPAWNCTL_GUEST_SIGNAL, signal, 0 };
    ssize_t n;
    do {
        n = send(control, &message, sizeof message, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : 0;
}

/* ioctl is variadic, which Swift cannot call. Both return 0 or -errno. */
static inline int nspawnctl_set_window_size(int fd, unsigned short rows, unsigned short columns) {
    struct winsize size = { rows, columns, 0, 0 };
    return ioctl(fd, TIOCSWINSZ, &size) < 0 ? -errno : 0;
}

static inline int nspawnctl_get_window_size(int fd, unsigned short *rows, unsigned short *columns) {
    struct winsize size;
    if (ioctl(fd, TIOCGWINSZ, &size) < 0) return -errno;
    *rows = size.ws_row;
    *columns = size.ws_col;
    return 0;
}
#endif
