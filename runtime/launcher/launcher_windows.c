/* The llmpack launcher for Windows: launcher.c's job with Win32 calls (C99, mingw-w64 or clang; zlib).
 *
 * The file is [launcher][weights][runtime pack][manifest][footer], as on Linux and macOS
 * (launcher_format.h reads it). The runtime pack, PyInstaller's one-folder runtime (never one-file:
 * antivirus scanners flag one-file extraction), is unpacked once per user into
 * %LLMPACK_CACHE%\runtime\<key> or %LOCALAPPDATA%\llmpack\runtime\<key>: into a staging folder renamed
 * into place, so that two launchers starting together see no entry or a whole one. Windows has no
 * exec: the launcher starts llmpack-runtime.exe with CreateProcess, stays as its parent, and exits with
 * its exit code (all 32 bits). Ctrl-C and Ctrl-Break reach every process of the console, the runtime
 * included: the launcher ignores them and waits, so the runtime decides what they mean; a job object
 * ends the runtime if the launcher is killed. Every path goes to the file API as \\?\ + the full path,
 * so that an executable (and a temporary folder) deeper than MAX_PATH (260) works without the system's
 * long-path setting; a cache that deep is not used (CreateProcess cannot start a program there).
 * Where the cache cannot be written, the runtime is unpacked into %TEMP% for that run and removed after. */

#define WIN32_LEAN_AND_MEAN
#ifndef UNICODE
#define UNICODE
#endif
#include <windows.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>
#include <zlib.h>
#include "launcher_format.h"

#define WPATH 32768 /* the longest path Windows has, in UTF-16 units */
#define PROGRAM "llmpack-runtime.exe"
#define PROGRAM_W L"llmpack-runtime.exe"
#define BLOCK (256 * 1024)

static wchar_t self_path[WPATH]; /* our own file, as GetModuleFileNameW gives it: LLMPACK_BUNDLE */
static char self_utf8[3 * WPATH];
static int verbose;

/* ---- messages: UTF-8 text, written to a console as UTF-16 so that any path shows as it is ------------ */

static void put_stderr(const char *text) {
    HANDLE err = GetStdHandle(STD_ERROR_HANDLE);
    DWORD mode, done;
    static wchar_t wide[4 * WPATH];
    int n;
    if (err == NULL || err == INVALID_HANDLE_VALUE) return;
    if (GetConsoleMode(err, &mode) && (n = MultiByteToWideChar(CP_UTF8, 0, text, -1, wide, 4 * WPATH)) > 0) {
        WriteConsoleW(err, wide, (DWORD)(n - 1), &done, NULL);
    } else {
        WriteFile(err, text, (DWORD)strlen(text), &done, NULL);
    }
}

static void say(const char *format, va_list args) {
    static char line[4 * WPATH];
    vsnprintf(line, sizeof line - 2, format, args);
    strcat(line, "\n");
    put_stderr(line);
}

static void die(const char *format, ...) {
    va_list args;
    static char line[4 * WPATH];
    va_start(args, format);
    snprintf(line, sizeof line, "error: %s", format);
    say(line, args);
    va_end(args);
    ExitProcess(1);
}

static void warn(const char *format, ...) {
    va_list args;
    va_start(args, format);
    say(format, args);
    va_end(args);
}

static void die_damaged(const char *reason) {
    /* The runtime's own wording (runtime/messages.py CORRUPT_BUNDLE), as on Linux and macOS. */
    die("%s is damaged: %s; download or build it again", self_utf8, reason);
}

/* The system's message for an error code, in UTF-8, without its trailing period and line break. */
static const char *error_text(DWORD code) {
    static wchar_t wide[512];
    static char text[1536];
    size_t n;
    if (!FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL, code, 0, wide, 512, NULL) ||
        !WideCharToMultiByte(CP_UTF8, 0, wide, -1, text, sizeof text, NULL, NULL)) {
        snprintf(text, sizeof text, "error %lu", (unsigned long)code);
        return text;
    }
    n = strlen(text);
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r' || text[n - 1] == '.' || text[n - 1] == ' ')) text[--n] = '\0';
    return text;
}

