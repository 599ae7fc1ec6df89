/*
 * cuda-fwd.c: the CUDA attention forward (famask_attn_fwd on FAMASK_DEVICE_CUDA, which validates and calls
 * fm_cuda_attn, then fm_cuda_fwd) against a float64 reference over the dense mask.
 *
 * Each case draws fresh normal q, k, v (rounded to the case's dtype, so the reference sees the same inputs), builds
 * a mask from vectors (random intervals, random intervals plus a band of fully masked rows, causal, sliding
 * window, documents, causal documents, full, causal with keys evicted soon after they appear, global keys plus a
 * band; one mask per (batch_m, heads_m)), poisons o and lse, runs the kernel
 * (default, positive and negative softmax scales) and checks: ||o - ref|| / ||ref|| (Frobenius) <= 1e-2 for bf16 and
 * 3e-3 for fp16; no NaN/Inf in o; lse within 1e-3 of the reference (relative, floor 1) and exactly -inf on fully masked
 * rows, whose o must be exactly 0. Shapes: q, o [B, Nq, H, D] or [B, H, Nq, D] (and a padded-row variant) by strides;
 * k, v likewise with H_kv. The eviction cases must run with their keys sorted (kernels/key-order.cu);
 * FAMASK_KEY_ORDER=reverse runs every case that can through a reversed key order.
 *
 *   cuda-fwd            all cases
 *   cuda-fwd --small    a few small cases (for compute-sanitizer)
 *   cuda-fwd --bench    timings at 8K (B 4, H 16, D 128 and 64, bf16, seven masks) and the mask upload at
 *                       131,072 columns
 *   cuda-fwd --prof     the full and causal timings at D 128 only (to run under a profiler)
 *
 * Exits 77 when there is no CUDA device.
 */
#include "internal.h"
#include "kernels.h"
#include "testlib.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- 16-bit floats on the host ---------------------------------------------------------------------------- */

static uint16_t f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

static float bf16_to_f32(uint16_t h)
{
    uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static uint16_t f32_to_f16(float f)
{
    uint32_t x, sign, mant, h, rem, halfway;
    int exp;
    memcpy(&x, &f, 4);
    sign = (x >> 16) & 0x8000u;
    exp = (int)((x >> 23) & 0xffu) - 127 + 15;
    mant = x & 0x7fffffu;
    if (((x >> 23) & 0xffu) == 0xffu)
        return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0u));
    if (exp >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (exp <= 0) {
        int shift;
        if (exp < -10)
            return (uint16_t)sign;
        mant |= 0x800000u;
        shift = 14 - exp;
        h = mant >> shift;
        rem = mant & ((1u << shift) - 1u);
        halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (h & 1u)))
            h++;
        return (uint16_t)(sign | h);
    }
    h = ((uint32_t)exp << 10) | (mant >> 13);
    rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++;
    return (uint16_t)(sign | h);
}

static float f16_to_f32(uint16_t h)
{
    int exp = (h >> 10) & 0x1f;
    int mant = h & 0x3ff;
    float v;
    if (exp == 0)
        v = ldexpf((float)mant, -24);
    else if (exp == 31)
        v = mant ? NAN : INFINITY;
    else
        v = ldexpf((float)(mant | 0x400), exp - 25);
    return (h & 0x8000) ? -v : v;
}

static uint16_t to16(famask_dtype dt, float f)
{
    return dt == FAMASK_DTYPE_BF16 ? f32_to_bf16(f) : f32_to_f16(f);
}

