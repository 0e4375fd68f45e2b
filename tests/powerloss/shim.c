/*
 * LD_PRELOAD shim for the power-loss test (tests/powerloss.rs).
 *
 * For every file below $MS_SHIM_ROOT it appends to the journal $MS_SHIM_JOURNAL, in the order the process
 * performs them: each write (write, writev, pwrite, pwritev: path, offset, bytes), each truncate, each completed fsync/fdatasync (and each
 * write on an O_SYNC/O_DSYNC descriptor, which is a write followed by a sync), each rename and unlink. The
 * real calls proceed unchanged. After the process is killed, the test replays the journal into the image a
 * power loss could leave: synced writes are on disk; writes after a file's last sync may each be lost, kept,
 * or torn.
 *
 * Journal record: u8 kind, u32 path length, path, u64 a, u64 b, u32 data length, data (little-endian, one
 * write(2) per record under a mutex, so a record is never interleaved with another).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum { K_WRITE = 1, K_TRUNC = 2, K_SYNC = 3, K_RENAME = 4, K_UNLINK = 5 };

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int journal = -1;
static char root[PATH_MAX];
static size_t root_len;

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*real_pwritev64)(int, const struct iovec *, int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off_t);
static int (*real_rename)(const char *, const char *);
static int (*real_unlink)(const char *);

__attribute__((constructor)) static void init(void) {
    real_write = dlsym(RTLD_NEXT, "write");
    real_writev = dlsym(RTLD_NEXT, "writev");
    real_pwrite = dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_pwritev = dlsym(RTLD_NEXT, "pwritev");
    real_pwritev64 = dlsym(RTLD_NEXT, "pwritev64");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_ftruncate = dlsym(RTLD_NEXT, "ftruncate");
    real_ftruncate64 = dlsym(RTLD_NEXT, "ftruncate64");
    real_rename = dlsym(RTLD_NEXT, "rename");
    real_unlink = dlsym(RTLD_NEXT, "unlink");
    const char *r = getenv("MS_SHIM_ROOT");
    const char *j = getenv("MS_SHIM_JOURNAL");
    if (!r || !j) return;
    strncpy(root, r, sizeof root - 1);
    root_len = strlen(root);
    journal = open(j, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

/* The path of fd if it lies below the root (relative to it), else 0. */
static int watched_fd(int fd, char *out) {
    if (journal < 0 || fd == journal) return 0;
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = 0;
    if (strncmp(path, root, root_len) != 0 || path[root_len] != '/') return 0;
    strcpy(out, path + root_len + 1);
    return 1;
}

static int watched_path(const char *p, char *out) {
    if (journal < 0) return 0;
    char path[PATH_MAX];
    if (p[0] == '/') {
        strncpy(path, p, sizeof path - 1);
        path[sizeof path - 1] = 0;
    } else {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof cwd)) return 0;
        snprintf(path, sizeof path, "%s/%s", cwd, p);
    }
    if (strncmp(path, root, root_len) != 0 || path[root_len] != '/') return 0;
    strcpy(out, path + root_len + 1);
    return 1;
}

static void record(uint8_t kind, const char *path, uint64_t a, uint64_t b, const struct iovec *iov, int iovcnt,
                   size_t data_len) {
    uint32_t plen = (uint32_t)strlen(path), dlen = (uint32_t)data_len;
    size_t total = 1 + 4 + plen + 8 + 8 + 4 + data_len;
    char *buf = malloc(total);
    if (!buf) abort();
    char *p = buf;
    *p++ = (char)kind;
    memcpy(p, &plen, 4); p += 4;
    memcpy(p, path, plen); p += plen;
    memcpy(p, &a, 8); p += 8;
    memcpy(p, &b, 8); p += 8;
    memcpy(p, &dlen, 4); p += 4;
    size_t left = data_len;
    for (int i = 0; i < iovcnt && left > 0; i++) {
        size_t n = iov[i].iov_len < left ? iov[i].iov_len : left;
        memcpy(p, iov[i].iov_base, n);
        p += n;
        left -= n;
    }
    pthread_mutex_lock(&lock);
    size_t off = 0;
    while (off < total) {
        ssize_t w = real_write(journal, buf + off, total - off);
        if (w <= 0) abort();
        off += (size_t)w;
    }
    pthread_mutex_unlock(&lock);
    free(buf);
}

