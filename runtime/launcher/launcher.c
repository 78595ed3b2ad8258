/* The llmpack launcher: the first bytes of every llmpack executable.
 *
 * The file is [launcher][weights][runtime pack][manifest][footer]. PyInstaller's one-file mode unpacked
 * its runtime into a new /tmp folder at every start and ran it as a child; this launcher unpacks the
 * runtime pack once into a per-user cache keyed by its sha256, then exec()s it: one process, nothing in
 * /tmp, and a start that reads a few hundred bytes of the file. Where the cache cannot be written or
 * executed from, it unpacks into a temporary folder for that run and stays as a parent that removes it.
 *
 * The layout is written by the bundler (bundler/ side); the footer and pack formats are described there
 * and in tests/support/launcher_files.py, which builds them for the tests. C99 + POSIX, Linux and macOS
 * (launcher_windows.c is the Windows port); zlib for crc32 and inflate. The format's checks and SHA-256
 * (ours: no libcrypto on every machine) are in launcher_format.h, shared by both. */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>
#include "launcher_format.h"
#ifdef __APPLE__
#include <mach-o/dyld.h>
#endif

#define PATH_BUF 4096
#define PROGRAM "llmpack-runtime"
#define BLOCK (256 * 1024)

/* ---- messages and small helpers ------------------------------------------------------------------- */

static char self_path[PATH_BUF]; /* our own file, resolved: LLMPACK_BUNDLE */
static int verbose;

static void die(const char *format, ...) {
    va_list args;
    va_start(args, format);
    fputs("error: ", stderr);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    exit(1);
}

static void die_damaged(const char *reason) {
    /* The runtime's own wording (runtime/messages.py CORRUPT_BUNDLE), so a user sees one kind of line. */
    die("%s is damaged: %s; download or build it again", self_path, reason);
}

/* A path that does not fit is refused rather than cut: a cut path would name another folder. */
static void path_format(char *out, const char *format, ...) {
    va_list args;
    int n;
    va_start(args, format);
    n = vsnprintf(out, PATH_BUF, format, args);
    va_end(args);
    if (n < 0 || n >= PATH_BUF) die("path too long: %.200s...", out);
}


/* Reads n bytes at offset; returns how many it read (fewer at the end of the file), -1 on error. */
static ssize_t pread_full(int fd, void *buf, size_t n, uint64_t offset) {
    size_t done = 0;
    while (done < n) {
        ssize_t got = pread(fd, (char *)buf + done, n - done, (off_t)(offset + done));
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return -1;
        if (got == 0) break;
        done += (size_t)got;
    }
    return (ssize_t)done;
}

static int write_full(int fd, const void *buf, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t put = write(fd, (const char *)buf + done, n - done);
        if (put < 0 && errno == EINTR) continue;
        if (put < 0) return -1;
        done += (size_t)put;
    }
    return 0;
}

static void die_unreadable(void) { die("cannot read %s: %s", self_path, strerror(errno)); }

/* ---- the footer and the pack's head: every start ---------------------------------------------------- */

struct bundle {
    int fd;
    struct bundle_range range;
};

static void read_head(struct bundle *b) {
    unsigned char f[FOOTER_SIZE], head[128];
    struct stat st;
    uint64_t size;
    size_t want;
    ssize_t got;
    const char *reason;

    if (fstat(b->fd, &st) != 0) die_unreadable();
    size = (uint64_t)st.st_size;
    got = size < FOOTER_SIZE ? 0 : pread_full(b->fd, f, FOOTER_SIZE, size - FOOTER_SIZE);
    if (got < 0) die_unreadable();
    if ((reason = check_footer(f, (size_t)got, size, &b->range)) != NULL) die_damaged(reason);
    /* The pack's header and its first entry's header, which names the program, in one read. */
    want = b->range.runtime_length < sizeof head ? (size_t)b->range.runtime_length : sizeof head;
    got = pread_full(b->fd, head, want, b->range.runtime_offset);
    if (got < 0) die_unreadable();
    if ((size_t)got != want) die_damaged("truncated: the runtime archive ends early");
    if ((reason = check_pack_head(head, want, PROGRAM, &b->range.program_size)) != NULL) die_damaged(reason);
}

