/*
 * convert.c: dense masks [Nq, Nk], [B, Nq, Nk] or [B, H, Nq, Nk] into the column-sparse form, streaming.
 *
 * Each key column's masked rows are tracked as the rows where the column flips between visible and masked
 * (a "transition"): the first flip opens a masked run, the next closes it, and so on; a column open at the
 * last row closes at seq_len_q. Two runs need at most four transitions; more means the column cannot be
 * represented, which is counted and reported with the runs found (eight transitions are kept for the message).
 *
 * Rows arrive in C order. The first row of each (batch, head) slice is classified element by element; every
 * later row is compared with the previous row 32 bytes at a time, and only the words that differ are looked at
 * element by element. Structured masks change in a few columns per row, so the converter runs at the speed of
 * a memory compare, whatever the element type. State: a transition count and eight rows per column, the
 * previous row, and the result.
 *
 * Fortran-order input (the reader's private path) holds the dense array column by column: element (b, h, i, j)
 * comes after every element of columns < j, and within a key column the B * H values of query row i follow
 * those of row i - 1. So the same machinery runs with "rows" of B * H elements and one plane per key column:
 * each element is compared with the one B * H elements earlier, state is kept per (batch, head), and each key
 * column is finished as soon as its last row has gone by. No transposition, no extra memory.
 */
#include "io.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define KEEP 8 /* transitions kept per column for the error message */

enum { K_INT = 0, K_F16, K_BF16, K_F32, K_F64 };

struct famask_converter {
    int es, kind, nz_masked; /* element size, value kind, 1 if a nonzero integer means masked */
    unsigned flags;
    int ndim;
    int nb, nh, nq, nk;
    int fortran;
    int64_t done, total; /* rows pushed and expected (see "rows of a plane" below) */
    int64_t row_len;     /* slots a row: seq_len_k in C order, batch * n_head in Fortran order */
    int32_t *cnt, *tr;   /* per slot: transitions seen, and the first KEEP of them */
    unsigned char *prev; /* the last row of the previous push */
    famask_mask *mask;   /* [nb, nh, nk, 4], filled slice by slice */
    int64_t n_bad;       /* columns with more than two runs */
    int bad_b, bad_h, bad_j, bad_cnt;
    int32_t bad_tr[KEEP];
    famask_status st; /* sticky error */
    char msg[FM_ERRMSG_MAX];
};

/* ---- values --------------------------------------------------------------------------------------------- */

static double half_to_double(uint16_t h)
{
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(m + 1024, e - 25);
    return (h & 0x8000) ? -v : v;
}

static double element_value(const famask_converter *c, const unsigned char *p)
{
    uint16_t u16;
    uint32_t u32;
    float f;
    double d;
    switch (c->kind) {
    case K_F16:
        memcpy(&u16, p, 2);
        return half_to_double(u16);
    case K_BF16:
        memcpy(&u16, p, 2);
        u32 = (uint32_t)u16 << 16;
        memcpy(&f, &u32, 4);
        return f;
    case K_F32:
        memcpy(&f, p, 4);
        return f;
    case K_F64:
        memcpy(&d, p, 8);
        return d;
    }
    return 0;
}

/* 1 masked, 0 visible, -1 not a mask value (floats only). */
static inline int classify(const famask_converter *c, const unsigned char *p)
{
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    switch (c->kind) {
    case K_INT:
        switch (c->es) {
        case 1:
            return (p[0] != 0) == c->nz_masked;
        case 2:
            memcpy(&u16, p, 2);
            return (u16 != 0) == c->nz_masked;
        case 4:
            memcpy(&u32, p, 4);
            return (u32 != 0) == c->nz_masked;
        default:
            memcpy(&u64, p, 8);
            return (u64 != 0) == c->nz_masked;
        }
    case K_F16:
        memcpy(&u16, p, 2);
        return (u16 & 0x7fff) == 0 ? 0 : u16 == 0xfc00 ? 1 : -1;
    case K_BF16:
        memcpy(&u16, p, 2);
        return (u16 & 0x7fff) == 0 ? 0 : u16 == 0xff80 ? 1 : -1;
    case K_F32:
        memcpy(&u32, p, 4);
        return (u32 & 0x7fffffffu) == 0 ? 0 : u32 == 0xff800000u ? 1 : -1;
    default:
        memcpy(&u64, p, 8);
        return (u64 & 0x7fffffffffffffffull) == 0 ? 0 : u64 == 0xfff0000000000000ull ? 1 : -1;
    }
}

