/*
 * io-mask.c: mask files: the native .fmask format, .npy int32 [batch_m, heads_m, seq_len_k, 4] (LTS, LTE, UTS,
 * UTE), FlashMask's startend_row_indices (int32 [batch_m, heads_m, seq_len_k, {1, 2, 4}] plus a causal flag),
 * and a readable text listing. Every writer goes through a temporary file renamed into place.
 *
 * The .fmask format, version 1 (all integers little endian):
 *
 *   offset size  field
 *        0    8  magic 0x89 'F' 'M' 'A' 'S' 'K' '\r' '\n' (the high bit and the CR LF catch text-mode transfers)
 *        8    4  format version, uint32 = 1; a reader rejects any version it does not know
 *       12    4  flags, uint32, 0 (a reader of version 1 rejects any other value)
 *       16    4  batch_m, int32
 *       20    4  heads_m, int32
 *       24    4  seq_len_q, int32
 *       28    4  seq_len_k, int32
 *       32    8  size of the payload before compression, uint64
 *       40    8  size of the compressed payload, uint64
 *       48    4  CRC32 of the compressed payload
 *       52    4  CRC32 of bytes 0..51
 *       56    -  the compressed payload: one zlib stream (RFC 1950) of exactly the size above; the file ends there
 *
 *   The payload, for each (b, h) in row-major order, for each vector in the order LTS, LTE, UTS, UTE, is a list
 *   of runs, each two unsigned LEB128 varints (7 bits a byte, low bits first, at most 5 bytes): zigzag(delta)
 *   and count > 0, meaning "the next count columns each equal the previous column plus delta" (the value before
 *   column 0 is 0). The counts of one vector sum to seq_len_k exactly. Families are piecewise linear in j
 *   (causal's UTE is j, a document's LTS is constant over the document), so a vector takes a handful of runs:
 *   a 1,048,576-column causal_document mask is a few hundred bytes. The vectors are canonical (famask.h);
 *   a reader canonicalises and validates them again (0 <= start <= end <= seq_len_q).
 *
 * The FlashMask layout. startend_row_indices with n vectors and a causal flag mean (SPEC.md section 1):
 *   n = 1, causal:     masked rows [LTS, seq_len_q) and [0, j)
 *   n = 2, causal:     masked rows [LTS, LTE) and [0, j)
 *   n = 2, not causal: masked rows [LTS, seq_len_q) and [0, UTE)
 *   n = 4, not causal: masked rows [LTS, LTE) and [UTS, UTE)
 * Here "causal" means key j is hidden from rows i < j (top-left aligned when seq_len_q != seq_len_k).
 * The flag travels in a side file PATH.json written beside PATH.npy, for example
 *   {"layout": "flashmask", "causal": true, "n_vectors": 1, "batch_m": 1, "heads_m": 1, "seq_len_q": 8192,
 *    "seq_len_k": 8192}
 * famask_mask_load_flashmask takes the flag from its argument (0 or 1), or from the side file when it is -1.
 */
#include "io.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FMASK_VERSION 1
#define FMASK_HEADER 56
static const unsigned char fmask_magic[8] = {0x89, 'F', 'M', 'A', 'S', 'K', '\r', '\n'};

/* ---- little-endian fields -------------------------------------------------------------------------------- */

static void put32(unsigned char *p, uint32_t v)
{
    for (int k = 0; k < 4; k++)
        p[k] = (unsigned char)(v >> (8 * k));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int k = 0; k < 8; k++)
        p[k] = (unsigned char)(v >> (8 * k));
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p) { return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32; }

static uint32_t crc32_big(uint32_t crc, const unsigned char *p, size_t n)
{
    while (n > 0) {
        size_t k = n > (1u << 30) ? (1u << 30) : n;
        crc = (uint32_t)crc32(crc, p, (uInt)k);
        p += k;
        n -= k;
    }
    return crc;
}

/* ---- a growing byte buffer ------------------------------------------------------------------------------- */

typedef struct buf {
    unsigned char *p;
    size_t len, cap;
} buf;

static int buf_reserve(famask_ctx *ctx, buf *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return 1;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra)
        cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (!p) {
        fm_error(ctx, FAMASK_STATUS_NO_MEMORY, "out of memory allocating %zu bytes", cap);
        return 0;
    }
    b->p = p;
    b->cap = cap;
    return 1;
}

