/*
 * cuda-bwd.c: the CUDA attention backward through the public entry (famask_attn_bwd on FAMASK_DEVICE_CUDA, which
 * validates the arguments and dispatches to fm_cuda_bwd) against a float64 reference written here over the dense
 * mask, and the public refusals of backward arguments on the cuda device (nothing written).
 *
 * Per case: random normal q, k, v, d_o (rounded to the dtype), o and lse from a float64 reference forward, the
 * backward on the GPU into poisoned (NaN) outputs, then per tensor (dq, dk, dv) the Frobenius relative error
 * ||x - ref|| / ||ref|| against the float64 reference backward, bounded by 2e-2 for bf16 and 5e-3 for fp16; a
 * separate NaN/Inf check; exact zeros for query rows with no visible key (dq) and keys visible to no query
 * (dk, dv). Deterministic cases run 5 times and must be bitwise identical. Scales: the default 1 / sqrt(D), and
 * negative ones on every head dim.
 *
 * Shapes: q, o, d_o, dq [B, Nq, H, D] and k, v, dk, dv [B, Nk, H_kv, D] in either [B, N, H, D] or [B, H, N, D]
 * memory order (strides); masks [batch_m, heads_m, Nk, 4]. The eviction cases run with their keys sorted
 * (kernels/key-order.cu; a case that does not is a failure); FAMASK_KEY_ORDER=reverse runs every case that can
 * through a reversed key order. FAMASK_BWD_SMALL=1 runs only the small cases (for compute-sanitizer). Exits 77
 * when there is no CUDA device.
 */
#include "testlib.h"

#include "famask.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { M_FULL, M_CAUSAL, M_RANDOM, M_EMPTY_ROWS, M_DOCUMENT, M_MIXED, M_EVICT, M_GLOBAL_BAND };
static const char *mask_names[] = {"full",  "causal", "random", "empty_rows", "document", "mixed",
                                   "evict", "global+band"};

typedef struct bcase {
    int batch, n_head, n_head_kv, seq_len_q, seq_len_k, head_dim;
    famask_dtype dtype;
    int bhnd; /* 1: [B, H, N, D] strides, 0: [B, N, H, D] */
    int mask, batch_m, heads_m;
    int deterministic;
    int small;
    float scale; /* softmax_scale; 0: the default 1 / sqrt(D) */
} bcase;