static const char *utf8(const wchar_t *wide) {
    static char text[4][3 * WPATH];
    static int next;
    char *out = text[next++ % 4];
    if (!WideCharToMultiByte(CP_UTF8, 0, wide, -1, out, 3 * WPATH, NULL, NULL)) out[0] = '\0';
    return out;
}

/* ---- paths ----------------------------------------------------------------------------------------- */

static void wpath_format(wchar_t *out, const wchar_t *format, ...) {
    va_list args;
    int n;
    va_start(args, format);
    n = _vsnwprintf(out, WPATH, format, args);
    va_end(args);
    if (n < 0 || n >= WPATH) die("path too long");
}

/* \\?\ + the full path (\\?\UNC\ for a share): the file API then takes any length, with no rewriting. */
static void long_form(const wchar_t *path, wchar_t *out) {
    static wchar_t full[WPATH];
    DWORD n;
    if (wcsncmp(path, L"\\\\?\\", 4) == 0) {
        wpath_format(out, L"%ls", path);
        return;
    }
    n = GetFullPathNameW(path, WPATH, full, NULL);
    if (n == 0 || n >= WPATH) die("path too long or invalid: %s", utf8(path));
    if (wcsncmp(full, L"\\\\", 2) == 0) wpath_format(out, L"\\\\?\\UNC\\%ls", full + 2);
    else wpath_format(out, L"\\\\?\\%ls", full);
}

/* The form a person (and the runtime's Python) reads: without \\?\ where the path is short enough,
 * with it from MAX_PATH on, where only that form opens without the system's long-path setting. */
static void display_form(const wchar_t *path, wchar_t *out) {
    size_t n = wcslen(path);
    if (wcsncmp(path, L"\\\\?\\UNC\\", 8) == 0 && n - 6 < MAX_PATH) wpath_format(out, L"\\%ls", path + 7);
    else if (wcsncmp(path, L"\\\\?\\", 4) == 0 && n - 4 < MAX_PATH) wpath_format(out, L"%ls", path + 4);
    else if (n >= MAX_PATH) long_form(path, out);
    else wpath_format(out, L"%ls", path);
}

/* ---- reading our own file -------------------------------------------------------------------------- */

static HANDLE self_file;

/* Reads n bytes at offset; returns how many it read (fewer at the end of the file), -1 on error. */
static long long read_at(void *buf, size_t n, uint64_t offset) {
    size_t done = 0;
    while (done < n) {
        OVERLAPPED at;
        DWORD got, want = n - done > (1u << 30) ? (1u << 30) : (DWORD)(n - done);
        memset(&at, 0, sizeof at);
        at.Offset = (DWORD)(offset + done);
        at.OffsetHigh = (DWORD)((offset + done) >> 32);
        if (!ReadFile(self_file, (char *)buf + done, want, &got, &at)) {
            if (GetLastError() == ERROR_HANDLE_EOF) break;
            return -1;
        }
        if (got == 0) break;
        done += got;
    }
    return (long long)done;
}

static void die_unreadable(void) { die("cannot read %s: %s", self_utf8, error_text(GetLastError())); }

static struct bundle_range range;

static void read_head(void) {
    unsigned char f[FOOTER_SIZE], head[128];
    LARGE_INTEGER size;
    size_t want;
    long long got;
    const char *reason;
    if (!GetFileSizeEx(self_file, &size)) die_unreadable();
    got = (uint64_t)size.QuadPart < FOOTER_SIZE ? 0 : read_at(f, FOOTER_SIZE, (uint64_t)size.QuadPart - FOOTER_SIZE);
    if (got < 0) die_unreadable();
    if ((reason = check_footer(f, (size_t)got, (uint64_t)size.QuadPart, &range)) != NULL) die_damaged(reason);
    want = range.runtime_length < sizeof head ? (size_t)range.runtime_length : sizeof head;
    got = read_at(head, want, range.runtime_offset);
    if (got < 0) die_unreadable();
    if ((size_t)got != want) die_damaged("truncated: the runtime archive ends early");
    if ((reason = check_pack_head(head, want, PROGRAM, &range.program_size)) != NULL) die_damaged(reason);
}

/* ---- removing folders ------------------------------------------------------------------------------ */