static famask_status fail(famask_ctx *ctx, famask_converter *c, famask_status st, const char *fmt, ...)
    FM_PRINTF(4, 5);

static famask_status fail(famask_ctx *ctx, famask_converter *c, famask_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg, sizeof c->msg, fmt, ap);
    va_end(ap);
    c->st = st;
    return fm_error(ctx, st, "%s", c->msg);
}

static famask_status bad_value(famask_ctx *ctx, famask_converter *c, int b, int h, int i, int j,
                               const unsigned char *p)
{
    char where[96];
    if (c->ndim == 2)
        snprintf(where, sizeof where, "[%d, %d]", i, j);
    else if (c->ndim == 3)
        snprintf(where, sizeof where, "[%d, %d, %d]", b, i, j);
    else
        snprintf(where, sizeof where, "[%d, %d, %d, %d]", b, h, i, j);
    return fail(ctx, c, FAMASK_STATUS_BAD_DATA,
                "element %s is %g: a float mask is additive, 0 = visible and -inf = masked; other values are not a "
                "mask (for a 0/1 mask use an integer or bool dtype)",
                where, element_value(c, p));
}

/* ---- per-column state ----------------------------------------------------------------------------------- */

static inline void record(famask_converter *c, int64_t slot, int i)
{
    int32_t n = c->cnt[slot];
    if (n < KEEP)
        c->tr[slot * KEEP + n] = i;
    c->cnt[slot] = n + 1;
}

/* Writes column j of (b, h) from the state of slot, or notes a column with too many runs. */
static void finish_column(famask_converter *c, int64_t slot, int b, int h, int j)
{
    int32_t n = c->cnt[slot], *t = c->tr + slot * KEEP;
    int nq = c->nq;
    if (n > 4) {
        c->n_bad++;
        if (c->n_bad == 1 || b < c->bad_b || (b == c->bad_b && (h < c->bad_h || (h == c->bad_h && j < c->bad_j)))) {
            c->bad_b = b;
            c->bad_h = h;
            c->bad_j = j;
            c->bad_cnt = n;
            memcpy(c->bad_tr, t, sizeof c->bad_tr);
        }
        return;
    }
    int32_t v[4] = {nq, nq, 0, 0};
    if (n >= 1) {
        v[2] = t[0];
        v[3] = n >= 2 ? t[1] : nq;
    }
    if (n >= 3) {
        v[0] = t[2];
        v[1] = n >= 4 ? t[3] : nq;
    }
    fm_column_canonicalise(v, nq, j);
    memcpy(fm_mask_column(c->mask, b, h, j), v, sizeof v);
}

/* ---- rows of a plane -------------------------------------------------------------------------------------
 *
 * Both orders are planes of seq_len_q rows of row_len slots: in C order a plane is a (batch, head) slice and a
 * slot is a key column; in Fortran order a plane is a key column and a slot is a (batch, head). A slot flips
 * where its element differs from the one a row earlier, row_len elements back in the stream.
 */

/* Batch, head and key column of slot s in plane p. */
static inline void locate(const famask_converter *c, int64_t p, int64_t s, int *b, int *h, int *j)
{
    if (c->fortran) {
        *b = (int)(s % c->nb);
        *h = (int)(s / c->nb);
        *j = (int)p;
    } else {
        *b = (int)(p / c->nh);
        *h = (int)(p % c->nh);
        *j = (int)s;
    }
}

static famask_status bad_at(famask_ctx *ctx, famask_converter *c, int64_t plane, int64_t slot, int i,
                            const unsigned char *x)
{
    int b, h, j;
    locate(c, plane, slot, &b, &h, &j);
    return bad_value(ctx, c, b, h, i, j, x);
}