static const bcase cases[] = {
    /* B  H Hkv  Nq   Nk    D  dtype               bhnd mask          bm hm det small scale */
    {1, 1, 1, 64, 128, 64, FAMASK_DTYPE_BF16, 0, M_FULL, 1, 1, 0, 1, 0},
    {1, 2, 1, 77, 45, 32, FAMASK_DTYPE_F16, 1, M_CAUSAL, 1, 1, 0, 1, 0},
    {2, 2, 2, 100, 130, 64, FAMASK_DTYPE_BF16, 0, M_EMPTY_ROWS, 2, 2, 1, 1, 0},
    {1, 2, 2, 70, 200, 128, FAMASK_DTYPE_F16, 1, M_RANDOM, 1, 2, 0, 1, 0},
    {1, 2, 1, 33, 70, 256, FAMASK_DTYPE_BF16, 0, M_DOCUMENT, 1, 1, 1, 1, 0},
    {2, 4, 2, 200, 200, 128, FAMASK_DTYPE_BF16, 0, M_CAUSAL, 1, 1, 0, 0, 0},
    {2, 4, 2, 200, 200, 128, FAMASK_DTYPE_F16, 1, M_CAUSAL, 1, 1, 1, 0, 0},
    {1, 4, 4, 300, 77, 64, FAMASK_DTYPE_BF16, 1, M_RANDOM, 1, 4, 0, 0, 0},
    {1, 4, 4, 77, 300, 64, FAMASK_DTYPE_F16, 0, M_RANDOM, 1, 4, 1, 0, 0},
    {2, 6, 1, 130, 250, 96, FAMASK_DTYPE_BF16, 0, M_EMPTY_ROWS, 2, 1, 0, 0, 0},
    {2, 6, 3, 250, 130, 96, FAMASK_DTYPE_F16, 1, M_DOCUMENT, 2, 3, 1, 0, 0},
    {1, 4, 2, 129, 129, 32, FAMASK_DTYPE_BF16, 1, M_MIXED, 1, 4, 0, 0, 0},
    {1, 4, 2, 129, 129, 32, FAMASK_DTYPE_F16, 0, M_MIXED, 1, 2, 1, 0, 0},
    {1, 2, 2, 190, 190, 256, FAMASK_DTYPE_F16, 1, M_EMPTY_ROWS, 1, 2, 0, 0, 0},
    {2, 2, 1, 150, 257, 256, FAMASK_DTYPE_BF16, 0, M_CAUSAL, 2, 1, 1, 0, 0},
    {1, 3, 3, 1, 1, 64, FAMASK_DTYPE_BF16, 0, M_FULL, 1, 1, 0, 1, 0},
    {1, 2, 2, 700, 700, 128, FAMASK_DTYPE_BF16, 1, M_DOCUMENT, 1, 2, 0, 0, 0},
    {1, 2, 2, 700, 700, 128, FAMASK_DTYPE_BF16, 0, M_EMPTY_ROWS, 1, 1, 1, 0, 0},
    {1, 2, 1, 513, 640, 64, FAMASK_DTYPE_F16, 0, M_MIXED, 1, 2, 0, 0, 0},
    {1, 2, 2, 640, 513, 96, FAMASK_DTYPE_BF16, 1, M_CAUSAL, 1, 1, 0, 0, 0},
    {1, 8, 2, 256, 256, 128, FAMASK_DTYPE_BF16, 0, M_FULL, 1, 1, 1, 0, 0},
    /* negative scales (P is recomputed from lse, which holds for either sign), every head dim, both modes */
    {1, 2, 1, 77, 45, 32, FAMASK_DTYPE_F16, 1, M_CAUSAL, 1, 1, 0, 1, -0.25f},
    {2, 2, 2, 100, 130, 64, FAMASK_DTYPE_BF16, 0, M_EMPTY_ROWS, 2, 2, 1, 0, -0.125f},
    {1, 6, 3, 250, 130, 96, FAMASK_DTYPE_BF16, 1, M_DOCUMENT, 1, 3, 0, 0, -0.5f},
    {2, 4, 2, 200, 200, 128, FAMASK_DTYPE_F16, 0, M_MIXED, 1, 4, 0, 0, -0.0884f},
    {1, 4, 2, 129, 129, 128, FAMASK_DTYPE_BF16, 1, M_RANDOM, 1, 2, 1, 0, -0.3f},
    {1, 2, 1, 150, 257, 256, FAMASK_DTYPE_BF16, 0, M_EMPTY_ROWS, 1, 1, 0, 0, -0.0625f},
    {1, 2, 2, 190, 190, 256, FAMASK_DTYPE_F16, 1, M_CAUSAL, 1, 2, 1, 0, -0.0625f},
    /* keys evicted soon after they appear: the default mode sorts the keys (k, v copied in that order, dk, dv
     * copied back), both modes, GQA with a mask per key head or one for all, both layouts */
    {1, 4, 2, 2900, 2400, 128, FAMASK_DTYPE_BF16, 1, M_EVICT, 1, 2, 0, 0, 0},
    {2, 2, 1, 3200, 2600, 64, FAMASK_DTYPE_F16, 0, M_EVICT, 1, 1, 1, 0, 0},
    /* short documents at head dim 64: several dQ items of a few key blocks per CTA, so that the stages of an
     * item's Q, dO, L and Dd are reused while the items before are still being computed */
    {4, 8, 2, 2048, 2048, 64, FAMASK_DTYPE_BF16, 0, M_DOCUMENT, 4, 8, 1, 0, 0},
    /* global keys and a band: the dQ pass's runs of masked key blocks are longer than a coarse summary's 32 blocks
     * (it then jumps by coarse blocks) and, at 270,000 keys, than a coarse window's 1024 */
    {1, 4, 2, 9000, 9000, 128, FAMASK_DTYPE_F16, 1, M_GLOBAL_BAND, 1, 2, 1, 0, 0},
    {1, 2, 1, 300, 270000, 64, FAMASK_DTYPE_BF16, 0, M_GLOBAL_BAND, 1, 1, 0, 0, 0},
};

/* ---- 16-bit conversions (round to nearest even) ---------------------------------------------------------------- */

static uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7FFF + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

static float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static float f16_to_f32(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 0)
        v = ldexp(m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexp(1024 + m, e - 25);
    return (float)(s ? -v : v);
}

static uint16_t f32_to_f16(float f)
{
    /* Exact for the normal range used here: nearest f16 by frexp and rint (ties to even). */
    if (f != f)
        return 0x7E00;
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    double a = fabs((double)f);
    if (a >= 65520.0)
        return sign | 0x7C00;
    if (a < ldexp(1, -14)) /* subnormal: units of 2^-24 */
        return sign | (uint16_t)rint(a * ldexp(1, 24));
    int e;
    double m = frexp(a, &e); /* a = m 2^e, m in [0.5, 1) */
    double q = rint(m * 2048.0); /* 11 significant bits */
    if (q == 2048.0) {
        q = 1024.0;
        e++;
    }
    int be = e - 1 + 15;
    if (be >= 31)
        return sign | 0x7C00;
    return sign | (uint16_t)(be << 10) | (uint16_t)((int)q - 1024);
}

static uint16_t to16(famask_dtype dt, float f) { return dt == FAMASK_DTYPE_BF16 ? f32_to_bf16(f) : f32_to_f16(f); }
static float from16(famask_dtype dt, uint16_t h) { return dt == FAMASK_DTYPE_BF16 ? bf16_to_f32(h) : f16_to_f32(h); }

/* ---- masks ----------------------------------------------------------------------------------------------------- */

static void interval(int32_t *v, int s, int e) { v[0] = s, v[1] = e; }

/* One (b, h)'s vectors of a mask family with random parameters. */
static void fill_mask(int kind, int nq, int nk, int32_t *bounds)
{
    if (kind == M_MIXED)
        kind = tl_rand_int(M_FULL, M_DOCUMENT);
    int a = tl_rand_int(0, nq), bnd = tl_rand_int(a, nq);
    int docs[8], n_docs = tl_rand_int(1, 5);
    for (int d = 0; d < n_docs; d++)
        docs[d] = tl_rand_int(1, nk - 1 > 1 ? nk - 1 : 1);
    /* sorted key boundaries of the documents */
    for (int d = 1; d < n_docs; d++)
        for (int e = d; e > 0 && docs[e - 1] > docs[e]; e--) {
            int tmp = docs[e];
            docs[e] = docs[e - 1];
            docs[e - 1] = tmp;
        }
    for (int j = 0; j < nk; j++) {
        int32_t *v = bounds + 4 * j;
        interval(v, nq, nq);
        interval(v + 2, 0, 0);
        switch (kind) {
        case M_FULL:
            break;
        case M_CAUSAL: /* visible j <= i */
            interval(v + 2, 0, j < nq ? j : nq);
            break;
        case M_RANDOM: {
            int s0 = tl_rand_int(0, nq), e0 = tl_rand_int(s0, nq);
            int s1 = tl_rand_int(0, nq), e1 = tl_rand_int(s1, nq);
            interval(v, s0, e0);
            interval(v + 2, s1, e1);
            break;
        }
        case M_EVICT: /* causal; half the keys evicted soon, at a row in (j, j + nq / 16]: the key order's case */
            interval(v + 2, 0, j < nq ? j : nq);
            if (j < nq && tl_rand_int(0, 1)) {
                int r = j + 1 + tl_rand_int(0, nq / 16);
                interval(v, r < nq ? r : nq, nq);
            }
            break;
        case M_GLOBAL_BAND: /* keys [0, 1 + a % 200) seen by every row, then key j by rows [j nq / nk, + 1 + a % 3) */
            if (j > a % 200) {
                int r = (int)((int64_t)j * nq / nk), e = r + 1 + a % 3;
                interval(v + 2, 0, r);
                interval(v, e < nq ? e : nq, nq);
            }
            break;
        case M_EMPTY_ROWS: /* causal plus the rows [a, bnd) masked in every column */
            interval(v, a, bnd);
            interval(v + 2, 0, j < nq ? j : nq);
            break;
        default: { /* document: rows of the same document, boundaries scaled from keys to queries */
            int lo = 0, hi = nk;
            for (int d = 0; d < n_docs; d++) {
                if (docs[d] <= j)
                    lo = docs[d];
                else if (docs[d] < hi)
                    hi = docs[d];
            }
            int rlo = (int)((int64_t)lo * nq / nk), rhi = (int)((int64_t)hi * nq / nk);
            interval(v + 2, 0, rlo);
            interval(v, rhi, nq);
            break;
        }
        }
    }
}

