/*
 * test-convert.c: the dense converter. Random representable masks (random valid vectors -> dense form ->
 * every dtype, both value conventions, every container: in memory, pushed in random row chunks, .npy in C order,
 * Fortran order and big endian, .npz stored and deflated, .npy.gz, raw and raw gzip) convert back to exactly
 * the canonical vectors; collapse and --keep-shape; random columns of three or more runs are rejected naming the
 * first such column, its runs and the count; float masks with values other than 0 and -inf; malformed input of
 * every kind fails cleanly; the CLI's exit codes and standard input; and, when .ci/test has made them with real
 * numpy (build-numpy/manifest.txt), files written by numpy.save, savez and savez_compressed.
 */
#include "testlib.h"

#include "io.h" /* fm_converter_create and fm_converter_push_fortran: Fortran order in random pieces */

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

static char dir[256];

static const char *tmp_path(const char *name)
{
    static char p[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

/* ---- growing byte buffers and file writers -------------------------------------------------------------- */

typedef struct bytes {
    unsigned char *p;
    size_t n, cap;
} bytes;

static void put(bytes *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void put16(bytes *b, unsigned v)
{
    unsigned char x[2] = {(unsigned char)v, (unsigned char)(v >> 8)};
    put(b, x, 2);
}

static void put32(bytes *b, uint32_t v)
{
    unsigned char x[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    put(b, x, 4);
}

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (n)
        fwrite(p, 1, n, f);
    fclose(f);
}

/* A .npy header as numpy writes it (version 1.0, padded to 64 bytes). */
static void npy_header(bytes *b, const char *descr, int fortran, int ndim, const int64_t *shape)
{
    char dict[256], sh[128] = "";
    for (int d = 0; d < ndim; d++)
        snprintf(sh + strlen(sh), sizeof sh - strlen(sh), "%lld%s", (long long)shape[d],
                 ndim == 1 ? "," : d + 1 < ndim ? ", " : "");
    int len = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }", descr,
                       fortran ? "True" : "False", sh);
    int total = (10 + len + 1 + 63) / 64 * 64;
    put(b, "\x93NUMPY\x01\x00", 8);
    put16(b, (unsigned)(total - 10));
    put(b, dict, (size_t)len);
    for (int k = 10 + len; k < total - 1; k++)
        put(b, " ", 1);
    put(b, "\n", 1);
}

static bytes deflate_raw(const unsigned char *p, size_t n, int gzip)
{
    bytes out = {0};
    z_stream z;
    memset(&z, 0, sizeof z);
    deflateInit2(&z, 6, Z_DEFLATED, gzip ? 16 + 15 : -15, 8, Z_DEFAULT_STRATEGY);
    out.cap = deflateBound(&z, (uLong)n) + 64;
    out.p = malloc(out.cap);
    z.next_in = (unsigned char *)p;
    z.avail_in = (uInt)n;
    z.next_out = out.p;
    z.avail_out = (uInt)out.cap;
    deflate(&z, Z_FINISH);
    out.n = out.cap - z.avail_out;
    deflateEnd(&z);
    return out;
}

static void put64(bytes *b, uint64_t v)
{
    put32(b, (uint32_t)v);
    put32(b, (uint32_t)(v >> 32));
}

/* A zip with the given members (each a whole .npy), stored or deflated (deflated & 1), as numpy.savez writes;
 * deflated & 2 writes the zip64 forms (sizes and offsets in extra fields, the zip64 end records), which a
 * real archive needs past 4 GiB. */
static void write_zip(const char *path, int n, const char *const *names, const bytes *members, int deflated)
{
    bytes z = {0}, cd = {0};
    int z64 = (deflated & 2) != 0;
    deflated &= 1;
    for (int k = 0; k < n; k++) {
        uint32_t crc = (uint32_t)crc32(0, members[k].p, (uInt)members[k].n);
        bytes data = deflated ? deflate_raw(members[k].p, members[k].n, 0) : members[k];
        uint64_t off = z.n;
        size_t nl = strlen(names[k]);
        put32(&z, 0x04034b50);
        put16(&z, z64 ? 45 : 20);
        put16(&z, 0);
        put16(&z, deflated ? 8 : 0);
        put16(&z, 0);
        put16(&z, 0x21);
        put32(&z, crc);
        put32(&z, z64 ? 0xffffffffu : (uint32_t)data.n);
        put32(&z, z64 ? 0xffffffffu : (uint32_t)members[k].n);
        put16(&z, (unsigned)nl);
        put16(&z, z64 ? 20 : 0);
        put(&z, names[k], nl);
        if (z64) {
            put16(&z, 1);
            put16(&z, 16);
            put64(&z, members[k].n);
            put64(&z, data.n);
        }
        put(&z, data.p, data.n);
        put32(&cd, 0x02014b50);
        put16(&cd, z64 ? 45 : 20);
        put16(&cd, z64 ? 45 : 20);
        put16(&cd, 0);
        put16(&cd, deflated ? 8 : 0);
        put16(&cd, 0);
        put16(&cd, 0x21);
        put32(&cd, crc);
        put32(&cd, z64 ? 0xffffffffu : (uint32_t)data.n);
        put32(&cd, z64 ? 0xffffffffu : (uint32_t)members[k].n);
        put16(&cd, (unsigned)nl);
        put16(&cd, z64 ? 28 : 0);
        put16(&cd, 0);
        put16(&cd, 0);
        put16(&cd, 0);
        put32(&cd, 0);
        put32(&cd, z64 ? 0xffffffffu : (uint32_t)off);
        put(&cd, names[k], nl);
        if (z64) {
            put16(&cd, 1);
            put16(&cd, 24);
            put64(&cd, members[k].n);
            put64(&cd, data.n);
            put64(&cd, off);
        }
        if (deflated)
            free(data.p);
    }
    uint64_t cd_off = z.n;
    put(&z, cd.p, cd.n);
    if (z64) {
        uint64_t rec = z.n;
        put32(&z, 0x06064b50);
        put64(&z, 44);
        put16(&z, 45);
        put16(&z, 45);
        put32(&z, 0);
        put32(&z, 0);
        put64(&z, (uint64_t)n);
        put64(&z, (uint64_t)n);
        put64(&z, cd.n);
        put64(&z, cd_off);
        put32(&z, 0x07064b50);
        put32(&z, 0);
        put64(&z, rec);
        put32(&z, 1);
    }
    put32(&z, 0x06054b50);
    put16(&z, 0);
    put16(&z, 0);
    put16(&z, z64 ? 0xffff : (unsigned)n);
    put16(&z, z64 ? 0xffff : (unsigned)n);
    put32(&z, z64 ? 0xffffffffu : (uint32_t)cd.n);
    put32(&z, z64 ? 0xffffffffu : (uint32_t)cd_off);
    put16(&z, 0);
    write_file(path, z.p, z.n);
    free(z.p);
    free(cd.p);
}

/* ---- dense data of every dtype -------------------------------------------------------------------------- */

static const char *descr_of(famask_dtype dt, int big)
{
    static char d[8];
    static const char *kinds[] = {"b1", "u1", "i1", "i2", "i4", "i8", "f2", "u2", "f4", "f8"};
    snprintf(d, sizeof d, "%c%s", famask_dtype_size(dt) == 1 ? '|' : big ? '>' : '<', kinds[dt]);
    return d;
}

static void put_elem(unsigned char *p, famask_dtype dt, int masked, int nz_masked)
{
    size_t es = famask_dtype_size(dt);
    memset(p, 0, es);
    if (dt == FAMASK_DTYPE_F16 || dt == FAMASK_DTYPE_BF16 || dt == FAMASK_DTYPE_F32 || dt == FAMASK_DTYPE_F64) {
        if (masked) { /* -inf */
            if (dt == FAMASK_DTYPE_F16) {
                p[1] = 0xfc;
            } else if (dt == FAMASK_DTYPE_BF16) {
                p[0] = 0x80;
                p[1] = 0xff;
            } else if (dt == FAMASK_DTYPE_F32) {
                float f = -INFINITY;
                memcpy(p, &f, 4);
            } else {
                double d = -INFINITY;
                memcpy(p, &d, 8);
            }
        } else if (tl_rand_int(0, 3) == 0) {
            p[es - 1] = 0x80; /* -0 is visible too */
        }
        return;
    }
    if (masked == nz_masked) { /* a nonzero of random value and width */
        if (dt == FAMASK_DTYPE_BOOL) {
            p[0] = 1;
        } else {
            size_t k = (size_t)tl_rand_int(0, (int)es - 1);
            p[k] = (unsigned char)tl_rand_int(1, 255);
        }
    }
}

static void random_column(int32_t v[4], int nq)
{
    for (int x = 0; x < 4; x += 2) {
        int s = tl_rand_int(0, nq), e = tl_rand_int(s, nq);
        if (tl_rand_int(0, 3) == 0)
            e = s;
        v[x] = s;
        v[x + 1] = e;
    }
}

enum { C_MEMORY, C_PUSH, C_PUSH_F, C_NPY, C_NPY_F, C_NPY_BE, C_NPZ, C_NPZ_DEFLATE, C_NPZ64, C_NPY_GZ, C_RAW, C_RAW_GZ, C_COUNT };
static const char *container_names[] = {"memory", "push", "push-fortran", "npy",    "npy-fortran", "npy-big-endian",
                                        "npz",    "npz-deflated", "npz-zip64", "npy.gz", "raw",         "raw.gz"};

/* Converts the dense form (C-order bytes of dtype dt, shape ndim/shape) through container c. */
static famask_status convert_via(famask_ctx *ctx, int c, famask_dtype dt, int ndim, const int64_t *shape,
                                 const unsigned char *data, unsigned flags, famask_mask **out)
{
    size_t es = famask_dtype_size(dt);
    int64_t count = 1;
    for (int d = 0; d < ndim; d++)
        count *= shape[d];
    size_t n = (size_t)count * es;
    famask_array a;
    memset(&a, 0, sizeof a);
    a.dtype = dt;
    a.ndim = ndim;
    memcpy(a.shape, shape, (size_t)ndim * sizeof *shape);
    a.data = (void *)data;
    famask_convert_opts o;
    memset(&o, 0, sizeof o);
    o.flags = flags;
    bytes b = {0};
    famask_status st;
    const char *path = tmp_path("dense");
    switch (c) {
    case C_MEMORY:
        return famask_mask_from_dense(ctx, &a, flags, out);
    case C_PUSH: {
        famask_converter *conv = NULL;
        st = famask_converter_create(ctx, dt, ndim, shape, flags, &conv);
        int64_t rows = count / shape[ndim - 1], done = 0;
        size_t row = (size_t)shape[ndim - 1] * es;
        while (!st && done < rows) {
            int64_t k = tl_rand_int(0, 7);
            if (k > rows - done)
                k = rows - done;
            st = famask_converter_push(ctx, conv, data + done * row, k);
            done += k;
        }
        if (!st)
            st = famask_converter_finish(ctx, conv, out);
        famask_converter_free(conv);
        return st;
    }
    case C_NPY:
    case C_NPY_GZ:
    case C_NPZ:
    case C_NPZ_DEFLATE:
    case C_NPZ64:
        npy_header(&b, descr_of(dt, 0), 0, ndim, shape);
        put(&b, data, n);
        break;
    case C_NPY_BE: {
        npy_header(&b, descr_of(dt, 1), 0, ndim, shape);
        size_t at = b.n;
        put(&b, data, n);
        for (size_t k = 0; k < n; k += es)
            for (size_t x = 0; x < es / 2; x++) {
                unsigned char t = b.p[at + k + x];
                b.p[at + k + x] = b.p[at + k + es - 1 - x];
                b.p[at + k + es - 1 - x] = t;
            }
        break;
    }
    case C_PUSH_F:
    case C_NPY_F: {
        if (c == C_NPY_F)
            npy_header(&b, descr_of(dt, 0), 1, ndim, shape);
        size_t at = b.n;
        put(&b, data, n);
        /* element with C index (x0..x3) goes to Fortran offset x0 + s0 (x1 + s1 (...)) */
        int64_t idx[4] = {0};
        for (int64_t k = 0; k < count; k++) {
            int64_t off = 0, mul = 1;
            for (int d = 0; d < ndim; d++) {
                off += idx[d] * mul;
                mul *= shape[d];
            }
            memcpy(b.p + at + off * (int64_t)es, data + k * (int64_t)es, es);
            for (int d = ndim - 1; d >= 0; d--) {
                if (++idx[d] < shape[d])
                    break;
                idx[d] = 0;
            }
        }
        break;
    }
    case C_RAW:
    case C_RAW_GZ:
        put(&b, data, n);
        o.raw = 1;
        o.raw_dtype = dt;
        o.raw_ndim = ndim;
        memcpy(o.raw_shape, shape, (size_t)ndim * sizeof *shape);
        break;
    }
    if (c == C_PUSH_F) { /* the Fortran-order bytes in pieces of random whole "rows" (batch * n_head elements) */
        famask_converter *conv = NULL;
        st = fm_converter_create(ctx, dt, ndim, shape, flags, 1, &conv);
        int64_t rows = st ? 0 : fm_converter_total(conv), len = st ? 0 : fm_converter_row_len(conv), done = 0;
        while (!st && done < rows) {
            int64_t k = tl_rand_int(0, 9);
            if (k > rows - done)
                k = rows - done;
            st = fm_converter_push_fortran(ctx, conv, b.p + done * len * (int64_t)es, k * len);
            done += k;
        }
        if (!st)
            st = famask_converter_finish(ctx, conv, out);
        famask_converter_free(conv);
        free(b.p);
        return st;
    }
    if (c == C_NPY_GZ || c == C_RAW_GZ) {
        bytes g = deflate_raw(b.p, b.n, 1);
        write_file(path, g.p, g.n);
        free(g.p);
    } else if (c == C_NPZ || c == C_NPZ_DEFLATE || c == C_NPZ64) {
        const char *names[] = {"mask.npy"};
        write_zip(path, 1, names, &b, c == C_NPZ_DEFLATE ? 1 : c == C_NPZ64 ? 2 | (int)(tl_rand() & 1) : 0);
    } else {
        write_file(path, b.p, b.n);
    }
    free(b.p);
    return famask_mask_convert_file(ctx, path, &o, out);
}

/* The dense bytes of mask m as dtype dt, [B, H, Nq, Nk] C order. */
static unsigned char *dense_of(famask_ctx *ctx, const famask_mask *m, famask_dtype dt, int nz_masked)
{
    int nb = famask_mask_batch(m), nh = famask_mask_heads(m), nq = famask_mask_seq_len_q(m),
        nk = famask_mask_seq_len_k(m);
    size_t es = famask_dtype_size(dt), plane = (size_t)nq * nk;
    unsigned char *vis = malloc(plane), *out = malloc((size_t)nb * nh * plane * es);
    for (int b = 0; b < nb; b++)
        for (int h = 0; h < nh; h++) {
            famask_mask_to_dense(ctx, m, b, h, vis);
            unsigned char *o = out + ((size_t)b * nh + h) * plane * es;
            for (size_t k = 0; k < plane; k++)
                put_elem(o + k * es, dt, !vis[k], nz_masked);
        }
    free(vis);
    return out;
}

static void test_random_round_trips(famask_ctx *ctx)
{
    int fails = 0;
    for (int rep = 0; rep < 360; rep++) {
        int ndim = tl_rand_int(2, 4);
        int nb = ndim >= 3 ? tl_rand_int(1, 3) : 1, nh = ndim == 4 ? tl_rand_int(1, 3) : 1;
        int nq = tl_rand_int(1, 60), nk = tl_rand_int(1, 60);
        if (rep % 10 == 0)
            nk = tl_rand_int(1, 3); /* rows shorter than a compared word */
        famask_dtype dt = (famask_dtype)(rep % 10);
        int c = (rep / 10) % C_COUNT, nz_masked = tl_rand_int(0, 1);
        if (dt == FAMASK_DTYPE_BF16 && c != C_MEMORY && c != C_PUSH && c != C_PUSH_F && c != C_RAW && c != C_RAW_GZ)
            c = C_RAW; /* numpy has no bf16 */
        int32_t *raw = malloc((size_t)nb * nh * nk * 4 * sizeof *raw);
        for (int k = 0; k < nb * nh * nk; k++)
            random_column(raw + 4 * k, nq);
        if (tl_rand_int(0, 2) == 0 && nb * nh > 1) /* identical slices, to collapse */
            for (int s = 1; s < nb * nh; s++)
                memcpy(raw + (size_t)s * nk * 4, raw, (size_t)nk * 4 * sizeof *raw);
        famask_mask *m = NULL, *got = NULL, *collapsed = NULL;
        CHECK_OK(ctx, famask_mask_from_vectors(ctx, nb, nh, nq, nk, raw, &m));
        free(raw);
        if (!m)
            continue;
        unsigned char *dense = dense_of(ctx, m, dt, nz_masked);
        int64_t shape[4], *sp = shape;
        if (ndim == 4) {
            shape[0] = nb;
            shape[1] = nh;
            sp = shape;
        } else if (ndim == 3) {
            shape[1] = nb;
            sp = shape + 1;
        } else {
            sp = shape + 2;
        }
        shape[2] = nq;
        shape[3] = nk;
        unsigned flags = (nz_masked && dt < FAMASK_DTYPE_F16) ? FAMASK_DENSE_TRUE_MEANS_MASKED : 0;
        famask_status st = convert_via(ctx, c, dt, ndim, sp, dense, flags | FAMASK_DENSE_KEEP_SHAPE, &got);
        int ok = st == FAMASK_STATUS_OK && got && famask_mask_equal(m, got);
        CHECK(ok, "%s %s [%d, %d, %d, %d] ndim %d, true means %s: %s", container_names[c], famask_dtype_name(dt), nb,
              nh, nq, nk, ndim, flags & FAMASK_DENSE_TRUE_MEANS_MASKED ? "masked" : "visible",
              st ? famask_ctx_errmsg(ctx) : "vectors differ");
        fails += !ok;
        famask_mask_free(got);
        got = NULL;
        /* without --keep-shape identical slices collapse */
        st = convert_via(ctx, c, dt, ndim, sp, dense, flags, &got);
        CHECK_OK(ctx, famask_mask_collapse(ctx, m, &collapsed));
        CHECK(st == FAMASK_STATUS_OK && got && collapsed && famask_mask_equal(collapsed, got),
              "%s %s: collapsed result", container_names[c], famask_dtype_name(dt));
        famask_mask_free(got);
        famask_mask_free(collapsed);
        famask_mask_free(m);
        free(dense);
        if (fails > 5)
            break;
    }
}

/* Dense u8 masks whose columns take 0 to 5 runs; the converter must report exactly the bad ones. */
static void test_not_representable(famask_ctx *ctx)
{
    for (int rep = 0; rep < 60; rep++) {
        int nb = tl_rand_int(1, 2), nh = tl_rand_int(1, 2), nq = tl_rand_int(6, 50), nk = tl_rand_int(1, 40);
        size_t plane = (size_t)nq * nk;
        unsigned char *d = calloc((size_t)nb * nh, plane);
        memset(d, 1, (size_t)nb * nh * plane);
        int64_t bad = 0;
        int fb = -1, fruns = 0;
        char want[400] = "";
        for (int b = 0; b < nb; b++)
            for (int h = 0; h < nh; h++)
                for (int j = 0; j < nk; j++) {
                    int runs = tl_rand_int(0, 9) < 8 ? tl_rand_int(0, 2) : tl_rand_int(3, 5);
                    if (2 * runs > nq + 1)
                        runs = (nq + 1) / 2;
                    /* 2 runs distinct cut points in [0, nq]: masked between cuts 0-1, 2-3, ... */
                    int cut[10], made = runs;
                    for (int k = 0; k < 2 * runs; k++) {
                        int c, dup;
                        do {
                            c = tl_rand_int(0, nq);
                            dup = 0;
                            for (int x = 0; x < k; x++)
                                dup |= cut[x] == c;
                        } while (dup);
                        int x = k;
                        while (x > 0 && cut[x - 1] > c) {
                            cut[x] = cut[x - 1];
                            x--;
                        }
                        cut[x] = c;
                    }
                    char desc[256] = "";
                    for (int r = 0; r < runs; r++) {
                        for (int i = cut[2 * r]; i < cut[2 * r + 1]; i++)
                            d[((size_t)b * nh + h) * plane + (size_t)i * nk + j] = 0;
                        if (r < 4) /* the message lists four runs, then "..." */
                            snprintf(desc + strlen(desc), sizeof desc - strlen(desc), "%s[%d,%d)", r ? " " : "",
                                     cut[2 * r], cut[2 * r + 1]);
                        else if (r == 4)
                            snprintf(desc + strlen(desc), sizeof desc - strlen(desc), " ...");
                    }
                    if (made > 2) {
                        bad++;
                        if (fb < 0) {
                            fb = b;
                            fruns = made;
                            snprintf(want, sizeof want, "column %d of batch %d head %d has %d masked runs: %s", j, b,
                                     h, made, desc);
                        }
                    }
                }
        famask_array a = {FAMASK_DTYPE_U8, 4, {nb, nh, nq, nk}, d};
        famask_mask *m = NULL;
        famask_status st = famask_mask_from_dense(ctx, &a, 0, &m);
        if (bad == 0) {
            CHECK(st == FAMASK_STATUS_OK, "representable dense mask rejected: %s", famask_ctx_errmsg(ctx));
        } else {
            char count[64];
            snprintf(count, sizeof count, "%lld column%s in all", (long long)bad, bad == 1 ? "" : "s");
            CHECK(st == FAMASK_STATUS_NOT_REPRESENTABLE && !m, "%d runs in a column accepted", fruns);
            CHECK(strstr(famask_ctx_errmsg(ctx), want) != NULL, "message '%s' lacks '%s'", famask_ctx_errmsg(ctx),
                  want);
            CHECK(strstr(famask_ctx_errmsg(ctx), count) != NULL, "message '%s' lacks '%s'", famask_ctx_errmsg(ctx),
                  count);
            /* the same through a Fortran-order file */
            famask_mask *m2 = NULL;
            st = convert_via(ctx, C_NPY_F, FAMASK_DTYPE_U8, 4, a.shape, d, 0, &m2);
            CHECK(st == FAMASK_STATUS_NOT_REPRESENTABLE && strstr(famask_ctx_errmsg(ctx), want) &&
                      strstr(famask_ctx_errmsg(ctx), count),
                  "Fortran order: '%s' should say '%s' and '%s'", famask_ctx_errmsg(ctx), want, count);
            famask_mask_free(m2);
        }
        famask_mask_free(m);
        free(d);
    }
}

static void test_float_values(famask_ctx *ctx)
{
    float d[3 * 5] = {0};
    d[7] = 0.5f;
    famask_array a = {FAMASK_DTYPE_F32, 2, {3, 5}, d};
    famask_mask *m = NULL;
    CHECK(famask_mask_from_dense(ctx, &a, 0, &m) == FAMASK_STATUS_BAD_DATA && !m, "0.5 in a float mask");
    CHECK(strstr(famask_ctx_errmsg(ctx), "element [1, 2] is 0.5") != NULL, "names the element: %s",
          famask_ctx_errmsg(ctx));
    d[7] = NAN;
    CHECK(famask_mask_from_dense(ctx, &a, 0, &m) == FAMASK_STATUS_BAD_DATA, "NaN in a float mask");
    d[7] = INFINITY;
    CHECK(famask_mask_from_dense(ctx, &a, 0, &m) == FAMASK_STATUS_BAD_DATA, "+inf in a float mask");
    d[7] = -INFINITY;
    CHECK_OK(ctx, famask_mask_from_dense(ctx, &a, 0, &m));
    CHECK(m && !famask_mask_visible(m, 0, 0, 1, 2) && famask_mask_visible(m, 0, 0, 1, 3), "-inf is masked");
    famask_mask_free(m);
    /* a bad value in a later row that differs from the row above is found too */
    d[7] = 0;
    d[12] = 2.0f;
    CHECK(famask_mask_from_dense(ctx, &a, 0, &m) == FAMASK_STATUS_BAD_DATA &&
              strstr(famask_ctx_errmsg(ctx), "element [2, 2] is 2"),
          "later row: %s", famask_ctx_errmsg(ctx));
}

static famask_status convert_path(famask_ctx *ctx, const char *path, const char *array)
{
    famask_convert_opts o;
    memset(&o, 0, sizeof o);
    o.array = array;
    famask_mask *m = NULL;
    famask_status st = famask_mask_convert_file(ctx, path, &o, &m);
    famask_mask_free(m);
    return st;
}

static void test_malformed(famask_ctx *ctx)
{
    int64_t shape[2] = {4, 6};
    unsigned char data[24] = {0};
    bytes good = {0};
    npy_header(&good, "|u1", 0, 2, shape);
    put(&good, data, sizeof data);
    const char *p = tmp_path("bad.npy");
    /* every truncation: never a crash, always bad data */
    int wrong = 0;
    for (size_t k = 0; k < good.n; k++) {
        write_file(p, good.p, k);
        wrong += convert_path(ctx, p, NULL) != FAMASK_STATUS_BAD_DATA;
    }
    CHECK(wrong == 0, "%d truncations of a .npy not rejected as bad data", wrong);
    write_file(p, good.p, good.n - 1);
    convert_path(ctx, p, NULL);
    CHECK(strstr(famask_ctx_errmsg(ctx), "truncated data") != NULL, "truncation message: %s", famask_ctx_errmsg(ctx));
    /* trailing bytes */
    put(&good, "x", 1);
    write_file(p, good.p, good.n);
    CHECK(convert_path(ctx, p, NULL) == FAMASK_STATUS_BAD_DATA, "trailing bytes");
    good.n--;
    /* bad magic, unsupported dtype, wrong rank */
    good.p[1] = 'X';
    write_file(p, good.p, good.n);
    CHECK(convert_path(ctx, p, NULL) == FAMASK_STATUS_BAD_DATA && strstr(famask_ctx_errmsg(ctx), "bad magic"),
          "bad magic: %s", famask_ctx_errmsg(ctx));
    good.p[1] = 'N';
    bytes c8 = {0};
    npy_header(&c8, "<c8", 0, 2, shape);
    put(&c8, data, sizeof data);
    write_file(p, c8.p, c8.n);
    CHECK(convert_path(ctx, p, NULL) == FAMASK_STATUS_BAD_DATA && strstr(famask_ctx_errmsg(ctx), "'<c8'"),
          "complex dtype: %s", famask_ctx_errmsg(ctx));
    bytes r1 = {0};
    npy_header(&r1, "|u1", 0, 1, shape + 1);
    put(&r1, data, 6);
    write_file(p, r1.p, r1.n);
    CHECK(convert_path(ctx, p, NULL) == FAMASK_STATUS_BAD_DATA && strstr(famask_ctx_errmsg(ctx), "not 1"),
          "1-D array: %s", famask_ctx_errmsg(ctx));
    /* corrupt gzip: every single-byte change of the compressed stream fails cleanly or converts the same */
    bytes g = deflate_raw(good.p, good.n, 1);
    int crashed_or_wrong = 0;
    for (size_t k = 0; k < g.n; k++) {
        unsigned char save = g.p[k];
        g.p[k] ^= 0x5a;
        write_file(p, g.p, g.n);
        famask_status st = convert_path(ctx, p, NULL);
        crashed_or_wrong += st != FAMASK_STATUS_BAD_DATA && st != FAMASK_STATUS_OK;
        g.p[k] = save;
    }
    CHECK(crashed_or_wrong == 0, "%d gzip corruptions gave a status other than ok or bad data", crashed_or_wrong);
    write_file(p, g.p, g.n - 5);
    CHECK(convert_path(ctx, p, NULL) == FAMASK_STATUS_BAD_DATA, "truncated gzip");
    free(g.p);
    /* zip: a flipped data byte fails the CRC; several arrays need a name; a wrong name lists them */
    const char *names[] = {"first.npy", "second.npy"};
    bytes members[2] = {good, good};
    write_zip(p, 2, names, members, 0);
    CHECK(convert_path(ctx, p, NULL) == FAMASK_STATUS_BAD_DATA &&
              strstr(famask_ctx_errmsg(ctx), "'first', 'second'"),
          "two arrays, no name: %s", famask_ctx_errmsg(ctx));
    CHECK(convert_path(ctx, p, "second") == FAMASK_STATUS_OK, "--array second: %s", famask_ctx_errmsg(ctx));
    CHECK(convert_path(ctx, p, "third") == FAMASK_STATUS_BAD_DATA && strstr(famask_ctx_errmsg(ctx), "no array 'third'"),
          "absent array: %s", famask_ctx_errmsg(ctx));
    write_zip(p, 1, names, members, 0);
    FILE *f = fopen(p, "r+b");
    fseek(f, 30 + 9 + (long)good.n - 3, SEEK_SET);
    fputc(7, f);
    fclose(f);
    CHECK(convert_path(ctx, p, NULL) == FAMASK_STATUS_BAD_DATA && strstr(famask_ctx_errmsg(ctx), "CRC32"),
          "zip CRC: %s", famask_ctx_errmsg(ctx));
    /* every truncation of a zip fails cleanly */
    write_zip(p, 1, names, members, 1);
    struct stat sb;
    stat(p, &sb);
    FILE *zf = fopen(p, "rb");
    unsigned char *zb = malloc((size_t)sb.st_size);
    size_t zn = fread(zb, 1, (size_t)sb.st_size, zf);
    fclose(zf);
    wrong = 0;
    for (size_t k = 0; k < zn; k++) {
        write_file(p, zb, k);
        famask_status st = convert_path(ctx, p, NULL);
        wrong += st != FAMASK_STATUS_BAD_DATA;
    }
    CHECK(wrong == 0, "%d truncations of a .npz not rejected as bad data", wrong);
    free(zb);
    CHECK(convert_path(ctx, tmp_path("absent.npy"), NULL) == FAMASK_STATUS_CANNOT_OPEN, "missing file");
    free(good.p);
    free(c8.p);
    free(r1.p);
}

static int run(const char *cmd)
{
    int r = system(cmd);
    return WIFEXITED(r) ? WEXITSTATUS(r) : -1;
}

static void test_cli(famask_ctx *ctx)
{
    /* causal 5 x 5 u8, through a pipe and through a file; a 3-run column exits 65 and writes nothing */
    int64_t shape[2] = {5, 5};
    unsigned char d[25];
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 5; j++)
            d[i * 5 + j] = j <= i;
    bytes b = {0};
    npy_header(&b, "|u1", 0, 2, shape);
    put(&b, d, sizeof d);
    write_file(tmp_path("c.npy"), b.p, b.n);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' convert - -o '%s' < '%s'", FAMASK_CLI, tmp_path("c.fmask"), tmp_path("c.npy"));
    CHECK(run(cmd) == 0, "convert from standard input: %s", cmd);
    famask_mask *m = NULL;
    CHECK_OK(ctx, famask_mask_load(ctx, tmp_path("c.fmask"), 0, &m));
    CHECK(m && famask_mask_visible(m, 0, 0, 3, 3) && !famask_mask_visible(m, 0, 0, 2, 3), "causal from a pipe");
    famask_mask_free(m);
    d[1 * 5 + 4] = 1; /* column 4: masked rows 0, 2 and 4 */
    d[3 * 5 + 4] = 1;
    d[4 * 5 + 4] = 0;
    b.n = 0;
    npy_header(&b, "|u1", 0, 2, shape);
    put(&b, d, sizeof d);
    write_file(tmp_path("bad.npy"), b.p, b.n);
    snprintf(cmd, sizeof cmd, "'%s' convert '%s' -o '%s' 2>'%s'", FAMASK_CLI, tmp_path("bad.npy"),
             tmp_path("bad.fmask"), tmp_path("err.txt"));
    CHECK(run(cmd) == 65, "three runs exit 65");
    CHECK(access(tmp_path("bad.fmask"), F_OK) != 0, "nothing written on failure");
    FILE *f = fopen(tmp_path("err.txt"), "r");
    char msg[1024] = "";
    if (f) {
        size_t n = fread(msg, 1, sizeof msg - 1, f);
        msg[n] = '\0';
        fclose(f);
    }
    CHECK(strstr(msg, "famask: ") == msg &&
              strstr(msg, "column 4 of batch 0 head 0 has 3 masked runs: [0,1) [2,3) [4,5); 1 column in all") != NULL,
          "CLI message: %s", msg);
    /* gzip through a pipe; --true-means masked; --shape raw; --layout flashmask with its side file */
    snprintf(cmd, sizeof cmd, "gzip -c '%s' | '%s' convert - -o '%s'", tmp_path("c.npy"), FAMASK_CLI,
             tmp_path("g.fmask"));
    if (run("command -v gzip >/dev/null") == 0) {
        CHECK(run(cmd) == 0, "gzip'ed mask from a pipe: %s", cmd);
        CHECK_OK(ctx, famask_mask_load(ctx, tmp_path("g.fmask"), 0, &m));
        CHECK(m && famask_mask_visible(m, 0, 0, 3, 3) && !famask_mask_visible(m, 0, 0, 2, 3), "causal via gzip");
        famask_mask_free(m);
        m = NULL;
    }
    /* inverted, column 4 of bad.npy is masked at rows 1 and 3 only: two runs, fine */
    snprintf(cmd, sizeof cmd, "'%s' convert '%s' --true-means masked -o '%s'", FAMASK_CLI, tmp_path("bad.npy"),
             tmp_path("inv.fmask"));
    CHECK(run(cmd) == 0, "--true-means masked: %s", cmd);
    CHECK_OK(ctx, famask_mask_load(ctx, tmp_path("inv.fmask"), 0, &m));
    CHECK(m && famask_mask_visible(m, 0, 0, 2, 3) && !famask_mask_visible(m, 0, 0, 3, 3) &&
              famask_mask_visible(m, 0, 0, 0, 4) && !famask_mask_visible(m, 0, 0, 1, 4),
          "--true-means masked inverts");
    famask_mask_free(m);
    m = NULL;
    snprintf(cmd, sizeof cmd, "tail -c 25 '%s' > '%s' && '%s' convert '%s' --shape 1,1,5,5 --dtype u8 -o '%s'",
             tmp_path("c.npy"), tmp_path("c.raw"), FAMASK_CLI, tmp_path("c.raw"), tmp_path("raw.fmask"));
    CHECK(run(cmd) == 0, "raw input: %s", cmd);
    snprintf(cmd, sizeof cmd, "'%s' convert '%s' --shape 5,6 -o '%s' 2>/dev/null", FAMASK_CLI, tmp_path("c.raw"),
             tmp_path("raw2.fmask"));
    CHECK(run(cmd) == 65, "raw input of the wrong size exits 65");
    snprintf(cmd, sizeof cmd, "'%s' convert '%s' --layout flashmask -o '%s' 2>/dev/null", FAMASK_CLI,
             tmp_path("c.npy"), tmp_path("fm.npy"));
    CHECK(run(cmd) == 0, "--layout flashmask");
    famask_mask *fm = NULL;
    CHECK_OK(ctx, famask_mask_load_flashmask(ctx, tmp_path("fm.npy"), -1, 0, &fm));
    CHECK(fm && famask_mask_visible(fm, 0, 0, 3, 3) && !famask_mask_visible(fm, 0, 0, 2, 3),
          "FlashMask output is causal");
    famask_mask_free(fm);
    snprintf(cmd, sizeof cmd, "'%s' convert '%s' --dtype u8 2>/dev/null", FAMASK_CLI, tmp_path("c.npy"));
    CHECK(run(cmd) == 64, "--dtype without --shape is a usage error");
    snprintf(cmd, sizeof cmd, "'%s' convert '%s' --array x 2>/dev/null", FAMASK_CLI, tmp_path("c.npy"));
    CHECK(run(cmd) == 64, "--array on a .npy is a usage error");
    snprintf(cmd, sizeof cmd, "'%s' convert '%s' 2>/dev/null", FAMASK_CLI, tmp_path("absent.npy"));
    CHECK(run(cmd) == 66, "missing input exits 66");
    snprintf(cmd, sizeof cmd, "'%s' convert '%s' --bogus 2>/dev/null", FAMASK_CLI, tmp_path("c.npy"));
    CHECK(run(cmd) == 64, "unknown option exits 64");
    snprintf(cmd, sizeof cmd, "head -c 40 '%s' | '%s' convert - 2>/dev/null", tmp_path("c.npy"), FAMASK_CLI);
    CHECK(run(cmd) == 65, "truncated input from a pipe exits 65");
    free(b.p);
}

