/*
 * test-attn.c: famask_attn_fwd / famask_attn_bwd on the CPU device, and src/half.h.
 *
 * The reference here is written to be read: float64 loops over the dense mask (famask_mask_visible), no tiles,
 * no online softmax, independent of src/ref-attn.c. Shapes: q, o [B, Nq, H, D], k, v [B, Nk, H_kv, D] in three
 * layouts ([B, N, H, D], [B, H, N, D], and a padded [B, N, H, D]); masks [batch_m, heads_m, Nk, 4] from random
 * valid vectors (with fully masked rows, columns and heads) and structured ones from the family builders
 * (causal, sliding window, documents; from vectors where a builder does not take the shape), stacked per slice.
 * Error bounds (max abs error over the tensor / max abs of the reference tensor), from one rounding of each
 * output into its dtype: f32 2e-6, f16 6e-4, bf16 4.5e-3; lse within 2e-7 relative (fp32), exactly -inf where the
 * row has no visible key; at scale 100 (logits ~1e3) 500x that, for the fp32 lse the backward starts from. The backward
 * is also checked against central differences of the float64 forward.
 */
#include "testlib.h"

#include "half.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- tensors in a chosen layout ---- */

enum { LAYOUT_BNHD = 0, LAYOUT_BHND = 1, LAYOUT_PADDED = 2 };
static const char *layout_names[] = {"bnhd", "bhnd", "padded"};

typedef struct tens {
    famask_tensor t;
    famask_dtype dtype;
    size_t n_elems;
} tens;

static size_t dtype_bytes(famask_dtype dt)
{
    return dt == FAMASK_DTYPE_F32 ? 4 : 2;
}

static tens tens_make(int b, int n, int h, int d, famask_dtype dt, int layout)
{
    tens x = {{NULL, 0, 0, 0}, dt, 0};
    if (layout == LAYOUT_BNHD) {
        x.t.stride_head = d;
        x.t.stride_seq = (int64_t)h * d;
        x.t.stride_batch = (int64_t)n * h * d;
    } else if (layout == LAYOUT_BHND) {
        x.t.stride_seq = d;
        x.t.stride_head = (int64_t)n * d;
        x.t.stride_batch = (int64_t)h * n * d;
    } else {
        x.t.stride_head = d + 8;
        x.t.stride_seq = (int64_t)h * (d + 8) + 8;
        x.t.stride_batch = (int64_t)n * x.t.stride_seq + 16;
    }
    x.n_elems = (size_t)((b - 1) * x.t.stride_batch + (n - 1) * x.t.stride_seq + (h - 1) * x.t.stride_head + d);
    x.t.data = malloc(x.n_elems * dtype_bytes(dt));
    memset(x.t.data, 0xff, x.n_elems * dtype_bytes(dt)); /* poison: NaN in every dtype */
    return x;
}

static int64_t tens_off(const tens *x, int b, int n, int h, int i)
{
    return b * x->t.stride_batch + n * x->t.stride_seq + h * x->t.stride_head + i;
}

static double tens_get(const tens *x, int b, int n, int h, int i)
{
    int64_t o = tens_off(x, b, n, h, i);
    if (x->dtype == FAMASK_DTYPE_F32)
        return ((const float *)x->t.data)[o];
    uint16_t u = ((const uint16_t *)x->t.data)[o];
    return x->dtype == FAMASK_DTYPE_BF16 ? fm_bf16_to_f32(u) : fm_f16_to_f32(u);
}

static void tens_set(tens *x, int b, int n, int h, int i, double v)
{
    int64_t o = tens_off(x, b, n, h, i);
    if (x->dtype == FAMASK_DTYPE_F32)
        ((float *)x->t.data)[o] = (float)v;
    else if (x->dtype == FAMASK_DTYPE_BF16)
        ((uint16_t *)x->t.data)[o] = fm_f64_to_bf16(v);
    else
        ((uint16_t *)x->t.data)[o] = fm_f64_to_f16(v);
}

static void tens_free(tens *x)
{
    free(x->t.data);
    x->t.data = NULL;
}

/* ---- one problem ---- */

typedef struct prob {
    int B, H, Hkv, Nq, Nk, D, layout;
    famask_dtype dt;
    double scale;      /* resolved */
    int scale_zero;    /* pass 0 (the default 1/sqrt(D)) instead of scale */
    double grad_floor; /* gradient errors are measured against at least this magnitude (see test_extreme) */
    famask_mask *mask;
    tens q, k, v, o, d_o, dq, dk, dv;
    float *lse;
    /* reference results, dense [B][N][H][D] and [B][H][Nq] */
    double *ro, *rlse, *rdq, *rdk, *rdv;
} prob;

static int64_t qi(const prob *p, int b, int n, int h)
{
    return (((int64_t)b * p->Nq + n) * p->H + h) * p->D;
}
static int64_t ki(const prob *p, int b, int n, int h)
{
    return (((int64_t)b * p->Nk + n) * p->Hkv + h) * p->D;
}

/* A problem of the given shape, dtype and scale, [B, N, H, D] layout, nothing allocated yet. */
static prob prob_shape(int B, int H, int Hkv, int Nq, int Nk, int D, famask_dtype dt, double scale)
{
    prob p;
    memset(&p, 0, sizeof p);
    p.B = B, p.H = H, p.Hkv = Hkv, p.Nq = Nq, p.Nk = Nk, p.D = D;
    p.dt = dt;
    p.scale = scale;
    return p;
}

static void prob_alloc(prob *p)
{
    p->q = tens_make(p->B, p->Nq, p->H, p->D, p->dt, p->layout);
    p->o = tens_make(p->B, p->Nq, p->H, p->D, p->dt, p->layout);
    p->d_o = tens_make(p->B, p->Nq, p->H, p->D, p->dt, p->layout);
    p->dq = tens_make(p->B, p->Nq, p->H, p->D, p->dt, p->layout);
    p->k = tens_make(p->B, p->Nk, p->Hkv, p->D, p->dt, p->layout);
    p->v = tens_make(p->B, p->Nk, p->Hkv, p->D, p->dt, p->layout);
    p->dk = tens_make(p->B, p->Nk, p->Hkv, p->D, p->dt, p->layout);
    p->dv = tens_make(p->B, p->Nk, p->Hkv, p->D, p->dt, p->layout);
    size_t nl = (size_t)p->B * p->H * p->Nq;
    p->lse = malloc(nl * sizeof *p->lse);
    memset(p->lse, 0xff, nl * sizeof *p->lse);
    size_t nqd = (size_t)p->B * p->Nq * p->H * p->D, nkd = (size_t)p->B * p->Nk * p->Hkv * p->D;
    p->ro = calloc(nqd, sizeof(double));
    p->rdq = calloc(nqd, sizeof(double));
    p->rdk = calloc(nkd, sizeof(double));
    p->rdv = calloc(nkd, sizeof(double));
    p->rlse = calloc(nl, sizeof(double));
}