/* Row 0 of a plane: every element is classified (the state before it is "visible"). */
static famask_status first_row(famask_ctx *ctx, famask_converter *c, const unsigned char *r, int64_t plane)
{
    int es = c->es;
    for (int64_t s = 0; s < c->row_len; s++) {
        int m = classify(c, r + s * es);
        if (m < 0)
            return bad_at(ctx, c, plane, s, 0, r + s * es);
        if (m)
            record(c, s, 0);
    }
    return FAMASK_STATUS_OK;
}

/* Elements [e0, e1) of a run of rows starting at row i0 (element e is slot e % row_len of row i0 + e / row_len),
 * whose bytes differ from the element a row earlier (at p). */
static famask_status diff_elements(famask_ctx *ctx, famask_converter *c, const unsigned char *r,
                                   const unsigned char *p, int64_t e0, int64_t e1, int64_t plane, int i0)
{
    int es = c->es;
    int64_t slot = e0 % c->row_len;
    int i = i0 + (int)(e0 / c->row_len);
    for (int64_t e = e0; e < e1; e++) {
        const unsigned char *x = r + e * es;
        if (memcmp(x, p + e * es, (size_t)es) != 0) {
            int m = classify(c, x);
            if (m < 0)
                return bad_at(ctx, c, plane, slot, i, x);
            if (m != (c->cnt[slot] & 1))
                record(c, slot, i);
        }
        if (++slot == c->row_len) {
            slot = 0;
            i++;
        }
    }
    return FAMASK_STATUS_OK;
}

static inline uint64_t load64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* n_rows rows at r, rows i0.. of a plane, against the rows one earlier at p (p = r - row bytes when the rows
 * are contiguous): compared 32 bytes at a time, differing blocks looked at element by element. */
static famask_status diff_rows(famask_ctx *ctx, famask_converter *c, const unsigned char *r, const unsigned char *p,
                               int64_t n_rows, int64_t plane, int i0)
{
    int es = c->es;
    size_t nbytes = (size_t)n_rows * c->row_len * es, w = 0;
    famask_status st;
    for (; w + 32 <= nbytes; w += 32) {
        uint64_t d = (load64(r + w) ^ load64(p + w)) | (load64(r + w + 8) ^ load64(p + w + 8)) |
                     (load64(r + w + 16) ^ load64(p + w + 16)) | (load64(r + w + 24) ^ load64(p + w + 24));
        if (d && (st = diff_elements(ctx, c, r, p, (int64_t)(w / es), (int64_t)((w + 32) / es), plane, i0)))
            return st;
    }
    if (w < nbytes && memcmp(r + w, p + w, nbytes - w) != 0 &&
        (st = diff_elements(ctx, c, r, p, (int64_t)(w / es), (int64_t)(nbytes / es), plane, i0)))
        return st;
    return FAMASK_STATUS_OK;
}

static void finish_plane(famask_converter *c, int64_t plane)
{
    for (int64_t s = 0; s < c->row_len; s++) {
        int b, h, j;
        locate(c, plane, s, &b, &h, &j);
        finish_column(c, s, b, h, j);
    }
    memset(c->cnt, 0, (size_t)c->row_len * sizeof *c->cnt);
}

static famask_status push_rows(famask_ctx *ctx, famask_converter *c, const unsigned char *data, int64_t n_rows)
{
    size_t rb = (size_t)c->row_len * c->es;
    famask_status st;
    for (int64_t r = 0; r < n_rows;) {
        int64_t plane = c->done / c->nq;
        int i0 = (int)(c->done % c->nq);
        int64_t seg = n_rows - r < c->nq - i0 ? n_rows - r : c->nq - i0; /* rows of this plane here */
        const unsigned char *base = data + r * rb;
        if (i0 == 0)
            st = first_row(ctx, c, base, plane);
        else
            st = diff_rows(ctx, c, base, r > 0 ? base - rb : c->prev, 1, plane, i0);
        if (st || (seg > 1 && (st = diff_rows(ctx, c, base + rb, base, seg - 1, plane, i0 + 1))))
            return st;
        c->done += seg;
        r += seg;
        if (c->done % c->nq == 0)
            finish_plane(c, plane);
    }
    if (n_rows > 0 && c->done % c->nq != 0)
        memcpy(c->prev, data + (n_rows - 1) * rb, rb);
    return FAMASK_STATUS_OK;
}