/* rd /s without following junctions or links: those are removed, never entered. */
static void remove_tree(const wchar_t *path) {
    wchar_t *pattern = malloc(WPATH * sizeof *pattern), *child = malloc(WPATH * sizeof *child);
    WIN32_FIND_DATAW found;
    HANDLE search;
    DWORD attributes = GetFileAttributesW(path);
    if (pattern == NULL || child == NULL || attributes == INVALID_FILE_ATTRIBUTES) goto done;
    if (!(attributes & FILE_ATTRIBUTE_DIRECTORY)) {
        SetFileAttributesW(path, FILE_ATTRIBUTE_NORMAL);
        DeleteFileW(path);
        goto done;
    }
    if (!(attributes & FILE_ATTRIBUTE_REPARSE_POINT)) {
        wpath_format(pattern, L"%ls\\*", path);
        search = FindFirstFileW(pattern, &found);
        if (search != INVALID_HANDLE_VALUE) {
            do {
                if (wcscmp(found.cFileName, L".") == 0 || wcscmp(found.cFileName, L"..") == 0) continue;
                wpath_format(child, L"%ls\\%ls", path, found.cFileName);
                remove_tree(child);
            } while (FindNextFileW(search, &found));
            FindClose(search);
        }
    }
    RemoveDirectoryW(path);
done:
    free(pattern);
    free(child);
}

static int process_is_alive(DWORD pid) {
    HANDLE process = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, pid);
    DWORD code;
    int alive;
    if (process == NULL) return GetLastError() == ERROR_ACCESS_DENIED; /* someone else's: leave it */
    alive = GetExitCodeProcess(process, &code) && code == STILL_ACTIVE;
    CloseHandle(process);
    return alive;
}

/* Removes the folders <prefix>[<key>-]<pid>-* in dir whose process is gone: what a launcher killed
 * mid-unpack (or, in %TEMP%, a fallback parent that was killed) left behind. */
static void remove_stale(const wchar_t *dir, const wchar_t *prefix, int has_key) {
    static wchar_t pattern[WPATH], path[WPATH];
    WIN32_FIND_DATAW found;
    HANDLE search;
    size_t prefix_length = wcslen(prefix);
    wpath_format(pattern, L"%ls\\%ls*", dir, prefix);
    search = FindFirstFileW(pattern, &found);
    if (search == INVALID_HANDLE_VALUE) return;
    do {
        const wchar_t *p = found.cFileName + prefix_length;
        wchar_t *end;
        unsigned long pid;
        if (has_key && (p = wcschr(p, L'-')) == NULL) continue;
        if (has_key) p++;
        pid = wcstoul(p, &end, 10);
        if (end == p || *end != L'-' || pid == 0 || pid == GetCurrentProcessId() || process_is_alive(pid)) continue;
        wpath_format(path, L"%ls\\%ls", dir, found.cFileName);
        remove_tree(path);
    } while (FindNextFileW(search, &found));
    FindClose(search);
}

/* ---- unpacking ------------------------------------------------------------------------------------- */

enum { UNPACK_OK, UNPACK_DAMAGED, UNPACK_UNREADABLE, UNPACK_UNWRITABLE };
static const char *damage;  /* the reason, with UNPACK_DAMAGED */
static DWORD write_error;   /* the error, with UNPACK_UNWRITABLE */

static int damaged(const char *reason) {
    damage = reason;
    return UNPACK_DAMAGED;
}

/* Inside a fresh staging folder, "exists" can only come from the pack itself (two entries on one path);
 * anything else is the disk's (full, read-only, quota, access). */
static int write_failed(void) {
    DWORD code = GetLastError();
    if (code == ERROR_FILE_EXISTS || code == ERROR_ALREADY_EXISTS) return damaged("runtime archive damaged (bad entry)");
    write_error = code;
    return UNPACK_UNWRITABLE;
}

/* The pack, read in blocks from its start to its end, every byte hashed once as it is read. */
static struct {
    uint64_t position, end;
    unsigned char buffer[BLOCK];
    size_t length, at;
    sha256_ctx sha;
} r;