/* ---- reference --------------------------------------------------------------------------------------------- */

typedef struct host_tensors {
    float *q, *k, *v, *o, *d_o; /* values as rounded to the dtype */
    double *ref_o, *ref_lse, *ref_dq, *ref_dk, *ref_dv;
    float *lse;
} host_tensors;

/* Offsets of element (b, n, h, 0) for a tensor with nn positions and hh heads in the case's layout. */
static int64_t off(const bcase *c, int nn, int hh, int b, int n, int h)
{
    int D = c->head_dim;
    if (c->bhnd)
        return (((int64_t)b * hh + h) * nn + n) * D;
    return (((int64_t)b * nn + n) * hh + h) * D;
}

static void reference(const bcase *c, const famask_mask *mask, host_tensors *t, float scale)
{
    const int B = c->batch, H = c->n_head, Hkv = c->n_head_kv, Nq = c->seq_len_q, Nk = c->seq_len_k,
              D = c->head_dim;
    double *s = malloc(sizeof(double) * Nk), *dp = malloc(sizeof(double) * Nk);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            int hk = h / (H / Hkv);
            int mb = c->batch_m == 1 ? 0 : b;
            int mh = c->heads_m == 1 ? 0 : (c->heads_m == H ? h : hk);
            for (int i = 0; i < Nq; i++) {
                const float *qi = t->q + off(c, Nq, H, b, i, h);
                double m = -INFINITY;
                for (int j = 0; j < Nk; j++) {
                    if (!famask_mask_visible(mask, mb, mh, i, j)) {
                        s[j] = -INFINITY;
                        continue;
                    }
                    const float *kj = t->k + off(c, Nk, Hkv, b, j, hk);
                    double acc = 0;
                    for (int d = 0; d < D; d++)
                        acc += (double)qi[d] * kj[d];
                    s[j] = acc * scale;
                    if (s[j] > m)
                        m = s[j];
                }
                double *oi = t->ref_o + off(c, Nq, H, b, i, h);
                memset(oi, 0, sizeof(double) * D);
                double lse = -INFINITY;
                if (m != -INFINITY) {
                    double l = 0;
                    for (int j = 0; j < Nk; j++)
                        if (s[j] != -INFINITY)
                            l += exp(s[j] - m);
                    lse = m + log(l);
                    for (int j = 0; j < Nk; j++) {
                        if (s[j] == -INFINITY)
                            continue;
                        double pj = exp(s[j] - lse);
                        const float *vj = t->v + off(c, Nk, Hkv, b, j, hk);
                        for (int d = 0; d < D; d++)
                            oi[d] += pj * vj[d];
                    }
                }
                t->ref_lse[((int64_t)b * H + h) * Nq + i] = lse;
                if (lse == -INFINITY)
                    continue;
                /* backward of this row */
                const float *gi = t->d_o + off(c, Nq, H, b, i, h);
                double Di = 0;
                for (int d = 0; d < D; d++)
                    Di += (double)gi[d] * oi[d];
                double *dqi = t->ref_dq + off(c, Nq, H, b, i, h);
                for (int j = 0; j < Nk; j++) {
                    if (s[j] == -INFINITY)
                        continue;
                    const float *kj = t->k + off(c, Nk, Hkv, b, j, hk);
                    const float *vj = t->v + off(c, Nk, Hkv, b, j, hk);
                    double pj = exp(s[j] - lse), acc = 0;
                    for (int d = 0; d < D; d++)
                        acc += (double)gi[d] * vj[d];
                    dp[j] = acc;
                    double ds = pj * (dp[j] - Di);
                    double *dkj = t->ref_dk + off(c, Nk, Hkv, b, j, hk);
                    double *dvj = t->ref_dv + off(c, Nk, Hkv, b, j, hk);
                    for (int d = 0; d < D; d++) {
                        dqi[d] += scale * ds * kj[d];
                        dkj[d] += scale * ds * qi[d];
                        dvj[d] += pj * gi[d];
                    }
                }
            }
        }
    }
    free(s);
    free(dp);
}