famask_status famask_converter_push(famask_ctx *ctx, famask_converter *c, const void *rows, int64_t n_rows)
{
    if (!c)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "converter is NULL");
    if (c->st)
        return fm_error(ctx, c->st, "%s", c->msg);
    if (c->fortran)
        return fail(ctx, c, FAMASK_STATUS_INVALID_ARGUMENT, "this converter takes Fortran-order data");
    if (n_rows < 0 || (n_rows > 0 && !rows) || n_rows > c->total - c->done)
        return fail(ctx, c, FAMASK_STATUS_INVALID_ARGUMENT,
                    "%lld rows pushed, but the dense mask has %lld rows and %lld are done", (long long)n_rows,
                    (long long)c->total, (long long)c->done);
    return push_rows(ctx, c, rows, n_rows);
}

famask_status fm_converter_push_fortran(famask_ctx *ctx, famask_converter *c, const void *data, int64_t n)
{
    if (c->st)
        return fm_error(ctx, c->st, "%s", c->msg);
    if (!c->fortran || n < 0 || n % c->row_len != 0 || n / c->row_len > c->total - c->done)
        return fail(ctx, c, FAMASK_STATUS_INTERNAL, "Fortran-order push of %lld elements does not fit",
                    (long long)n);
    return push_rows(ctx, c, data, n / c->row_len);
}

/* ---- life cycle ----------------------------------------------------------------------------------------- */

famask_status fm_converter_create(famask_ctx *ctx, famask_dtype dtype, int ndim, const int64_t *shape,
                                  unsigned flags, int fortran, famask_converter **out)
{
    *out = NULL;
    int es = (int)famask_dtype_size(dtype);
    if (!es)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "unknown dtype %d", (int)dtype);
    if (ndim < 2 || ndim > 4 || !shape)
        return fm_error(ctx, FAMASK_STATUS_BAD_DATA,
                        "a dense mask has 2, 3 or 4 dimensions ([Nq, Nk], [B, Nq, Nk], [B, H, Nq, Nk]), not %d",
                        ndim);
    int64_t b = ndim == 4 ? shape[0] : ndim == 3 ? shape[0] : 1, h = ndim == 4 ? shape[1] : 1;
    int64_t q = shape[ndim - 2], k = shape[ndim - 1];
    if (b < 1 || h < 1 || q < 1 || k < 1 || b > INT32_MAX || h > INT32_MAX || q > FAMASK_MAX_SEQ_LEN ||
        k > FAMASK_MAX_SEQ_LEN || b * h > INT32_MAX)
        return fm_error(ctx, FAMASK_STATUS_BAD_DATA,
                        "dense mask shape is out of range: every dimension must be at least 1 and the sequence "
                        "lengths at most %d",
                        FAMASK_MAX_SEQ_LEN);
    famask_converter *c = fm_calloc(ctx, 1, sizeof *c);
    if (!c)
        return FAMASK_STATUS_NO_MEMORY;
    c->es = es;
    c->kind = dtype == FAMASK_DTYPE_F16    ? K_F16
              : dtype == FAMASK_DTYPE_BF16 ? K_BF16
              : dtype == FAMASK_DTYPE_F32  ? K_F32
              : dtype == FAMASK_DTYPE_F64  ? K_F64
                                           : K_INT;
    c->nz_masked = (flags & FAMASK_DENSE_TRUE_MEANS_MASKED) != 0;
    c->flags = flags;
    c->ndim = ndim;
    c->nb = (int)b;
    c->nh = (int)h;
    c->nq = (int)q;
    c->nk = (int)k;
    c->fortran = fortran;
    c->total = fortran ? q * k : b * h * q; /* rows */
    c->row_len = fortran ? b * h : k;
    famask_status st = fm_mask_alloc(ctx, c->nb, c->nh, c->nq, c->nk, &c->mask);
    if (st) {
        free(c);
        return st == FAMASK_STATUS_INVALID_ARGUMENT ? FAMASK_STATUS_BAD_DATA : st;
    }
    c->cnt = fm_calloc(ctx, (size_t)c->row_len, sizeof *c->cnt);
    c->tr = fm_malloc(ctx, (size_t)c->row_len * KEEP * sizeof *c->tr);
    c->prev = fm_malloc(ctx, (size_t)c->row_len * es);
    if (!c->cnt || !c->tr || !c->prev) {
        famask_converter_free(c);
        return FAMASK_STATUS_NO_MEMORY;
    }
    *out = c;
    return FAMASK_STATUS_OK;
}