static void put_varint(unsigned char **q, uint32_t v)
{
    while (v >= 0x80) {
        *(*q)++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *(*q)++ = (unsigned char)v;
}

static int put_run(famask_ctx *ctx, buf *b, int64_t delta, uint32_t count)
{
    if (!buf_reserve(ctx, b, 10))
        return 0;
    unsigned char *q = b->p + b->len;
    put_varint(&q, (uint32_t)(delta < 0 ? ((uint64_t)(-delta) << 1) - 1 : (uint64_t)delta << 1));
    put_varint(&q, count);
    b->len = (size_t)(q - b->p);
    return 1;
}

/* Closes the runs of the vectors whose delta changes at column j (d: the new deltas). */
static int switch_runs(famask_ctx *ctx, buf part[4], int32_t delta[4], int start[4], const int32_t d[4], int j)
{
    for (int x = 0; x < 4; x++)
        if (d[x] != delta[x]) {
            if (!put_run(ctx, &part[x], delta[x], (uint32_t)(j - start[x])))
                return 0;
            delta[x] = d[x];
            start[x] = j;
        }
    return 1;
}

/* Appends the runs of the four vectors of one (b, h) (n columns at v), LTS first. One pass over the columns
 * builds all four (each in its own buffer, then appended in order), and a column whose four deltas continue
 * the current runs costs one compare: bounds are within [0, 2^30], so deltas fit int32. */
static int encode_slice(famask_ctx *ctx, buf *out, buf part[4], const int32_t *v, int n)
{
    int32_t delta[4] = {v[0], v[1], v[2], v[3]};
    int start[4] = {0, 0, 0, 0};
    for (int x = 0; x < 4; x++)
        part[x].len = 0;
    for (int j = 1; j < n; j++) {
        const int32_t *c = v + 4 * (int64_t)j, *q = c - 4;
        int32_t d[4] = {c[0] - q[0], c[1] - q[1], c[2] - q[2], c[3] - q[3]};
        if (((d[0] ^ delta[0]) | (d[1] ^ delta[1]) | (d[2] ^ delta[2]) | (d[3] ^ delta[3])) == 0)
            continue;
        if (!switch_runs(ctx, part, delta, start, d, j))
            return 0;
    }
    for (int x = 0; x < 4; x++) {
        if (!put_run(ctx, &part[x], delta[x], (uint32_t)(n - start[x])) || !buf_reserve(ctx, out, part[x].len))
            return 0;
        memcpy(out->p + out->len, part[x].p, part[x].len);
        out->len += part[x].len;
    }
    return 1;
}

static famask_status check_mask(famask_ctx *ctx, const famask_mask *mask, const char *path)
{
    if (!mask || !path)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "mask and path must not be NULL");
    return FAMASK_STATUS_OK;
}

static famask_status save_fmask(famask_ctx *ctx, const famask_mask *m, const char *path)
{
    buf raw = {0}, part[4] = {{0}};
    unsigned char *z = NULL;
    fm_out o = {0};
    famask_status st = FAMASK_STATUS_OK;
    for (int b = 0; b < m->batch_m; b++)
        for (int h = 0; h < m->heads_m; h++)
            if (!encode_slice(ctx, &raw, part, fm_mask_column(m, b, h, 0), m->seq_len_k)) {
                st = FAMASK_STATUS_NO_MEMORY;
                goto fail;
            }
    uLong zcap = compressBound((uLong)raw.len);
    if (!(z = fm_malloc(ctx, zcap))) {
        st = FAMASK_STATUS_NO_MEMORY;
        goto fail;
    }
    uLongf zlen = zcap;
    if (compress2(z, &zlen, raw.p, (uLong)raw.len, Z_DEFAULT_COMPRESSION) != Z_OK) {
        st = fm_error(ctx, FAMASK_STATUS_INTERNAL, "zlib: compression failed");
        goto fail;
    }
    unsigned char head[FMASK_HEADER];
    memcpy(head, fmask_magic, 8);
    put32(head + 8, FMASK_VERSION);
    put32(head + 12, 0);
    put32(head + 16, (uint32_t)m->batch_m);
    put32(head + 20, (uint32_t)m->heads_m);
    put32(head + 24, (uint32_t)m->seq_len_q);
    put32(head + 28, (uint32_t)m->seq_len_k);
    put64(head + 32, raw.len);
    put64(head + 40, zlen);
    put32(head + 48, crc32_big((uint32_t)crc32(0, NULL, 0), z, zlen));
    put32(head + 52, (uint32_t)crc32(crc32(0, NULL, 0), head, 52));
    if ((st = fm_out_open(ctx, path, &o)))
        goto fail;
    fm_out_write(&o, head, sizeof head);
    fm_out_write(&o, z, zlen);
    st = fm_out_commit(ctx, &o);
fail:
    fm_out_abort(&o);
    free(raw.p);
    for (int x = 0; x < 4; x++)
        free(part[x].p);
    free(z);
    return st;
}

