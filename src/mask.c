/*
 * mask.c: the mask object [batch_m, heads_m, seq_len_k, 4]: creation, validation, canonicalisation,
 * accessors, the dense form, collapse of identical batch rows and heads, and host tile classification.
 */
#include "internal.h"

#include "../kernels/tile-rule.h"

#include <stdlib.h>
#include <string.h>

famask_status fm_check_shape(famask_ctx *ctx, int batch_m, int heads_m, int seq_len_q, int seq_len_k)
{
    if (batch_m < 1 || heads_m < 1)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "mask batch (%d) and heads (%d) must be at least 1",
                        batch_m, heads_m);
    if (seq_len_q < 1 || seq_len_k < 1)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                        "seq_len_q (%d) and seq_len_k (%d) must be at least 1", seq_len_q, seq_len_k);
    if (seq_len_q > FAMASK_MAX_SEQ_LEN || seq_len_k > FAMASK_MAX_SEQ_LEN)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "sequence lengths must not exceed %d",
                        FAMASK_MAX_SEQ_LEN);
    if ((int64_t)batch_m * heads_m * seq_len_k > ((int64_t)1 << 34))
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "mask of %d x %d x %d columns is too large", batch_m,
                        heads_m, seq_len_k);
    return FAMASK_STATUS_OK;
}

famask_status fm_mask_alloc(famask_ctx *ctx, int batch_m, int heads_m, int seq_len_q, int seq_len_k,
                            famask_mask **out)
{
    *out = NULL;
    famask_status st = fm_check_shape(ctx, batch_m, heads_m, seq_len_q, seq_len_k);
    if (st)
        return st;
    famask_mask *m = fm_calloc(ctx, 1, sizeof *m);
    if (!m)
        return FAMASK_STATUS_NO_MEMORY;
    int64_t cols = (int64_t)batch_m * heads_m * seq_len_k;
    m->bounds = fm_malloc(ctx, (size_t)cols * 4 * sizeof(int32_t));
    if (!m->bounds) {
        free(m);
        return FAMASK_STATUS_NO_MEMORY;
    }
    m->batch_m = batch_m;
    m->heads_m = heads_m;
    m->seq_len_q = seq_len_q;
    m->seq_len_k = seq_len_k;
    for (int64_t c = 0; c < cols; c++) {
        int32_t *v = m->bounds + 4 * c;
        v[FAMASK_LTS] = v[FAMASK_LTE] = seq_len_q;
        v[FAMASK_UTS] = v[FAMASK_UTE] = 0;
    }
    *out = m;
    return FAMASK_STATUS_OK;
}

famask_status famask_mask_create(famask_ctx *ctx, int batch_m, int heads_m, int seq_len_q, int seq_len_k,
                                 famask_mask **out)
{
    return fm_mask_alloc(ctx, batch_m, heads_m, seq_len_q, seq_len_k, out);
}

int fm_runs_merge(const int32_t *intervals, int n_in, int32_t *runs)
{
    /* Insertion sort of the non-empty intervals by start (n_in is tiny), then a merging sweep. */
    int32_t tmp[16];
    int n = 0;
    for (int k = 0; k < n_in && n < 8; k++) {
        int32_t s = intervals[2 * k], e = intervals[2 * k + 1];
        if (s >= e)
            continue;
        int p = n++;
        while (p > 0 && tmp[2 * (p - 1)] > s) {
            tmp[2 * p] = tmp[2 * (p - 1)];
            tmp[2 * p + 1] = tmp[2 * (p - 1) + 1];
            p--;
        }
        tmp[2 * p] = s;
        tmp[2 * p + 1] = e;
    }
    int k = 0;
    for (int a = 0; a < n; a++) {
        if (k > 0 && tmp[2 * a] <= runs[2 * (k - 1) + 1]) {
            if (tmp[2 * a + 1] > runs[2 * (k - 1) + 1])
                runs[2 * (k - 1) + 1] = tmp[2 * a + 1];
        } else {
            runs[2 * k] = tmp[2 * a];
            runs[2 * k + 1] = tmp[2 * a + 1];
            k++;
        }
    }
    return k;
}