/* ---- one case ---------------------------------------------------------------------------------------------------- */

#define CU(call)                                                                                                   \
    do {                                                                                                           \
        cudaError_t e_ = (call);                                                                                   \
        CHECK(e_ == cudaSuccess, "%s: %s", #call, cudaGetErrorString(e_));                                         \
        if (e_ != cudaSuccess)                                                                                     \
            goto done;                                                                                             \
    } while (0)

/* Relative Frobenius error of a device result (16-bit, in the case's layout) against the reference. */
static double rel_error(const bcase *c, const uint16_t *x, const double *ref, int64_t n, int *bad)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = from16(c->dtype, x[i]);
        if (!isfinite(v))
            (*bad)++;
        num += (v - ref[i]) * (v - ref[i]);
        den += ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void run_case(famask_ctx *ctx, const bcase *c)
{
    const int B = c->batch, H = c->n_head, Hkv = c->n_head_kv, Nq = c->seq_len_q, Nk = c->seq_len_k,
              D = c->head_dim;
    const int64_t nq_el = (int64_t)B * Nq * H * D, nk_el = (int64_t)B * Nk * Hkv * D;
    const double bound = c->dtype == FAMASK_DTYPE_BF16 ? 2e-2 : 5e-3;
    const float scale = c->scale != 0.f ? c->scale : 1.0f / sqrtf((float)D);
    famask_mask *mask = NULL;
    int32_t *bounds = NULL;
    host_tensors t;
    uint16_t *h16 = NULL, *out[3] = {NULL, NULL, NULL}, *first[3] = {NULL, NULL, NULL};
    void *dev[8] = {NULL};
    float *dlse = NULL;
    memset(&t, 0, sizeof t);

    bounds = malloc(sizeof(int32_t) * 4 * (size_t)c->batch_m * c->heads_m * Nk);
    for (int p = 0; p < c->batch_m * c->heads_m; p++)
        fill_mask(c->mask, Nq, Nk, bounds + (int64_t)4 * Nk * p);
    CHECK_OK(ctx, famask_mask_from_vectors(ctx, c->batch_m, c->heads_m, Nq, Nk, bounds, &mask));
    if (!mask)
        goto done;

    t.q = malloc(sizeof(float) * nq_el);
    t.o = malloc(sizeof(float) * nq_el);
    t.d_o = malloc(sizeof(float) * nq_el);
    t.k = malloc(sizeof(float) * nk_el);
    t.v = malloc(sizeof(float) * nk_el);
    t.ref_o = calloc(nq_el, sizeof(double));
    t.ref_dq = calloc(nq_el, sizeof(double));
    t.ref_dk = calloc(nk_el, sizeof(double));
    t.ref_dv = calloc(nk_el, sizeof(double));
    t.ref_lse = calloc((size_t)B * H * Nq, sizeof(double));
    t.lse = malloc(sizeof(float) * B * H * Nq);
    h16 = malloc(sizeof(uint16_t) * (nq_el > nk_el ? nq_el : nk_el));
    for (int i = 0; i < 3; i++) {
        out[i] = malloc(sizeof(uint16_t) * (i == 0 ? nq_el : nk_el));
        first[i] = malloc(sizeof(uint16_t) * (i == 0 ? nq_el : nk_el));
    }
    for (int64_t i = 0; i < nq_el; i++) {
        t.q[i] = from16(c->dtype, to16(c->dtype, (float)tl_rand_normal()));
        t.d_o[i] = from16(c->dtype, to16(c->dtype, (float)tl_rand_normal()));
    }
    for (int64_t i = 0; i < nk_el; i++) {
        t.k[i] = from16(c->dtype, to16(c->dtype, (float)tl_rand_normal()));
        t.v[i] = from16(c->dtype, to16(c->dtype, (float)tl_rand_normal()));
    }
    reference(c, mask, &t, scale);
    for (int64_t i = 0; i < nq_el; i++)
        t.o[i] = from16(c->dtype, to16(c->dtype, (float)t.ref_o[i]));
    for (int64_t i = 0; i < (int64_t)B * H * Nq; i++)
        t.lse[i] = (float)t.ref_lse[i];

    /* device: q k v o d_o dq dk dv */
    float *src[5] = {t.q, t.k, t.v, t.o, t.d_o};
    int64_t n_el[8] = {nq_el, nk_el, nk_el, nq_el, nq_el, nq_el, nk_el, nk_el};
    for (int i = 0; i < 8; i++) {
        CU(cudaMalloc(&dev[i], sizeof(uint16_t) * n_el[i]));
        if (i < 5) {
            for (int64_t e = 0; e < n_el[i]; e++)
                h16[e] = to16(c->dtype, src[i][e]);
            CU(cudaMemcpy(dev[i], h16, sizeof(uint16_t) * n_el[i], cudaMemcpyHostToDevice));
        }
    }
    CU(cudaMalloc((void **)&dlse, sizeof(float) * B * H * Nq));
    CU(cudaMemcpy(dlse, t.lse, sizeof(float) * B * H * Nq, cudaMemcpyHostToDevice));

    famask_attn_args a;
    memset(&a, 0, sizeof a);
    a.batch = B;
    a.n_head = H;
    a.n_head_kv = Hkv;
    a.seq_len_q = Nq;
    a.seq_len_k = Nk;
    a.head_dim = D;
    a.dtype = c->dtype;
    famask_tensor *ts[8] = {&a.q, &a.k, &a.v, &a.o, &a.d_o, &a.dq, &a.dk, &a.dv};
    for (int i = 0; i < 8; i++) {
        int is_q = i == 0 || i == 3 || i == 4 || i == 5;
        int nn = is_q ? Nq : Nk, hh = is_q ? H : Hkv;
        ts[i]->data = dev[i];
        if (c->bhnd) {
            ts[i]->stride_batch = (int64_t)hh * nn * D;
            ts[i]->stride_head = (int64_t)nn * D;
            ts[i]->stride_seq = D;
        } else {
            ts[i]->stride_batch = (int64_t)nn * hh * D;
            ts[i]->stride_seq = (int64_t)hh * D;
            ts[i]->stride_head = D;
        }
    }
    a.lse = dlse;
    a.softmax_scale = c->scale; /* 0: the default, 1 / sqrt(D) */
    a.deterministic = c->deterministic;
    a.device = FAMASK_DEVICE_CUDA;

    double err[3] = {0, 0, 0};
    int bad = 0, zero_bad = 0, nondet = 0;
    int runs = c->deterministic ? 5 : 1;
    for (int r = 0; r < runs; r++) {
        for (int i = 5; i < 8; i++)
            CU(cudaMemset(dev[i], 0xFF, sizeof(uint16_t) * n_el[i])); /* NaN in both dtypes */
        CHECK_OK(ctx, famask_attn_bwd(ctx, mask, &a));
        CU(cudaDeviceSynchronize());
        for (int i = 0; i < 3; i++)
            CU(cudaMemcpy(out[i], dev[5 + i], sizeof(uint16_t) * n_el[5 + i], cudaMemcpyDeviceToHost));
        if (r == 0) {
            for (int i = 0; i < 3; i++)
                memcpy(first[i], out[i], sizeof(uint16_t) * n_el[5 + i]);
        } else {
            for (int i = 0; i < 3; i++)
                nondet += memcmp(first[i], out[i], sizeof(uint16_t) * n_el[5 + i]) != 0;
        }
    }
    err[0] = rel_error(c, out[0], t.ref_dq, nq_el, &bad);
    err[1] = rel_error(c, out[1], t.ref_dk, nk_el, &bad);
    err[2] = rel_error(c, out[2], t.ref_dv, nk_el, &bad);

    /* exact zeros: rows with no visible key (dq), keys visible to no row of any head of the group (dk, dv) */
    int n_empty_rows = 0, n_empty_keys = 0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < Nq; i++) {
                if (t.ref_lse[((int64_t)b * H + h) * Nq + i] != -INFINITY)
                    continue;
                n_empty_rows++;
                const uint16_t *row = out[0] + off(c, Nq, H, b, i, h);
                for (int d = 0; d < D; d++)
                    zero_bad += from16(c->dtype, row[d]) != 0.0f;
            }
    for (int b = 0; b < B; b++)
        for (int hk = 0; hk < Hkv; hk++)
            for (int j = 0; j < Nk; j++) {
                int seen = 0;
                for (int h = hk * (H / Hkv); h < (hk + 1) * (H / Hkv) && !seen; h++) {
                    int mb = c->batch_m == 1 ? 0 : b;
                    int mh = c->heads_m == 1 ? 0 : (c->heads_m == H ? h : hk);
                    for (int i = 0; i < Nq && !seen; i++)
                        seen = famask_mask_visible(mask, mb, mh, i, j);
                }
                if (seen)
                    continue;
                n_empty_keys++;
                for (int x = 1; x < 3; x++) {
                    const uint16_t *row = out[x] + off(c, Nk, Hkv, b, j, hk);
                    for (int d = 0; d < D; d++)
                        zero_bad += from16(c->dtype, row[d]) != 0.0f;
                }
            }

    const int reordered = tl_keys_reordered(ctx, mask, Hkv, c->mask == M_EVICT && Nq >= 2800);
    int ok = bad == 0 && zero_bad == 0 && nondet == 0 && err[0] < bound && err[1] < bound && err[2] < bound;
    printf("%s B %d H %d Hkv %d Nq %d Nk %d D %d %s %s mask %s bm %d hm %d det %d scale %.4g%s: err dq %.2e dk %.2e "
           "dv %.2e (bound %.0e) nonfinite %d empty rows %d keys %d nonzero %d nondet %d\n",
           ok ? "ok  " : "FAIL", B, H, Hkv, Nq, Nk, D, c->dtype == FAMASK_DTYPE_BF16 ? "bf16" : "f16",
           c->bhnd ? "bhnd" : "bnhd", mask_names[c->mask], c->batch_m, c->heads_m, c->deterministic, (double)scale,
           reordered ? " keys reordered" : "", err[0], err[1], err[2], bound, bad, n_empty_rows, n_empty_keys, zero_bad,
           nondet);
    CHECK(bad == 0, "non-finite gradients");
    CHECK(zero_bad == 0, "fully masked rows or keys with non-zero gradients");
    CHECK(nondet == 0, "deterministic mode differs between runs");
    CHECK(err[0] < bound && err[1] < bound && err[2] < bound, "relative error over bound");

done:
    for (int i = 0; i < 8; i++)
        cudaFree(dev[i]);
    cudaFree(dlse);
    for (int i = 0; i < 3; i++) {
        free(out[i]);
        free(first[i]);
    }
    free(h16);
    free(t.q);
    free(t.k);
    free(t.v);
    free(t.o);
    free(t.d_o);
    free(t.ref_o);
    free(t.ref_dq);
    free(t.ref_dk);
    free(t.ref_dv);
    free(t.ref_lse);
    free(t.lse);
    free(bounds);
    famask_mask_free(mask);
}

