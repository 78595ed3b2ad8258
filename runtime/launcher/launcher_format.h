/* The executable's format as both launchers read it (launcher.c: Linux and macOS; launcher_windows.c):
 * the footer, the runtime pack's head, SHA-256 and the entry path rule, so that both check the same
 * things and say the same damage reasons. Included once by each launcher (static functions); needs
 * <stdint.h>, <string.h> and <zlib.h> before it. The format itself: bundler/payload_format.py and
 * bundler/runtime_pack.py, and tests/support/launcher_files.py. */

#ifndef LLMPACK_LAUNCHER_FORMAT_H
#define LLMPACK_LAUNCHER_FORMAT_H

#define FOOTER_SIZE 156
#define FOOTER_VERSION 2
#define PACK_HEADER_SIZE 16
#define PACK_VERSION 1
#define ENTRY_FIXED_SIZE 54 /* kind, compression, mode, size, stored size, sha256 */

/* ---- SHA-256 (FIPS 180-4) ------------------------------------------------------------------------ */

typedef struct {
    uint32_t h[8];
    uint64_t length;
    unsigned char block[64];
    size_t used;
} sha256_ctx;

static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t ror32(uint32_t x, unsigned n) { return (x >> n) | (x << (32 - n)); }

static void sha256_compress(uint32_t h[8], const unsigned char *p) {
    uint32_t w[64], a, b, c, d, e, f, g, k, t1, t2;
    int i;
    for (i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (i = 16; i < 64; i++) {
        uint32_t s0 = ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4]; f = h[5]; g = h[6]; k = h[7];
    for (i = 0; i < 64; i++) {
        t1 = k + (ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25)) + ((e & f) ^ (~e & g)) + sha256_k[i] + w[i];
        t2 = (ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

static void sha256_init(sha256_ctx *c) {
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, iv, sizeof iv);
    c->length = 0;
    c->used = 0;
}

static void sha256_update(sha256_ctx *c, const void *data, size_t n) {
    const unsigned char *p = data;
    c->length += n;
    if (c->used) {
        size_t take = 64 - c->used < n ? 64 - c->used : n;
        memcpy(c->block + c->used, p, take);
        c->used += take; p += take; n -= take;
        if (c->used < 64) return;
        sha256_compress(c->h, c->block);
        c->used = 0;
    }
    for (; n >= 64; p += 64, n -= 64) sha256_compress(c->h, p);
    memcpy(c->block, p, n);
    c->used = n;
}

static void sha256_final(sha256_ctx *c, unsigned char out[32]) {
    uint64_t bits = c->length * 8;
    int i;
    c->block[c->used++] = 0x80;
    if (c->used > 56) {
        memset(c->block + c->used, 0, 64 - c->used);
        sha256_compress(c->h, c->block);
        c->used = 0;
    }
    memset(c->block + c->used, 0, 56 - c->used);
    for (i = 0; i < 8; i++) c->block[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
    sha256_compress(c->h, c->block);
    for (i = 0; i < 32; i++) out[i] = (unsigned char)(c->h[i / 4] >> (24 - 8 * (i % 4)));
}

static uint16_t le16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t le64(const unsigned char *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

/* Relative, '/'-separated, no empty, "." or ".." component: every entry lands inside the folder. */
static int path_is_safe(const char *path, size_t length) {
    const char *p = path, *end = path + length;
    if (length == 0 || memchr(path, '\0', length) != NULL) return 0;
    while (p <= end) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        size_t part = (size_t)((slash ? slash : end) - p);
        if (part == 0 || (part == 1 && p[0] == '.') || (part == 2 && p[0] == '.' && p[1] == '.')) return 0;
        if (!slash) break;
        p = slash + 1;
    }
    return 1;
}

/* Where the runtime pack is, from the footer; the first entry's size is the cache entry's cheap check. */
struct bundle_range {
    uint64_t runtime_offset, runtime_length;
    unsigned char runtime_sha256[32];
    uint64_t program_size;
};

/* The footer f (got bytes read from the end of a file of `size` bytes): NULL, or the damage reason. */
static const char *check_footer(const unsigned char *f, size_t got, uint64_t size, struct bundle_range *b) {
    uint64_t room, manifest_length;
    if (size < FOOTER_SIZE || got != FOOTER_SIZE || memcmp(f, "LLMPACK\0", 8) != 0)
        return "truncated: no llmpack footer at its end";
    if (crc32(crc32(0L, Z_NULL, 0), f, FOOTER_SIZE - 4) != le32(f + FOOTER_SIZE - 4)) return "footer checksum mismatch";
    if (le32(f + 8) != FOOTER_VERSION) return "unknown footer version; it needs another llmpack";
    manifest_length = le64(f + 64);
    b->runtime_offset = le64(f + 104);
    b->runtime_length = le64(f + 112);
    memcpy(b->runtime_sha256, f + 120, 32);
    /* Each term checked against what is left, so that no sum can overflow. */
    room = size - FOOTER_SIZE;
    if (manifest_length > room || b->runtime_length > room - manifest_length ||
        b->runtime_offset > room - manifest_length - b->runtime_length || b->runtime_length < PACK_HEADER_SIZE)
        return "runtime out of range";
    return NULL;
}

/* The pack's header and its first entry's header (`want` bytes of head), which must name `program`:
 * NULL, or the damage reason. Sets the program's size. */
static const char *check_pack_head(const unsigned char *head, size_t want, const char *program, uint64_t *program_size) {
    const unsigned char *entry = head + PACK_HEADER_SIZE;
    size_t length = strlen(program);
    if (memcmp(head, "LLMPACKR", 8) != 0 || le32(head + 8) != PACK_VERSION || le32(head + 12) == 0)
        return "runtime archive damaged (bad header)";
    if (want < PACK_HEADER_SIZE + 2 + length + ENTRY_FIXED_SIZE || le16(entry) != length ||
        memcmp(entry + 2, program, length) != 0 || entry[2 + length] != 0)
        return "runtime archive damaged (bad entry)";
    *program_size = le64(entry + 2 + length + 6);
    return NULL;
}

#endif