static float from16(famask_dtype dt, uint16_t h)
{
    return dt == FAMASK_DTYPE_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

/* ---- masks ------------------------------------------------------------------------------------------------ */

enum mask_kind {
    MK_FULL,
    MK_RANDOM,
    MK_RANDOM_BAND,
    MK_CAUSAL,
    MK_SLIDING,
    MK_DOCUMENT,
    MK_CAUSAL_DOCUMENT,
    MK_EVICT,
    MK_GLOBAL_BAND
};
static const char *mask_kind_name[] = {"full",     "random",          "random+band", "causal",     "sliding",
                                       "document", "causal_document", "evict",       "global+band"};

static int imin(int a, int b)
{
    return a < b ? a : b;
}

/* Fills the [nk, 4] vectors of one (b, h) with a mask of the given kind (fresh random parameters). */
static void fill_vectors(int32_t *v, enum mask_kind kind, int nq, int nk)
{
    int band0 = 0, band1 = 0, left = 0;
    int doc_len[64], n_docs = 0;

    if (kind == MK_RANDOM_BAND) {
        band0 = tl_rand_int(0, nq - 1);
        band1 = tl_rand_int(band0 + 1, imin(nq, band0 + 1 + nq / 3));
    }
    if (kind == MK_SLIDING)
        left = tl_rand_int(0, nk / 2 + 1);
    if (kind == MK_GLOBAL_BAND) { /* global keys [0, left), then a band of band1 rows per key */
        left = tl_rand_int(1, 200);
        band1 = tl_rand_int(1, 3);
    }
    if (kind == MK_DOCUMENT || kind == MK_CAUSAL_DOCUMENT) {
        /* documents over the keys; query rows are cut at the same positions (clipped to nq) */
        int pos = 0;
        while (pos < nk && n_docs < 63) {
            int len = tl_rand_int(1, nk / 3 + 1);
            if (len > nk - pos)
                len = nk - pos;
            doc_len[n_docs++] = len;
            pos += len;
        }
        if (pos < nk)
            doc_len[n_docs - 1] += nk - pos;
    }
    for (int j = 0, d = 0, ds = 0; j < nk; j++) {
        int32_t *c = v + 4 * (int64_t)j;
        c[FAMASK_LTS] = nq;
        c[FAMASK_LTE] = nq;
        c[FAMASK_UTS] = 0;
        c[FAMASK_UTE] = 0;
        switch (kind) {
        case MK_FULL:
            break;
        case MK_RANDOM:
        case MK_RANDOM_BAND:
            if (tl_rand_int(0, 3) != 0) {
                c[FAMASK_UTS] = tl_rand_int(0, nq);
                c[FAMASK_UTE] = tl_rand_int(c[FAMASK_UTS], nq);
            }
            if (kind == MK_RANDOM_BAND) {
                c[FAMASK_LTS] = band0;
                c[FAMASK_LTE] = band1;
            } else if (tl_rand_int(0, 3) != 0) {
                c[FAMASK_LTS] = tl_rand_int(0, nq);
                c[FAMASK_LTE] = tl_rand_int(c[FAMASK_LTS], nq);
            }
            break;
        case MK_CAUSAL:
            c[FAMASK_UTE] = imin(j, nq);
            break;
        case MK_SLIDING:
            c[FAMASK_UTE] = imin(j, nq);
            c[FAMASK_LTS] = imin(j + left + 1, nq);
            break;
        case MK_DOCUMENT:
        case MK_CAUSAL_DOCUMENT:
            while (j >= ds + doc_len[d])
                ds += doc_len[d++];
            c[FAMASK_UTE] = imin(kind == MK_DOCUMENT ? ds : j, nq);
            c[FAMASK_LTS] = imin(ds + doc_len[d], nq);
            break;
        case MK_EVICT: /* causal; half the keys evicted soon, at a row in (j, j + nq / 16]: the key order's case */
            c[FAMASK_UTE] = imin(j, nq);
            if (j < nq && tl_rand_int(0, 1))
                c[FAMASK_LTS] = imin(j + 1 + tl_rand_int(0, nq / 16), nq);
            break;
        case MK_GLOBAL_BAND: /* key j past the global ones: rows [j nq / nk, + band1), masked runs between */
            if (j >= left) {
                const int r = (int)((int64_t)j * nq / nk);
                c[FAMASK_UTE] = r;
                c[FAMASK_LTS] = imin(r + band1, nq);
            }
            break;
        }
    }
}

static famask_mask *make_mask(famask_ctx *ctx, enum mask_kind kind, int batch_m, int heads_m, int nq, int nk)
{
    famask_mask *m = NULL;
    int32_t *v = malloc((size_t)batch_m * heads_m * nk * 4 * sizeof *v);
    if (!v)
        return NULL;
    for (int bh = 0; bh < batch_m * heads_m; bh++)
        fill_vectors(v + (int64_t)bh * nk * 4, kind, nq, nk);
    if (famask_mask_from_vectors(ctx, batch_m, heads_m, nq, nk, v, &m) != FAMASK_STATUS_OK)
        fprintf(stderr, "mask: %s\n", famask_ctx_errmsg(ctx));
    free(v);
    return m;
}

/* ---- tensors ---------------------------------------------------------------------------------------------- */

enum layout { L_BNHD, L_BHND, L_PADDED };
static const char *layout_name[] = {"BNHD", "BHND", "BHND+pad"};

/* Strides (elements) of a [b, n, h, d] tensor in the layout, and its element count. */
static int64_t set_strides(famask_tensor *t, enum layout l, int b, int n, int h, int d)
{
    (void)b;
    if (l == L_BNHD) {
        t->stride_head = d;
        t->stride_seq = (int64_t)h * d;
        t->stride_batch = (int64_t)n * h * d;
    } else {
        int64_t row = l == L_PADDED ? d + 24 : d;
        t->stride_seq = row;
        t->stride_head = (int64_t)n * row;
        t->stride_batch = (int64_t)h * n * row;
    }
    return t->stride_batch * b;
}

static int64_t at(const famask_tensor *t, int b, int n, int h)
{
    return b * t->stride_batch + n * t->stride_seq + h * t->stride_head;
}

struct fcase {
    enum mask_kind kind;
    int batch, n_head, n_head_kv, seq_len_q, seq_len_k, head_dim;
    famask_dtype dtype;
    enum layout layout;
    int batch_m, heads_m;
    float scale;
};

/* Variations applied by run_case to the next case (set by the caller, cleared after). */
enum { V_NO_LSE = 1, V_STREAM = 2 };
static int case_variant;

static int cuda_ok(cudaError_t e, const char *what)
{
    if (e != cudaSuccess) {
        fprintf(stderr, "cuda: %s: %s\n", what, cudaGetErrorString(e));
        return 0;
    }
    return 1;
}

/* Runs one case; returns 1 if it passed. */
static int run_case(famask_ctx *ctx, const struct fcase *c)
{
    const int B = c->batch, H = c->n_head, HK = c->n_head_kv, NQ = c->seq_len_q, NK = c->seq_len_k, D = c->head_dim;
    famask_attn_args a;
    famask_mask *mask = NULL;
    uint16_t *hq = NULL, *hk = NULL, *hv = NULL, *ho = NULL;
    float *hlse = NULL;
    double *ref = NULL, *ref_lse = NULL, *sc = NULL;
    void *dq = NULL, *dk = NULL, *dv = NULL, *dout = NULL;
    float *dlse = NULL;
    cudaStream_t stream = NULL;
    int ok = 0;
    int64_t nq_el, nk_el, no_el;
    double err2 = 0, ref2 = 0, lse_worst = 0;
    int64_t bad_nonfinite = 0, bad_empty_rows = 0, bad_lse = 0, empty_rows = 0;
    const double scale = c->scale != 0 ? c->scale : 1.0 / sqrt((double)D);
    const double tol = c->dtype == FAMASK_DTYPE_BF16 ? 1e-2 : 3e-3;

    memset(&a, 0, sizeof a);
    mask = make_mask(ctx, c->kind, c->batch_m, c->heads_m, NQ, NK);
    if (!mask)
        goto done;
    a.batch = B;
    a.n_head = H;
    a.n_head_kv = HK;
    a.seq_len_q = NQ;
    a.seq_len_k = NK;
    a.head_dim = D;
    a.dtype = c->dtype;
    a.softmax_scale = c->scale;
    a.device = FAMASK_DEVICE_CUDA;
    nq_el = set_strides(&a.q, c->layout, B, NQ, H, D);
    set_strides(&a.o, c->layout, B, NQ, H, D);
    nk_el = set_strides(&a.k, c->layout, B, NK, HK, D);
    set_strides(&a.v, c->layout, B, NK, HK, D);
    no_el = nq_el;

    hq = calloc((size_t)nq_el, 2);
    hk = calloc((size_t)nk_el, 2);
    hv = calloc((size_t)nk_el, 2);
    ho = malloc((size_t)no_el * 2);
    hlse = malloc((size_t)B * H * NQ * sizeof *hlse);
    ref = calloc((size_t)B * H * NQ * D, sizeof *ref);
    ref_lse = calloc((size_t)B * H * NQ, sizeof *ref_lse);
    sc = malloc((size_t)NK * sizeof *sc);
    if (!hq || !hk || !hv || !ho || !hlse || !ref || !ref_lse || !sc)
        goto done;
    for (int64_t i = 0; i < nq_el; i++)
        hq[i] = to16(c->dtype, (float)tl_rand_normal());
    for (int64_t i = 0; i < nk_el; i++) {
        hk[i] = to16(c->dtype, (float)tl_rand_normal());
        hv[i] = to16(c->dtype, (float)tl_rand_normal());
    }

    if (!cuda_ok(cudaMalloc(&dq, (size_t)nq_el * 2), "malloc") ||
        !cuda_ok(cudaMalloc(&dk, (size_t)nk_el * 2), "malloc") ||
        !cuda_ok(cudaMalloc(&dv, (size_t)nk_el * 2), "malloc") ||
        !cuda_ok(cudaMalloc(&dout, (size_t)no_el * 2), "malloc") ||
        !cuda_ok(cudaMalloc((void **)&dlse, (size_t)B * H * NQ * sizeof(float)), "malloc"))
        goto done;
    cudaMemcpy(dq, hq, (size_t)nq_el * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(dk, hk, (size_t)nk_el * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(dv, hv, (size_t)nk_el * 2, cudaMemcpyHostToDevice);
    /* poison: 0xff bytes are NaN in bf16, fp16 and fp32 */
    cudaMemset(dout, 0xff, (size_t)no_el * 2);
    cudaMemset(dlse, 0xff, (size_t)B * H * NQ * sizeof(float));
    a.q.data = dq;
    a.k.data = dk;
    a.v.data = dv;
    a.o.data = dout;
    a.lse = case_variant & V_NO_LSE ? NULL : dlse;
    if (case_variant & V_STREAM) {
        if (!cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream"))
            goto done;
        a.stream = stream;
    }
    {
        famask_status st = famask_attn_fwd(ctx, mask, &a);
        if (st != FAMASK_STATUS_OK) {
            fprintf(stderr, "famask_attn_fwd: %s: %s\n", famask_status_str(st), famask_ctx_errmsg(ctx));
            goto done;
        }
    }
    /* with a non-blocking stream, the work must have gone to that stream: wait on it alone before copying */
    if (stream && !cuda_ok(cudaStreamSynchronize(stream), "stream sync"))
        goto done;
    if (!cuda_ok(cudaDeviceSynchronize(), "kernel") ||
        !cuda_ok(cudaMemcpy(ho, dout, (size_t)no_el * 2, cudaMemcpyDeviceToHost), "copy o") ||
        !cuda_ok(cudaMemcpy(hlse, dlse, (size_t)B * H * NQ * sizeof(float), cudaMemcpyDeviceToHost), "copy lse"))
        goto done;

    /* float64 reference over the dense mask */
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            int hkv = h / (H / HK);
            int mb = c->batch_m == 1 ? 0 : b;
            int mh = c->heads_m == 1 ? 0 : (c->heads_m == H ? h : hkv);
            for (int i = 0; i < NQ; i++) {
                double mx = -INFINITY, sum = 0;
                double *r = ref + (((int64_t)b * H + h) * NQ + i) * D;
                const uint16_t *qi = hq + at(&a.q, b, i, h);
                for (int j = 0; j < NK; j++) {
                    sc[j] = -INFINITY;
                    if (!famask_mask_visible(mask, mb, mh, i, j))
                        continue;
                    const uint16_t *kj = hk + at(&a.k, b, j, hkv);
                    double dot = 0;
                    for (int d = 0; d < D; d++)
                        dot += (double)from16(c->dtype, qi[d]) * from16(c->dtype, kj[d]);
                    sc[j] = dot * scale;
                    mx = sc[j] > mx ? sc[j] : mx;
                }
                if (mx == -INFINITY) {
                    ref_lse[((int64_t)b * H + h) * NQ + i] = -INFINITY;
                    continue;
                }
                for (int j = 0; j < NK; j++) {
                    if (sc[j] == -INFINITY)
                        continue;
                    double p = exp(sc[j] - mx);
                    const uint16_t *vj = hv + at(&a.v, b, j, hkv);
                    sum += p;
                    for (int d = 0; d < D; d++)
                        r[d] += p * from16(c->dtype, vj[d]);
                }
                for (int d = 0; d < D; d++)
                    r[d] /= sum;
                ref_lse[((int64_t)b * H + h) * NQ + i] = mx + log(sum);
            }
        }
    }

    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            for (int i = 0; i < NQ; i++) {
                const double *r = ref + (((int64_t)b * H + h) * NQ + i) * D;
                const uint16_t *oi = ho + at(&a.o, b, i, h);
                double rl = ref_lse[((int64_t)b * H + h) * NQ + i];
                float gl = hlse[((int64_t)b * H + h) * NQ + i];
                int empty = rl == -INFINITY;
                empty_rows += empty;
                for (int d = 0; d < D; d++) {
                    float g = from16(c->dtype, oi[d]);
                    if (!isfinite(g)) {
                        bad_nonfinite++;
                        continue;
                    }
                    if (empty && g != 0.f)
                        bad_empty_rows++;
                    err2 += (g - r[d]) * (g - r[d]);
                    ref2 += r[d] * r[d];
                }
                if (case_variant & V_NO_LSE) {
                    if (!isnan(gl)) /* lse NULL: the poison must be untouched */
                        bad_lse++;
                } else if (empty) {
                    if (!(isinf(gl) && gl < 0))
                        bad_lse++;
                } else {
                    double e = fabs(gl - rl) / (fabs(rl) > 1 ? fabs(rl) : 1);
                    if (!isfinite(gl) || e > 1e-3)
                        bad_lse++;
                    if (isfinite(gl) && e > lse_worst)
                        lse_worst = e;
                }
            }
        }
    }
    {
        double rel = ref2 > 0 ? sqrt(err2 / ref2) : sqrt(err2);
        const int keys = tl_keys_reordered(ctx, mask, HK, c->kind == MK_EVICT && NQ >= 2800);
        ok = bad_nonfinite == 0 && bad_empty_rows == 0 && bad_lse == 0 && rel <= tol;
        printf("%s %-15s B %d H %d Hkv %d Nq %5d Nk %5d D %3d %s %-8s mask [%d,%d] scale %.3g%s%s%s: rel %.2e (tol "
               "%.0e) lse %.1e, empty rows %lld, nonfinite %lld, bad empty %lld, bad lse %lld\n",
               ok ? "ok  " : "FAIL", mask_kind_name[c->kind], B, H, HK, NQ, NK, D,
               c->dtype == FAMASK_DTYPE_BF16 ? "bf16" : "fp16", layout_name[c->layout], c->batch_m, c->heads_m,
               (double)c->scale, case_variant & V_NO_LSE ? " lse NULL" : "",
               case_variant & V_STREAM ? " own stream" : "", keys ? " keys reordered" : "", rel, tol, lse_worst,
               (long long)empty_rows, (long long)bad_nonfinite, (long long)bad_empty_rows, (long long)bad_lse);
    }
done:
    if (stream)
        cudaStreamDestroy(stream);
    cudaFree(dq);
    cudaFree(dk);
    cudaFree(dv);
    cudaFree(dout);
    cudaFree(dlse);
    free(hq);
    free(hk);
    free(hv);
    free(ho);
    free(hlse);
    free(ref);
    free(ref_lse);
    free(sc);
    famask_mask_free(mask);
    return ok;
}

