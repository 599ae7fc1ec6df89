/*
 * cuda-unfused.c: the unfused cuBLAS attention forward (fm_cuda_unfused_fwd) against a float64 CPU reference
 * written here over the dense mask (famask_mask_visible).
 *
 * Cases cover bf16 and fp16; [B, N, H, D], [B, H, N, D] and padded row strides; Nq != Nk and ragged lengths;
 * GQA/MQA (both ways the kernel batches heads); masks per head, per K/V head and broadcast, per batch row and
 * broadcast; full, causal, random, sliding-window and fully-masked-row masks; head dims 32..256; a non-default
 * scale; lse absent; tiles of query rows smaller than Nq; two cases through famask_attn_fwd's dispatch; and the
 * workspace's home in the context (a NULL context, a second context freed between calls). Outputs are
 * poisoned (NaN) before each run. Inputs are rounded to the 16-bit dtype before the reference sees them, so the error
 * measured is the GPU's. Exits 77 without a CUDA device.
 */
#include "testlib.h"

#include "internal.h"
#include "kernels.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- 16-bit floats on the host ------------------------------------------------------------------------------ */

static uint32_t f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* Round to nearest even; inputs are finite. */
static uint16_t to_bf16(float x)
{
    uint32_t u = f32_bits(x);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

/* Round to nearest even; magnitudes under 2^-14 become zero, which is still a valid input the reference sees. */
static uint16_t to_f16(float x)
{
    uint32_t u = f32_bits(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    int e = (int)((u >> 23) & 0xFF) - 127 + 15;
    uint32_t mant = u & 0x7FFFFFu;
    if (e <= 0)
        return sign;
    if (e >= 31)
        return (uint16_t)(sign | 0x7C00u);
    uint16_t h = (uint16_t)(sign | (e << 10) | (mant >> 13));
    uint32_t rem = mant & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++;
    return h;
}

static double from_16(uint16_t h, famask_dtype dt)
{
    if (dt == FAMASK_DTYPE_BF16)
        return bits_f32((uint32_t)h << 16);
    int e = (h >> 10) & 0x1F, m = h & 0x3FF;
    double s = (h & 0x8000) ? -1.0 : 1.0;
    if (e == 0)
        return s * ldexp(m, -24);
    if (e == 31)
        return m ? NAN : s * INFINITY;
    return s * ldexp(1024 + m, e - 25);
}

/* ---- masks -------------------------------------------------------------------------------------------------- */

enum { MASK_FULL, MASK_CAUSAL, MASK_RANDOM, MASK_EMPTY_ROWS, MASK_WINDOW, N_MASK_KINDS };
static const char *mask_names[N_MASK_KINDS] = {"full", "causal", "random", "empty-rows", "window"};

/* One (b, h) of raw (not necessarily canonical) vectors; every (b, h) draws its own parameters. */
static void fill_mask(int32_t *v, int kind, int nq, int nk)
{
    int a = tl_rand_int(0, nq - 1), c = tl_rand_int(a + 1, nq), left = tl_rand_int(0, nk / 2 + 1);
    for (int j = 0; j < nk; j++) {
        int32_t *x = v + 4 * j;
        x[0] = x[1] = nq;
        x[2] = x[3] = 0;
        switch (kind) {
        case MASK_FULL:
            break;
        case MASK_CAUSAL: /* visible j <= i */
            x[2] = 0;
            x[3] = j < nq ? j : nq;
            break;
        case MASK_RANDOM:
            for (int s = 0; s < 4; s += 2) {
                x[s] = tl_rand_int(0, nq);
                x[s + 1] = tl_rand_int(x[s], nq);
            }
            break;
        case MASK_EMPTY_ROWS: /* rows [a, c) see nothing; above them a random causal-like cut */
            x[0] = a;
            x[1] = c;
            x[2] = 0;
            x[3] = tl_rand_int(0, a);
            break;
        case MASK_WINDOW: /* visible i - left <= j <= i */
            x[2] = 0;
            x[3] = j < nq ? j : nq;
            x[0] = j + left + 1 < nq ? j + left + 1 : nq;
            x[1] = nq;
            break;
        }
    }
}

/* ---- one case ----------------------------------------------------------------------------------------------- */

enum { LAYOUT_BNHD, LAYOUT_BHND, LAYOUT_PADDED, N_LAYOUTS };
static const char *layout_names[N_LAYOUTS] = {"bnhd", "bhnd", "bnhd+pad"};

typedef struct tcase {
    int batch, n_head, n_head_kv, nq, nk, head_dim;
    famask_dtype dtype;
    int layout;
    int batch_m1;   /* mask batch_m = 1 (broadcast) instead of batch */
    int heads_mode; /* mask heads_m: 0 -> 1, 1 -> n_head_kv, 2 -> n_head */
    int mask_kind;
    float scale; /* 0: default */
    int with_lse;
    size_t tile_bytes; /* 0: default */
    int via_api;       /* through famask_attn_fwd (FAMASK_DEVICE_CUDA_UNFUSED) instead of the kernel entry */
} tcase;

/* Strides for [batch, seq, head, head_dim] in the case's layout. */
static famask_tensor layout_strides(int layout, int n, int h, int d, int64_t *elems)
{
    famask_tensor t = {0};
    if (layout == LAYOUT_BHND) {
        t.stride_seq = d;
        t.stride_head = (int64_t)n * d;
        t.stride_batch = (int64_t)h * n * d;
    } else {
        int64_t pad = layout == LAYOUT_PADDED ? 8 : 0;
        t.stride_head = d;
        t.stride_seq = (int64_t)h * d + pad;
        t.stride_batch = t.stride_seq * n;
    }
    *elems = t.stride_batch; /* per batch row */
    return t;
}

static int64_t at(const famask_tensor *t, int b, int i, int h)
{
    return b * t->stride_batch + i * t->stride_seq + h * t->stride_head;
}

/* Fills a host tensor (and the rounded values as doubles, same indexing) with normal values. */
static void fill_tensor(uint16_t *x16, double *xd, int64_t n_elems, famask_dtype dt)
{
    for (int64_t e = 0; e < n_elems; e++) {
        float f = (float)tl_rand_normal();
        x16[e] = dt == FAMASK_DTYPE_BF16 ? to_bf16(f) : to_f16(f);
        xd[e] = from_16(x16[e], dt);
    }
}

static void run_case(famask_ctx *ctx, int id, const tcase *c)
{
    const int B = c->batch, H = c->n_head, Hkv = c->n_head_kv, Nq = c->nq, Nk = c->nk, D = c->head_dim;
    const int g = H / Hkv;
    const int batch_m = c->batch_m1 ? 1 : B;
    const int heads_m = c->heads_mode == 0 ? 1 : c->heads_mode == 1 ? Hkv : H;
    int64_t q_per_b, kv_per_b;
    famask_tensor tq = layout_strides(c->layout, Nq, H, D, &q_per_b);
    famask_tensor tk = layout_strides(c->layout, Nk, Hkv, D, &kv_per_b);
    const int64_t nq_el = q_per_b * B, nkv_el = kv_per_b * B;
    const double scale = c->scale != 0.f ? c->scale : 1.0 / sqrt((double)D);

    uint16_t *q16 = malloc(nq_el * 2), *k16 = malloc(nkv_el * 2), *v16 = malloc(nkv_el * 2), *o16 = malloc(nq_el * 2);
    double *qd = malloc(nq_el * 8), *kd = malloc(nkv_el * 8), *vd = malloc(nkv_el * 8);
    double *ref = malloc((size_t)B * H * Nq * D * 8), *ref_lse = malloc((size_t)B * H * Nq * 8);
    float *lse = malloc((size_t)B * H * Nq * 4);
    int32_t *vec = malloc((size_t)batch_m * heads_m * Nk * 4 * sizeof *vec);
    double *srow = malloc((size_t)Nk * 8);
    famask_mask *mask = NULL;
    void *dq = NULL, *dk = NULL, *dv = NULL, *dout = NULL, *dlse = NULL;
    size_t saved_tile = fm_cuda_unfused_tile_bytes;

    if (!q16 || !k16 || !v16 || !o16 || !qd || !kd || !vd || !ref || !ref_lse || !lse || !vec || !srow) {
        CHECK(0, "case %d: host allocation", id);
        goto done;
    }
    fill_tensor(q16, qd, nq_el, c->dtype);
    fill_tensor(k16, kd, nkv_el, c->dtype);
    fill_tensor(v16, vd, nkv_el, c->dtype);
    for (int bh = 0; bh < batch_m * heads_m; bh++)
        fill_mask(vec + (size_t)bh * Nk * 4, c->mask_kind, Nq, Nk);
    CHECK_OK(ctx, famask_mask_from_vectors(ctx, batch_m, heads_m, Nq, Nk, vec, &mask));
    if (!mask)
        goto done;

    /* float64 reference over the dense mask */
    int empty_rows = 0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int hk = h / g, mb = batch_m == 1 ? 0 : b;
            int mh = heads_m == H ? h : heads_m == Hkv ? hk : 0;
            for (int i = 0; i < Nq; i++) {
                double mx = -INFINITY;
                for (int j = 0; j < Nk; j++) {
                    srow[j] = -INFINITY;
                    if (!famask_mask_visible(mask, mb, mh, i, j))
                        continue;
                    double s = 0;
                    for (int d = 0; d < D; d++)
                        s += qd[at(&tq, b, i, h) + d] * kd[at(&tk, b, j, hk) + d];
                    srow[j] = s * scale;
                    mx = srow[j] > mx ? srow[j] : mx;
                }
                double *o = ref + (((size_t)b * H + h) * Nq + i) * D;
                double l = 0;
                for (int d = 0; d < D; d++)
                    o[d] = 0;
                if (mx == -INFINITY) {
                    ref_lse[((size_t)b * H + h) * Nq + i] = -INFINITY;
                    empty_rows++;
                    continue;
                }
                for (int j = 0; j < Nk; j++) {
                    if (srow[j] == -INFINITY)
                        continue;
                    double p = exp(srow[j] - mx);
                    l += p;
                    for (int d = 0; d < D; d++)
                        o[d] += p * vd[at(&tk, b, j, hk) + d];
                }
                for (int d = 0; d < D; d++)
                    o[d] /= l;
                ref_lse[((size_t)b * H + h) * Nq + i] = mx + log(l);
            }
        }

    /* the GPU */
    if (cudaMalloc(&dq, nq_el * 2) || cudaMalloc(&dk, nkv_el * 2) || cudaMalloc(&dv, nkv_el * 2) ||
        cudaMalloc(&dout, nq_el * 2) || cudaMalloc(&dlse, (size_t)B * H * Nq * 4)) {
        CHECK(0, "case %d: cudaMalloc failed", id);
        goto done;
    }
    cudaMemcpy(dq, q16, nq_el * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(dk, k16, nkv_el * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(dv, v16, nkv_el * 2, cudaMemcpyHostToDevice);
    cudaMemset(dout, 0xFF, nq_el * 2); /* 0xFFFF is NaN in bf16 and fp16 */
    cudaMemset(dlse, 0xFF, (size_t)B * H * Nq * 4);

    famask_attn_args a;
    memset(&a, 0, sizeof a);
    a.batch = B;
    a.n_head = H;
    a.n_head_kv = Hkv;
    a.seq_len_q = Nq;
    a.seq_len_k = Nk;
    a.head_dim = D;
    a.dtype = c->dtype;
    a.q = tq;
    a.q.data = dq;
    a.k = tk;
    a.k.data = dk;
    a.v = tk;
    a.v.data = dv;
    a.o = tq;
    a.o.data = dout;
    a.lse = c->with_lse ? dlse : NULL;
    a.softmax_scale = c->scale;
    a.device = FAMASK_DEVICE_CUDA_UNFUSED;
    if (c->tile_bytes)
        fm_cuda_unfused_tile_bytes = c->tile_bytes;
    famask_status st = c->via_api ? famask_attn_fwd(ctx, mask, &a) : fm_cuda_unfused_fwd(ctx, mask, &a);
    fm_cuda_unfused_tile_bytes = saved_tile;
    CHECK(st == FAMASK_STATUS_OK, "case %d: fm_cuda_unfused_fwd -> %s: %s", id, famask_status_str(st),
          famask_ctx_errmsg(ctx));
    cudaError_t e = cudaDeviceSynchronize();
    CHECK(e == cudaSuccess, "case %d: %s", id, cudaGetErrorString(e));
    if (st != FAMASK_STATUS_OK || e != cudaSuccess)
        goto done;
    cudaMemcpy(o16, dout, nq_el * 2, cudaMemcpyDeviceToHost);
    cudaMemcpy(lse, dlse, (size_t)B * H * Nq * 4, cudaMemcpyDeviceToHost);

    /* compare: norm-relative and max error of o, NaN/Inf separately, exact zeros and -inf for empty rows */
    double num = 0, den = 0, max_err = 0, lse_err = 0;
    int64_t nonfinite = 0, bad_empty = 0, lse_poison = 0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < Nq; i++) {
                const double *r = ref + (((size_t)b * H + h) * Nq + i) * D;
                double rl = ref_lse[((size_t)b * H + h) * Nq + i];
                for (int d = 0; d < D; d++) {
                    double x = from_16(o16[at(&tq, b, i, h) + d], c->dtype);
                    if (!isfinite(x)) {
                        nonfinite++;
                        continue;
                    }
                    if (rl == -INFINITY && x != 0.0)
                        bad_empty++;
                    num += (x - r[d]) * (x - r[d]);
                    den += r[d] * r[d];
                    max_err = fabs(x - r[d]) > max_err ? fabs(x - r[d]) : max_err;
                }
                if (c->with_lse) {
                    float gl = lse[((size_t)b * H + h) * Nq + i];
                    if (rl == -INFINITY) {
                        if (!(isinf(gl) && gl < 0))
                            bad_empty++;
                    } else if (!isfinite(gl)) {
                        lse_poison++;
                    } else {
                        lse_err = fabs(gl - rl) > lse_err ? fabs(gl - rl) : lse_err;
                    }
                }
            }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    /* bf16 keeps 8 significant bits (P and o are rounded to it), fp16 11 */
    double tol_rel = c->dtype == FAMASK_DTYPE_BF16 ? 1e-2 : 2e-3;
    double tol_max = c->dtype == FAMASK_DTYPE_BF16 ? 4e-2 : 6e-3;
    int ok =
        nonfinite == 0 && bad_empty == 0 && lse_poison == 0 && rel <= tol_rel && max_err <= tol_max && lse_err <= 1e-3;
    printf("case %3d: B %d H %d Hkv %d Nq %4d Nk %4d D %3d %s %-8s mask %-10s batch_m %d heads_m %d scale %.3g "
           "lse %d tile %zu%s -> rel %.2e max %.2e lse_err %.2e nonfinite %lld empty_rows %d bad_empty %lld %s\n",
           id, B, H, Hkv, Nq, Nk, D, c->dtype == FAMASK_DTYPE_BF16 ? "bf16" : "fp16", layout_names[c->layout],
           mask_names[c->mask_kind], batch_m, heads_m, scale, c->with_lse, c->tile_bytes, c->via_api ? " api" : "", rel,
           max_err, lse_err, (long long)nonfinite, empty_rows, (long long)bad_empty, ok ? "ok" : "FAIL");
    CHECK(ok, "case %d out of bounds (rel <= %.0e, max <= %.0e, lse <= 1e-3, no NaN/Inf, empty rows 0 and -inf)", id,
          tol_rel, tol_max);

done:
    cudaFree(dq);
    cudaFree(dk);
    cudaFree(dv);
    cudaFree(dout);
    cudaFree(dlse);
    famask_mask_free(mask);
    free(q16);
    free(k16);
    free(v16);
    free(o16);
    free(qd);
    free(kd);
    free(vd);
    free(ref);
    free(ref_lse);
    free(lse);
    free(vec);
    free(srow);
}

/* Wrong arguments are refused with a message, before any device work. */
static void test_refusals(famask_ctx *ctx)
{
    famask_mask *mask = NULL;
    CHECK_OK(ctx, famask_mask_create(ctx, 1, 1, 16, 16, &mask));
    if (!mask)
        return;
    famask_attn_args a;
    memset(&a, 0, sizeof a);
    a.batch = 1;
    a.n_head = 3;
    a.n_head_kv = 2;
    a.seq_len_q = a.seq_len_k = 16;
    a.head_dim = 64;
    a.dtype = FAMASK_DTYPE_BF16;
    CHECK(fm_cuda_unfused_fwd(ctx, mask, &a) == FAMASK_STATUS_INVALID_ARGUMENT &&
              strstr(famask_ctx_errmsg(ctx), "n_head") != NULL,
          "n_head 3 over n_head_kv 2: %s", famask_ctx_errmsg(ctx));
    a.n_head = 2;
    a.dtype = FAMASK_DTYPE_F32;
    CHECK(fm_cuda_unfused_fwd(ctx, mask, &a) == FAMASK_STATUS_UNSUPPORTED, "f32: %s", famask_ctx_errmsg(ctx));
    a.dtype = FAMASK_DTYPE_BF16;
    a.seq_len_k = 17;
    CHECK(fm_cuda_unfused_fwd(ctx, mask, &a) == FAMASK_STATUS_INVALID_ARGUMENT &&
              strstr(famask_ctx_errmsg(ctx), "mask shape") != NULL,
          "mask of the wrong length: %s", famask_ctx_errmsg(ctx));
    famask_mask_free(mask);
}

/* argv[1] "--quick": fewer random cases (for compute-sanitizer runs). */
int main(int argc, char **argv)
{
    const int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
        printf("cuda-unfused: no CUDA device, skipped\n");
        return 77;
    }
    tl_seed("cuda-unfused");
    famask_ctx *ctx = NULL;
    if (famask_ctx_create(&ctx))
        return 1;
    test_refusals(ctx);

    /* B, H, Hkv, Nq, Nk, D, dtype, layout, batch_m1, heads_mode, mask, scale, lse, tile_bytes, via_api */
    const famask_dtype BF = FAMASK_DTYPE_BF16, FP = FAMASK_DTYPE_F16;
    const tcase fixed[] = {
        {1, 1, 1, 1, 1, 64, BF, LAYOUT_BNHD, 0, 0, MASK_FULL, 0, 1, 0, 0},
        {1, 1, 1, 1, 1, 64, FP, LAYOUT_BHND, 0, 0, MASK_CAUSAL, 0, 1, 0, 0},
        {2, 4, 4, 77, 77, 128, BF, LAYOUT_BNHD, 0, 2, MASK_CAUSAL, 0, 1, 0, 0},
        {2, 4, 4, 77, 77, 128, FP, LAYOUT_BHND, 0, 2, MASK_CAUSAL, 0, 1, 0, 0},
        {2, 4, 2, 130, 61, 64, BF, LAYOUT_BNHD, 0, 1, MASK_RANDOM, 0, 1, 0, 0},      /* Nq > Nk, GQA over K/V heads */
        {1, 8, 2, 45, 203, 64, FP, LAYOUT_BHND, 1, 2, MASK_RANDOM, 0, 1, 0, 0},      /* Nq < Nk, GQA over groups */
        {2, 6, 1, 96, 96, 32, BF, LAYOUT_PADDED, 0, 0, MASK_EMPTY_ROWS, 0, 1, 0, 0}, /* MQA */
        {2, 6, 3, 96, 100, 96, FP, LAYOUT_BNHD, 0, 1, MASK_EMPTY_ROWS, 0.3f, 1, 0, 0},
        {1, 4, 4, 257, 129, 256, BF, LAYOUT_BHND, 1, 0, MASK_WINDOW, 0, 1, 0, 0},
        {1, 4, 4, 257, 129, 256, FP, LAYOUT_BNHD, 0, 2, MASK_WINDOW, 0, 0, 0, 0},      /* no lse */
        {2, 4, 2, 150, 70, 192, BF, LAYOUT_PADDED, 0, 2, MASK_RANDOM, 0, 1, 4096, 0},  /* tiles of a few rows */
        {1, 8, 2, 99, 33, 160, FP, LAYOUT_BHND, 0, 1, MASK_EMPTY_ROWS, 0, 1, 1000, 0}, /* tile of 1 row */
        {1, 2, 2, 64, 64, 80, BF, LAYOUT_BNHD, 0, 2, MASK_FULL, 0, 1, 0, 0},
        {2, 4, 2, 70, 90, 64, BF, LAYOUT_BHND, 0, 1, MASK_EMPTY_ROWS, 0, 1, 0, 1}, /* the public dispatch */
        {1, 4, 1, 33, 65, 128, FP, LAYOUT_BNHD, 1, 2, MASK_RANDOM, 0, 1, 0, 1},
    };
    int id = 0;
    for (size_t x = 0; x < sizeof fixed / sizeof fixed[0]; x++)
        run_case(ctx, id++, &fixed[x]);

    /* The cuBLAS handle and workspace live in the context: a call without one (its scratch is made and released
     * within the call), a second context freed after its call, and the first context still working after that. */
    run_case(NULL, id++, &fixed[2]);
    {
        famask_ctx *ctx2 = NULL;
        CHECK(famask_ctx_create(&ctx2) == FAMASK_STATUS_OK, "second context");
        if (ctx2) {
            run_case(ctx2, id++, &fixed[10]);
            famask_ctx_free(ctx2);
        }
        run_case(ctx, id++, &fixed[11]);
    }

    /* random combinations */
    static const int dims[] = {32, 64, 96, 128, 192, 256};
    static const int groups[][2] = {{1, 1}, {2, 2}, {4, 1}, {4, 2}, {6, 3}, {8, 2}, {3, 3}};
    for (int r = 0; r < (quick ? 4 : 40); r++) {
        tcase c;
        memset(&c, 0, sizeof c);
        c.batch = tl_rand_int(1, 2);
        int gi = tl_rand_int(0, (int)(sizeof groups / sizeof groups[0]) - 1);
        c.n_head = groups[gi][0];
        c.n_head_kv = groups[gi][1];
        c.nq = tl_rand_int(1, 160);
        c.nk = tl_rand_int(1, 160);
        c.head_dim = dims[tl_rand_int(0, 5)];
        c.dtype = tl_rand_int(0, 1) ? BF : FP;
        c.layout = tl_rand_int(0, N_LAYOUTS - 1);
        c.batch_m1 = tl_rand_int(0, 1);
        c.heads_mode = tl_rand_int(0, 2);
        c.mask_kind = tl_rand_int(0, N_MASK_KINDS - 1);
        c.scale = tl_rand_int(0, 3) == 0 ? 0.05f : 0.f;
        c.with_lse = tl_rand_int(0, 4) != 0;
        c.tile_bytes = tl_rand_int(0, 3) == 0 ? (size_t)tl_rand_int(1, 40000) : 0;
        run_case(ctx, id++, &c);
    }
    famask_ctx_free(ctx);
    return tl_finish();
}