/* Reads a varint of at most 32 bits; 0 when the payload ends or the varint is too long. */
static int get_varint(const unsigned char **p, const unsigned char *end, uint32_t *v)
{
    uint64_t x = 0;
    for (int k = 0; k < 5; k++) {
        if (*p >= end)
            return 0;
        unsigned char c = *(*p)++;
        x |= (uint64_t)(c & 0x7f) << (7 * k);
        if (!(c & 0x80))
            break;
        if (k == 4)
            return 0;
    }
    if (x > 0xffffffffu)
        return 0;
    *v = (uint32_t)x;
    return 1;
}

/* 1 if every column is valid and already in the canonical form of famask.h (so canonicalising changes nothing):
 * empty LT is [nq, nq), empty UT is [0, 0); two runs are UT before LT with a gap; a lone run is in UT iff it
 * starts above the diagonal. */
static int all_canonical(const int32_t *v, int nb, int nh, int nq, int nk)
{
    int64_t cols = (int64_t)nb * nh * nk;
    int bad = 0;
    for (int64_t c = 0; c < cols; c++, v += 4) {
        int32_t lts = v[0], lte = v[1], uts = v[2], ute = v[3], j = (int32_t)(c % nk);
        int lt_empty = lts == lte, ut_empty = uts == ute;
        bad |= lts < 0 || lte < lts || lte > nq || uts < 0 || ute < uts || ute > nq;
        bad |= lt_empty && lts != nq;
        bad |= ut_empty && uts != 0;
        bad |= !lt_empty && !ut_empty && !(ute < lts);
        bad |= !ut_empty && lt_empty && !(uts < j);
        bad |= ut_empty && !lt_empty && !(lts >= j);
    }
    return !bad;
}

