/*
 * ref-attn.c: attention on the CPU (FAMASK_DEVICE_CPU): forward and backward, float64 accumulation.
 *
 * Shapes (famask.h): q, o, d_o, dq [batch, seq_len_q, n_head, head_dim] and k, v, dk, dv [batch, seq_len_k,
 * n_head_kv, head_dim] through their strides; lse [batch, n_head, seq_len_q] fp32; the mask
 * [batch_m, heads_m, seq_len_k, 4]. Inputs bf16, f16 or f32; outputs in the same dtype, lse in fp32 (natural log).
 *
 * It is the kernels' algorithm in float64: query tiles of TILE_Q rows against key blocks of TILE_K columns, each
 * pair classified by the rule the kernels use (kernels/tile-rule.h). Skipped tiles cost nothing, unmasked tiles
 * do no mask work, and only partial tiles read the column bounds per element. The forward keeps an online
 * softmax per row; the backward recomputes P = exp(scale * q.k - lse) from the given lse and applies the
 * standard formulas. Work is spread over a few threads by (batch, head) in the forward and by (batch, kv head)
 * in the backward, so that every output element has exactly one writer (and the results do not depend on the
 * thread count: the backward is deterministic).
 */
#include "internal.h"

#include "../kernels/tile-rule.h"
#include "half.h"
#include "ref-attn.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TILE_Q 64
#define TILE_K 64
#define MAX_THREADS 8

/* ---- element access ---- */

static void load_row(const void *base, famask_dtype dt, int64_t off, int d, double *dst)
{
    if (dt == FAMASK_DTYPE_F32) {
        const float *p = (const float *)base + off;
        for (int x = 0; x < d; x++)
            dst[x] = p[x];
    } else if (dt == FAMASK_DTYPE_BF16) {
        const uint16_t *p = (const uint16_t *)base + off;
        for (int x = 0; x < d; x++)
            dst[x] = fm_bf16_to_f32(p[x]);
    } else {
        const uint16_t *p = (const uint16_t *)base + off;
        for (int x = 0; x < d; x++)
            dst[x] = fm_f16_to_f32(p[x]);
    }
}

/* dst = src * mul, rounded once into the dtype. */
static void store_row(void *base, famask_dtype dt, int64_t off, int d, const double *src, double mul)
{
    if (dt == FAMASK_DTYPE_F32) {
        float *p = (float *)base + off;
        for (int x = 0; x < d; x++)
            p[x] = (float)(src[x] * mul);
    } else if (dt == FAMASK_DTYPE_BF16) {
        uint16_t *p = (uint16_t *)base + off;
        for (int x = 0; x < d; x++)
            p[x] = fm_f64_to_bf16(src[x] * mul);
    } else {
        uint16_t *p = (uint16_t *)base + off;
        for (int x = 0; x < d; x++)
            p[x] = fm_f64_to_f16(src[x] * mul);
    }
}

static int64_t offset(const famask_tensor *t, int b, int n, int h)
{
    return (int64_t)b * t->stride_batch + (int64_t)n * t->stride_seq + (int64_t)h * t->stride_head;
}

/* Loads the [seq, head_dim] slice of (b, h) into dst (row-major, doubles). */
static void load_slice(const famask_tensor *t, famask_dtype dt, int b, int h, int n, int d, double *dst)
{
    for (int i = 0; i < n; i++)
        load_row(t->data, dt, offset(t, b, i, h), d, dst + (int64_t)i * d);
}

/* Dot product with eight partial sums: head_dim is a multiple of 32, and the split keeps the adds independent. */
static double dot(const double *a, const double *b, int d)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
    for (int x = 0; x < d; x += 8) {
        s0 += a[x] * b[x];
        s1 += a[x + 1] * b[x + 1];
        s2 += a[x + 2] * b[x + 2];
        s3 += a[x + 3] * b[x + 3];
        s4 += a[x + 4] * b[x + 4];
        s5 += a[x + 5] * b[x + 5];
        s6 += a[x + 6] * b[x + 6];
        s7 += a[x + 7] * b[x + 7];
    }
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7));
}

static void axpy(double *y, double a, const double *x, int d)
{
    for (int k = 0; k < d; k++)
        y[k] += a * x[k];
}

static int column_masks(const int32_t *v, int i)
{
    return (v[FAMASK_LTS] <= i && i < v[FAMASK_LTE]) || (v[FAMASK_UTS] <= i && i < v[FAMASK_UTE]);
}

/* ---- the shared work plan ---- */

typedef struct plan {
    const famask_mask *mask;
    const famask_attn_args *a;
    int n_key_blocks;
    /* Summaries of every (mask batch row, mask head, key block), computed once. */
    fm_block_summary *summaries;
    atomic_llong next; /* next work item (64-bit: batch * n_head may pass INT_MAX) */
    long long n_items;
} plan;