famask_status famask_converter_create(famask_ctx *ctx, famask_dtype dtype, int ndim, const int64_t *shape,
                                      unsigned flags, famask_converter **out)
{
    return fm_converter_create(ctx, dtype, ndim, shape, flags, 0, out);
}

int64_t fm_converter_total(const famask_converter *c) { return c->total; }
int64_t fm_converter_row_len(const famask_converter *c) { return c->row_len; }

famask_status famask_converter_finish(famask_ctx *ctx, famask_converter *c, famask_mask **out)
{
    *out = NULL;
    if (!c)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "converter is NULL");
    if (c->st)
        return fm_error(ctx, c->st, "%s", c->msg);
    if (!c->mask)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "the converter has already finished");
    if (c->done != c->total)
        return fail(ctx, c, FAMASK_STATUS_INVALID_ARGUMENT, "the converter got %lld of %lld %s", (long long)c->done,
                    (long long)c->total, "rows");
    if (c->n_bad) {
        char runs[512] = "";
        size_t len = 0;
        int shown = c->bad_cnt < KEEP ? c->bad_cnt : KEEP;
        for (int t = 0; t < shown && len < sizeof runs - 40; t += 2) {
            int s = c->bad_tr[t], e = t + 1 < c->bad_cnt ? c->bad_tr[t + 1] : c->nq;
            len += (size_t)snprintf(runs + len, sizeof runs - len, "%s[%d,%d)", t ? " " : "", s, e);
        }
        if (c->bad_cnt > KEEP)
            snprintf(runs + len, sizeof runs - len, " ...");
        return fail(ctx, c, FAMASK_STATUS_NOT_REPRESENTABLE,
                    "column %d of batch %d head %d has %d masked runs: %s; %lld column%s in all %s more than two "
                    "masked runs, which the column-sparse form cannot hold",
                    c->bad_j, c->bad_b, c->bad_h, (c->bad_cnt + 1) / 2, runs, (long long)c->n_bad,
                    c->n_bad == 1 ? "" : "s", c->n_bad == 1 ? "has" : "have");
    }
    if (c->flags & FAMASK_DENSE_KEEP_SHAPE || (c->nb == 1 && c->nh == 1)) {
        *out = c->mask;
        c->mask = NULL;
        return FAMASK_STATUS_OK;
    }
    return famask_mask_collapse(ctx, c->mask, out);
}

void famask_converter_free(famask_converter *c)
{
    if (!c)
        return;
    famask_mask_free(c->mask);
    free(c->cnt);
    free(c->tr);
    free(c->prev);
    free(c);
}

famask_status famask_mask_from_dense(famask_ctx *ctx, const famask_array *dense, unsigned flags, famask_mask **out)
{
    *out = NULL;
    if (!dense || !dense->data)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "dense mask is NULL");
    famask_converter *c = NULL;
    famask_status st = famask_converter_create(ctx, dense->dtype, dense->ndim, dense->shape, flags, &c);
    if (st)
        return st;
    if (!(st = famask_converter_push(ctx, c, dense->data, c->total)))
        st = famask_converter_finish(ctx, c, out);
    famask_converter_free(c);
    return st;
}