/* Files written by numpy itself (made by .ci/test through tests/numpy-fixtures.py); skipped when absent. */
static void test_numpy_files(famask_ctx *ctx)
{
    const char *base = getenv("FAMASK_NUMPY_DIR") ? getenv("FAMASK_NUMPY_DIR") : "build-numpy";
    char path[1024];
    snprintf(path, sizeof path, "%s/manifest.txt", base);
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("numpy files: %s absent, skipped (made by .ci/test)\n", path);
        return;
    }
    char file[256], array[64], means[16], ref[256];
    long long s[4];
    int n = 0;
    while (fscanf(f, "%255s %63s %15s %lld %lld %lld %lld %255s", file, array, means, &s[0], &s[1], &s[2], &s[3],
                  ref) == 8) {
        famask_convert_opts o, r;
        memset(&o, 0, sizeof o);
        memset(&r, 0, sizeof r);
        o.flags = FAMASK_DENSE_KEEP_SHAPE | (strcmp(means, "masked") == 0 ? FAMASK_DENSE_TRUE_MEANS_MASKED : 0);
        o.array = strcmp(array, "-") == 0 ? NULL : array;
        r.flags = FAMASK_DENSE_KEEP_SHAPE;
        r.raw = 1;
        r.raw_dtype = FAMASK_DTYPE_U8;
        r.raw_ndim = 4;
        for (int d = 0; d < 4; d++)
            r.raw_shape[d] = s[d];
        famask_mask *got = NULL, *want = NULL;
        char p1[1400], p2[1400];
        snprintf(p1, sizeof p1, "%s/%s", base, file);
        snprintf(p2, sizeof p2, "%s/%s", base, ref);
        CHECK_OK(ctx, famask_mask_convert_file(ctx, p1, &o, &got));
        CHECK_OK(ctx, famask_mask_convert_file(ctx, p2, &r, &want));
        /* the numpy file may have fewer dimensions: compare the vectors, which are the same either way */
        CHECK(got && want && famask_mask_seq_len_k(got) == famask_mask_seq_len_k(want) &&
                  famask_mask_batch(got) * famask_mask_heads(got) == famask_mask_batch(want) * famask_mask_heads(want) &&
                  memcmp(famask_mask_bounds(got), famask_mask_bounds(want),
                         (size_t)famask_mask_batch(want) * famask_mask_heads(want) * famask_mask_seq_len_k(want) * 16) ==
                      0,
              "numpy file %s differs from its reference %s", file, ref);
        famask_mask_free(got);
        famask_mask_free(want);
        n++;
    }
    fclose(f);
    printf("numpy files: %d checked\n", n);
    CHECK(n > 0, "the numpy manifest lists files");
}