/* ---- the device copy of the mask ------------------------------------------------------------------------- */

/* fm_cuda_mask_device against the host: the vectors bit for bit and the summaries against fm_block_summarise, for
 * more block sizes than the cache holds (so slots are evicted and refilled), before and after a refresh. */
static void test_mask_device(famask_ctx *ctx)
{
    const int sizes[] = {64, 128, 16, 100, 33, 7, 64, 1};
    for (int rep = 0; rep < 4; rep++) {
        int nq = tl_rand_int(1, 3000), nk = tl_rand_int(1, 3000), bm = tl_rand_int(1, 2), hm = tl_rand_int(1, 3);
        const enum mask_kind kinds[] = {MK_CAUSAL_DOCUMENT, MK_RANDOM, MK_SLIDING, MK_RANDOM_BAND};
        famask_mask *m = make_mask(ctx, kinds[rep], bm, hm, nq, nk);
        if (!m) {
            CHECK(0, "mask");
            continue;
        }
        for (int pass = 0; pass < 2; pass++) {
            if (pass == 1)
                CHECK_OK(ctx, famask_mask_upload(ctx, m, NULL));
            for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
                const int32_t *dbounds = NULL;
                const fm_block_summary *dsums = NULL;
                int bk = sizes[si], nb = (nk + bk - 1) / bk;
                size_t n_sum = (size_t)bm * hm * nb;
                fm_block_summary *got = malloc(n_sum * sizeof *got);
                int32_t *gotb = malloc((size_t)bm * hm * nk * 16);
                int bad = 0;
                CHECK_OK(ctx, fm_cuda_mask_device(ctx, m, bk, NULL, &dbounds, &dsums));
                if (!got || !gotb || !dbounds || !dsums ||
                    !cuda_ok(cudaMemcpy(got, dsums, n_sum * sizeof *got, cudaMemcpyDeviceToHost), "sums") ||
                    !cuda_ok(cudaMemcpy(gotb, dbounds, (size_t)bm * hm * nk * 16, cudaMemcpyDeviceToHost), "bounds")) {
                    CHECK(0, "device copy of the mask");
                    free(got);
                    free(gotb);
                    continue;
                }
                bad += memcmp(gotb, famask_mask_bounds(m), (size_t)bm * hm * nk * 16) != 0;
                for (int bh = 0; bh < bm * hm; bh++) {
                    for (int kb = 0; kb < nb; kb++) {
                        fm_block_summary want;
                        int c1 = (kb + 1) * bk < nk ? (kb + 1) * bk : nk;
                        fm_block_summarise(famask_mask_bounds(m) + (int64_t)bh * nk * 4, kb * bk, c1, &want);
                        bad += memcmp(&want, &got[(size_t)bh * nb + kb], sizeof want) != 0;
                    }
                }
                CHECK(bad == 0, "mask device copy: batch_m %d heads_m %d Nq %d Nk %d block %d pass %d: %d mismatches",
                      bm, hm, nq, nk, bk, pass, bad);
                free(got);
                free(gotb);
            }
            /* the live ranges per query tile (three block pairs: the third evicts the first of two slots) */
            const int pairs[3][2] = {{128, 128}, {64, 128}, {128, 64}};
            for (int pi = 0; pi < 3; pi++) {
                const int bq = pairs[pi][0], bk = pairs[pi][1], nb = (nk + bk - 1) / bk, nt = (nq + bq - 1) / bq;
                const int32_t *dr = NULL;
                int32_t *got = malloc((size_t)bm * hm * nt * 2 * sizeof *got);
                int bad = 0;
                CHECK_OK(ctx, fm_cuda_mask_ranges(ctx, m, bq, bk, NULL, &dr));
                if (!got || !dr ||
                    !cuda_ok(cudaMemcpy(got, dr, (size_t)bm * hm * nt * 2 * sizeof *got, cudaMemcpyDeviceToHost),
                             "ranges")) {
                    CHECK(0, "live ranges");
                    free(got);
                    continue;
                }
                for (int bh = 0; bh < bm * hm; bh++) {
                    for (int qt = 0; qt < nt; qt++) {
                        int lo = 0, hi = 0;
                        for (int kb = 0; kb < nb; kb++) {
                            fm_block_summary sm;
                            fm_block_summarise(famask_mask_bounds(m) + (int64_t)bh * nk * 4, kb * bk,
                                               imin((kb + 1) * bk, nk), &sm);
                            if (fm_tile_classify(&sm, qt * bq, imin((qt + 1) * bq, nq)) != FM_TILE_SKIPPED) {
                                lo = hi == 0 ? kb : lo;
                                hi = kb + 1;
                            }
                        }
                        const int32_t *g = got + 2 * ((int64_t)bh * nt + qt);
                        bad += g[0] != lo || g[1] != hi;
                    }
                }
                CHECK(bad == 0,
                      "live ranges: %s batch_m %d heads_m %d Nq %d Nk %d blocks %d x %d pass %d: %d mismatches",
                      mask_kind_name[kinds[rep]], bm, hm, nq, nk, bq, bk, pass, bad);
                free(got);
            }
        }
        famask_mask_free(m);
    }
}