static famask_status load_fmask(famask_ctx *ctx, fm_stream *s, famask_mask **out)
{
    unsigned char head[FMASK_HEADER];
    unsigned char *z = NULL, *raw = NULL;
    int32_t *bounds = NULL;
    famask_status st = fm_stream_read_exact(ctx, s, head, sizeof head, ".fmask header");
    if (st)
        return st;
    if (memcmp(head, fmask_magic, 8) != 0)
        return fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': not a .fmask file (bad magic)", s->name);
    uint32_t version = get32(head + 8);
    if (version > FMASK_VERSION)
        return fm_error(ctx, FAMASK_STATUS_BAD_DATA,
                        "'%s': .fmask format version %u is newer than this famask reads (%d): upgrade famask",
                        s->name, version, FMASK_VERSION);
    if (version < 1)
        return fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': .fmask format version %u does not exist", s->name,
                        version);
    if (get32(head + 52) != (uint32_t)crc32(crc32(0, NULL, 0), head, 52))
        return fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': .fmask header fails its CRC32 check (corrupt file)",
                        s->name);
    if (get32(head + 12) != 0)
        return fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': .fmask flags 0x%x are unknown to this version",
                        s->name, get32(head + 12));
    int nb = (int32_t)get32(head + 16), nh = (int32_t)get32(head + 20);
    int nq = (int32_t)get32(head + 24), nk = (int32_t)get32(head + 28);
    if ((st = fm_check_shape(ctx, nb, nh, nq, nk))) {
        fm_error_prefix(ctx, "'%s'", s->name);
        return FAMASK_STATUS_BAD_DATA;
    }
    uint64_t rawlen = get64(head + 32), zlen = get64(head + 40);
    uint64_t cols = (uint64_t)nb * nh * nk;
    /* at most one run of two 5-byte varints per column and vector */
    if (rawlen > cols * 4 * 10 || zlen > compressBound((uLong)rawlen) ||
        (s->file_size >= 0 && zlen != (uint64_t)s->file_size - FMASK_HEADER))
        return fm_error(ctx, FAMASK_STATUS_BAD_DATA,
                        "'%s': .fmask payload sizes (%llu compressed, %llu raw) do not fit the file (corrupt or "
                        "truncated)",
                        s->name, (unsigned long long)zlen, (unsigned long long)rawlen);
    if (!(z = fm_malloc(ctx, (size_t)zlen)) || !(raw = fm_malloc(ctx, (size_t)rawlen)) ||
        !(bounds = fm_malloc(ctx, (size_t)cols * 4 * sizeof *bounds))) {
        st = FAMASK_STATUS_NO_MEMORY;
        goto fail;
    }
    if ((st = fm_stream_read_exact(ctx, s, z, (size_t)zlen, ".fmask payload")))
        goto fail;
    if ((st = fm_stream_expect_end(ctx, s, "the .fmask payload")))
        goto fail;
    if (get32(head + 48) != crc32_big((uint32_t)crc32(0, NULL, 0), z, (size_t)zlen)) {
        st = fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': .fmask payload fails its CRC32 check (corrupt file)",
                      s->name);
        goto fail;
    }
    uLongf got = (uLongf)rawlen;
    int zr = uncompress(raw, &got, z, (uLong)zlen);
    if (zr != Z_OK || got != rawlen) {
        st = fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': .fmask payload does not decompress to its stated size",
                      s->name);
        goto fail;
    }
    const unsigned char *p = raw, *end = raw + rawlen;
    static const char *names[4] = {"LTS", "LTE", "UTS", "UTE"};
    for (int b = 0; b < nb; b++)
        for (int h = 0; h < nh; h++)
            for (int x = 0; x < 4; x++) {
                int32_t *v = bounds + ((int64_t)b * nh + h) * nk * 4 + x;
                int64_t prev = 0;
                int j = 0;
                while (j < nk) {
                    uint32_t zz, count;
                    if (!get_varint(&p, end, &zz) || !get_varint(&p, end, &count) || count == 0 ||
                        count > (uint32_t)(nk - j)) {
                        st = fm_error(ctx, FAMASK_STATUS_BAD_DATA,
                                      "'%s': batch %d head %d column %d: malformed %s runs in the .fmask payload",
                                      s->name, b, h, j, names[x]);
                        goto fail;
                    }
                    int64_t delta = (zz & 1) ? -(int64_t)(zz >> 1) - 1 : (int64_t)(zz >> 1);
                    for (uint32_t c = 0; c < count; c++, j++) {
                        prev += delta;
                        if (prev < 0 || prev > nq) {
                            st = fm_error(ctx, FAMASK_STATUS_BAD_DATA,
                                          "'%s': batch %d head %d column %d: %s = %lld is outside [0, %d]", s->name,
                                          b, h, j, names[x], (long long)prev, nq);
                            goto fail;
                        }
                        v[4 * (int64_t)j] = (int32_t)prev;
                    }
                }
            }
    if (p != end) {
        st = fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': unexpected bytes at the end of the .fmask payload",
                      s->name);
        goto fail;
    }
    if (all_canonical(bounds, nb, nh, nq, nk)) { /* what famask writes: take the vectors as they are */
        famask_mask *m = NULL;
        if ((st = fm_mask_alloc(ctx, nb, nh, nq, nk, &m)))
            goto fail;
        memcpy(m->bounds, bounds, (size_t)cols * 4 * sizeof *bounds);
        *out = m;
    } else if ((st = famask_mask_from_vectors(ctx, nb, nh, nq, nk, bounds, out))) {
        fm_error_prefix(ctx, "'%s'", s->name);
        goto fail;
    }
fail:
    free(z);
    free(raw);
    free(bounds);
    return st;
}

/* ---- .npy int32 [batch_m, heads_m, seq_len_k, n] -------------------------------------------------------- */

static famask_status save_npy_vectors(famask_ctx *ctx, const char *path, const int32_t *v, int nb, int nh, int nk,
                                      int n)
{
    famask_array a;
    memset(&a, 0, sizeof a);
    a.dtype = FAMASK_DTYPE_I32;
    a.ndim = 4;
    a.shape[0] = nb;
    a.shape[1] = nh;
    a.shape[2] = nk;
    a.shape[3] = n;
    a.data = (void *)v;
    return famask_npy_save(ctx, path, &a);
}