static const int32_t *mask_slice(const plan *p, int b, int h)
{
    const famask_attn_args *a = p->a;
    int mb = fm_attn_mask_batch(p->mask, b), mh = fm_attn_mask_head(p->mask, a->n_head, a->n_head_kv, h);
    return famask_mask_bounds(p->mask) + ((int64_t)mb * famask_mask_heads(p->mask) + mh) * a->seq_len_k * 4;
}

static const fm_block_summary *summary_slice(const plan *p, int b, int h)
{
    const famask_attn_args *a = p->a;
    int mb = fm_attn_mask_batch(p->mask, b), mh = fm_attn_mask_head(p->mask, a->n_head, a->n_head_kv, h);
    return p->summaries + ((int64_t)mb * famask_mask_heads(p->mask) + mh) * p->n_key_blocks;
}

static famask_status plan_init(famask_ctx *ctx, plan *p, const famask_mask *mask, const famask_attn_args *a,
                               long long n_items)
{
    memset(p, 0, sizeof *p);
    p->mask = mask;
    p->a = a;
    p->n_key_blocks = (a->seq_len_k + TILE_K - 1) / TILE_K;
    p->n_items = n_items;
    atomic_init(&p->next, 0);
    int bm = famask_mask_batch(mask), hm = famask_mask_heads(mask);
    p->summaries = fm_malloc(ctx, (size_t)bm * hm * p->n_key_blocks * sizeof *p->summaries);
    if (!p->summaries)
        return FAMASK_STATUS_NO_MEMORY;
    for (int b = 0; b < bm; b++)
        for (int h = 0; h < hm; h++) {
            const int32_t *bounds = famask_mask_bounds(mask) + ((int64_t)b * hm + h) * a->seq_len_k * 4;
            fm_block_summary *s = p->summaries + ((int64_t)b * hm + h) * p->n_key_blocks;
            for (int kb = 0; kb < p->n_key_blocks; kb++) {
                int c0 = kb * TILE_K, c1 = c0 + TILE_K < a->seq_len_k ? c0 + TILE_K : a->seq_len_k;
                fm_block_summarise(bounds, c0, c1, &s[kb]);
            }
        }
    return FAMASK_STATUS_OK;
}

/* Runs worker(p) on up to MAX_THREADS threads (the caller's among them); a thread that cannot start leaves its
 * share to the others, so this cannot fail. */
static void run_workers(plan *p, void *(*worker)(void *))
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int n = cpus < 1 ? 1 : cpus > MAX_THREADS ? MAX_THREADS : (int)cpus;
    if (n > p->n_items)
        n = (int)p->n_items;
    pthread_t tid[MAX_THREADS];
    int started = 0;
    for (int t = 1; t < n; t++) {
        if (pthread_create(&tid[started], NULL, worker, p) != 0)
            break;
        started++;
    }
    worker(p);
    for (int t = 0; t < started; t++)
        pthread_join(tid[t], NULL);
}

/* ---- forward ---- */

/* One work item: (batch row, query head), all query tiles. */
static void fwd_item(const plan *p, int b, int h, double *kd, double *vd, double *qd, double *acc, double *srow)
{
    const famask_attn_args *a = p->a;
    const int d = a->head_dim, nq = a->seq_len_q, nk = a->seq_len_k, hk = h / (a->n_head / a->n_head_kv);
    const double scale = a->softmax_scale;
    const int32_t *bounds = mask_slice(p, b, h);
    const fm_block_summary *summ = summary_slice(p, b, h);
    double m[TILE_Q], l[TILE_Q];

    load_slice(&a->k, a->dtype, b, hk, nk, d, kd);
    load_slice(&a->v, a->dtype, b, hk, nk, d, vd);
    for (int r0 = 0; r0 < nq; r0 += TILE_Q) {
        int r1 = r0 + TILE_Q < nq ? r0 + TILE_Q : nq, rows = r1 - r0;
        for (int i = 0; i < rows; i++) {
            load_row(a->q.data, a->dtype, offset(&a->q, b, r0 + i, h), d, qd + (int64_t)i * d);
            m[i] = -INFINITY;
            l[i] = 0;
        }
        memset(acc, 0, (size_t)rows * d * sizeof *acc);
        for (int kb = 0; kb < p->n_key_blocks; kb++) {
            int cls = fm_tile_classify(&summ[kb], r0, r1);
            if (cls == FM_TILE_SKIPPED)
                continue;
            int c0 = kb * TILE_K, c1 = c0 + TILE_K < nk ? c0 + TILE_K : nk;
            for (int i = 0; i < rows; i++) {
                const double *qi = qd + (int64_t)i * d;
                double mx = -INFINITY;
                for (int j = c0; j < c1; j++) {
                    double s = -INFINITY;
                    if (cls == FM_TILE_UNMASKED || !column_masks(bounds + 4 * (int64_t)j, r0 + i))
                        s = scale * dot(qi, kd + (int64_t)j * d, d);
                    srow[j - c0] = s;
                    mx = s > mx ? s : mx;
                }
                if (mx == -INFINITY) /* nothing visible in this block for this row */
                    continue;
                double *ai = acc + (int64_t)i * d;
                if (mx > m[i]) {
                    /* New running maximum: rescale what was summed so far (nothing, the first time). */
                    if (m[i] != -INFINITY) {
                        double alpha = exp(m[i] - mx);
                        l[i] *= alpha;
                        for (int x = 0; x < d; x++)
                            ai[x] *= alpha;
                    }
                    m[i] = mx;
                }
                for (int j = c0; j < c1; j++) {
                    if (srow[j - c0] == -INFINITY)
                        continue;
                    double pij = exp(srow[j - c0] - m[i]);
                    l[i] += pij;
                    axpy(ai, pij, vd + (int64_t)j * d, d);
                }
            }
        }
        for (int i = 0; i < rows; i++) {
            /* l > 0 whenever a key was visible (the row's maximum contributes exp(0) = 1). */
            double inv = l[i] > 0 ? 1.0 / l[i] : 0.0;
            store_row(a->o.data, a->dtype, offset(&a->o, b, r0 + i, h), d, acc + (int64_t)i * d, inv);
            if (a->lse)
                a->lse[((int64_t)b * a->n_head + h) * nq + r0 + i] = l[i] > 0 ? (float)(m[i] + log(l[i])) : -INFINITY;
        }
    }
}