/* Every example in specs/ (up to 4096 x 4096 a slice): dense form -> u8 .npy file and memory -> converter ->
 * the same vectors. */
static void spec_from_dense(famask_ctx *ctx, const char *name, famask_mask *m, void *user)
{
    int nb = famask_mask_batch(m), nh = famask_mask_heads(m), nq = famask_mask_seq_len_q(m),
        nk = famask_mask_seq_len_k(m);
    if ((int64_t)nq * nk > 4096 * 4096)
        return;
    famask_mask *got = NULL;
    size_t plane = (size_t)nq * nk;
    unsigned char *dense = malloc((size_t)nb * nh * plane);
    for (int b = 0; b < nb; b++) /* famask_mask_to_dense writes 1 = visible: a u8 mask as PyTorch has it */
        for (int h = 0; h < nh; h++)
            CHECK_OK(ctx, famask_mask_to_dense(ctx, m, b, h, dense + ((size_t)b * nh + h) * plane));
    int64_t shape[4] = {nb, nh, nq, nk};
    famask_status st = convert_via(ctx, C_NPY, FAMASK_DTYPE_U8, 4, shape, dense, FAMASK_DENSE_KEEP_SHAPE, &got);
    CHECK(st == FAMASK_STATUS_OK && got && famask_mask_equal(m, got), "%s: dense .npy round trip: %s", name,
          st ? famask_ctx_errmsg(ctx) : "vectors differ");
    famask_mask_free(got);
    got = NULL;
    st = convert_via(ctx, C_MEMORY, FAMASK_DTYPE_U8, 4, shape, dense, FAMASK_DENSE_KEEP_SHAPE, &got);
    CHECK(st == FAMASK_STATUS_OK && got && famask_mask_equal(m, got), "%s: dense in-memory round trip", name);
    famask_mask_free(got);
    free(dense);
    (*(int *)user)++;
}

static void test_specs(famask_ctx *ctx)
{
    int converted = 0;
    tl_each_spec(ctx, spec_from_dense, &converted);
    printf("specs: %d converted from their dense form\n", converted);
    CHECK(converted >= 10, "only %d specs converted", converted);
}

int main(void)
{
    tl_seed("test-convert");
    if (tl_tmpdir("test-convert", dir, sizeof dir))
        return 1;
    famask_ctx *ctx = NULL;
    famask_ctx_create(&ctx);
    test_random_round_trips(ctx);
    test_not_representable(ctx);
    test_float_values(ctx);
    test_malformed(ctx);
    test_cli(ctx);
    test_numpy_files(ctx);
    test_specs(ctx);
    famask_ctx_free(ctx);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return tl_finish();
}