/* Loads an integer .npy [seq_len_k, n] or [batch_m, heads_m, seq_len_k, n] with n among allowed (a bit set of
 * n values) into int32 vectors (caller frees). */
static famask_status load_npy_vectors(famask_ctx *ctx, const char *path, unsigned allowed, int32_t **vec, int *nb,
                                      int *nh, int *nk, int *n)
{
    famask_array *a = NULL;
    *vec = NULL;
    famask_status st = famask_npy_load(ctx, path, &a);
    if (st)
        return st;
    int ok_shape = (a->ndim == 2 || a->ndim == 4) && a->shape[a->ndim - 1] < 31 &&
                   ((allowed >> a->shape[a->ndim - 1]) & 1);
    int64_t b = a->ndim == 4 ? a->shape[0] : 1, h = a->ndim == 4 ? a->shape[1] : 1, k = a->shape[a->ndim - 2];
    if (!ok_shape || b < 1 || h < 1 || k < 1 || b > INT32_MAX || h > INT32_MAX || k > FAMASK_MAX_SEQ_LEN) {
        char shape[128] = "";
        for (int d = 0; d < a->ndim; d++)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%lld", d ? ", " : "",
                     (long long)a->shape[d]);
        st = fm_error(ctx, FAMASK_STATUS_BAD_DATA,
                      "'%s': mask vectors of shape [%s]: expected [seq_len_k, n] or [batch_m, heads_m, seq_len_k, n] "
                      "with n %s",
                      path, shape, allowed == (1u << 4) ? "= 4" : "in {1, 2, 4}");
        goto fail;
    }
    int64_t count = b * h * k * a->shape[a->ndim - 1];
    int32_t *v = fm_malloc(ctx, (size_t)count * sizeof *v);
    if (!v) {
        st = FAMASK_STATUS_NO_MEMORY;
        goto fail;
    }
    for (int64_t c = 0; c < count; c++) {
        int64_t x;
        switch (a->dtype) {
        case FAMASK_DTYPE_I32: x = ((const int32_t *)a->data)[c]; break;
        case FAMASK_DTYPE_I64: x = ((const int64_t *)a->data)[c]; break;
        case FAMASK_DTYPE_I16: x = ((const int16_t *)a->data)[c]; break;
        case FAMASK_DTYPE_I8: x = ((const int8_t *)a->data)[c]; break;
        case FAMASK_DTYPE_U8: x = ((const uint8_t *)a->data)[c]; break;
        default:
            free(v);
            st = fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': mask vectors must be integers, not %s", path,
                          famask_dtype_name(a->dtype));
            goto fail;
        }
        if (x < INT32_MIN || x > INT32_MAX) {
            int64_t col = c / a->shape[a->ndim - 1];
            free(v);
            st = fm_error(ctx, FAMASK_STATUS_BAD_MASK, "'%s': batch %lld head %lld column %lld: bound %lld is out of range",
                          path, (long long)(col / k / h), (long long)(col / k % h), (long long)(col % k),
                          (long long)x);
            goto fail;
        }
        v[c] = (int32_t)x;
    }
    *vec = v;
    *nb = (int)b;
    *nh = (int)h;
    *nk = (int)k;
    *n = (int)a->shape[a->ndim - 1];
fail:
    famask_array_free(a);
    return st;
}

static famask_status load_npy_mask(famask_ctx *ctx, const char *path, int seq_len_q, famask_mask **out)
{
    int32_t *v = NULL;
    int nb, nh, nk, n;
    famask_status st = load_npy_vectors(ctx, path, 1u << 4, &v, &nb, &nh, &nk, &n);
    if (st)
        return st;
    st = famask_mask_from_vectors(ctx, nb, nh, seq_len_q > 0 ? seq_len_q : nk, nk, v, out);
    if (st == FAMASK_STATUS_BAD_MASK && seq_len_q <= 0)
        fm_error_prefix(ctx, "'%s' (seq_len_q taken as seq_len_k = %d; give it if it differs)", path, nk);
    else if (st)
        fm_error_prefix(ctx, "'%s'", path);
    free(v);
    return st;
}

/* ---- text ----------------------------------------------------------------------------------------------- */