/* ---- removing folders ------------------------------------------------------------------------------ */

/* rm -rf without following symbolic links: a link in the pack may point anywhere inside it. */
static void remove_at(int parent, const char *name) {
    struct stat st;
    if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
        struct dirent *entry;
        if (dir == NULL) {
            if (fd >= 0) close(fd);
        } else {
            while ((entry = readdir(dir)) != NULL)
                if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0)
                    remove_at(fd, entry->d_name);
            closedir(dir);
        }
        unlinkat(parent, name, AT_REMOVEDIR);
    } else {
        unlinkat(parent, name, 0);
    }
}

static void remove_tree(const char *path) { remove_at(AT_FDCWD, path); }

/* Removes the folders named <prefix>[<key>-]<pid>-* in dir whose pid is dead: what a launcher killed
 * mid-unpack (or, in the temporary folder, a fallback parent killed with -9) left behind. */
static void remove_stale(const char *dir, const char *prefix, int has_key) {
    DIR *d = opendir(dir);
    struct dirent *entry;
    size_t prefix_length = strlen(prefix);
    if (d == NULL) return;
    while ((entry = readdir(d)) != NULL) {
        const char *p = entry->d_name;
        char *end;
        long pid;
        if (strncmp(p, prefix, prefix_length) != 0) continue;
        p += prefix_length;
        if (has_key && (p = strchr(p, '-')) == NULL) continue;
        if (has_key) p++;
        pid = strtol(p, &end, 10);
        if (end == p || *end != '-' || pid <= 0 || (pid_t)pid == getpid()) continue;
        if (kill((pid_t)pid, 0) == -1 && errno == ESRCH) remove_at(dirfd(d), entry->d_name);
    }
    closedir(d);
}

/* ---- unpacking ------------------------------------------------------------------------------------- */

enum { UNPACK_OK, UNPACK_DAMAGED, UNPACK_UNREADABLE, UNPACK_UNWRITABLE };
static const char *damage; /* the reason, with UNPACK_DAMAGED */
static int write_errno;    /* the error, with UNPACK_UNWRITABLE */

static int damaged(const char *reason) {
    damage = reason;
    return UNPACK_DAMAGED;
}

/* Inside a fresh staging folder, "exists" or "not a folder" can only come from the pack itself (two
 * entries on one path, a file under a file); anything else is the disk's (full, read-only, quota). */
static int write_failed(void) {
    if (errno == EEXIST || errno == ENOTDIR || errno == EISDIR || errno == ELOOP) return damaged("runtime archive damaged (bad entry)");
    write_errno = errno;
    return UNPACK_UNWRITABLE;
}

/* The pack, read in blocks from its start to its end, every byte hashed once as it is read. */
struct reader {
    int fd;
    uint64_t position, end;
    unsigned char buffer[BLOCK];
    size_t length, at;
    sha256_ctx sha;
};

static int reader_fill(struct reader *r) {
    size_t want;
    ssize_t got;
    if (r->at < r->length) return UNPACK_OK;
    if (r->position == r->end) return damaged("runtime archive damaged (bad entry)");
    want = r->end - r->position < BLOCK ? (size_t)(r->end - r->position) : BLOCK;
    got = pread_full(r->fd, r->buffer, want, r->position);
    if (got < 0) return UNPACK_UNREADABLE;
    if ((size_t)got != want) return damaged("truncated: the runtime archive ends early");
    sha256_update(&r->sha, r->buffer, want);
    r->position += want;
    r->length = want;
    r->at = 0;
    return UNPACK_OK;
}