static void *fwd_worker(void *arg)
{
    plan *p = arg;
    const famask_attn_args *a = p->a;
    size_t d = (size_t)a->head_dim, nk = (size_t)a->seq_len_k;
    double *kd = malloc(nk * d * sizeof *kd), *vd = malloc(nk * d * sizeof *vd);
    double *qd = malloc(TILE_Q * d * sizeof *qd), *acc = malloc(TILE_Q * d * sizeof *acc);
    double *srow = malloc(TILE_K * sizeof *srow);
    if (!kd || !vd || !qd || !acc || !srow) {
        /* Leave the items to threads that did get memory; if none did, run_plan reports it. */
        goto fail;
    }
    for (;;) {
        long long item = atomic_fetch_add(&p->next, 1);
        if (item >= p->n_items)
            break;
        fwd_item(p, (int)(item / a->n_head), (int)(item % a->n_head), kd, vd, qd, acc, srow);
    }
fail:
    free(kd);
    free(vd);
    free(qd);
    free(acc);
    free(srow);
    return NULL;
}

/* Runs a worker; if every thread failed to allocate, nothing ran, and the items left over are counted. */
static famask_status run_plan(famask_ctx *ctx, plan *p, void *(*worker)(void *))
{
    run_workers(p, worker);
    if (atomic_load(&p->next) < p->n_items)
        return fm_error(ctx, FAMASK_STATUS_NO_MEMORY,
                        "out of memory for the cpu attention's buffers (seq_len_k %d, "
                        "head_dim %d)",
                        p->a->seq_len_k, p->a->head_dim);
    return FAMASK_STATUS_OK;
}

famask_status fm_ref_attn_fwd(famask_ctx *ctx, const famask_mask *mask, const famask_attn_args *args)
{
    plan p;
    famask_status st = plan_init(ctx, &p, mask, args, (long long)args->batch * args->n_head);
    if (st)
        goto fail;
    st = run_plan(ctx, &p, fwd_worker);
fail:
    free(p.summaries);
    return st;
}

/* ---- backward ---- */

typedef struct bwd_buf {
    double *kd, *vd, *dkd, *dvd; /* [seq_len_k, head_dim] of one kv head */
    double *qd, *dod, *dqd;      /* [TILE_Q, head_dim] */
    double *orow;                /* [head_dim] */
} bwd_buf;