static famask_status save_text(famask_ctx *ctx, const famask_mask *m, const char *path)
{
    fm_out o;
    famask_status st = fm_out_open(ctx, path, &o);
    if (st)
        return st;
    char line[160];
    int n = snprintf(line, sizeof line,
                     "famask mask: batch_m %d, heads_m %d, seq_len_q %d, seq_len_k %d; per column: batch head "
                     "column: LT [LTS, LTE) UT [UTS, UTE)\n",
                     m->batch_m, m->heads_m, m->seq_len_q, m->seq_len_k);
    fm_out_write(&o, line, (size_t)n);
    for (int b = 0; b < m->batch_m; b++)
        for (int h = 0; h < m->heads_m; h++)
            for (int j = 0; j < m->seq_len_k; j++) {
                const int32_t *v = fm_mask_column(m, b, h, j);
                n = snprintf(line, sizeof line, "%d %d %d: LT [%d, %d) UT [%d, %d)\n", b, h, j, v[0], v[1], v[2],
                             v[3]);
                fm_out_write(&o, line, (size_t)n);
            }
    return fm_out_commit(ctx, &o);
}

/* ---- FlashMask startend_row_indices --------------------------------------------------------------------- */

/* The 4-vector meaning of FlashMask vectors f[0..n) under the causal flag (see the top of this file). */
static void flashmask_expand(const int32_t *f, int n, int causal, int nq, int j, int32_t v[4])
{
    v[FAMASK_LTS] = f[0];
    if (causal) {
        v[FAMASK_LTE] = n == 1 ? nq : f[1];
        v[FAMASK_UTS] = 0;
        v[FAMASK_UTE] = j < nq ? j : nq;
    } else if (n == 2) {
        v[FAMASK_LTE] = nq;
        v[FAMASK_UTS] = 0;
        v[FAMASK_UTE] = f[1];
    } else {
        v[FAMASK_LTE] = f[1];
        v[FAMASK_UTS] = f[2];
        v[FAMASK_UTE] = f[3];
    }
}

/* FlashMask vectors for canonical column v in form (n, causal); 0 if the form cannot hold the column. */
static int flashmask_fit(const int32_t *v, int n, int causal, int nq, int j, int32_t f[4])
{
    if (n == 4) {
        memcpy(f, v, 4 * sizeof *f);
        return 1;
    }
    if (!causal) { /* n == 2: [0, UTE) and [LTS, nq) */
        int32_t runs[4];
        int k = fm_runs_merge(v, 2, runs);
        int32_t lts = nq, ute = 0;
        if (k == 2 && runs[0] == 0 && runs[3] == nq) {
            ute = runs[1];
            lts = runs[2];
        } else if (k == 1 && runs[0] == 0) {
            ute = runs[1];
        } else if (k == 1 && runs[1] == nq) {
            lts = runs[0];
        } else if (k != 0) {
            return 0;
        }
        f[0] = lts;
        f[1] = ute;
    } else {
        /* the rest beyond [0, j) must be one interval, ending at nq for n == 1 */
        int32_t runs[4];
        int k = fm_runs_merge(v, 2, runs);
        int jc = j < nq ? j : nq;
        int32_t s = nq, e = nq;
        if (jc > 0 && (k == 0 || runs[0] != 0 || runs[1] < jc))
            return 0;
        int first = 0;
        if (jc > 0) { /* the first run covers [0, jc) and maybe more */
            if (runs[1] > jc) {
                s = jc;
                e = runs[1];
                if (k == 2)
                    return 0;
            }
            first = 1;
        }
        for (int r = first; r < k; r++) {
            if (s != nq || e != nq)
                return 0;
            s = runs[2 * r];
            e = runs[2 * r + 1];
        }
        if (n == 1 && e != nq && s != e)
            return 0;
        f[0] = s;
        f[1] = e;
    }
    int32_t back[4];
    flashmask_expand(f, n, causal, nq, j, back);
    fm_column_canonicalise(back, nq, j);
    return memcmp(back, v, sizeof back) == 0;
}