static int reader_chunk(uint64_t max, const unsigned char **data, size_t *n) {
    if (r.at == r.length) {
        size_t want;
        long long got;
        if (r.position == r.end) return damaged("runtime archive damaged (bad entry)");
        want = r.end - r.position < BLOCK ? (size_t)(r.end - r.position) : BLOCK;
        got = read_at(r.buffer, want, r.position);
        if (got < 0) return UNPACK_UNREADABLE;
        if ((size_t)got != want) return damaged("truncated: the runtime archive ends early");
        sha256_update(&r.sha, r.buffer, want);
        r.position += want;
        r.length = want;
        r.at = 0;
    }
    *data = r.buffer + r.at;
    *n = r.length - r.at < max ? r.length - r.at : (size_t)max;
    r.at += *n;
    return UNPACK_OK;
}

static int reader_read(void *out, size_t n) {
    while (n > 0) {
        const unsigned char *data;
        size_t got;
        int status = reader_chunk(n, &data, &got);
        if (status != UNPACK_OK) return status;
        memcpy(out, data, got);
        out = (char *)out + got;
        n -= got;
    }
    return UNPACK_OK;
}

static int write_content(HANDLE out, const unsigned char *data, size_t n, sha256_ctx *sha) {
    DWORD put;
    sha256_update(sha, data, n);
    while (n > 0) {
        if (!WriteFile(out, data, (DWORD)n, &put, NULL)) return write_failed();
        data += put;
        n -= put;
    }
    return UNPACK_OK;
}

/* Streams `stored` bytes of the pack into out, inflating them when compressed; the uncompressed bytes
 * must be exactly `size` long and hash to `expected`. */
static int copy_file(HANDLE out, int compressed, uint64_t size, uint64_t stored, const unsigned char expected[32]) {
    static unsigned char inflated[BLOCK];
    sha256_ctx sha;
    unsigned char digest[32];
    uint64_t written = 0;
    int status = UNPACK_OK;
    const unsigned char *data;
    size_t n;
    sha256_init(&sha);
    if (!compressed) {
        if (stored != size) return damaged("runtime archive damaged (bad entry)");
        for (; stored > 0 && status == UNPACK_OK; stored -= n)
            if ((status = reader_chunk(stored, &data, &n)) == UNPACK_OK) status = write_content(out, data, n, &sha);
        written = size;
    } else {
        z_stream z;
        int z_status = Z_OK;
        memset(&z, 0, sizeof z);
        if (inflateInit(&z) != Z_OK) return damaged("runtime archive damaged (bad compressed data)");
        while (stored > 0 && z_status != Z_STREAM_END && status == UNPACK_OK) {
            if ((status = reader_chunk(stored, &data, &n)) != UNPACK_OK) break;
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
                if ((written += produced) > size) {
                    status = damaged("runtime archive damaged (sha256 mismatch)");
                    break;
                }
                status = write_content(out, inflated, produced, &sha);
            } while (status == UNPACK_OK && z.avail_out == 0 && z_status != Z_STREAM_END);
        }
        if (status == UNPACK_OK && (z_status != Z_STREAM_END || stored != 0 || z.avail_in != 0))
            status = damaged("runtime archive damaged (bad compressed data)");
        inflateEnd(&z);
    }
    if (status != UNPACK_OK) return status;
    sha256_final(&sha, digest);
    if (written != size || memcmp(digest, expected, 32) != 0) return damaged("runtime archive damaged (sha256 mismatch)");
    return UNPACK_OK;
}

/* root\path with '/' turned into '\'; the pack's path rule (no "..", no empty part) keeps it inside. */
static int entry_path(const wchar_t *root, const char *path, wchar_t *out) {
    static wchar_t relative[WPATH];
    wchar_t *p;
    if (!MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, relative, WPATH)) return 0;
    for (p = relative; *p; p++) {
        if (*p == L'/') *p = L'\\';
        else if (*p == L'\\' || *p == L':') return 0; /* a separator or stream name Windows would obey */
    }
    wpath_format(out, L"%ls\\%ls", root, relative);
    return 1;
}