/* One work item: (batch row, kv head) with every query head of its group, so that dk and dv have one writer. */
static void bwd_item(const plan *p, int b, int hk, const bwd_buf *w)
{
    const famask_attn_args *a = p->a;
    const int d = a->head_dim, nq = a->seq_len_q, nk = a->seq_len_k, group = a->n_head / a->n_head_kv;
    const double scale = a->softmax_scale;
    double lse[TILE_Q], delta[TILE_Q];

    load_slice(&a->k, a->dtype, b, hk, nk, d, w->kd);
    load_slice(&a->v, a->dtype, b, hk, nk, d, w->vd);
    memset(w->dkd, 0, (size_t)nk * d * sizeof *w->dkd);
    memset(w->dvd, 0, (size_t)nk * d * sizeof *w->dvd);
    for (int h = hk * group; h < (hk + 1) * group; h++) {
        const int32_t *bounds = mask_slice(p, b, h);
        const fm_block_summary *summ = summary_slice(p, b, h);
        for (int r0 = 0; r0 < nq; r0 += TILE_Q) {
            int r1 = r0 + TILE_Q < nq ? r0 + TILE_Q : nq, rows = r1 - r0;
            for (int i = 0; i < rows; i++) {
                double *qi = w->qd + (int64_t)i * d, *doi = w->dod + (int64_t)i * d;
                load_row(a->q.data, a->dtype, offset(&a->q, b, r0 + i, h), d, qi);
                load_row(a->d_o.data, a->dtype, offset(&a->d_o, b, r0 + i, h), d, doi);
                load_row(a->o.data, a->dtype, offset(&a->o, b, r0 + i, h), d, w->orow);
                /* D = rowsum(dO * O), from O as stored (in the dtype), as the kernels do. */
                delta[i] = dot(doi, w->orow, d);
                lse[i] = a->lse[((int64_t)b * a->n_head + h) * nq + r0 + i];
            }
            memset(w->dqd, 0, (size_t)rows * d * sizeof *w->dqd);
            for (int kb = 0; kb < p->n_key_blocks; kb++) {
                int cls = fm_tile_classify(&summ[kb], r0, r1);
                if (cls == FM_TILE_SKIPPED)
                    continue;
                int c0 = kb * TILE_K, c1 = c0 + TILE_K < nk ? c0 + TILE_K : nk;
                for (int i = 0; i < rows; i++) {
                    if (lse[i] == -INFINITY) /* no visible key: P = 0, no gradient */
                        continue;
                    const double *qi = w->qd + (int64_t)i * d, *doi = w->dod + (int64_t)i * d;
                    double *dqi = w->dqd + (int64_t)i * d;
                    for (int j = c0; j < c1; j++) {
                        if (cls == FM_TILE_PARTIAL && column_masks(bounds + 4 * (int64_t)j, r0 + i))
                            continue;
                        const double *kj = w->kd + (int64_t)j * d, *vj = w->vd + (int64_t)j * d;
                        double pij = exp(scale * dot(qi, kj, d) - lse[i]);
                        axpy(w->dvd + (int64_t)j * d, pij, doi, d);
                        double ds = pij * (dot(doi, vj, d) - delta[i]) * scale;
                        axpy(dqi, ds, kj, d);
                        axpy(w->dkd + (int64_t)j * d, ds, qi, d);
                    }
                }
            }
            for (int i = 0; i < rows; i++)
                store_row(a->dq.data, a->dtype, offset(&a->dq, b, r0 + i, h), d, w->dqd + (int64_t)i * d, 1.0);
        }
    }
    for (int j = 0; j < nk; j++) {
        store_row(a->dk.data, a->dtype, offset(&a->dk, b, j, hk), d, w->dkd + (int64_t)j * d, 1.0);
        store_row(a->dv.data, a->dtype, offset(&a->dv, b, j, hk), d, w->dvd + (int64_t)j * d, 1.0);
    }
}

static void *bwd_worker(void *arg)
{
    plan *p = arg;
    const famask_attn_args *a = p->a;
    size_t d = (size_t)a->head_dim, nk = (size_t)a->seq_len_k;
    bwd_buf w = {
        .kd = malloc(nk * d * sizeof(double)),
        .vd = malloc(nk * d * sizeof(double)),
        .dkd = malloc(nk * d * sizeof(double)),
        .dvd = malloc(nk * d * sizeof(double)),
        .qd = malloc(TILE_Q * d * sizeof(double)),
        .dod = malloc(TILE_Q * d * sizeof(double)),
        .dqd = malloc(TILE_Q * d * sizeof(double)),
        .orow = malloc(d * sizeof(double)),
    };
    if (!w.kd || !w.vd || !w.dkd || !w.dvd || !w.qd || !w.dod || !w.dqd || !w.orow)
        goto fail; /* as in fwd_worker */
    for (;;) {
        long long item = atomic_fetch_add(&p->next, 1);
        if (item >= p->n_items)
            break;
        bwd_item(p, (int)(item / a->n_head_kv), (int)(item % a->n_head_kv), &w);
    }
fail:
    free(w.kd);
    free(w.vd);
    free(w.dkd);
    free(w.dvd);
    free(w.qd);
    free(w.dod);
    free(w.dqd);
    free(w.orow);
    return NULL;
}

famask_status fm_ref_attn_bwd(famask_ctx *ctx, const famask_mask *mask, const famask_attn_args *args)
{
    plan p;
    famask_status st = plan_init(ctx, &p, mask, args, (long long)args->batch * args->n_head_kv);
    if (st)
        goto fail;
    st = run_plan(ctx, &p, bwd_worker);
fail:
    free(p.summaries);
    return st;
}