static int is_sync_fd(int fd) {
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && (fl & (O_SYNC | O_DSYNC));
}

static void after_write(int fd, const char *path, off_t off, const struct iovec *iov, int iovcnt, ssize_t done) {
    if (done <= 0) return;
    record(K_WRITE, path, (uint64_t)off, 0, iov, iovcnt, (size_t)done);
    if (is_sync_fd(fd)) record(K_SYNC, path, 0, 0, NULL, 0, 0);
}

ssize_t write(int fd, const void *buf, size_t n) {
    char path[PATH_MAX];
    if (!watched_fd(fd, path)) return real_write(fd, buf, n);
    off_t off = lseek(fd, 0, SEEK_CUR);
    ssize_t r = real_write(fd, buf, n);
    struct iovec iov = {(void *)buf, n};
    if (off >= 0) after_write(fd, path, off, &iov, 1, r);
    return r;
}

/* LMDB writes runs of pages with lseek + writev. */
ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    char path[PATH_MAX];
    if (!watched_fd(fd, path)) return real_writev(fd, iov, cnt);
    off_t off = lseek(fd, 0, SEEK_CUR);
    ssize_t r = real_writev(fd, iov, cnt);
    if (off >= 0) after_write(fd, path, off, iov, cnt, r);
    return r;
}

static ssize_t do_pwrite(ssize_t (*f)(int, const void *, size_t, off_t), int fd, const void *buf, size_t n, off_t off) {
    char path[PATH_MAX];
    if (!watched_fd(fd, path)) return f(fd, buf, n, off);
    ssize_t r = f(fd, buf, n, off);
    struct iovec iov = {(void *)buf, n};
    after_write(fd, path, off, &iov, 1, r);
    return r;
}
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) { return do_pwrite(real_pwrite, fd, buf, n, off); }
ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) { return do_pwrite(real_pwrite64, fd, buf, n, off); }

static ssize_t do_pwritev(ssize_t (*f)(int, const struct iovec *, int, off_t), int fd, const struct iovec *iov, int cnt,
                          off_t off) {
    char path[PATH_MAX];
    if (!watched_fd(fd, path)) return f(fd, iov, cnt, off);
    ssize_t r = f(fd, iov, cnt, off);
    after_write(fd, path, off, iov, cnt, r);
    return r;
}
ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) { return do_pwritev(real_pwritev, fd, iov, cnt, off); }
ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off) {
    return do_pwritev(real_pwritev64, fd, iov, cnt, off);
}

static int do_sync(int (*f)(int), int fd) {
    char path[PATH_MAX];
    int watched = watched_fd(fd, path);
    int r = f(fd);
    /* Only a sync that completed makes anything durable. */
    if (watched && r == 0) record(K_SYNC, path, 0, 0, NULL, 0, 0);
    return r;
}
int fsync(int fd) { return do_sync(real_fsync, fd); }
int fdatasync(int fd) { return do_sync(real_fdatasync, fd); }

static int do_truncate(int (*f)(int, off_t), int fd, off_t len) {
    char path[PATH_MAX];
    int watched = watched_fd(fd, path);
    int r = f(fd, len);
    if (watched && r == 0) record(K_TRUNC, path, (uint64_t)len, 0, NULL, 0, 0);
    return r;
}
int ftruncate(int fd, off_t len) { return do_truncate(real_ftruncate, fd, len); }
int ftruncate64(int fd, off_t len) { return do_truncate(real_ftruncate64, fd, len); }

int rename(const char *from, const char *to) {
    char a[PATH_MAX], b[PATH_MAX];
    int wa = watched_path(from, a), wb = watched_path(to, b);
    int r = real_rename(from, to);
    if (r == 0 && wa && wb) {
        /* Two records: the old name, then the new one (as a path with the new name in the data). */
        struct iovec iov = {b, strlen(b)};
        record(K_RENAME, a, 0, 0, &iov, 1, strlen(b));
    }
    return r;
}

int unlink(const char *p) {
    char a[PATH_MAX];
    int w = watched_path(p, a);
    int r = real_unlink(p);
    if (r == 0 && w) record(K_UNLINK, a, 0, 0, NULL, 0, 0);
    return r;
}