/* Up to max bytes in place: *data points into the buffer. */
static int reader_chunk(struct reader *r, uint64_t max, const unsigned char **data, size_t *n) {
    int status = reader_fill(r);
    if (status != UNPACK_OK) return status;
    *data = r->buffer + r->at;
    *n = r->length - r->at < max ? r->length - r->at : (size_t)max;
    r->at += *n;
    return UNPACK_OK;
}

static int reader_read(struct reader *r, void *out, size_t n) {
    while (n > 0) {
        const unsigned char *data;
        size_t got;
        int status = reader_chunk(r, n, &data, &got);
        if (status != UNPACK_OK) return status;
        memcpy(out, data, got);
        out = (char *)out + got;
        n -= got;
    }
    return UNPACK_OK;
}

/* A link's target, resolved from the link's own folder without the disk, never climbs above the root. */
static int link_stays_inside(const char *path, const char *target) {
    long depth = 0;
    const char *p;
    for (p = path; *p; p++) depth += *p == '/';
    if (target[0] == '/') return 0;
    for (p = target; *p;) {
        const char *slash = strchr(p, '/');
        size_t part = slash ? (size_t)(slash - p) : strlen(p);
        if (part == 2 && p[0] == '.' && p[1] == '.') {
            if (--depth < 0) return 0;
        } else if (part != 0 && !(part == 1 && p[0] == '.')) {
            depth++;
        }
        p += part + (slash != NULL);
    }
    return 1;
}

/* mkdir -p of the entry's parents inside the staging folder; an existing parent must be a real folder,
 * so that no entry is ever written through a link. */
static int make_parents(int root, char *path) {
    char *slash;
    for (slash = strchr(path, '/'); slash; slash = strchr(slash + 1, '/')) {
        struct stat st;
        *slash = '\0';
        if (mkdirat(root, path, 0755) != 0) {
            if (errno != EEXIST) {
                *slash = '/';
                return write_failed();
            }
            if (fstatat(root, path, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode)) {
                *slash = '/';
                return damaged("runtime archive damaged (bad entry)");
            }
        }
        *slash = '/';
    }
    return UNPACK_OK;
}

static unsigned char inflated[BLOCK];

static int write_content(int out, const unsigned char *data, size_t n, sha256_ctx *sha) {
    sha256_update(sha, data, n);
    if (write_full(out, data, n) != 0) return write_failed();
    return UNPACK_OK;
}

/* Streams `stored` bytes of the pack into out, inflating them when compressed; the uncompressed bytes
 * must be exactly `size` long and hash to `expected`. */
static int copy_file(struct reader *r, int out, int compressed, uint64_t size, uint64_t stored,
                     const unsigned char expected[32]) {
    sha256_ctx sha;
    unsigned char digest[32];
    uint64_t written = 0;
    int status = UNPACK_OK;
    sha256_init(&sha);
    if (!compressed) {
        if (stored != size) return damaged("runtime archive damaged (bad entry)");
        while (stored > 0 && status == UNPACK_OK) {
            const unsigned char *data;
            size_t n;
            status = reader_chunk(r, stored, &data, &n);
            if (status == UNPACK_OK) status = write_content(out, data, n, &sha);
            stored -= n;
        }
        written = size;
    } else {
        z_stream z;
        int z_status = Z_OK;
        memset(&z, 0, sizeof z);
        if (inflateInit(&z) != Z_OK) return damaged("runtime archive damaged (bad compressed data)");
        while (stored > 0 && z_status != Z_STREAM_END && status == UNPACK_OK) {
            const unsigned char *data;
            size_t n;
            status = reader_chunk(r, stored, &data, &n);
            if (status != UNPACK_OK) break;
            stored -= n;
            z.next_in = (Bytef *)data;
            z.avail_in = (uInt)n;
            do {
                size_t produced;
                z.next_out = inflated;
                z.avail_out = sizeof inflated;
                z_status = inflate(&z, Z_NO_FLUSH);
                if (z_status != Z_OK && z_status != Z_STREAM_END && z_status != Z_BUF_ERROR) {
                    status = damaged("runtime archive damaged (bad compressed data)");
                    break;
                }
                produced = sizeof inflated - z.avail_out;
                written += produced;
                if (written > size) {
                    status = damaged("runtime archive damaged (sha256 mismatch)");
                    break;
                }
                status = write_content(out, inflated, produced, &sha);
            } while (status == UNPACK_OK && z.avail_out == 0 && z_status != Z_STREAM_END);
        }
        /* The stream must end exactly where the entry's stored bytes do. */
        if (status == UNPACK_OK && (z_status != Z_STREAM_END || stored != 0 || z.avail_in != 0))
            status = damaged("runtime archive damaged (bad compressed data)");
        inflateEnd(&z);
    }
    if (status != UNPACK_OK) return status;
    sha256_final(&sha, digest);
    if (written != size || memcmp(digest, expected, 32) != 0) return damaged("runtime archive damaged (sha256 mismatch)");
    return UNPACK_OK;
}