/* Device copy of mask m against its host vectors, bit for bit (after the work on stream s). */
static int device_copy_ok(famask_ctx *ctx, famask_mask *m, cudaStream_t s)
{
    const int32_t *db = NULL;
    const size_t bytes = (size_t)famask_mask_batch(m) * famask_mask_heads(m) * famask_mask_seq_len_k(m) * 16;
    int32_t *got = malloc(bytes);
    int ok = got && fm_cuda_mask_device(ctx, m, 0, s, &db, NULL) == FAMASK_STATUS_OK &&
             cuda_ok(cudaStreamSynchronize(s), "sync") &&
             cuda_ok(cudaMemcpy(got, db, bytes, cudaMemcpyDeviceToHost), "copy") &&
             memcmp(got, famask_mask_bounds(m), bytes) == 0;
    free(got);
    return ok;
}

static int is_page_locked(const void *p)
{
    struct cudaPointerAttributes pa;
    int locked = cudaPointerGetAttributes(&pa, p) == cudaSuccess && pa.type == cudaMemoryTypeHost;
    (void)cudaGetLastError();
    return locked;
}

/* The upload copies large masks from their own host vectors, page-locked in place on first upload
 * (kernels/mask-device.cu): a 20,000-column mask is page-locked after an upload on a caller's non-blocking stream
 * and its device copy is right, as is a refresh; a clone (page-locked too, or left pageable where its pages meet
 * the original's) is right and stays right after the original is freed; famask_mask_free unpins (a buffer that
 * lands at the freed address can be registered again; run only when malloc gives that address back); a small
 * mask (not pinned: under the threshold) uploads right on the same stream. */