/* mkdir -p of the entry's parents inside the staging folder; an existing parent must be a folder. */
static int make_parents(wchar_t *full, size_t root_length) {
    wchar_t *slash;
    for (slash = wcschr(full + root_length + 1, L'\\'); slash; slash = wcschr(slash + 1, L'\\')) {
        DWORD attributes;
        *slash = L'\0';
        if (!CreateDirectoryW(full, NULL)) {
            if (GetLastError() != ERROR_ALREADY_EXISTS) {
                *slash = L'\\';
                return write_failed();
            }
            attributes = GetFileAttributesW(full);
            if (attributes == INVALID_FILE_ATTRIBUTES || !(attributes & FILE_ATTRIBUTE_DIRECTORY) ||
                (attributes & FILE_ATTRIBUTE_REPARSE_POINT)) {
                *slash = L'\\';
                return damaged("runtime archive damaged (bad entry)");
            }
        }
        *slash = L'\\';
    }
    return UNPACK_OK;
}

static int unpack_entry(const wchar_t *root, int first) {
    static char path[65536];
    static wchar_t full[WPATH];
    unsigned char length[2], fixed[ENTRY_FIXED_SIZE];
    HANDLE out;
    int status;

    if ((status = reader_read(length, 2)) != UNPACK_OK) return status;
    if ((status = reader_read(path, le16(length))) != UNPACK_OK) return status;
    path[le16(length)] = '\0';
    if (!path_is_safe(path, le16(length)) || (first && strcmp(path, PROGRAM) != 0))
        return damaged("runtime archive damaged (bad entry)");
    if ((status = reader_read(fixed, sizeof fixed)) != UNPACK_OK) return status;
    /* Kind 0 (a file) only: a Windows runtime has no symbolic links (making them needs a privilege). */
    if (fixed[0] != 0 || fixed[1] > 1 || !entry_path(root, path, full)) return damaged("runtime archive damaged (bad entry)");
    if ((status = make_parents(full, wcslen(root))) != UNPACK_OK) return status;
    out = CreateFileW(full, GENERIC_WRITE, 0, NULL, CREATE_NEW, FILE_ATTRIBUTE_NORMAL, NULL);
    if (out == INVALID_HANDLE_VALUE) return write_failed();
    status = copy_file(out, fixed[1], le64(fixed + 6), le64(fixed + 14), fixed + 22);
    if (!CloseHandle(out) && status == UNPACK_OK) status = write_failed();
    return status;
}

/* Extracts the whole pack into dir (an empty folder), checking every entry's sha256 and the pack's. */
static int unpack(const wchar_t *dir) {
    unsigned char header[PACK_HEADER_SIZE], digest[32];
    uint32_t count, i;
    int status;
    memset(&r, 0, sizeof r);
    r.position = range.runtime_offset;
    r.end = range.runtime_offset + range.runtime_length;
    sha256_init(&r.sha);
    status = reader_read(header, sizeof header);
    count = le32(header + 12);
    for (i = 0; i < count && status == UNPACK_OK; i++) status = unpack_entry(dir, i == 0);
    if (status != UNPACK_OK) return status;
    if (r.at != r.length || r.position != r.end) return damaged("runtime archive damaged (bad entry)");
    sha256_final(&r.sha, digest);
    if (memcmp(digest, range.runtime_sha256, 32) != 0) return damaged("runtime archive damaged (sha256 mismatch)");
    return UNPACK_OK;
}

/* Damage and read errors end the launcher (after the caller removed its folder); returns for the rest. */
static void die_unpack(int status) {
    if (status == UNPACK_DAMAGED) die_damaged(damage);
    if (status == UNPACK_UNREADABLE) die_unreadable();
}

/* ---- the cache ------------------------------------------------------------------------------------- */

/* %LLMPACK_CACHE%, else %LOCALAPPDATA%\llmpack (what the bundler and the runtime use on Windows), in
 * long form. Returns 0 without either. */
static int cache_root(wchar_t *out) {
    static wchar_t value[WPATH], relative[WPATH];
    DWORD n = GetEnvironmentVariableW(L"LLMPACK_CACHE", value, WPATH);
    if (n > 0 && n < WPATH) {
        wpath_format(relative, L"%ls", value);
    } else if ((n = GetEnvironmentVariableW(L"LOCALAPPDATA", value, WPATH)) > 0 && n < WPATH) {
        wpath_format(relative, L"%ls\\llmpack", value);
    } else {
        return 0;
    }
    long_form(relative, out);
    return 1;
}