static int unpack_entry(struct reader *r, int root, int first) {
    static char path[65536];
    unsigned char length[2], fixed[ENTRY_FIXED_SIZE];
    unsigned kind, compression;
    uint32_t mode;
    uint64_t size, stored;
    int status;

    if ((status = reader_read(r, length, 2)) != UNPACK_OK) return status;
    if ((status = reader_read(r, path, le16(length))) != UNPACK_OK) return status;
    path[le16(length)] = '\0';
    if (!path_is_safe(path, le16(length)) || (first && strcmp(path, PROGRAM) != 0))
        return damaged("runtime archive damaged (bad entry)");
    if ((status = reader_read(r, fixed, sizeof fixed)) != UNPACK_OK) return status;
    kind = fixed[0];
    compression = fixed[1];
    mode = le32(fixed + 2);
    size = le64(fixed + 6);
    stored = le64(fixed + 14);
    if (kind > 1 || compression > 1 || (first && kind != 0)) return damaged("runtime archive damaged (bad entry)");
    if ((status = make_parents(root, path)) != UNPACK_OK) return status;

    if (kind == 0) {
        int out = openat(root, path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (out < 0) return write_failed();
        status = copy_file(r, out, compression, size, stored, fixed + 22);
        /* fchmod, not the open's mode: the umask must not take the runtime's execute bits away. */
        if (status == UNPACK_OK && fchmod(out, (mode_t)(mode & 0777)) != 0) status = write_failed();
        if (close(out) != 0 && status == UNPACK_OK) status = write_failed();
        return status;
    } else {
        char target[PATH_BUF];
        unsigned char digest[32];
        sha256_ctx sha;
        if (compression != 0 || size != stored || size == 0 || size >= sizeof target)
            return damaged("runtime archive damaged (bad entry)");
        if ((status = reader_read(r, target, (size_t)size)) != UNPACK_OK) return status;
        target[size] = '\0';
        sha256_init(&sha);
        sha256_update(&sha, target, (size_t)size);
        sha256_final(&sha, digest);
        if (memcmp(digest, fixed + 22, 32) != 0) return damaged("runtime archive damaged (sha256 mismatch)");
        if (strlen(target) != size || !link_stays_inside(path, target))
            return damaged("runtime archive damaged (bad entry)");
        if (symlinkat(target, root, path) != 0) return write_failed();
        return UNPACK_OK;
    }
}

/* Extracts the whole pack into dir (an empty folder), checking every entry's sha256 and the pack's. */
static int unpack(const struct bundle *b, const char *dir) {
    static struct reader r;
    unsigned char header[PACK_HEADER_SIZE], digest[32];
    uint32_t count, i;
    int status, root = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (root < 0) return write_failed();
    memset(&r, 0, sizeof r);
    r.fd = b->fd;
    r.position = b->range.runtime_offset;
    r.end = b->range.runtime_offset + b->range.runtime_length;
    sha256_init(&r.sha);
    status = reader_read(&r, header, sizeof header);
    count = le32(header + 12);
    for (i = 0; i < count && status == UNPACK_OK; i++) status = unpack_entry(&r, root, i == 0);
    close(root);
    if (status != UNPACK_OK) return status;
    if (r.at != r.length || r.position != r.end) return damaged("runtime archive damaged (bad entry)");
    sha256_final(&r.sha, digest);
    if (memcmp(digest, b->range.runtime_sha256, 32) != 0) return damaged("runtime archive damaged (sha256 mismatch)");
    return UNPACK_OK;
}

/* Damage and read errors end the launcher (after the caller removed its folder); returns for the rest. */
static void die_unpack(int status, int saved_errno) {
    if (status == UNPACK_DAMAGED) die_damaged(damage);
    errno = saved_errno;
    if (status == UNPACK_UNREADABLE) die_unreadable();
}

/* ---- the cache ------------------------------------------------------------------------------------- */

/* $LLMPACK_CACHE, else $XDG_CACHE_HOME/llmpack, else ~/.cache/llmpack (bundler and runtime use the same
 * rule), made absolute: the runtime may change its working folder. Returns 0 without a home. */
static int cache_root(char *out) {
    const char *value = getenv("LLMPACK_CACHE");
    char relative[PATH_BUF], cwd[PATH_BUF];
    if (value && *value) {
        path_format(relative, "%s", value);
    } else if ((value = getenv("XDG_CACHE_HOME")) && *value) {
        path_format(relative, "%s/llmpack", value);
    } else {
        const char *home = getenv("HOME");
        if (!home || !*home) {
            struct passwd *user = getpwuid(getuid());
            home = user ? user->pw_dir : NULL;
        }
        if (!home || !*home) return 0;
        path_format(relative, "%s/.cache/llmpack", home);
    }
    if (relative[0] == '/' || getcwd(cwd, sizeof cwd) == NULL) path_format(out, "%s", relative);
    else path_format(out, "%s/%s", cwd, relative);
    return 1;
}

static int mkdir_parents(const char *path) {
    char partial[PATH_BUF];
    char *slash;
    struct stat st;
    path_format(partial, "%s", path);
    for (slash = strchr(partial + 1, '/'); ; slash = strchr(slash + 1, '/')) {
        if (slash) *slash = '\0';
        if (mkdir(partial, 0755) != 0 && errno != EEXIST) return -1;
        if (!slash) break;
        *slash = '/';
    }
    if (stat(path, &st) != 0) return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

static int entry_is_valid(const char *entry, uint64_t program_size) {
    char program[PATH_BUF];
    struct stat st;
    path_format(program, "%s/" PROGRAM, entry);
    return stat(program, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == program_size;
}

static mode_t folder_mode(void) {
    mode_t mask = umask(0);
    umask(mask);
    return 0755 & ~mask;
}

/* Unpacks into a staging folder beside the entry and renames it into place, so that a launcher starting
 * at the same time sees either no entry or a whole one. Returns 0, or -1 with errno when the cache cannot
 * be written (the caller falls back to a temporary folder). */
static int unpack_into_cache(const struct bundle *b, const char *runtimes, const char *key, const char *entry) {
    char staging[PATH_BUF], aside[PATH_BUF];
    int status, saved;

    if (mkdir_parents(runtimes) != 0) return -1;
    remove_stale(runtimes, ".partial-", 1);
    path_format(staging, "%s/.partial-%s-%ld-XXXXXX", runtimes, key, (long)getpid());
    if (mkdtemp(staging) == NULL) return -1;
    if (verbose) fprintf(stderr, "llmpack: unpacking the runtime into %s\n", entry);
    status = unpack(b, staging);
    saved = status == UNPACK_UNWRITABLE ? write_errno : errno;
    if (status != UNPACK_OK) {
        remove_tree(staging);
        die_unpack(status, saved);
        errno = saved;
        return -1;
    }
    if (chmod(staging, folder_mode()) != 0) {
        saved = errno;
        remove_tree(staging);
        errno = saved;
        return -1;
    }
    if (rename(staging, entry) == 0) return 0;
    saved = errno;
    if (saved == EEXIST || saved == ENOTEMPTY) {
        if (entry_is_valid(entry, b->range.program_size)) {  /* another launcher won the race */
            remove_tree(staging);
            return 0;
        }
        /* An entry someone damaged by hand: set it aside (a rename onto an empty folder), then retry. */
        path_format(aside, "%s/.partial-%s-%ld-XXXXXX", runtimes, key, (long)getpid());
        if (mkdtemp(aside) != NULL) {
            int moved = rename(entry, aside) == 0;
            remove_tree(aside);
            if (moved && rename(staging, entry) == 0) return 0;
            if (moved) saved = errno;
            if ((saved == EEXIST || saved == ENOTEMPTY) && entry_is_valid(entry, b->range.program_size)) {
                remove_tree(staging);
                return 0;
            }
        }
    }
    remove_tree(staging);
    errno = saved;
    return -1;
}

/* ---- running the runtime --------------------------------------------------------------------------- */

/* Replaces this process with <dir>/llmpack-runtime; returns only if execv fails, with its errno. */
static int exec_runtime(const char *dir, int argc, char **argv) {
    char program[PATH_BUF];
    char **args = calloc((size_t)argc + 2, sizeof *args);
    int i;
    path_format(program, "%s/" PROGRAM, dir);
    if (args == NULL) die("out of memory");
    args[0] = program;
    for (i = 1; i < argc; i++) args[i] = argv[i];
    if (setenv("LLMPACK_BUNDLE", self_path, 1) != 0 || setenv("LLMPACK_RUNTIME_DIR", dir, 1) != 0 ||
        setenv("LLMPACK_ARGV0", argc > 0 && argv[0] ? argv[0] : "", 1) != 0)
        die("out of memory");
    execv(program, args);
    i = errno;
    free(args);
    return i;
}

static const int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
#define N_FORWARDED (sizeof forwarded / sizeof forwarded[0])
static volatile sig_atomic_t child;

/* Only signals another process sent to us: those the terminal sends (Ctrl-C, a resize, a hang-up) go to
 * the whole foreground process group, so the runtime already has them, and twice would be one too many. */
static void forward(int sig, siginfo_t *info, void *context) {
    int saved = errno;
    (void)context;
    if (child > 0 && info != NULL && (info->si_code == SI_USER || info->si_code == SI_QUEUE
#ifdef SI_TKILL
                                      || info->si_code == SI_TKILL
#endif
                                      ))
        kill((pid_t)child, sig);
    errno = saved;
}

/* The fallback: a private temporary folder for this run only. exec would leave it behind, so this
 * process stays as the parent that forwards signals, waits, and removes it. The warning waits until the
 * folder is ready: where it cannot be made either, one error line says both. */
static int run_from_temporary(const struct bundle *b, int argc, char **argv, const char *cache, const char *reason) {
    const char *base = getenv("TMPDIR");
    char dir[PATH_BUF], why[256];
    sigset_t block, previous;
    struct sigaction action;
    pid_t pid;
    int status, saved;
    size_t i;

    snprintf(why, sizeof why, "%s", reason); /* strerror's text may live in a buffer the next call reuses */
    if (!base || !*base) base = "/tmp";
    remove_stale(base, "llmpack-runtime-", 0);
    path_format(dir, "%s/llmpack-runtime-%ld-XXXXXX", base, (long)getpid());
    if (mkdtemp(dir) == NULL) {
        die("cannot use the runtime cache %s (%s) nor a temporary folder in %s (%s)", cache, why, base,
            strerror(errno));
    }
    if (verbose) fprintf(stderr, "llmpack: unpacking the runtime into %s\n", dir);
    status = unpack(b, dir);
    if (status != UNPACK_OK) {
        saved = status == UNPACK_UNWRITABLE ? write_errno : errno;
        remove_tree(dir);
        die_unpack(status, saved);
        die("cannot use the runtime cache %s (%s) nor a temporary folder in %s (%s)", cache, why, base,
            strerror(saved));
    }
    fprintf(stderr, "warning: cannot use the runtime cache %s (%s); unpacking to a temporary folder for this run\n",
            cache, why);

    /* Blocked until the child's pid is known, so that none arrives with nobody to forward it to. */
    sigemptyset(&block);
    for (i = 0; i < N_FORWARDED; i++) sigaddset(&block, forwarded[i]);
    sigprocmask(SIG_BLOCK, &block, &previous);
    memset(&action, 0, sizeof action);
    action.sa_sigaction = forward;
    action.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&action.sa_mask);
    for (i = 0; i < N_FORWARDED; i++) sigaction(forwarded[i], &action, NULL);

    pid = fork();
    if (pid < 0) {
        saved = errno;
        remove_tree(dir);
        die("cannot start the runtime (%s)", strerror(saved));
    }
    if (pid == 0) {
        sigprocmask(SIG_SETMASK, &previous, NULL);
        saved = exec_runtime(dir, argc, argv);
        fprintf(stderr, "error: cannot run %s/" PROGRAM ": %s\n", dir, strerror(saved));
        _exit(1);
    }
    child = pid;
    close(b->fd);
    sigprocmask(SIG_SETMASK, &previous, NULL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    remove_tree(dir);
    if (WIFSIGNALED(status)) {
        /* Die of the same signal, so that a shell sees what the user would have seen; no core of ours. */
        int sig = WTERMSIG(status);
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        signal(sig, SIG_DFL);
        sigemptyset(&block);
        sigaddset(&block, sig);
        sigprocmask(SIG_UNBLOCK, &block, NULL);
        raise(sig);
        return 128 + sig;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

static void find_self(const char *argv0) {
#ifdef __APPLE__
    char raw[PATH_BUF];
    uint32_t size = sizeof raw;
    if (_NSGetExecutablePath(raw, &size) == 0 && realpath(raw, self_path) != NULL) return;
#else
    ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    if (n > 0 && (size_t)n < sizeof self_path - 1) {
        self_path[n] = '\0';
        return;
    }
#endif
    /* No /proc (a chroot): the path it was started by, when that names a file. */
    if (argv0 && strchr(argv0, '/') && realpath(argv0, self_path) != NULL) return;
    die("cannot find the executable's own file (%s)", strerror(errno));
}

int main(int argc, char **argv) {
    struct bundle b;
    char root[PATH_BUF], runtimes[PATH_BUF], entry[PATH_BUF], key[17];
    const char *value = getenv("LLMPACK_VERBOSE");
    int i, saved;

    verbose = value != NULL && *value != '\0';
    find_self(argc > 0 ? argv[0] : NULL);
    b.fd = open(self_path, O_RDONLY | O_CLOEXEC);
    if (b.fd < 0) die_unreadable();
    read_head(&b);
    for (i = 0; i < 8; i++) snprintf(key + 2 * i, 3, "%02x", b.range.runtime_sha256[i]);

    if (!cache_root(root)) {
        return run_from_temporary(&b, argc, argv, "~/.cache/llmpack", "no home folder: set HOME or LLMPACK_CACHE");
    }
    path_format(runtimes, "%s/runtime", root);
    path_format(entry, "%s/%s", runtimes, key);
    errno = 0;
    if (!entry_is_valid(entry, b.range.program_size) && unpack_into_cache(&b, runtimes, key, entry) != 0) {
        return run_from_temporary(&b, argc, argv, runtimes, strerror(errno));
    }
    saved = exec_runtime(entry, argc, argv);
    if (saved == EACCES || saved == EPERM) {  /* a noexec mount */
        return run_from_temporary(&b, argc, argv, runtimes, strerror(saved));
    }
    die("cannot run %s/" PROGRAM ": %s", entry, strerror(saved));
    return 1;
}