void fm_column_canonicalise(int32_t v[4], int seq_len_q, int j)
{
    int32_t runs[4];
    int n = fm_runs_merge(v, 2, runs);
    v[FAMASK_LTS] = v[FAMASK_LTE] = seq_len_q;
    v[FAMASK_UTS] = v[FAMASK_UTE] = 0;
    if (n == 2) {
        v[FAMASK_UTS] = runs[0];
        v[FAMASK_UTE] = runs[1];
        v[FAMASK_LTS] = runs[2];
        v[FAMASK_LTE] = runs[3];
    } else if (n == 1 && runs[0] < j) {
        v[FAMASK_UTS] = runs[0];
        v[FAMASK_UTE] = runs[1];
    } else if (n == 1) {
        v[FAMASK_LTS] = runs[0];
        v[FAMASK_LTE] = runs[1];
    }
}

famask_status famask_mask_from_vectors(famask_ctx *ctx, int batch_m, int heads_m, int seq_len_q, int seq_len_k,
                                       const int32_t *bounds, famask_mask **out)
{
    *out = NULL;
    if (!bounds)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "mask vectors are NULL");
    famask_mask *m = NULL;
    famask_status st = fm_mask_alloc(ctx, batch_m, heads_m, seq_len_q, seq_len_k, &m);
    if (st)
        return st;
    static const char *names[4] = {"LTS", "LTE", "UTS", "UTE"};
    for (int b = 0; b < batch_m; b++)
        for (int h = 0; h < heads_m; h++)
            for (int j = 0; j < seq_len_k; j++) {
                int64_t c = ((int64_t)b * heads_m + h) * seq_len_k + j;
                const int32_t *src = bounds + 4 * c;
                for (int x = 0; x < 4; x += 2) {
                    int32_t s = src[x], e = src[x + 1];
                    if (s < 0 || e < s || e > seq_len_q) {
                        famask_mask_free(m);
                        return fm_error(ctx, FAMASK_STATUS_BAD_MASK,
                                        "batch %d head %d column %d: interval %s..%s = [%d, %d) is not within "
                                        "0 <= start <= end <= seq_len_q (%d)",
                                        b, h, j, names[x], names[x + 1], s, e, seq_len_q);
                    }
                }
                int32_t *v = m->bounds + 4 * c;
                memcpy(v, src, 4 * sizeof *v);
                fm_column_canonicalise(v, seq_len_q, j);
            }
    *out = m;
    return FAMASK_STATUS_OK;
}

famask_status famask_mask_clone(famask_ctx *ctx, const famask_mask *mask, famask_mask **out)
{
    famask_status st = fm_mask_alloc(ctx, mask->batch_m, mask->heads_m, mask->seq_len_q, mask->seq_len_k, out);
    if (st)
        return st;
    memcpy((*out)->bounds, mask->bounds,
           (size_t)mask->batch_m * mask->heads_m * mask->seq_len_k * 4 * sizeof(int32_t));
    return FAMASK_STATUS_OK;
}

void fm_mask_drop_device(famask_mask *m)
{
    if (m->dev && m->dev_free)
        m->dev_free(m->dev);
    m->dev = NULL;
    m->dev_free = NULL;
}

void famask_mask_free(famask_mask *mask)
{
    if (!mask)
        return;
    fm_mask_drop_device(mask);
    free(mask->bounds);
    free(mask);
}

int famask_mask_batch(const famask_mask *mask) { return mask->batch_m; }
int famask_mask_heads(const famask_mask *mask) { return mask->heads_m; }
int famask_mask_seq_len_q(const famask_mask *mask) { return mask->seq_len_q; }
int famask_mask_seq_len_k(const famask_mask *mask) { return mask->seq_len_k; }
const int32_t *famask_mask_bounds(const famask_mask *mask) { return mask->bounds; }

int famask_mask_visible(const famask_mask *mask, int b, int h, int i, int j)
{
    const int32_t *v = fm_mask_column(mask, b, h, j);
    return !((v[FAMASK_LTS] <= i && i < v[FAMASK_LTE]) || (v[FAMASK_UTS] <= i && i < v[FAMASK_UTE]));
}

int64_t famask_mask_count_visible(const famask_mask *mask, int b, int h)
{
    /* Canonical intervals are disjoint, so the masked count of a column is the sum of the two lengths. */
    int64_t masked = 0;
    for (int j = 0; j < mask->seq_len_k; j++) {
        const int32_t *v = fm_mask_column(mask, b, h, j);
        masked += (v[FAMASK_LTE] - v[FAMASK_LTS]) + (v[FAMASK_UTE] - v[FAMASK_UTS]);
    }
    return (int64_t)mask->seq_len_q * mask->seq_len_k - masked;
}