/* mkdir -p of a long-form path: its components after \\?\C:\ or \\?\UNC\server\share\. */
static int mkdir_parents(const wchar_t *path) {
    static wchar_t partial[WPATH];
    wchar_t *slash;
    DWORD attributes;
    int skip = wcsncmp(path, L"\\\\?\\UNC\\", 8) == 0 ? 2 : 0; /* server and share are not folders to make */
    wpath_format(partial, L"%ls", path);
    slash = wcschr(partial + (skip ? 8 : 7), L'\\');
    for (; slash; slash = wcschr(slash + 1, L'\\')) {
        if (skip > 0) {
            skip--;
            continue;
        }
        *slash = L'\0';
        CreateDirectoryW(partial, NULL);
        *slash = L'\\';
    }
    if (!CreateDirectoryW(partial, NULL) && GetLastError() != ERROR_ALREADY_EXISTS) return -1;
    attributes = GetFileAttributesW(partial);
    if (attributes == INVALID_FILE_ATTRIBUTES) return -1;
    if (!(attributes & FILE_ATTRIBUTE_DIRECTORY)) {
        SetLastError(ERROR_DIRECTORY);
        return -1;
    }
    return 0;
}

static int entry_is_valid(const wchar_t *entry) {
    static wchar_t program[WPATH];
    WIN32_FILE_ATTRIBUTE_DATA data;
    wpath_format(program, L"%ls\\" PROGRAM_W, entry);
    return GetFileAttributesExW(program, GetFileExInfoStandard, &data) && !(data.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) &&
           (((uint64_t)data.nFileSizeHigh << 32) | data.nFileSizeLow) == range.program_size;
}

/* A new folder <dir>\<prefix><pid>-<n>; 0 and the error when none can be made. */
static int make_private_folder(const wchar_t *dir, const wchar_t *prefix, wchar_t *out) {
    unsigned n;
    for (n = 0; n < 1000; n++) {
        wpath_format(out, L"%ls\\%ls%lu-%u", dir, prefix, (unsigned long)GetCurrentProcessId(), (unsigned)(GetTickCount() + n));
        if (CreateDirectoryW(out, NULL)) return 1;
        if (GetLastError() != ERROR_ALREADY_EXISTS) return 0;
    }
    return 0;
}

/* Unpacks into a staging folder beside the entry and renames it into place. Returns 0, or -1 with the
 * error (GetLastError) when the cache cannot be written: the caller falls back to %TEMP%. */
static int unpack_into_cache(const wchar_t *runtimes, const wchar_t *key, const wchar_t *entry) {
    static wchar_t staging[WPATH], aside[WPATH], prefix[64];
    DWORD saved;
    int status;

    if (mkdir_parents(runtimes) != 0) return -1;
    remove_stale(runtimes, L".partial-", 1);
    wpath_format(prefix, L".partial-%ls-", key);
    if (!make_private_folder(runtimes, prefix, staging)) return -1;
    if (verbose) warn("llmpack: unpacking the runtime into %s", utf8(entry));
    status = unpack(staging);
    if (status != UNPACK_OK) {
        saved = write_error;
        remove_tree(staging);
        die_unpack(status);
        SetLastError(saved);
        return -1;
    }
    if (MoveFileExW(staging, entry, 0)) return 0;
    saved = GetLastError();
    if (entry_is_valid(entry)) { /* another launcher won the race */
        remove_tree(staging);
        return 0;
    }
    /* An entry someone damaged by hand: move it aside, then retry; a runtime still running from it
     * keeps it in use, and then this run falls back. */
    if (make_private_folder(runtimes, prefix, aside) && RemoveDirectoryW(aside) && MoveFileExW(entry, aside, 0)) {
        remove_tree(aside);
        if (MoveFileExW(staging, entry, 0)) return 0;
        saved = GetLastError();
        if (entry_is_valid(entry)) {
            remove_tree(staging);
            return 0;
        }
    }
    remove_tree(staging);
    SetLastError(saved);
    return -1;
}

/* ---- running the runtime --------------------------------------------------------------------------- */

static HANDLE child;

/* Ctrl-C and Ctrl-Break went to the runtime too (the same console): it decides; we wait for its exit.
 * A closing console ends us when this returns: the runtime gets a moment to finish first. */