/* Arguments famask_attn_bwd refuses on the cuda device, each with a message naming what is wrong, before any
 * work: the outputs (poisoned) must come back untouched. */

/* famask_attn_bwd must refuse b with status want and a message containing needle (what: the case, for the
 * failure message). */
static void expect_refusal(famask_ctx *ctx, famask_mask *m, const famask_attn_args *b, famask_status want,
                           const char *needle, const char *what)
{
    famask_status st = famask_attn_bwd(ctx, m, b);
    CHECK(st == want && strstr(famask_ctx_errmsg(ctx), needle), "%s must be refused, got %s '%s'", what,
          famask_status_str(st), famask_ctx_errmsg(ctx));
}

static void test_refusals(famask_ctx *ctx)
{
    enum { N = 40, H = 2, D = 64 };
    const int64_t el = (int64_t)N * H * D;
    famask_mask *m = NULL;
    void *dev[8] = {NULL};
    float *dlse = NULL;
    uint16_t *host = malloc(sizeof(uint16_t) * el);
    famask_attn_args a;
    famask_tensor *ts[8] = {&a.q, &a.k, &a.v, &a.o, &a.d_o, &a.dq, &a.dk, &a.dv};

    memset(&a, 0, sizeof a);
    CHECK_OK(ctx, famask_mask_causal(ctx, N, N, &m));
    for (int i = 0; i < 8; i++) {
        CU(cudaMalloc(&dev[i], sizeof(uint16_t) * el + 64));
        CU(cudaMemset(dev[i], i < 5 ? 0 : 0xFF, sizeof(uint16_t) * el + 64));
    }
    CU(cudaMalloc((void **)&dlse, sizeof(float) * H * N));
    CU(cudaMemset(dlse, 0, sizeof(float) * H * N));
    a.batch = 1;
    a.n_head = a.n_head_kv = H;
    a.seq_len_q = a.seq_len_k = N;
    a.head_dim = D;
    a.dtype = FAMASK_DTYPE_BF16;
    a.device = FAMASK_DEVICE_CUDA;
    a.lse = dlse;
    for (int i = 0; i < 8; i++) {
        ts[i]->data = dev[i];
        ts[i]->stride_batch = (int64_t)N * H * D;
        ts[i]->stride_seq = (int64_t)H * D;
        ts[i]->stride_head = D;
    }
    /* the valid call first, so that the refusals below are about their one change */
    CHECK_OK(ctx, famask_attn_bwd(ctx, m, &a));
    CU(cudaDeviceSynchronize());
    for (int i = 5; i < 8; i++)
        CU(cudaMemset(dev[i], 0xFF, sizeof(uint16_t) * el + 64));

    {
        famask_attn_args b = a;
        b.head_dim = 80;
        b.q.stride_head = b.k.stride_head = 80; /* any: the head dim is refused first */
        expect_refusal(ctx, m, &b, FAMASK_STATUS_UNSUPPORTED, "80", "head_dim 80");
    }
    {
        famask_attn_args b = a;
        b.lse = NULL;
        expect_refusal(ctx, m, &b, FAMASK_STATUS_INVALID_ARGUMENT, "'lse'", "lse NULL");
    }
    {
        famask_attn_args b = a;
        b.dk.data = (char *)dev[6] + 2; /* one element off: not 16-byte aligned */
        expect_refusal(ctx, m, &b, FAMASK_STATUS_UNSUPPORTED, "'dk.data'", "unaligned dk");
    }
    {
        famask_attn_args b = a;
        b.dq.data = b.q.data; /* in place */
        expect_refusal(ctx, m, &b, FAMASK_STATUS_INVALID_ARGUMENT, "'dq'", "dq at q's address");
    }
    {
        famask_attn_args b = a;
        b.dtype = FAMASK_DTYPE_F32;
        expect_refusal(ctx, m, &b, FAMASK_STATUS_UNSUPPORTED, "f32", "f32 on cuda");
    }
    {
        famask_attn_args b = a;
        b.softmax_scale = INFINITY;
        expect_refusal(ctx, m, &b, FAMASK_STATUS_INVALID_ARGUMENT, "softmax_scale", "an infinite scale");
    }
    {
        famask_attn_args b = a;
        b.seq_len_q = N - 1; /* the mask is for N */
        expect_refusal(ctx, m, &b, FAMASK_STATUS_INVALID_ARGUMENT, "mask", "a mask of another length");
    }
    /* nothing was written by the refused calls (NaN poison: 0xFFFF in every element) */
    CU(cudaDeviceSynchronize());
    {
        int touched = 0;
        for (int i = 5; i < 8; i++) {
            CU(cudaMemcpy(host, dev[i], sizeof(uint16_t) * el, cudaMemcpyDeviceToHost));
            for (int64_t e = 0; e < el; e++)
                touched += host[e] != 0xFFFF;
        }
        CHECK(touched == 0, "refused calls wrote %d output elements", touched);
        printf("%s refusals: head_dim 80, lse NULL, unaligned dk, dq in place, f32, infinite scale, mask length; "
               "outputs untouched\n",
               touched ? "FAIL" : "ok  ");
    }
done:
    for (int i = 0; i < 8; i++)
        cudaFree(dev[i]);
    cudaFree(dlse);
    free(host);
    famask_mask_free(m);
}

int main(void)
{
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
        printf("cuda-bwd: no cuda device, skipped\n");
        return 77;
    }
    tl_seed("cuda-bwd");
    const char *small = getenv("FAMASK_BWD_SMALL");
    famask_ctx *ctx = NULL;
    if (famask_ctx_create(&ctx) != FAMASK_STATUS_OK)
        return 1;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (!(small && small[0] == '1') || cases[i].small)
            run_case(ctx, &cases[i]);

    test_refusals(ctx);
    famask_ctx_free(ctx);
    return tl_finish();
}