static void test_mask_pinned(famask_ctx *ctx)
{
    const int nk = 20000;
    const size_t bytes = (size_t)nk * 16;
    famask_mask *m = make_mask(ctx, MK_RANDOM, 1, 1, 3000, nk), *c = NULL,
                *small = make_mask(ctx, MK_CAUSAL, 1, 1, 100, 100);
    cudaStream_t s = NULL;
    uintptr_t addr;
    void *buf;
    int can_register;

    if (!m || !small || !cuda_ok(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "stream")) {
        CHECK(0, "pinned mask test setup");
        goto done;
    }
    /* Some runtimes refuse cudaHostRegister (the upload then keeps pageable copies, which is right too): probe. */
    buf = malloc(bytes);
    can_register = buf && cudaHostRegister(buf, bytes, cudaHostRegisterDefault) == cudaSuccess;
    if (can_register)
        cudaHostUnregister(buf);
    (void)cudaGetLastError();
    free(buf);
    printf("pinned-mask test: cudaHostRegister %s here\n",
           can_register ? "works" : "is refused (page-locked checks skipped)");
    CHECK_OK(ctx, famask_mask_upload(ctx, m, s));
    CHECK(device_copy_ok(ctx, m, s), "device copy of a 20,000-column mask uploaded on a stream");
    CHECK(!can_register || is_page_locked(famask_mask_bounds(m)),
          "a 20,000-column mask's vectors are page-locked after its upload");
    CHECK_OK(ctx, famask_mask_upload(ctx, m, s));
    CHECK(device_copy_ok(ctx, m, s), "device copy after a refresh");
    CHECK_OK(ctx, famask_mask_clone(ctx, m, &c));
    if (c) {
        CHECK_OK(ctx, famask_mask_upload(ctx, c, s));
        CHECK(device_copy_ok(ctx, c, s), "device copy of the clone");
        printf("pinned-mask test: clone %s\n", is_page_locked(famask_mask_bounds(c)) ? "page-locked" : "pageable");
    }
    addr = (uintptr_t)famask_mask_bounds(m);
    famask_mask_free(m);
    m = NULL;
    if (c)
        CHECK(device_copy_ok(ctx, c, s), "device copy of the clone after the original is freed");
    buf = malloc(bytes);
    if (buf && (uintptr_t)buf == addr && can_register) {
        cudaError_t e = cudaHostRegister(buf, bytes, cudaHostRegisterDefault);
        CHECK(e == cudaSuccess, "memory of a freed mask is still registered: %s", cudaGetErrorString(e));
        if (e == cudaSuccess)
            cudaHostUnregister(buf);
        (void)cudaGetLastError();
    }
    printf("pinned-mask test: unpin check %s\n",
           buf && (uintptr_t)buf == addr && can_register ? "ran" : "skipped (new address or no registration)");
    free(buf);
    CHECK_OK(ctx, famask_mask_upload(ctx, small, s));
    CHECK(device_copy_ok(ctx, small, s), "device copy of a small (pageable) mask");
done:
    famask_mask_free(m);
    famask_mask_free(c);
    famask_mask_free(small);
    if (s)
        cudaStreamDestroy(s);
}

/* Arguments the kernels do not support fail with a message, before any launch. */
/* A kernel that needs more shared memory than the device gives is refused with a reason (no device has 1 GiB). */
static void test_smem_check(famask_ctx *ctx)
{
    CHECK(fm_cuda_check_smem(ctx, 48 * 1024, "forward", 128) == FAMASK_STATUS_OK, "48 KiB refused: %s",
          famask_ctx_errmsg(ctx));
    CHECK(fm_cuda_check_smem(ctx, 1 << 30, "backward", 96) == FAMASK_STATUS_UNSUPPORTED, "1 GiB accepted");
    CHECK(strstr(famask_ctx_errmsg(ctx), "backward for head_dim 96 needs 1073741824 bytes") != NULL,
          "message: %s", famask_ctx_errmsg(ctx));
}

static void test_unsupported(famask_ctx *ctx)
{
    famask_attn_args a;
    famask_mask *m = make_mask(ctx, MK_CAUSAL, 1, 1, 64, 64);
    void *buf = NULL;
    memset(&a, 0, sizeof a);
    if (!m || !cuda_ok(cudaMalloc(&buf, 64 * 256 * 2), "malloc")) {
        CHECK(0, "setup");
        famask_mask_free(m);
        return;
    }
    a.batch = 1, a.n_head = 1, a.n_head_kv = 1, a.seq_len_q = 64, a.seq_len_k = 64, a.head_dim = 80;
    a.dtype = FAMASK_DTYPE_BF16;
    set_strides(&a.q, L_BNHD, 1, 64, 1, 80);
    a.k = a.v = a.o = a.q;
    a.q.data = a.k.data = a.v.data = a.o.data = buf;
    CHECK(fm_cuda_fwd(ctx, m, &a) == FAMASK_STATUS_UNSUPPORTED && strstr(famask_ctx_errmsg(ctx), "head_dim 80"),
          "head_dim 80: %s", famask_ctx_errmsg(ctx));
    a.head_dim = 64;
    a.dtype = FAMASK_DTYPE_F32;
    CHECK(fm_cuda_fwd(ctx, m, &a) == FAMASK_STATUS_UNSUPPORTED, "f32: %s", famask_ctx_errmsg(ctx));
    a.dtype = FAMASK_DTYPE_F16;
    a.q.stride_seq = 68; /* rows not 16-byte aligned */
    CHECK(fm_cuda_fwd(ctx, m, &a) == FAMASK_STATUS_UNSUPPORTED, "unaligned rows: %s", famask_ctx_errmsg(ctx));
    /* a key order mode that does not exist: refused by name, before any work */
    {
        const char *was = getenv("FAMASK_KEY_ORDER");
        char *saved = was ? strdup(was) : NULL;
        a.q.stride_seq = 64;
        a.o = a.q;
        a.o.data = (char *)buf + 64 * 64 * 2; /* an output apart from the inputs */
        a.device = FAMASK_DEVICE_CUDA;
        setenv("FAMASK_KEY_ORDER", "sorted", 1);
        famask_mask_free(m); /* a fresh mask: the key order is made on its first call */
        m = make_mask(ctx, MK_CAUSAL, 1, 1, 64, 64);
        CHECK(m && famask_attn_fwd(ctx, m, &a) == FAMASK_STATUS_INVALID_ARGUMENT &&
                  strstr(famask_ctx_errmsg(ctx), "FAMASK_KEY_ORDER is 'sorted'"),
              "bad FAMASK_KEY_ORDER: %s", famask_ctx_errmsg(ctx));
        if (saved)
            setenv("FAMASK_KEY_ORDER", saved, 1);
        else
            unsetenv("FAMASK_KEY_ORDER");
        free(saved);
    }
    cudaFree(buf);
    famask_mask_free(m);
}