static BOOL WINAPI on_console_event(DWORD event) {
    if ((event == CTRL_CLOSE_EVENT || event == CTRL_LOGOFF_EVENT || event == CTRL_SHUTDOWN_EVENT) && child != NULL)
        WaitForSingleObject(child, 4000);
    return TRUE;
}

/* The command line after its first word (our own program's), as the C runtime splits it: the user's
 * arguments go on byte for byte, whatever their quoting. */
static const wchar_t *arguments_after_program(void) {
    const wchar_t *p = GetCommandLineW();
    if (*p == L'"') {
        for (p++; *p && *p != L'"'; p++) {}
        if (*p) p++;
    } else {
        for (; *p && *p != L' ' && *p != L'\t'; p++) {}
    }
    return p;
}

static void inherit(DWORD which, HANDLE *out) {
    *out = GetStdHandle(which);
    if (*out != NULL && *out != INVALID_HANDLE_VALUE) SetHandleInformation(*out, HANDLE_FLAG_INHERIT, HANDLE_FLAG_INHERIT);
}

/* Runs <dir>\llmpack-runtime.exe with our arguments and waits; returns its exit code, or -1 with the
 * error when it cannot start. */
static long long run_runtime(const wchar_t *dir, const wchar_t *argv0) {
    static wchar_t program[WPATH], shown[WPATH], shown_dir[WPATH], bundle[WPATH];
    wchar_t *command;
    const wchar_t *rest = arguments_after_program();
    STARTUPINFOW startup;
    PROCESS_INFORMATION process;
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION limits;
    HANDLE job;
    DWORD code, saved;

    wpath_format(program, L"%ls\\" PROGRAM_W, dir);
    display_form(program, shown);
    display_form(dir, shown_dir);
    display_form(self_path, bundle);
    command = malloc((wcslen(shown) + wcslen(rest) + 3) * sizeof *command);
    if (command == NULL) die("out of memory");
    swprintf(command, wcslen(shown) + wcslen(rest) + 3, L"\"%ls\"%ls", shown, rest);
    if (!SetEnvironmentVariableW(L"LLMPACK_BUNDLE", bundle) || !SetEnvironmentVariableW(L"LLMPACK_RUNTIME_DIR", shown_dir) ||
        !SetEnvironmentVariableW(L"LLMPACK_ARGV0", argv0 ? argv0 : L""))
        die("out of memory");

    memset(&startup, 0, sizeof startup);
    startup.cb = sizeof startup;
    startup.dwFlags = STARTF_USESTDHANDLES;
    inherit(STD_INPUT_HANDLE, &startup.hStdInput);
    inherit(STD_OUTPUT_HANDLE, &startup.hStdOutput);
    inherit(STD_ERROR_HANDLE, &startup.hStdError);
    SetConsoleCtrlHandler(on_console_event, TRUE);
    /* Suspended until it is in the job, so that it cannot outlive a launcher that is killed. */
    if (!CreateProcessW(program, command, NULL, NULL, TRUE, CREATE_SUSPENDED, NULL, NULL, &startup, &process)) {
        saved = GetLastError();
        free(command);
        SetLastError(saved);
        return -1;
    }
    free(command);
    job = CreateJobObjectW(NULL, NULL);
    memset(&limits, 0, sizeof limits);
    limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
    if (job != NULL && SetInformationJobObject(job, JobObjectExtendedLimitInformation, &limits, sizeof limits))
        AssignProcessToJobObject(job, process.hProcess); /* may fail inside a job that forbids it: run anyway */
    child = process.hProcess;
    ResumeThread(process.hThread);
    CloseHandle(process.hThread);
    CloseHandle(self_file);
    WaitForSingleObject(process.hProcess, INFINITE);
    if (!GetExitCodeProcess(process.hProcess, &code)) code = 1;
    return code;
}