int famask_mask_equal(const famask_mask *a, const famask_mask *b)
{
    if (a->batch_m != b->batch_m || a->heads_m != b->heads_m || a->seq_len_q != b->seq_len_q ||
        a->seq_len_k != b->seq_len_k)
        return 0;
    size_t n = (size_t)a->batch_m * a->heads_m * a->seq_len_k * 4;
    return memcmp(a->bounds, b->bounds, n * sizeof(int32_t)) == 0;
}

static famask_status check_bh(famask_ctx *ctx, const famask_mask *mask, int b, int h)
{
    if (b < 0 || b >= mask->batch_m || h < 0 || h >= mask->heads_m)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                        "batch %d head %d is outside the mask's [%d, %d] batch rows and heads", b, h, mask->batch_m,
                        mask->heads_m);
    return FAMASK_STATUS_OK;
}

famask_status famask_mask_to_dense(famask_ctx *ctx, const famask_mask *mask, int b, int h, uint8_t *out)
{
    famask_status st = check_bh(ctx, mask, b, h);
    if (st)
        return st;
    int nq = mask->seq_len_q, nk = mask->seq_len_k;
    memset(out, 1, (size_t)nq * nk);
    for (int j = 0; j < nk; j++) {
        const int32_t *v = fm_mask_column(mask, b, h, j);
        for (int x = 0; x < 4; x += 2)
            for (int i = v[x]; i < v[x + 1]; i++)
                out[(int64_t)i * nk + j] = 0;
    }
    return FAMASK_STATUS_OK;
}

static int slice_equal(const famask_mask *m, int b0, int h0, int b1, int h1)
{
    return memcmp(fm_mask_column(m, b0, h0, 0), fm_mask_column(m, b1, h1, 0),
                  (size_t)m->seq_len_k * 4 * sizeof(int32_t)) == 0;
}

famask_status famask_mask_collapse(famask_ctx *ctx, const famask_mask *mask, famask_mask **out)
{
    *out = NULL;
    int same_b = 1, same_h = 1;
    for (int b = 1; b < mask->batch_m && same_b; b++)
        for (int h = 0; h < mask->heads_m && same_b; h++)
            same_b = slice_equal(mask, 0, h, b, h);
    for (int b = 0; b < mask->batch_m && same_h; b++)
        for (int h = 1; h < mask->heads_m && same_h; h++)
            same_h = slice_equal(mask, b, 0, b, h);
    int nb = same_b ? 1 : mask->batch_m, nh = same_h ? 1 : mask->heads_m;
    famask_mask *m = NULL;
    famask_status st = fm_mask_alloc(ctx, nb, nh, mask->seq_len_q, mask->seq_len_k, &m);
    if (st)
        return st;
    for (int b = 0; b < nb; b++)
        for (int h = 0; h < nh; h++)
            memcpy(fm_mask_column(m, b, h, 0), fm_mask_column(mask, b, h, 0),
                   (size_t)mask->seq_len_k * 4 * sizeof(int32_t));
    *out = m;
    return FAMASK_STATUS_OK;
}

famask_status famask_mask_tiles(famask_ctx *ctx, const famask_mask *mask, int b, int h, int block_q, int block_k,
                                uint8_t *classes, famask_tile_counts *counts)
{
    famask_status st = check_bh(ctx, mask, b, h);
    if (st)
        return st;
    if (block_q < 1 || block_k < 1)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "block size %dx%d must be positive", block_q, block_k);
    int nq = mask->seq_len_q, nk = mask->seq_len_k;
    int tq = (nq + block_q - 1) / block_q, tk = (nk + block_k - 1) / block_k;
    famask_tile_counts c = {0, 0, 0};
    const int32_t *bounds = fm_mask_column(mask, b, h, 0);
    for (int kb = 0; kb < tk; kb++) {
        fm_block_summary s;
        int c0 = kb * block_k, c1 = c0 + block_k < nk ? c0 + block_k : nk;
        fm_block_summarise(bounds, c0, c1, &s);
        for (int qb = 0; qb < tq; qb++) {
            int r0 = qb * block_q, r1 = r0 + block_q < nq ? r0 + block_q : nq;
            int cls = fm_tile_classify(&s, r0, r1);
            if (classes)
                classes[(int64_t)qb * tk + kb] = (uint8_t)cls;
            c.skipped += cls == FM_TILE_SKIPPED;
            c.partial += cls == FM_TILE_PARTIAL;
            c.unmasked += cls == FM_TILE_UNMASKED;
        }
    }
    if (counts)
        *counts = c;
    return FAMASK_STATUS_OK;
}