static void prob_fill(prob *p, double amp)
{
    for (int b = 0; b < p->B; b++)
        for (int x = 0; x < p->D; x++) {
            for (int n = 0; n < p->Nq; n++)
                for (int h = 0; h < p->H; h++) {
                    tens_set(&p->q, b, n, h, x, amp * tl_rand_normal());
                    tens_set(&p->d_o, b, n, h, x, tl_rand_normal());
                }
            for (int n = 0; n < p->Nk; n++)
                for (int h = 0; h < p->Hkv; h++) {
                    tens_set(&p->k, b, n, h, x, amp * tl_rand_normal());
                    tens_set(&p->v, b, n, h, x, tl_rand_normal());
                }
        }
}

static void prob_free(prob *p)
{
    tens *all[] = {&p->q, &p->k, &p->v, &p->o, &p->d_o, &p->dq, &p->dk, &p->dv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        tens_free(all[i]);
    free(p->lse);
    free(p->ro);
    free(p->rdq);
    free(p->rdk);
    free(p->rdv);
    free(p->rlse);
    famask_mask_free(p->mask);
    p->mask = NULL;
}

static famask_attn_args prob_args(const prob *p, float scale_arg)
{
    famask_attn_args a;
    memset(&a, 0, sizeof a);
    a.batch = p->B;
    a.n_head = p->H;
    a.n_head_kv = p->Hkv;
    a.seq_len_q = p->Nq;
    a.seq_len_k = p->Nk;
    a.head_dim = p->D;
    a.dtype = p->dt;
    a.q = p->q.t;
    a.k = p->k.t;
    a.v = p->v.t;
    a.o = p->o.t;
    a.lse = p->lse;
    a.d_o = p->d_o.t;
    a.dq = p->dq.t;
    a.dk = p->dk.t;
    a.dv = p->dv.t;
    a.softmax_scale = scale_arg;
    a.device = FAMASK_DEVICE_CPU;
    return a;
}

/* ---- the float64 reference over the dense mask ---- */

static int ref_mask_b(const prob *p, int b)
{
    return famask_mask_batch(p->mask) == 1 ? 0 : b;
}
static int ref_mask_h(const prob *p, int h)
{
    int hm = famask_mask_heads(p->mask);
    return hm == p->H ? h : hm == p->Hkv ? h / (p->H / p->Hkv) : 0;
}

/* Forward on double inputs (q [B,Nq,H,D], k, v [B,Nk,Hkv,D], dense); o and lse out. */
static void ref_forward(const prob *p, const double *q, const double *k, const double *v, double *o, double *lse)
{
    double *s = malloc((size_t)p->Nk * sizeof *s);
    for (int b = 0; b < p->B; b++)
        for (int h = 0; h < p->H; h++) {
            int hk = h / (p->H / p->Hkv), mb = ref_mask_b(p, b), mh = ref_mask_h(p, h);
            for (int i = 0; i < p->Nq; i++) {
                double m = -INFINITY;
                for (int j = 0; j < p->Nk; j++) {
                    s[j] = -INFINITY;
                    if (!famask_mask_visible(p->mask, mb, mh, i, j))
                        continue;
                    double acc = 0;
                    for (int x = 0; x < p->D; x++)
                        acc += q[qi(p, b, i, h) + x] * k[ki(p, b, j, hk) + x];
                    s[j] = p->scale * acc;
                    if (s[j] > m)
                        m = s[j];
                }
                double *oi = o + qi(p, b, i, h);
                for (int x = 0; x < p->D; x++)
                    oi[x] = 0;
                if (m == -INFINITY) {
                    lse[((int64_t)b * p->H + h) * p->Nq + i] = -INFINITY;
                    continue;
                }
                double sum = 0;
                for (int j = 0; j < p->Nk; j++)
                    if (s[j] != -INFINITY)
                        sum += exp(s[j] - m);
                for (int j = 0; j < p->Nk; j++)
                    if (s[j] != -INFINITY)
                        for (int x = 0; x < p->D; x++)
                            oi[x] += exp(s[j] - m) / sum * v[ki(p, b, j, hk) + x];
                lse[((int64_t)b * p->H + h) * p->Nq + i] = m + log(sum);
            }
        }
    free(s);
}

static double *dense_copy(const prob *p, const tens *x, int n, int h)
{
    double *d = malloc((size_t)p->B * n * h * p->D * sizeof *d);
    for (int b = 0; b < p->B; b++)
        for (int i = 0; i < n; i++)
            for (int hh = 0; hh < h; hh++)
                for (int c = 0; c < p->D; c++)
                    d[(((int64_t)b * n + i) * h + hh) * p->D + c] = tens_get(x, b, i, hh, c);
    return d;
}

/* Backward from the rounded inputs and the reference lse. D = rowsum(d_o * o) takes o as the forward stored it
 * (o is an input of the backward): with the exact o instead, bf16 rounding of o moves D by ~2^-9 |d_o| |o| and
 * dS = P (dP - D) inherits that through cancellation, which would measure the forward's rounding, not the
 * backward. The finite-difference test covers the exact end-to-end gradient. */
static void ref_backward(const prob *p, const double *q, const double *k, const double *v, const double *d_o,
                         const double *o_stored)
{
    size_t nkd = (size_t)p->B * p->Nk * p->Hkv * p->D, nqd = (size_t)p->B * p->Nq * p->H * p->D;
    memset(p->rdq, 0, nqd * sizeof(double));
    memset(p->rdk, 0, nkd * sizeof(double));
    memset(p->rdv, 0, nkd * sizeof(double));
    for (int b = 0; b < p->B; b++)
        for (int h = 0; h < p->H; h++) {
            int hk = h / (p->H / p->Hkv), mb = ref_mask_b(p, b), mh = ref_mask_h(p, h);
            for (int i = 0; i < p->Nq; i++) {
                double lse = p->rlse[((int64_t)b * p->H + h) * p->Nq + i];
                if (lse == -INFINITY)
                    continue;
                const double *qv = q + qi(p, b, i, h), *dov = d_o + qi(p, b, i, h), *ov = o_stored + qi(p, b, i, h);
                double delta = 0;
                for (int x = 0; x < p->D; x++)
                    delta += dov[x] * ov[x];
                for (int j = 0; j < p->Nk; j++) {
                    if (!famask_mask_visible(p->mask, mb, mh, i, j))
                        continue;
                    const double *kv = k + ki(p, b, j, hk), *vv = v + ki(p, b, j, hk);
                    double s = 0, dp = 0;
                    for (int x = 0; x < p->D; x++) {
                        s += qv[x] * kv[x];
                        dp += dov[x] * vv[x];
                    }
                    double pij = exp(p->scale * s - lse), ds = pij * (dp - delta);
                    for (int x = 0; x < p->D; x++) {
                        p->rdv[ki(p, b, j, hk) + x] += pij * dov[x];
                        p->rdq[qi(p, b, i, h) + x] += p->scale * ds * kv[x];
                        p->rdk[ki(p, b, j, hk) + x] += p->scale * ds * qv[x];
                    }
                }
            }
        }
}

/* ---- comparisons ---- */

/* One rounding of the largest element costs up to the unit roundoff: 2^-24 (f32), 2^-11 (f16), 2^-8 (bf16);
 * the bounds leave room for the float64 arithmetic and, in the backward, the fp32 lse (|lse| * 2^-24 in P). */
static double bound_for(famask_dtype dt)
{
    return dt == FAMASK_DTYPE_F32 ? 2e-6 : dt == FAMASK_DTYPE_F16 ? 6e-4 : 4.5e-3;
}

/* Max abs error / max abs reference over a tensor; *nonfinite counts NaN/Inf in the result. */
static double rel_err(const prob *p, const tens *x, int n, int h, const double *ref, double floor_at, int *nonfinite)
{
    double emax = 0, rmax = 0;
    *nonfinite = 0;
    for (int b = 0; b < p->B; b++)
        for (int i = 0; i < n; i++)
            for (int hh = 0; hh < h; hh++)
                for (int c = 0; c < p->D; c++) {
                    double g = tens_get(x, b, i, hh, c), r = ref[(((int64_t)b * n + i) * h + hh) * p->D + c];
                    if (!isfinite(g)) {
                        (*nonfinite)++;
                        continue;
                    }
                    emax = fmax(emax, fabs(g - r));
                    rmax = fmax(rmax, fabs(r));
                }
    /* f16 has subnormals below 2^-14 spaced 2^-24 apart: a tensor whose entries are all that small (a gradient
     * that nearly cancels, e.g. a row with one dominant key) is measured against 2^-24 / 6e-4 ~ 1e-4, so that
     * its absolute rounding error (up to 2^-25) stays within the bound. */
    double floor = p->dt == FAMASK_DTYPE_F16 ? 1e-4 : 0.0;
    rmax = fmax(rmax, fmax(floor, floor_at));
    return rmax > 0 ? emax / rmax : emax;
}

static const char *dt_name(famask_dtype dt)
{
    return dt == FAMASK_DTYPE_F32 ? "f32" : dt == FAMASK_DTYPE_F16 ? "f16" : "bf16";
}

/* Runs forward (and backward) through the API and checks them against the reference. bwd_bound 0: default. */
static void run_case(famask_ctx *ctx, prob *p, const char *what, int backward, double bound_scale)
{
    famask_attn_args a = prob_args(p, p->scale_zero ? 0.0f : (float)p->scale);
    double *q = dense_copy(p, &p->q, p->Nq, p->H), *k = dense_copy(p, &p->k, p->Nk, p->Hkv);
    double *v = dense_copy(p, &p->v, p->Nk, p->Hkv), *d_o = dense_copy(p, &p->d_o, p->Nq, p->H);
    char line[512];
    snprintf(line, sizeof line, "%s: B %d H %d Hkv %d Nq %d Nk %d D %d %s %s mask [%d,%d] scale %g", what, p->B, p->H,
             p->Hkv, p->Nq, p->Nk, p->D, dt_name(p->dt), layout_names[p->layout], famask_mask_batch(p->mask),
             famask_mask_heads(p->mask), p->scale);
    ref_forward(p, q, k, v, p->ro, p->rlse);
    famask_status st = famask_attn_fwd(ctx, p->mask, &a);
    CHECK(st == FAMASK_STATUS_OK, "%s: fwd -> %s: %s", line, famask_status_str(st), famask_ctx_errmsg(ctx));
    int nf = 0;
    double bound = bound_for(p->dt) * bound_scale;
    double eo = rel_err(p, &p->o, p->Nq, p->H, p->ro, 0.0, &nf);
    CHECK(nf == 0, "%s: %d NaN/Inf in o", line, nf);
    CHECK(eo <= bound, "%s: o error %.3g > %.3g", line, eo, bound);
    int bad_lse = 0;
    double else_max = 0;
    for (size_t x = 0; x < (size_t)p->B * p->H * p->Nq; x++) {
        double r = p->rlse[x], g = p->lse[x];
        if (r == -INFINITY) {
            bad_lse += !(g == -INFINITY);
            continue;
        }
        if (!isfinite(g)) {
            bad_lse++;
            continue;
        }
        else_max = fmax(else_max, fabs(g - r) / fmax(1.0, fabs(r)));
    }
    CHECK(bad_lse == 0, "%s: %d lse values non-finite or not -inf where the row is fully masked", line, bad_lse);
    CHECK(else_max <= 2e-7 * bound_scale, "%s: lse error %.3g", line, else_max);
    /* Fully masked rows: o exactly 0. */
    int nonzero = 0;
    for (int b = 0; b < p->B; b++)
        for (int h = 0; h < p->H; h++)
            for (int i = 0; i < p->Nq; i++)
                if (p->rlse[((int64_t)b * p->H + h) * p->Nq + i] == -INFINITY)
                    for (int c = 0; c < p->D; c++)
                        nonzero += tens_get(&p->o, b, i, h, c) != 0.0;
    CHECK(nonzero == 0, "%s: %d nonzero o elements in fully masked rows", line, nonzero);
    double edq = 0, edk = 0, edv = 0;
    if (backward && st == FAMASK_STATUS_OK) {
        double *o_stored = dense_copy(p, &p->o, p->Nq, p->H);
        ref_backward(p, q, k, v, d_o, o_stored);
        free(o_stored);
        st = famask_attn_bwd(ctx, p->mask, &a);
        CHECK(st == FAMASK_STATUS_OK, "%s: bwd -> %s: %s", line, famask_status_str(st), famask_ctx_errmsg(ctx));
        int n1, n2, n3;
        edq = rel_err(p, &p->dq, p->Nq, p->H, p->rdq, p->grad_floor, &n1);
        edk = rel_err(p, &p->dk, p->Nk, p->Hkv, p->rdk, p->grad_floor, &n2);
        edv = rel_err(p, &p->dv, p->Nk, p->Hkv, p->rdv, p->grad_floor, &n3);
        CHECK(n1 + n2 + n3 == 0, "%s: NaN/Inf in gradients (dq %d, dk %d, dv %d)", line, n1, n2, n3);
        CHECK(edq <= bound, "%s: dq error %.3g > %.3g", line, edq, bound);
        CHECK(edk <= bound, "%s: dk error %.3g > %.3g", line, edk, bound);
        CHECK(edv <= bound, "%s: dv error %.3g > %.3g", line, edv, bound);
        /* Fully masked rows: dq exactly 0. Keys no row sees: dk, dv exactly 0. */
        int nz = 0;
        for (int b = 0; b < p->B; b++)
            for (int h = 0; h < p->H; h++)
                for (int i = 0; i < p->Nq; i++)
                    if (p->rlse[((int64_t)b * p->H + h) * p->Nq + i] == -INFINITY)
                        for (int c = 0; c < p->D; c++)
                            nz += tens_get(&p->dq, b, i, h, c) != 0.0;
        for (int b = 0; b < p->B; b++)
            for (int hk = 0; hk < p->Hkv; hk++)
                for (int j = 0; j < p->Nk; j++) {
                    int seen = 0, g = p->H / p->Hkv;
                    for (int h = hk * g; h < (hk + 1) * g && !seen; h++)
                        for (int i = 0; i < p->Nq && !seen; i++)
                            seen = famask_mask_visible(p->mask, ref_mask_b(p, b), ref_mask_h(p, h), i, j);
                    if (!seen)
                        for (int c = 0; c < p->D; c++)
                            nz += tens_get(&p->dk, b, j, hk, c) != 0.0 || tens_get(&p->dv, b, j, hk, c) != 0.0;
                }
        CHECK(nz == 0, "%s: %d nonzero gradients of fully masked rows or unseen keys", line, nz);
    }
    if (backward)
        printf("%s: o %.2e dq %.2e dk %.2e dv %.2e\n", line, eo, edq, edk, edv);
    else
        printf("%s: o %.2e\n", line, eo);
    free(q);
    free(k);
    free(v);
    free(d_o);
}

/* ---- masks ---- */

enum { MASK_RANDOM, MASK_DEAD_ROWS, MASK_CAUSAL, MASK_WINDOW, MASK_CAUSAL_DOC, MASK_DOC, MASK_FULL, MASK_KINDS };
static const char *mask_names[] = {"random", "dead-rows", "causal", "window", "causal-doc", "doc", "full"};

/* Fills one (b, h) slice [Nk, 4] of a given kind; raw, non-canonical vectors are fine (from_vectors
 * canonicalises). */
static void fill_slice(int32_t *v, int kind, int nq, int nk)
{
    int left = tl_rand_int(0, nk / 2 + 1);
    int n_docs = tl_rand_int(1, 4), cuts[8];
    for (int d = 0; d < n_docs - 1; d++)
        cuts[d] = tl_rand_int(0, nq);
    /* Documents are defined on query positions; key j belongs to the document of row j (clipped). */
    int dead0 = tl_rand_int(0, nq - 1), dead1 = tl_rand_int(dead0 + 1, nq);
    for (int j = 0; j < nk; j++) {
        int32_t *c = v + 4 * (int64_t)j;
        c[0] = c[1] = nq;
        c[2] = c[3] = 0;
        int jj = j < nq ? j : nq;
        switch (kind) {
        case MASK_RANDOM:
        case MASK_DEAD_ROWS:
            for (int x = 0; x < 4; x += 2) {
                int s = tl_rand_int(0, nq), e = tl_rand_int(s, nq);
                if (tl_rand_int(0, 2) == 0)
                    e = s;
                c[x] = s;
                c[x + 1] = e;
            }
            if (tl_rand_int(0, 9) == 0) { /* a fully masked column */
                c[0] = 0;
                c[1] = nq;
            }
            if (kind == MASK_DEAD_ROWS) { /* rows dead0..dead1-1 see no key */
                c[2] = tl_rand_int(0, dead0);
                c[3] = tl_rand_int(dead1, nq);
            }
            break;
        case MASK_CAUSAL:
            c[2] = 0;
            c[3] = jj;
            break;
        case MASK_WINDOW: /* visible: j - ... i - left <= j <= i */
            c[2] = 0;
            c[3] = jj;
            c[0] = j + left + 1 < nq ? j + left + 1 : nq;
            break;
        case MASK_CAUSAL_DOC:
        case MASK_DOC: {
            int ds = 0, de = nq;
            for (int d = 0; d < n_docs - 1; d++) {
                if (cuts[d] <= jj && cuts[d] > ds)
                    ds = cuts[d];
                if (cuts[d] > jj && cuts[d] < de)
                    de = cuts[d];
            }
            if (jj >= nq)
                ds = de = nq; /* keys past the last query row: seen by nobody */
            c[2] = 0;
            c[3] = kind == MASK_CAUSAL_DOC ? (jj > ds ? jj : ds) : ds;
            c[0] = de;
            c[1] = nq;
            break;
        }
        default:
            break;
        }
    }
}

/* One (b, h) slice of a structured kind through the family builders (shape [1, 1, Nk, 4]); NULL when the
 * builder does not take this shape (the document families need seq_len_q == seq_len_k). */
static famask_mask *build_slice(famask_ctx *ctx, int kind, int nq, int nk)
{
    famask_mask *m = NULL;
    int lengths[4], n_docs = 0, left = tl_rand_int(0, nk / 2 + 1), right = tl_rand_int(0, 2) ? 0 : tl_rand_int(0, 9);
    if ((kind == MASK_CAUSAL_DOC || kind == MASK_DOC)) {
        if (nq != nk)
            return NULL;
        for (int rest = nq; rest > 0; rest -= lengths[n_docs++])
            lengths[n_docs] = n_docs == 3 ? rest : tl_rand_int(1, rest);
    }
    switch (kind) {
    case MASK_CAUSAL:
        CHECK_OK(ctx, famask_mask_causal(ctx, nq, nk, &m));
        break;
    case MASK_WINDOW:
        CHECK_OK(ctx, famask_mask_sliding_window(ctx, nq, nk, left, right, &m));
        break;
    case MASK_CAUSAL_DOC:
        CHECK_OK(ctx, famask_mask_causal_document(ctx, lengths, n_docs, &m));
        break;
    case MASK_DOC:
        CHECK_OK(ctx, famask_mask_document(ctx, lengths, n_docs, &m));
        break;
    case MASK_FULL:
        CHECK_OK(ctx, famask_mask_full(ctx, nq, nk, &m));
        break;
    default:
        break;
    }
    return m;
}

/* A [bm, hm, Nk, 4] mask of the kind: structured kinds from the builders (stacked per slice, each slice with its
 * own random parameters), random ones and shapes the builders do not take from vectors; dead_head makes the last
 * slice fully masked. */
static famask_mask *make_mask(famask_ctx *ctx, int kind, int bm, int hm, int nq, int nk, int dead_head)
{
    int32_t *v = malloc((size_t)bm * hm * nk * 4 * sizeof *v);
    famask_mask **parts = calloc((size_t)bm * hm, sizeof *parts);
    int built = kind != MASK_RANDOM && kind != MASK_DEAD_ROWS;
    for (int s = 0; s < bm * hm; s++) {
        int32_t *slice = v + (int64_t)s * nk * 4;
        famask_mask *one = NULL;
        if (built && !(dead_head && s == bm * hm - 1))
            one = build_slice(ctx, kind, nq, nk);
        if (one) {
            memcpy(slice, famask_mask_bounds(one), (size_t)nk * 4 * sizeof *slice);
            parts[s] = one;
            continue;
        }
        fill_slice(slice, kind, nq, nk);
        if (dead_head && s == bm * hm - 1)
            for (int j = 0; j < nk; j++) {
                int32_t *c = slice + 4 * (int64_t)j;
                c[0] = 0;
                c[1] = nq;
            }
        CHECK_OK(ctx, famask_mask_from_vectors(ctx, 1, 1, nq, nk, slice, &parts[s]));
    }
    famask_mask *m = NULL;
    CHECK_OK(ctx, famask_mask_stack(ctx, (const famask_mask *const *)parts, bm, hm, &m));
    /* The stack must hold what was put in (the vectors of canonical slices, canonical already). */
    famask_mask *direct = NULL;
    CHECK_OK(ctx, famask_mask_from_vectors(ctx, bm, hm, nq, nk, v, &direct));
    CHECK(m && direct && famask_mask_equal(m, direct), "stacked mask differs from its slices' vectors");
    famask_mask_free(direct);
    for (int s = 0; s < bm * hm; s++)
        famask_mask_free(parts[s]);
    free(parts);
    free(v);
    return m;
}

/* ---- the case groups ---- */

static void setup(famask_ctx *ctx, prob *p, int kind, int bm_full, int heads_sel, int dead_head)
{
    int bm = bm_full ? p->B : 1, hm = heads_sel == 0 ? 1 : heads_sel == 1 ? p->Hkv : p->H;
    p->mask = make_mask(ctx, kind, bm, hm, p->Nq, p->Nk, dead_head);
    prob_alloc(p);
    prob_fill(p, 1.0);
}

static void test_random_cases(famask_ctx *ctx)
{
    static const int dims[] = {32, 64, 96, 128, 256};
    static const famask_dtype dts[] = {FAMASK_DTYPE_F32, FAMASK_DTYPE_BF16, FAMASK_DTYPE_F16};
    static const int lens[] = {1, 2, 17, 63, 64, 65, 100, 129};
    for (int rep = 0; rep < 36; rep++) {
        prob p;
        memset(&p, 0, sizeof p);
        p.D = dims[rep % 5];
        p.dt = dts[rep % 3];
        p.layout = (rep / 3) % 3;
        p.B = tl_rand_int(1, 2);
        p.Hkv = tl_rand_int(1, 2);
        p.H = p.Hkv * tl_rand_int(1, 3);
        int big = p.D <= 64;
        p.Nq = big ? lens[tl_rand_int(0, 7)] : lens[tl_rand_int(0, 5)];
        p.Nk = tl_rand_int(0, 3) == 0 ? p.Nq : (big ? lens[tl_rand_int(0, 7)] : lens[tl_rand_int(0, 5)]);
        p.scale_zero = tl_rand_int(0, 1);
        p.scale = (float)(p.scale_zero ? 1.0 / sqrt(p.D) : 0.5 * tl_rand_unit() + 0.01);
        int kind = rep % MASK_KINDS;
        char what[64];
        snprintf(what, sizeof what, "case %d %s", rep, mask_names[kind]);
        setup(ctx, &p, kind, tl_rand_int(0, 1), tl_rand_int(0, 2), tl_rand_int(0, 4) == 0);
        if (p.mask)
            run_case(ctx, &p, what, 1, 1.0);
        prob_free(&p);
    }
}

/* Several tiles in each direction (the CPU path works in 64 x 64 tiles), so that whole tiles are skipped, some
 * are unmasked and some partial, with ragged edges: sliding windows and documents at 333. */
static void test_many_tiles(famask_ctx *ctx)
{
    static const int kinds[] = {MASK_WINDOW, MASK_CAUSAL_DOC, MASK_DOC, MASK_DEAD_ROWS};
    for (int c = 0; c < 4; c++) {
        prob p = prob_shape(1, 2, 1, 333, c == 0 ? 300 : 333, 32, c % 2 ? FAMASK_DTYPE_BF16 : FAMASK_DTYPE_F32,
                            (float)(1.0 / sqrt(32.0)));
        p.layout = c % 3;
        p.scale_zero = 1;
        p.mask = make_mask(ctx, kinds[c], 1, c == 3 ? 2 : 1, p.Nq, p.Nk, 0);
        prob_alloc(&p);
        prob_fill(&p, 1.0);
        char what[64];
        snprintf(what, sizeof what, "many tiles %s", mask_names[kinds[c]]);
        if (p.mask)
            run_case(ctx, &p, what, 1, 1.0);
        famask_tile_counts counts = {0, 0, 0};
        if (p.mask)
            CHECK_OK(ctx, famask_mask_tiles(ctx, p.mask, 0, 0, 64, 64, NULL, &counts));
        printf("many tiles %s: tiles skipped %lld, partial %lld, unmasked %lld\n", mask_names[kinds[c]],
               (long long)counts.skipped, (long long)counts.partial, (long long)counts.unmasked);
        prob_free(&p);
    }
}

/* The CPU backward is deterministic (one writer per output element, fixed order): two runs, same bits. */
static void test_deterministic(famask_ctx *ctx)
{
    prob p = prob_shape(3, 4, 2, 100, 90, 64, FAMASK_DTYPE_BF16, 0.2);
    p.mask = make_mask(ctx, MASK_RANDOM, 3, 4, p.Nq, p.Nk, 0);
    prob_alloc(&p);
    prob_fill(&p, 1.0);
    famask_attn_args a = prob_args(&p, 0.2f);
    a.deterministic = 1;
    tens *g[3] = {&p.dq, &p.dk, &p.dv};
    void *first[3];
    if (p.mask) {
        CHECK_OK(ctx, famask_attn_fwd(ctx, p.mask, &a));
        CHECK_OK(ctx, famask_attn_bwd(ctx, p.mask, &a));
        for (int t = 0; t < 3; t++) {
            first[t] = malloc(g[t]->n_elems * 2);
            memcpy(first[t], g[t]->t.data, g[t]->n_elems * 2);
            memset(g[t]->t.data, 0xff, g[t]->n_elems * 2);
        }
        CHECK_OK(ctx, famask_attn_bwd(ctx, p.mask, &a));
        for (int t = 0; t < 3; t++) {
            CHECK(memcmp(first[t], g[t]->t.data, g[t]->n_elems * 2) == 0, "backward run twice: d%c differs", "qkv"[t]);
            free(first[t]);
        }
    }
    prob_free(&p);
}

/* Logits of order 1000 (scale 100): no overflow, no NaN; a fully masked head in the same call. */
static void test_extreme(famask_ctx *ctx)
{
    prob p = prob_shape(1, 2, 1, 70, 66, 64, FAMASK_DTYPE_F32, 100);
    /* At scale 100 most rows are one-hot, so dS = P (dP - D) nearly cancels and a whole gradient tensor can be
     * far below the fp32 lse's own error in P: measure dq and dk against the scale of a non-cancelling gradient
     * (scale x |dS| ~ 1 x |K| ~ 1) rather than against a cancelled one. */
    p.grad_floor = p.scale;
    p.mask = make_mask(ctx, MASK_DEAD_ROWS, 1, 2, p.Nq, p.Nk, 1);
    prob_alloc(&p);
    prob_fill(&p, 1.0);
    /* The fp32 lse carries an absolute error of about |lse| * 6e-8 into P: bounds scale with |lse| ~ 1e3. */
    if (p.mask)
        run_case(ctx, &p, "extreme scale 100", 1, 500.0);
    prob_free(&p);
}

/* The forward's own rounding in fp32, Nq = Nk = 1 with one visible key: o = v exactly, lse = scale * q.k. */
static void test_single(famask_ctx *ctx)
{
    prob p = prob_shape(1, 1, 1, 1, 1, 32, FAMASK_DTYPE_F32, 1.0 / sqrt(32.0));
    CHECK_OK(ctx, famask_mask_create(ctx, 1, 1, 1, 1, &p.mask));
    prob_alloc(&p);
    prob_fill(&p, 1.0);
    famask_attn_args a = prob_args(&p, 0);
    CHECK_OK(ctx, famask_attn_fwd(ctx, p.mask, &a));
    int same = 1;
    for (int c = 0; c < 32; c++)
        same &= tens_get(&p.o, 0, 0, 0, c) == tens_get(&p.v, 0, 0, 0, c);
    CHECK(same, "one visible key: o must equal v exactly");
    prob_free(&p);
}

/* Backward against central differences of the float64 reference forward, loss = sum(o * d_o). */
static void test_finite_differences(famask_ctx *ctx)
{
    for (int rep = 0; rep < 3; rep++) {
        prob p = prob_shape(1, 2, rep == 2 ? 2 : 1, 5 + rep, 7 - rep, 32, FAMASK_DTYPE_F32, 0.3);
        p.layout = rep % 2;
        p.mask = make_mask(ctx, rep == 0 ? MASK_RANDOM : MASK_CAUSAL, 1, rep == 2 ? 2 : 1, p.Nq, p.Nk, 0);
        if (!p.mask)
            continue;
        prob_alloc(&p);
        prob_fill(&p, 1.0);
        famask_attn_args a = prob_args(&p, (float)p.scale);
        CHECK_OK(ctx, famask_attn_fwd(ctx, p.mask, &a));
        CHECK_OK(ctx, famask_attn_bwd(ctx, p.mask, &a));
        double *x[3] = {dense_copy(&p, &p.q, p.Nq, p.H), dense_copy(&p, &p.k, p.Nk, p.Hkv),
                        dense_copy(&p, &p.v, p.Nk, p.Hkv)};
        double *d_o = dense_copy(&p, &p.d_o, p.Nq, p.H);
        size_t nqd = (size_t)p.Nq * p.H * p.D, nkd = (size_t)p.Nk * p.Hkv * p.D, sizes[3] = {nqd, nkd, nkd};
        tens *grads[3] = {&p.dq, &p.dk, &p.dv};
        int hs[3] = {p.H, p.Hkv, p.Hkv};
        double *o = malloc(nqd * sizeof *o), *lse = malloc((size_t)p.H * p.Nq * sizeof *lse);
        for (int t = 0; t < 3; t++) {
            double emax = 0, gmax = 0;
            for (size_t e = 0; e < sizes[t]; e++) {
                const double eps = 1e-4, keep = x[t][e];
                double loss[2];
                for (int sgn = 0; sgn < 2; sgn++) {
                    x[t][e] = keep + (sgn ? -eps : eps);
                    ref_forward(&p, x[0], x[1], x[2], o, lse);
                    loss[sgn] = 0;
                    for (size_t f = 0; f < nqd; f++)
                        loss[sgn] += o[f] * d_o[f];
                }
                x[t][e] = keep;
                double fd = (loss[0] - loss[1]) / (2 * eps);
                int c = (int)(e % p.D), h = (int)(e / p.D % hs[t]), n = (int)(e / p.D / hs[t]);
                double g = tens_get(grads[t], 0, n, h, c);
                emax = fmax(emax, fabs(g - fd));
                gmax = fmax(gmax, fabs(fd));
            }
            double rel = gmax > 0 ? emax / gmax : emax;
            printf("finite differences %d d%c: max error %.2e of max %.2e\n", rep, "qkv"[t], emax, gmax);
            CHECK(rel <= 1e-4, "finite differences %d: d%c relative error %.3g", rep, "qkv"[t], rel);
        }
        free(o);
        free(lse);
        free(d_o);
        for (int t = 0; t < 3; t++)
            free(x[t]);
        prob_free(&p);
    }
}

/* ---- preconditions ---- */

static void expect(famask_ctx *ctx, famask_status got, famask_status want, const char *needle, const char *what)
{
    CHECK(got == want, "%s: got %s, want %s (%s)", what, famask_status_str(got), famask_status_str(want),
          famask_ctx_errmsg(ctx));
    CHECK(strstr(famask_ctx_errmsg(ctx), needle) != NULL, "%s: message '%s' should name %s", what,
          famask_ctx_errmsg(ctx), needle);
}

static void test_preconditions(famask_ctx *ctx)
{
    prob p = prob_shape(2, 4, 2, 8, 6, 32, FAMASK_DTYPE_F32, 1.0 / sqrt(32.0));
    CHECK_OK(ctx, famask_mask_create(ctx, 1, 1, p.Nq, p.Nk, &p.mask));
    prob_alloc(&p);
    prob_fill(&p, 1.0);
    const famask_attn_args good = prob_args(&p, 0);
    famask_attn_args a;
    famask_mask *m = NULL;
#define TRY_FWD(mod, want, needle)                                                                                     \
    do {                                                                                                               \
        a = good;                                                                                                      \
        mod;                                                                                                           \
        expect(ctx, famask_attn_fwd(ctx, p.mask, &a), want, needle, "fwd " #mod);                                      \
    } while (0)
#define TRY_BWD(mod, want, needle)                                                                                     \
    do {                                                                                                               \
        a = good;                                                                                                      \
        mod;                                                                                                           \
        expect(ctx, famask_attn_bwd(ctx, p.mask, &a), want, needle, "bwd " #mod);                                      \
    } while (0)
    const famask_status INV = FAMASK_STATUS_INVALID_ARGUMENT, UNS = FAMASK_STATUS_UNSUPPORTED;
    expect(ctx, famask_attn_fwd(ctx, p.mask, NULL), INV, "'args'", "NULL args");
    expect(ctx, famask_attn_fwd(ctx, NULL, &good), INV, "'mask'", "NULL mask");
    expect(ctx, famask_attn_bwd(ctx, NULL, &good), INV, "'mask'", "NULL mask bwd");
    TRY_FWD(a.device = (famask_device)7, INV, "'device'");
    TRY_BWD(a.device = FAMASK_DEVICE_CUDA_UNFUSED, UNS, "cuda_unfused");
    TRY_FWD(a.batch = 0, INV, "'batch'");
    TRY_FWD(a.n_head = -1, INV, "'n_head'");
    TRY_FWD(a.n_head_kv = 0, INV, "'n_head_kv'");
    TRY_FWD(a.n_head_kv = 3, INV, "'n_head_kv'");
    TRY_FWD(a.seq_len_q = 0, INV, "'seq_len_q'");
    TRY_FWD(a.seq_len_k = FAMASK_MAX_SEQ_LEN + 1, INV, "'seq_len_k'");
    TRY_FWD(a.head_dim = 0, INV, "'head_dim'");
    TRY_FWD(a.head_dim = 48, UNS, "'head_dim'");
    TRY_FWD(a.head_dim = 512, UNS, "'head_dim'");
    TRY_FWD(a.dtype = FAMASK_DTYPE_F64, UNS, "'dtype'");
    TRY_FWD(a.dtype = FAMASK_DTYPE_I32, UNS, "'dtype'");
    TRY_FWD((a.dtype = FAMASK_DTYPE_F32, a.device = FAMASK_DEVICE_CUDA), UNS, "'dtype'");
    TRY_FWD((a.dtype = FAMASK_DTYPE_F32, a.device = FAMASK_DEVICE_CUDA_UNFUSED), UNS, "'dtype'");
    TRY_FWD(a.softmax_scale = NAN, INV, "'softmax_scale'");
    TRY_FWD(a.softmax_scale = INFINITY, INV, "'softmax_scale'");
    TRY_FWD(a.q.data = NULL, INV, "'q.data'");
    TRY_FWD(a.k.data = NULL, INV, "'k.data'");
    TRY_FWD(a.v.data = NULL, INV, "'v.data'");
    TRY_FWD(a.o.data = NULL, INV, "'o.data'");
    TRY_BWD(a.d_o.data = NULL, INV, "'d_o.data'");
    TRY_BWD(a.o.data = NULL, INV, "'o.data'");
    TRY_BWD(a.dq.data = NULL, INV, "'dq.data'");
    TRY_BWD(a.dk.data = NULL, INV, "'dk.data'");
    TRY_BWD(a.dv.data = NULL, INV, "'dv.data'");
    TRY_BWD(a.lse = NULL, INV, "'lse'");
    TRY_FWD(a.k.stride_seq = -a.k.stride_seq, INV, "'k'");
    TRY_FWD(a.o.stride_seq = 0, INV, "'o'");
    TRY_FWD(a.o.stride_head = 16, INV, "'o'"); /* rows of 32 overlap their neighbours */
    TRY_FWD(a.o.stride_batch = a.o.stride_seq, INV, "'o'");
    TRY_BWD(a.dk.stride_head = 0, INV, "'dk'");
    TRY_BWD(a.dv = a.dk, INV, "'dk' and 'dv'");
    TRY_BWD(a.dq.data = a.q.data, INV, "'dq'");
    TRY_FWD(a.o.data = a.v.data, INV, "'o'");
    /* Inputs may broadcast or share memory: a zero stride on an input is fine. */
    a = good;
    a.k.stride_batch = 0;
    a.v.stride_batch = 0;
    CHECK_OK(ctx, famask_attn_fwd(ctx, p.mask, &a));
    /* The cuda device's alignment rule is checked before dispatch, with or without a GPU. */
    TRY_FWD((a.dtype = FAMASK_DTYPE_BF16, a.device = FAMASK_DEVICE_CUDA, a.q.data = (char *)a.q.data + 2), UNS,
            "'q.data'");
    TRY_FWD((a.dtype = FAMASK_DTYPE_BF16, a.device = FAMASK_DEVICE_CUDA, a.k.stride_seq += 4), UNS, "'k'");
    /* Mask shape against the arguments. */
    famask_mask *keep = p.mask;
    CHECK_OK(ctx, famask_mask_create(ctx, 3, 1, p.Nq, p.Nk, &m));
    expect(ctx, famask_attn_fwd(ctx, m, &good), INV, "batch rows", "mask batch 3 for batch 2");
    famask_mask_free(m);
    CHECK_OK(ctx, famask_mask_create(ctx, 1, 3, p.Nq, p.Nk, &m));
    expect(ctx, famask_attn_fwd(ctx, m, &good), INV, "heads", "mask heads 3 for 4/2");
    famask_mask_free(m);
    CHECK_OK(ctx, famask_mask_create(ctx, 1, 1, p.Nq + 1, p.Nk, &m));
    expect(ctx, famask_attn_fwd(ctx, m, &good), INV, "seq_len_q", "mask seq_len_q");
    famask_mask_free(m);
    CHECK_OK(ctx, famask_mask_create(ctx, 1, 1, p.Nq, p.Nk - 1, &m));
    expect(ctx, famask_attn_bwd(ctx, m, &good), INV, "seq_len_k", "mask seq_len_k");
    famask_mask_free(m);
    /* Every accepted mask shape runs: batch 1 or B, heads 1, H_kv, H. */
    int shapes[][2] = {{1, 1}, {2, 1}, {1, 2}, {2, 4}};
    for (int s = 0; s < 4; s++) {
        CHECK_OK(ctx, famask_mask_create(ctx, shapes[s][0], shapes[s][1], p.Nq, p.Nk, &m));
        if (m)
            CHECK_OK(ctx, famask_attn_fwd(ctx, m, &good));
        famask_mask_free(m);
    }
    p.mask = keep;
    /* A rejected call writes nothing. */
    memset(p.o.t.data, 0xab, p.o.n_elems * 4);
    a = good;
    a.head_dim = 48;
    famask_attn_fwd(ctx, p.mask, &a);
    int touched = 0;
    for (size_t e = 0; e < p.o.n_elems * 4; e++)
        touched += ((unsigned char *)p.o.t.data)[e] != 0xab;
    CHECK(touched == 0, "a rejected call wrote %d bytes of o", touched);
    prob_free(&p);
#undef TRY_FWD
#undef TRY_BWD
}

/* ---- half.h ---- */

/* Correct rounding to nearest even of a double to a format, by brute force over the two neighbours. */
static uint16_t rne_oracle(double d, int bf16)
{
    if (d != d)
        return 0x7fff;
    uint16_t sign = signbit(d) ? 0x8000 : 0;
    double a = fabs(d);
    uint16_t best = 0;
    /* Positive values of a 16-bit format are ordered like their bit patterns: binary search the neighbours. */
    uint16_t lo = 0, hi = bf16 ? 0x7f80 : 0x7c00; /* infinity */
    while (hi - lo > 1) {
        uint16_t mid = (uint16_t)((lo + hi) / 2);
        double vm = bf16 ? fm_bf16_to_f32(mid) : fm_f16_to_f32(mid);
        if (vm <= a)
            lo = mid;
        else
            hi = mid;
    }
    double vlo = bf16 ? fm_bf16_to_f32(lo) : fm_f16_to_f32(lo);
    double vhi = bf16 ? fm_bf16_to_f32(hi) : fm_f16_to_f32(hi);
    if (hi == (bf16 ? 0x7f80 : 0x7c00)) /* the midpoint to infinity is where the next binade would start */
        vhi = 2 * vlo - (bf16 ? fm_bf16_to_f32((uint16_t)(lo - 1)) : fm_f16_to_f32((uint16_t)(lo - 1)));
    if (a == vlo)
        best = lo;
    else if (a - vlo < vhi - a)
        best = lo;
    else if (a - vlo > vhi - a)
        best = hi;
    else
        best = (lo & 1) ? hi : lo;
    return (uint16_t)(sign | best);
}

static void test_half(void)
{
    /* Every 16-bit pattern survives a round trip through float. */
    int bad_f16 = 0, bad_bf16 = 0;
    for (uint32_t u = 0; u < 65536; u++) {
        float f = fm_f16_to_f32((uint16_t)u), g = fm_bf16_to_f32((uint16_t)u);
        if (f != f)
            bad_f16 += !(fm_f32_to_f16(f) & 0x3ff) || (fm_f32_to_f16(f) & 0x7c00) != 0x7c00;
        else
            bad_f16 += fm_f32_to_f16(f) != u;
        if (g != g)
            bad_bf16 += (fm_f32_to_bf16(g) & 0x7f80) != 0x7f80 || !(fm_f32_to_bf16(g) & 0x7f);
        else
            bad_bf16 += fm_f32_to_bf16(g) != u;
    }
    CHECK(bad_f16 == 0, "%d f16 patterns do not round-trip", bad_f16);
    CHECK(bad_bf16 == 0, "%d bf16 patterns do not round-trip", bad_bf16);
    /* Known values: ties to even, overflow, subnormals. */
    CHECK(fm_f32_to_f16(65504.0f) == 0x7bff && fm_f32_to_f16(65519.0f) == 0x7bff && fm_f32_to_f16(65520.0f) == 0x7c00,
          "f16 overflow boundary");
    CHECK(fm_f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00 && fm_f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02,
          "f16 ties to even");
    CHECK(fm_f32_to_f16(5.9604645e-8f) == 0x0001 && fm_f32_to_f16(2.9802322e-8f) == 0x0000 &&
              fm_f32_to_f16(-2.9802326e-8f) == 0x8001,
          "f16 smallest subnormal and its half");
    CHECK(fm_f32_to_bf16(1.0f + 1.0f / 256) == 0x3f80 && fm_f32_to_bf16(1.0f + 3.0f / 256) == 0x3f82,
          "bf16 ties to even");
    CHECK(fm_f32_to_bf16(-0.0f) == 0x8000 && fm_f32_to_f16(-0.0f) == 0x8000, "negative zero");
    CHECK(fm_f32_to_bf16(INFINITY) == 0x7f80 && fm_f32_to_f16(-INFINITY) == 0xfc00, "infinities");
    /* Random doubles over the whole range of both formats against the brute-force oracle. */
    int bad = 0;
    for (int r = 0; r < 200000 && bad < 5; r++) {
        double d = ldexp(tl_rand_unit() * 2 - 1, tl_rand_int(-30, 20));
        if (r % 7 == 0) /* exact ties of f16 and bf16 grids, which float rounding would break */
            d = ldexp((double)(2 * tl_rand_int(1024, 2047) + 1), tl_rand_int(-25, 5)) / 4096.0 *
                (1.0 + ldexp(tl_rand_int(-1, 1), -40));
        uint16_t want = rne_oracle(d, 0), got = fm_f64_to_f16(d);
        if (got != want) {
            bad++;
            fprintf(stderr, "f16(%.17g) = %04x, want %04x\n", d, got, want);
        }
        want = rne_oracle(d, 1);
        got = fm_f64_to_bf16(d);
        if (got != want) {
            bad++;
            fprintf(stderr, "bf16(%.17g) = %04x, want %04x\n", d, got, want);
        }
        float f = (float)d;
        want = rne_oracle(f, 0);
        got = fm_f32_to_f16(f);
        if (got != want) {
            bad++;
            fprintf(stderr, "f16(float %.9g) = %04x, want %04x\n", (double)f, got, want);
        }
        want = rne_oracle(f, 1);
        got = fm_f32_to_bf16(f);
        if (got != want) {
            bad++;
            fprintf(stderr, "bf16(float %.9g) = %04x, want %04x\n", (double)f, got, want);
        }
    }
    CHECK(bad == 0, "%d conversions differ from round-to-nearest-even", bad);
}

int main(void)
{
    tl_seed("test-attn");
    famask_ctx *ctx = NULL;
    if (famask_ctx_create(&ctx) != FAMASK_STATUS_OK)
        return 1;
    test_half();
    test_preconditions(ctx);
    test_single(ctx);
    test_random_cases(ctx);
    test_many_tiles(ctx);
    test_deterministic(ctx);
    test_extreme(ctx);
    test_finite_differences(ctx);
    famask_ctx_free(ctx);
    return tl_finish();
}