/* The fallback: a private folder in %TEMP% for this run only, removed once the runtime has exited. */
static DWORD run_from_temporary(const wchar_t *argv0, const char *cache, const char *reason) {
    static wchar_t base[WPATH], temp[WPATH], dir[WPATH];
    char why[512];
    long long code;
    int status, i;
    DWORD n = GetTempPathW(WPATH, base);

    snprintf(why, sizeof why, "%s", reason);
    if (n == 0 || n >= WPATH) die("cannot use the runtime cache %s (%s) nor a temporary folder (%s)", cache, why, error_text(GetLastError()));
    long_form(base, temp);
    if (temp[wcslen(temp) - 1] == L'\\') temp[wcslen(temp) - 1] = L'\0';
    remove_stale(temp, L"llmpack-runtime-", 0);
    if (!make_private_folder(temp, L"llmpack-runtime-", dir))
        die("cannot use the runtime cache %s (%s) nor a temporary folder in %s (%s)", cache, why, utf8(base), error_text(GetLastError()));
    if (verbose) warn("llmpack: unpacking the runtime into %s", utf8(dir));
    status = unpack(dir);
    if (status != UNPACK_OK) {
        DWORD saved = write_error;
        remove_tree(dir);
        die_unpack(status);
        die("cannot use the runtime cache %s (%s) nor a temporary folder in %s (%s)", cache, why, utf8(base), error_text(saved));
    }
    warn("warning: cannot use the runtime cache %s (%s); unpacking to a temporary folder for this run", cache, why);
    code = run_runtime(dir, argv0);
    if (code < 0) {
        DWORD saved = GetLastError();
        remove_tree(dir);
        die("cannot run %s\\" PROGRAM ": %s", utf8(dir), error_text(saved));
    }
    /* The runtime's files are released as it ends; an antivirus may still hold one for a moment. */
    for (i = 0; i < 20 && GetFileAttributesW(dir) != INVALID_FILE_ATTRIBUTES; i++) {
        remove_tree(dir);
        if (GetFileAttributesW(dir) != INVALID_FILE_ATTRIBUTES) Sleep(50);
    }
    return (DWORD)code;
}

int wmain(int argc, wchar_t **argv) {
    static wchar_t root[WPATH], runtimes[WPATH], entry[WPATH], long_self[WPATH], shown[WPATH];
    wchar_t key[17];
    const wchar_t *argv0 = argc > 0 ? argv[0] : NULL;
    DWORD n;
    long long code;
    int i;

    verbose = GetEnvironmentVariableW(L"LLMPACK_VERBOSE", root, 2) > 0;
    n = GetModuleFileNameW(NULL, self_path, WPATH);
    if (n == 0 || n >= WPATH) die("cannot find the executable's own file (%s)", error_text(GetLastError()));
    display_form(self_path, shown);
    snprintf(self_utf8, sizeof self_utf8, "%s", utf8(shown));
    long_form(self_path, long_self);
    self_file = CreateFileW(long_self, GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_DELETE, NULL, OPEN_EXISTING,
                            FILE_ATTRIBUTE_NORMAL, NULL);
    if (self_file == INVALID_HANDLE_VALUE) die_unreadable();
    read_head();
    for (i = 0; i < 8; i++) swprintf(key + 2 * i, 3, L"%02x", range.runtime_sha256[i]);

    if (!cache_root(root)) return (int)run_from_temporary(argv0, "%LOCALAPPDATA%\\llmpack", "LOCALAPPDATA is not set");
    wpath_format(runtimes, L"%ls\\runtime", root);
    wpath_format(entry, L"%ls\\%ls", runtimes, key);
    display_form(runtimes, shown);
    /* CreateProcess takes no program path of MAX_PATH or more, \\?\ or not, unless the system's
     * long-path setting and the program's manifest both allow it: such a cache is not used. */
    if (wcslen(entry) - 4 + 1 + wcslen(PROGRAM_W) >= MAX_PATH)
        return (int)run_from_temporary(argv0, utf8(shown), "its path is too long to start a program from (260 characters or more)");
    SetLastError(0);
    if (!entry_is_valid(entry) && unpack_into_cache(runtimes, key, entry) != 0) {
        return (int)run_from_temporary(argv0, utf8(shown), error_text(GetLastError()));
    }
    code = run_runtime(entry, argv0);
    if (code < 0) die("cannot run %s\\" PROGRAM ": %s", utf8(entry), error_text(GetLastError()));
    ExitProcess((UINT)code);
    return 1;
}