/* ---- benchmark -------------------------------------------------------------------------------------------- */

static int cmp_float(const void *x, const void *y)
{
    float a = *(const float *)x, b = *(const float *)y;
    return a < b ? -1 : a > b;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* Builds an [1, 1, n, 4] mask for the benchmark families directly from vectors. */
static famask_mask *bench_mask(famask_ctx *ctx, const char *name, int n)
{
    famask_mask *m = NULL;
    int32_t *v = malloc((size_t)n * 4 * sizeof *v);
    int docs = 8;
    if (!v)
        return NULL;
    for (int j = 0; j < n; j++) {
        int32_t *c = v + 4 * (int64_t)j;
        int ds = j / (n / docs) * (n / docs), de = ds + n / docs;
        c[0] = n, c[1] = n, c[2] = 0, c[3] = 0;
        if (!strcmp(name, "causal")) {
            c[3] = j;
        } else if (!strcmp(name, "sliding_1023")) {
            c[3] = j;
            c[0] = imin(j + 1024, n);
        } else if (!strcmp(name, "causal_doc_8")) {
            c[3] = j;
            c[0] = de;
        } else if (!strcmp(name, "doc_8")) {
            c[3] = ds;
            c[0] = de;
        } else if (!strcmp(name, "prefix_lm_half")) {
            c[3] = j < n / 2 ? 0 : j;
        } else if (!strcmp(name, "evict_half")) { /* causal; every key evicted with probability 1/2, at a row
                                                   * in (j, j + n/16]: almost every tile partial */
            const uint32_t hsh = (uint32_t)j * 2654435761u;
            c[3] = j;
            if (hsh >> 31)
                c[0] = imin(j + 1 + (int)((hsh >> 8) % (uint32_t)(n / 16)), n);
        }
    }
    famask_mask_from_vectors(ctx, 1, 1, n, n, v, &m);
    free(v);
    return m;
}

static int bench(famask_ctx *ctx, int D, int n_masks)
{
    const int B = 4, H = 16, N = 8192;
    const char *names[] = {"full", "causal", "sliding_1023", "causal_doc_8", "doc_8", "prefix_lm_half", "evict_half"};
    famask_attn_args a;
    int64_t el = (int64_t)B * H * N * D;
    void *dq = NULL, *dk = NULL, *dv = NULL, *dout = NULL;
    float *dlse = NULL;
    uint16_t *host = malloc((size_t)el * 2);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);

    memset(&a, 0, sizeof a);
    for (int64_t i = 0; i < el; i++)
        host[i] = f32_to_bf16((float)tl_rand_normal());
    cudaMalloc(&dq, el * 2);
    cudaMalloc(&dk, el * 2);
    cudaMalloc(&dv, el * 2);
    cudaMalloc(&dout, el * 2);
    cudaMalloc((void **)&dlse, (size_t)B * H * N * 4);
    cudaMemcpy(dq, host, el * 2, cudaMemcpyHostToDevice);
    for (int64_t i = 0; i < el; i++)
        host[i] = f32_to_bf16((float)tl_rand_normal());
    cudaMemcpy(dk, host, el * 2, cudaMemcpyHostToDevice);
    for (int64_t i = 0; i < el; i++)
        host[i] = f32_to_bf16((float)tl_rand_normal());
    cudaMemcpy(dv, host, el * 2, cudaMemcpyHostToDevice);
    a.batch = B, a.n_head = H, a.n_head_kv = H, a.seq_len_q = N, a.seq_len_k = N, a.head_dim = D;
    a.dtype = FAMASK_DTYPE_BF16;
    a.device = FAMASK_DEVICE_CUDA;
    set_strides(&a.q, L_BHND, B, N, H, D);
    a.k = a.v = a.o = a.q;
    a.q.data = dq, a.k.data = dk, a.v.data = dv, a.o.data = dout;
    a.lse = dlse;

    printf("bench: famask fwd, B %d H %d N %d D %d bf16 [B,H,N,D], median of 20 after 3 warm-ups (CUDA events)\n", B, H,
           N, D);
    for (int mi = 0; mi < n_masks; mi++) {
        famask_mask *m = bench_mask(ctx, names[mi], N);
        float t[20];
        if (!m)
            return 1;
        int64_t vis = famask_mask_count_visible(m, 0, 0);
        for (int r = 0; r < 23; r++) {
            cudaEventRecord(e0, 0);
            if (fm_cuda_fwd(ctx, m, &a) != FAMASK_STATUS_OK) {
                fprintf(stderr, "fwd: %s\n", famask_ctx_errmsg(ctx));
                return 1;
            }
            cudaEventRecord(e1, 0);
            cudaEventSynchronize(e1);
            if (r >= 3)
                cudaEventElapsedTime(&t[r - 3], e0, e1);
        }
        qsort(t, 20, sizeof t[0], cmp_float);
        double ms = (t[9] + t[10]) / 2;
        double tflops = 4.0 * B * H * D * (double)vis / (ms * 1e-3) / 1e12;
        printf("bench-fwd D %3d %-15s density %.3f  %8.3f ms  %6.1f TFLOP/s\n", D, names[mi],
               (double)vis / ((double)N * N), ms, tflops);
        famask_mask_free(m);
    }
    if (!cuda_ok(cudaGetLastError(), "bench"))
        return 1;

    /* The mask upload: vectors + summaries for the forward's block sizes, 131,072 columns. */
    if (D == 128 && n_masks > 2) {
        const int n = 131072;
        famask_mask *m = bench_mask(ctx, "causal", n);
        float first[10], refresh[20];
        for (int r = 0; r < 10; r++) {
            famask_mask *c = NULL;
            famask_mask_clone(ctx, m, &c);
            cudaDeviceSynchronize();
            double t0 = now_ms();
            famask_mask_upload(ctx, c, NULL);
            cudaDeviceSynchronize();
            first[r] = (float)(now_ms() - t0);
            famask_mask_free(c);
        }
        famask_mask_upload(ctx, m, NULL);
        for (int r = 0; r < 20; r++) {
            cudaDeviceSynchronize();
            double t0 = now_ms();
            famask_mask_upload(ctx, m, NULL);
            cudaDeviceSynchronize();
            refresh[r] = (float)(now_ms() - t0);
        }
        /* Where the time goes. "upload's copy": the copy the upload makes, from the mask's own vectors (pinned by
         * its first upload, see kernels/mask-device.cu), timed alone with the host clock and with CUDA events;
         * then, for comparison, a copy of the same bytes from a pageable buffer and from cudaMallocHost memory,
         * an allocation, and a registration of a fresh buffer (what the first upload adds). */
        {
            size_t bytes = (size_t)n * 16;
            void *dbuf = NULL, *pinned = NULL, *pageable = malloc(bytes);
            float t_alloc[10], t_page[10], t_pin[10], t_own[10], t_own_ev[10];
            cudaMallocHost(&pinned, bytes);
            memcpy(pinned, famask_mask_bounds(m), bytes);
            memcpy(pageable, famask_mask_bounds(m), bytes);
            for (int r = 0; r < 10; r++) {
                cudaDeviceSynchronize();
                double t0 = now_ms();
                cudaMalloc(&dbuf, bytes);
                t_alloc[r] = (float)(now_ms() - t0);
                t0 = now_ms();
                cudaMemcpyAsync(dbuf, pageable, bytes, cudaMemcpyHostToDevice, 0);
                cudaDeviceSynchronize();
                t_page[r] = (float)(now_ms() - t0);
                t0 = now_ms();
                cudaMemcpyAsync(dbuf, pinned, bytes, cudaMemcpyHostToDevice, 0);
                cudaDeviceSynchronize();
                t_pin[r] = (float)(now_ms() - t0);
                t0 = now_ms();
                cudaEventRecord(e0, 0);
                cudaMemcpyAsync(dbuf, famask_mask_bounds(m), bytes, cudaMemcpyHostToDevice, 0);
                cudaEventRecord(e1, 0);
                cudaDeviceSynchronize();
                t_own[r] = (float)(now_ms() - t0);
                cudaEventElapsedTime(&t_own_ev[r], e0, e1);
                cudaFree(dbuf);
            }
            qsort(t_alloc, 10, sizeof(float), cmp_float);
            qsort(t_page, 10, sizeof(float), cmp_float);
            qsort(t_pin, 10, sizeof(float), cmp_float);
            qsort(t_own, 10, sizeof(float), cmp_float);
            qsort(t_own_ev, 10, sizeof(float), cmp_float);
            float t_reg[10];
            for (int r = 0; r < 10; r++) {
                void *hb = malloc(bytes);
                memcpy(hb, famask_mask_bounds(m), bytes);
                double t0 = now_ms();
                cudaHostRegister(hb, bytes, cudaHostRegisterPortable);
                cudaHostUnregister(hb);
                t_reg[r] = (float)(now_ms() - t0);
                free(hb);
            }
            qsort(t_reg, 10, sizeof(float), cmp_float);
            struct cudaPointerAttributes pa;
            int registered =
                cudaPointerGetAttributes(&pa, famask_mask_bounds(m)) == cudaSuccess && pa.type == cudaMemoryTypeHost;
            (void)cudaGetLastError();
            printf("bench-upload copy alone (medians): upload's copy from the mask's vectors (%s) %.3f ms host clock, "
                   "%.3f ms CUDA events\n",
                   registered ? "page-locked" : "pageable", (t_own[4] + t_own[5]) / 2, (t_own_ev[4] + t_own_ev[5]) / 2);
            printf(
                "bench-upload parts (medians): cudaMalloc %.3f ms, pageable copy %.3f ms, cudaMallocHost copy %.3f ms, "
                "cudaHostRegister+Unregister %.3f ms\n",
                (t_alloc[4] + t_alloc[5]) / 2, (t_page[4] + t_page[5]) / 2, (t_pin[4] + t_pin[5]) / 2,
                (t_reg[4] + t_reg[5]) / 2);
            cudaFreeHost(pinned);
            free(pageable);
        }
        qsort(first, 10, sizeof first[0], cmp_float);
        qsort(refresh, 20, sizeof refresh[0], cmp_float);
        printf("bench-upload %d columns (%.1f MiB): first upload (alloc + register + copy + 2 summaries) median %.3f "
               "ms, refresh (copy + 2 summaries) median %.3f ms (host clock around device syncs)\n",
               n, n * 16.0 / 1048576, (first[4] + first[5]) / 2, (refresh[9] + refresh[10]) / 2);
        famask_mask_free(m);
    }
    cudaFree(dq);
    cudaFree(dk);
    cudaFree(dv);
    cudaFree(dout);
    cudaFree(dlse);
    free(host);
    return cuda_ok(cudaGetLastError(), "bench") ? 0 : 1;
}