static famask_status write_flashmask_json(famask_ctx *ctx, const char *npy_path, const famask_mask *m, int n,
                                          int causal, fm_out *o)
{
    size_t len = strlen(npy_path);
    char *p = fm_malloc(ctx, len + 6);
    if (!p)
        return FAMASK_STATUS_NO_MEMORY;
    snprintf(p, len + 6, "%s.json", npy_path);
    famask_status st = fm_out_open(ctx, p, o);
    free(p);
    if (st)
        return st;
    char text[320];
    int k = snprintf(text, sizeof text,
                     "{\"layout\": \"flashmask\", \"causal\": %s, \"n_vectors\": %d, \"batch_m\": %d, \"heads_m\": "
                     "%d, \"seq_len_q\": %d, \"seq_len_k\": %d}\n",
                     causal ? "true" : "false", n, m->batch_m, m->heads_m, m->seq_len_q, m->seq_len_k);
    fm_out_write(o, text, (size_t)k);
    return FAMASK_STATUS_OK;
}

famask_status famask_mask_save_flashmask(famask_ctx *ctx, const famask_mask *mask, const char *path, int *n_vectors,
                                         int *causal)
{
    famask_status st = check_mask(ctx, mask, path);
    if (st)
        return st;
    static const int forms[4][2] = {{1, 1}, {2, 1}, {2, 0}, {4, 0}};
    int64_t cols = (int64_t)mask->batch_m * mask->heads_m * mask->seq_len_k;
    int32_t *f = NULL;
    fm_out js = {0};
    for (int form = 0; form < 4; form++) {
        int n = forms[form][0], c = forms[form][1];
        free(f);
        if (!(f = fm_malloc(ctx, (size_t)cols * n * sizeof *f)))
            return FAMASK_STATUS_NO_MEMORY;
        int ok = 1;
        for (int64_t col = 0; col < cols && ok; col++) {
            int32_t tmp[4] = {0, 0, 0, 0};
            ok = flashmask_fit(mask->bounds + 4 * col, n, c, mask->seq_len_q, (int)(col % mask->seq_len_k), tmp);
            if (ok)
                memcpy(f + col * n, tmp, (size_t)n * sizeof *f);
        }
        if (!ok)
            continue;
        if (strcmp(path, "-") != 0 && (st = write_flashmask_json(ctx, path, mask, n, c, &js)))
            goto fail;
        if ((st = save_npy_vectors(ctx, path, f, mask->batch_m, mask->heads_m, mask->seq_len_k, n)))
            goto fail;
        if (js.fp && (st = fm_out_commit(ctx, &js))) {
            unlink(path);
            goto fail;
        }
        free(f);
        if (n_vectors)
            *n_vectors = n;
        if (causal)
            *causal = c;
        return FAMASK_STATUS_OK;
    }
    st = fm_error(ctx, FAMASK_STATUS_INTERNAL, "no FlashMask layout fits (4 vectors always should)");
fail:
    fm_out_abort(&js);
    free(f);
    return st;
}

/* Reads "key": value (true/false or an integer) from the side file; -1 when absent. */
static int64_t json_field(const char *text, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = strstr(text, pat);
    if (!p)
        return -1;
    p += strlen(pat);
    while (*p == ' ' || *p == ':' || *p == '\t' || *p == '\n')
        p++;
    if (strncmp(p, "true", 4) == 0)
        return 1;
    if (strncmp(p, "false", 5) == 0)
        return 0;
    if (!isdigit((unsigned char)*p))
        return -1;
    return strtoll(p, NULL, 10);
}