/* ---- cases ------------------------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    famask_ctx *ctx = NULL;
    int n_dev = 0, small = argc > 1 && !strcmp(argv[1], "--small");
    const int dims[] = {32, 64, 96, 128, 256};
    const famask_dtype dts[] = {FAMASK_DTYPE_BF16, FAMASK_DTYPE_F16};

    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
        printf("cuda-fwd: no cuda device, skipped\n");
        return 77;
    }
    tl_seed("cuda-fwd");
    if (famask_ctx_create(&ctx) != FAMASK_STATUS_OK)
        return 1;
    if (argc > 1 && !strcmp(argv[1], "--prof")) { /* full and causal at head dim 128 only, for a profiler */
        int rc = bench(ctx, 128, 2);
        famask_ctx_free(ctx);
        return rc;
    }
    if (argc > 1 && !strcmp(argv[1], "--bench")) {
        int rc = bench(ctx, 128, 7) || bench(ctx, 64, 7);
        famask_ctx_free(ctx);
        return rc;
    }

    if (small) {
        struct fcase cs[] = {
            {MK_RANDOM_BAND, 1, 2, 1, 70, 150, 64, FAMASK_DTYPE_BF16, L_BNHD, 1, 2, 0},
            {MK_CAUSAL, 1, 1, 1, 130, 130, 128, FAMASK_DTYPE_F16, L_BHND, 1, 1, 0},
            {MK_RANDOM, 1, 2, 2, 33, 70, 256, FAMASK_DTYPE_BF16, L_PADDED, 1, 2, 0},
            {MK_DOCUMENT, 1, 1, 1, 100, 100, 96, FAMASK_DTYPE_F16, L_BNHD, 1, 1, 0},
            {MK_SLIDING, 1, 1, 1, 150, 150, 32, FAMASK_DTYPE_BF16, L_BNHD, 1, 1, 0},
            {MK_RANDOM_BAND, 1, 2, 1, 130, 90, 128, FAMASK_DTYPE_BF16, L_BNHD, 1, 1, -0.125f}, /* Q negated in smem */
        };
        for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
            CHECK(run_case(ctx, &cs[i]), "small case %zu", i);
        famask_ctx_free(ctx);
        return tl_finish();
    }

    test_mask_device(ctx);
    test_mask_pinned(ctx);
    test_smem_check(ctx);
    test_unsupported(ctx);

    /* every head dim and dtype on a random mask with ragged tails, GQA, per-head masks, all three layouts */
    for (int di = 0; di < 5; di++) {
        for (int ti = 0; ti < 2; ti++) {
            struct fcase c = {MK_RANDOM,
                              2,
                              4,
                              2,
                              tl_rand_int(150, 330),
                              tl_rand_int(150, 330),
                              dims[di],
                              dts[ti],
                              (enum layout)((di + ti) % 3),
                              2,
                              4,
                              0};
            CHECK(run_case(ctx, &c), "dims/dtypes");
            c.kind = MK_RANDOM_BAND;
            c.heads_m = 2; /* per kv head */
            c.batch_m = 1;
            c.layout = (enum layout)((di + ti + 1) % 3);
            CHECK(run_case(ctx, &c), "dims/dtypes with fully masked rows");
            c.kind = MK_CAUSAL;
            c.heads_m = 1;
            c.seq_len_q = c.seq_len_k = tl_rand_int(200, 450);
            CHECK(run_case(ctx, &c), "dims/dtypes causal");
        }
    }
    /* a negative scale on every head dim (the kernel negates its Q tile and takes the max as for a positive
     * scale): random masks with fully masked rows, GQA, ragged tails; scales from -1/sqrt(D) to -2 (at -2 a max
     * taken on the wrong side would overflow exp) */
    for (int di = 0; di < 5; di++) {
        const float negs[] = {-1.f / sqrtf((float)dims[di]), -0.5f, -2.f};
        struct fcase c = {di % 2 ? MK_RANDOM_BAND : MK_RANDOM,
                          2,
                          4,
                          2,
                          tl_rand_int(100, 300),
                          tl_rand_int(100, 300),
                          dims[di],
                          dts[di % 2],
                          (enum layout)(di % 3),
                          di % 2 ? 1 : 2,
                          di % 3 == 0 ? 4 : 2,
                          negs[di % 3]};
        CHECK(run_case(ctx, &c), "negative scale");
    }
    /* structured masks at sizes where whole tiles are skipped or unmasked */
    for (int ti = 0; ti < 2; ti++) {
        enum mask_kind kinds[] = {MK_FULL, MK_CAUSAL, MK_SLIDING, MK_DOCUMENT, MK_CAUSAL_DOCUMENT};
        for (int ki = 0; ki < 5; ki++) {
            int d = ki % 2 ? 128 : 64;
            int n = tl_rand_int(700, 1100);
            struct fcase c = {kinds[ki], 1, 2, 2, n, n, d, dts[ti], (enum layout)(ki % 3), 1, ki == 2 ? 2 : 1, 0};
            CHECK(run_case(ctx, &c), "structured");
        }
    }
    /* seq_len_q != seq_len_k, MQA, broadcast over batch, explicit scale, tiny lengths */
    {
        struct fcase cs[] = {
            {MK_CAUSAL, 2, 3, 3, 200, 777, 128, FAMASK_DTYPE_BF16, L_BNHD, 2, 1, 0},
            {MK_RANDOM, 1, 2, 2, 1000, 130, 64, FAMASK_DTYPE_F16, L_BHND, 1, 2, 0},
            {MK_RANDOM_BAND, 3, 6, 1, 190, 260, 128, FAMASK_DTYPE_BF16, L_BNHD, 1, 1, 0},
            {MK_RANDOM_BAND, 3, 6, 1, 190, 260, 64, FAMASK_DTYPE_F16, L_PADDED, 3, 6, 0},
            {MK_SLIDING, 2, 8, 2, 300, 300, 128, FAMASK_DTYPE_F16, L_BHND, 1, 8, 0.3f},
            {MK_DOCUMENT, 2, 4, 4, 333, 333, 96, FAMASK_DTYPE_BF16, L_BNHD, 2, 4, 0},
            {MK_RANDOM, 1, 1, 1, 1, 1, 128, FAMASK_DTYPE_BF16, L_BNHD, 1, 1, 0},
            {MK_RANDOM, 1, 1, 1, 1, 100, 64, FAMASK_DTYPE_F16, L_BNHD, 1, 1, 0},
            {MK_RANDOM, 1, 2, 1, 17, 3, 256, FAMASK_DTYPE_BF16, L_BHND, 1, 1, 0},
            {MK_CAUSAL, 1, 1, 1, 129, 65, 32, FAMASK_DTYPE_F16, L_BNHD, 1, 1, 2.0f},
            /* keys evicted soon after they appear: the default mode runs these with the keys sorted (GQA, a mask
             * per key head, batch broadcast, padded layout; seq_len_q != seq_len_k) */
            {MK_EVICT, 2, 4, 2, 3000, 3000, 128, FAMASK_DTYPE_BF16, L_PADDED, 1, 2, 0},
            {MK_EVICT, 1, 2, 1, 3200, 2600, 64, FAMASK_DTYPE_F16, L_BNHD, 1, 1, 0},
            /* runs of more than 32 skipped key blocks (the live-block search works in windows of 32) */
            {MK_CAUSAL_DOCUMENT, 1, 2, 1, 4500, 4500, 128, FAMASK_DTYPE_BF16, L_BNHD, 1, 2, 0},
            {MK_CAUSAL, 1, 1, 1, 300, 5000, 32, FAMASK_DTYPE_F16, L_BHND, 1, 1, 0},
            /* global keys and a band, runs of masked blocks between them longer than a coarse summary's 32 blocks
             * (the Hopper kernel then jumps by coarse blocks) and, at 270,000 keys, than a coarse window's 1024 */
            {MK_GLOBAL_BAND, 1, 2, 2, 9000, 9000, 128, FAMASK_DTYPE_BF16, L_BHND, 1, 2, 0},
            {MK_GLOBAL_BAND, 1, 2, 1, 300, 270000, 64, FAMASK_DTYPE_F16, L_BNHD, 1, 1, 0},
        };
        for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
            CHECK(run_case(ctx, &cs[i]), "special case %zu", i);
        /* lse may be NULL; a non-blocking stream of the caller's */
        case_variant = V_NO_LSE;
        CHECK(run_case(ctx, &cs[2]), "lse NULL");
        case_variant = V_STREAM;
        CHECK(run_case(ctx, &cs[4]), "own stream");
        case_variant = 0;
    }
    famask_ctx_free(ctx);
    return tl_finish();
}