famask_status famask_mask_load_flashmask(famask_ctx *ctx, const char *path, int causal, int seq_len_q,
                                         famask_mask **out)
{
    *out = NULL;
    int32_t *f = NULL, *v = NULL;
    int nb, nh, nk, n;
    famask_status st;
    if (causal < 0) {
        size_t len = strlen(path);
        char *side = fm_malloc(ctx, len + 6), text[1024];
        if (!side)
            return FAMASK_STATUS_NO_MEMORY;
        snprintf(side, len + 6, "%s.json", path);
        FILE *fp = fopen(side, "rb");
        size_t got = fp ? fread(text, 1, sizeof text - 1, fp) : 0;
        if (fp)
            fclose(fp);
        text[got] = '\0';
        int64_t c = json_field(text, "causal"), q = json_field(text, "seq_len_q");
        if (c < 0) {
            st = fm_error(ctx, fp ? FAMASK_STATUS_BAD_DATA : FAMASK_STATUS_CANNOT_OPEN,
                          "'%s': %s: give the causal flag instead", side,
                          fp ? "no \"causal\" field" : "cannot read the side file");
            free(side);
            return st;
        }
        free(side);
        causal = (int)c;
        if (seq_len_q <= 0 && q > 0 && q <= FAMASK_MAX_SEQ_LEN)
            seq_len_q = (int)q;
    }
    if ((st = load_npy_vectors(ctx, path, (1u << 1) | (1u << 2) | (1u << 4), &f, &nb, &nh, &nk, &n)))
        return st;
    if (n == 4 && causal) {
        st = fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': FlashMask has no 4-vector causal layout (use causal = 0)",
                      path);
        goto fail;
    }
    if (n == 1 && !causal) {
        st = fm_error(ctx, FAMASK_STATUS_BAD_DATA,
                      "'%s': FlashMask's 1-vector layout is causal only (use causal = 1)", path);
        goto fail;
    }
    int nq = seq_len_q > 0 ? seq_len_q : nk;
    int64_t cols = (int64_t)nb * nh * nk;
    if (!(v = fm_malloc(ctx, (size_t)cols * 4 * sizeof *v))) {
        st = FAMASK_STATUS_NO_MEMORY;
        goto fail;
    }
    for (int64_t c = 0; c < cols; c++)
        flashmask_expand(f + c * n, n, causal, nq, (int)(c % nk), v + 4 * c);
    if ((st = famask_mask_from_vectors(ctx, nb, nh, nq, nk, v, out)))
        fm_error_prefix(ctx, "'%s'", path);
fail:
    free(f);
    free(v);
    return st;
}

/* ---- dispatch ------------------------------------------------------------------------------------------- */

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

famask_status famask_mask_save(famask_ctx *ctx, const famask_mask *mask, const char *path, famask_format format)
{
    famask_status st = check_mask(ctx, mask, path);
    if (st)
        return st;
    if (format == FAMASK_FORMAT_AUTO) {
        if (strcmp(path, "-") == 0 || ends_with(path, ".txt"))
            format = FAMASK_FORMAT_TEXT;
        else if (ends_with(path, ".fmask"))
            format = FAMASK_FORMAT_FMASK;
        else if (ends_with(path, ".npy"))
            format = FAMASK_FORMAT_NPY;
        else
            return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                            "'%s': cannot tell the format from the name (use .fmask, .npy, .txt or '-')", path);
    }
    switch (format) {
    case FAMASK_FORMAT_FMASK:
        return save_fmask(ctx, mask, path);
    case FAMASK_FORMAT_NPY:
        return save_npy_vectors(ctx, path, mask->bounds, mask->batch_m, mask->heads_m, mask->seq_len_k, 4);
    case FAMASK_FORMAT_FLASHMASK:
        return famask_mask_save_flashmask(ctx, mask, path, NULL, NULL);
    case FAMASK_FORMAT_TEXT:
        return save_text(ctx, mask, path);
    case FAMASK_FORMAT_AUTO:
        break;
    }
    return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "unknown mask file format %d", (int)format);
}

famask_status famask_mask_load(famask_ctx *ctx, const char *path, int seq_len_q, famask_mask **out)
{
    *out = NULL;
    if (!path)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "path must not be NULL");
    fm_stream s;
    famask_status st = fm_stream_open(ctx, path, &s);
    if (st)
        return st;
    const unsigned char *magic = NULL;
    size_t got = 0;
    if ((st = fm_stream_peek(ctx, &s, 8, &magic, &got)))
        goto done;
    if (got >= 6 && memcmp(magic, "\x93NUMPY", 6) == 0) {
        fm_stream_close(&s);
        return load_npy_mask(ctx, path, seq_len_q, out);
    }
    if (got == 8 && memcmp(magic, fmask_magic, 8) == 0) {
        st = load_fmask(ctx, &s, out);
        if (!st && seq_len_q > 0 && seq_len_q != (*out)->seq_len_q) {
            st = fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'%s': the mask has seq_len_q %d, not %d", path,
                          (*out)->seq_len_q, seq_len_q);
            famask_mask_free(*out);
            *out = NULL;
        }
        goto done;
    }
    if (got < 8 && got > 0 && memcmp(magic, fmask_magic, got) == 0)
        st = fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': truncated .fmask header (%zu bytes)", s.name, got);
    else
        st = fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': neither a .fmask nor a .npy file (bad magic)", s.name);
done:
    fm_stream_close(&s);
    return st;
}
