/*
 * key-order.c: a reordering of the key columns of a mask that lets tile skipping skip more.
 *
 * Attention does not depend on the order of the keys: permuting the rows of k and v and the columns of the mask
 * together gives the same o and lse, and dk, dv permuted the same way. Tile skipping, though, sees key blocks of
 * 128 adjacent columns, and a block is live for a query tile as soon as one of its columns is. Under KV eviction
 * (a causal mask in which some keys stop being visible from a row on) every block holds some key that is never
 * evicted, so every causal tile stays live and about half of the computed pairs are masked.
 *
 * The order here sorts the columns of each (b, h) slice of the mask [batch_m, heads_m, seq_len_k, 4] by the end
 * of their visible rows (one past the last visible row), then by its start (the first visible row), then by
 * index (two stable counting sorts; fully masked columns go first). Columns that stop being visible at about the
 * same row then share blocks, and each block's live rows shrink to about the span of its columns: the random
 * eviction benchmark's 8K mask drops from 4160 live tiles of 64 rows x 128 keys to 2520. Masks whose columns
 * already come in that order (causal, sliding window, documents) are left alone at O(seq_len_k) cost.
 *
 * The measure is the count of live tiles of 64 query rows x 128 keys (the Hopper backward's main kernel) over
 * every slice, one O(1) count per key block. FM_KEY_ORDER_AUTO keeps the sorted order only where it removes at
 * least a fifth of the live tiles and at least 4 tiles per key block on average (below that, the copies of k and
 * v into the new order cost about what they save).
 */
#include "internal.h"

#include "../kernels/tile-rule.h"

#include <stdlib.h>
#include <string.h>

#define TILE_Q 64
#define BLOCK_K 128

/* One past the last visible row, and the first visible row, of a column; {0, 0} for a fully masked one. */
static void visible_span(const int32_t v[4], int seq_len_q, int32_t *end, int32_t *start)
{
    int32_t runs[4];
    int n = fm_runs_merge(v, 2, runs);
    int32_t s = 0, e = seq_len_q;
    for (int r = 0; r < n; r++) /* sorted runs: those touching the start push it on */
        if (runs[2 * r] <= s && runs[2 * r + 1] > s)
            s = runs[2 * r + 1];
    for (int r = n - 1; r >= 0; r--)
        if (runs[2 * r + 1] >= e && runs[2 * r] < e)
            e = runs[2 * r];
    if (s >= e)
        s = e = 0;
    *end = e;
    *start = s;
}

/* Stable counting sort of idx[0..n) by key[idx[.]] in [0, range]; tmp and count are scratch (n, range + 2). */
static void counting_sort(int32_t *idx, int32_t *tmp, int n, const int32_t *key, int range, int32_t *count)
{
    memset(count, 0, (size_t)(range + 2) * sizeof *count);
    for (int i = 0; i < n; i++)
        count[key[idx[i]] + 1]++;
    for (int k = 0; k <= range; k++)
        count[k + 1] += count[k];
    for (int i = 0; i < n; i++)
        tmp[count[key[idx[i]]]++] = idx[i];
    memcpy(idx, tmp, (size_t)n * sizeof *idx);
}

/* Query tiles of TILE_Q rows that fm_tile_classify skips for one interval slot of a summary: a run of tiles
 * [*lo, *hi) (r0 >= smax and r1 <= emin, with r1 clipped to seq_len_q). */
static void skipped_run(int32_t smax, int32_t emin, int seq_len_q, int n_tiles, int *lo, int *hi)
{
    *lo = smax <= 0 ? 0 : (smax + TILE_Q - 1) / TILE_Q;
    *hi = emin >= seq_len_q ? n_tiles : emin / TILE_Q; /* tile t ends at 64 (t + 1) <= emin */
    if (*lo > n_tiles)
        *lo = n_tiles;
    if (*hi < *lo)
        *hi = *lo;
}

int64_t fm_key_order_live_tiles(const int32_t *bounds, int seq_len_q, int seq_len_k, const int32_t *perm)
{
    const int n_tiles = (seq_len_q + TILE_Q - 1) / TILE_Q;
    int64_t live = 0;
    for (int c0 = 0; c0 < seq_len_k; c0 += BLOCK_K) {
        const int c1 = c0 + BLOCK_K < seq_len_k ? c0 + BLOCK_K : seq_len_k;
        fm_block_summary s;
        if (perm) {
            int32_t cols[BLOCK_K * 4];
            for (int c = c0; c < c1; c++)
                memcpy(cols + 4 * (c - c0), bounds + 4 * (int64_t)perm[c], 4 * sizeof(int32_t));
            fm_block_summarise(cols, 0, c1 - c0, &s);
        } else {
            fm_block_summarise(bounds, c0, c1, &s);
        }
        int lo0, hi0, lo1, hi1;
        skipped_run(s.smax[0], s.emin[0], seq_len_q, n_tiles, &lo0, &hi0);
        skipped_run(s.smax[1], s.emin[1], seq_len_q, n_tiles, &lo1, &hi1);
        int skipped = (hi0 - lo0) + (hi1 - lo1);
        const int a = lo0 > lo1 ? lo0 : lo1, b = hi0 < hi1 ? hi0 : hi1;
        if (b > a)
            skipped -= b - a; /* the overlap of the two runs */
        live += n_tiles - skipped;
    }
    return live;
}

/* The sorted (or, for FM_KEY_ORDER_REVERSE, reversed) order of one slice's columns into perm; 1 if it differs
 * from the identity. key, tmp, count: scratch of seq_len_k, seq_len_k and seq_len_q + 2. */
static int slice_order(const int32_t *bounds, int seq_len_q, int seq_len_k, int mode, int32_t *perm, int32_t *key,
                       int32_t *tmp, int32_t *count)
{
    int sorted = 1;
    if (mode == FM_KEY_ORDER_REVERSE) {
        for (int j = 0; j < seq_len_k; j++)
            perm[j] = seq_len_k - 1 - j;
        return seq_len_k > 1;
    }
    int32_t prev_end = -1, prev_start = -1;
    for (int j = 0; j < seq_len_k; j++) {
        int32_t e, s;
        visible_span(bounds + 4 * (int64_t)j, seq_len_q, &e, &s);
        if (e < prev_end || (e == prev_end && s < prev_start))
            sorted = 0;
        prev_end = e, prev_start = s;
        perm[j] = j;
    }
    if (sorted)
        return 0;
    /* least significant key first: by start, then stably by end */
    for (int j = 0; j < seq_len_k; j++) {
        int32_t e;
        visible_span(bounds + 4 * (int64_t)j, seq_len_q, &e, &key[j]);
    }
    counting_sort(perm, tmp, seq_len_k, key, seq_len_q, count);
    for (int j = 0; j < seq_len_k; j++) {
        int32_t s;
        visible_span(bounds + 4 * (int64_t)j, seq_len_q, &key[j], &s);
    }
    counting_sort(perm, tmp, seq_len_k, key, seq_len_q, count);
    return 1;
}

famask_status fm_key_order_make(famask_ctx *ctx, const famask_mask *m, int mode, fm_key_order *out)
{
    famask_status st = FAMASK_STATUS_OK;
    const int nq = m->seq_len_q, nk = m->seq_len_k;
    const int64_t n_slices = (int64_t)m->batch_m * m->heads_m;
    int32_t *perm = NULL, *key = NULL, *tmp = NULL, *count = NULL;
    int moved = 0;

    memset(out, 0, sizeof *out);
    if (mode == FM_KEY_ORDER_OFF)
        return FAMASK_STATUS_OK;
    perm = (int32_t *)fm_malloc(ctx, (size_t)n_slices * nk * sizeof *perm);
    key = (int32_t *)fm_malloc(ctx, (size_t)nk * sizeof *key);
    tmp = (int32_t *)fm_malloc(ctx, (size_t)nk * sizeof *tmp);
    count = (int32_t *)fm_malloc(ctx, ((size_t)nq + 2) * sizeof *count);
    if (!perm || !key || !tmp || !count) {
        st = FAMASK_STATUS_NO_MEMORY;
        goto fail;
    }
    for (int64_t sl = 0; sl < n_slices; sl++) {
        const int32_t *bounds = m->bounds + sl * nk * 4;
        int32_t *p = perm + sl * nk;
        const int64_t before = fm_key_order_live_tiles(bounds, nq, nk, NULL);
        out->tiles_before += before;
        if (slice_order(bounds, nq, nk, mode, p, key, tmp, count)) {
            moved = 1;
            out->tiles_after += fm_key_order_live_tiles(bounds, nq, nk, p);
        } else {
            out->tiles_after += before;
        }
    }
    if (mode == FM_KEY_ORDER_AUTO) {
        const int64_t blocks = n_slices * ((nk + BLOCK_K - 1) / BLOCK_K);
        const int64_t saved = out->tiles_before - out->tiles_after;
        if (saved * 5 < out->tiles_before || saved < 4 * blocks)
            moved = 0;
    }
    if (!moved)
        goto fail; /* not an error: the mask keeps its order */
    if ((st = fm_mask_alloc(ctx, m->batch_m, m->heads_m, nq, nk, &out->sorted)) != FAMASK_STATUS_OK)
        goto fail;
    /* the columns move as they are (not canonicalised again for their new index: the kernels read each column's
     * two intervals as sets of rows, whichever slot holds them) */
    for (int64_t sl = 0; sl < n_slices; sl++)
        for (int j = 0; j < nk; j++)
            memcpy(out->sorted->bounds + (sl * nk + j) * 4, m->bounds + (sl * nk + perm[sl * nk + j]) * 4,
                   4 * sizeof(int32_t));
    out->perm = perm;
    perm = NULL;
fail:
    free(perm);
    free(key);
    free(tmp);
    free(count);
    return st;
}

void fm_key_order_free(fm_key_order *k)
{
    if (!k)
        return;
    famask_mask_free(k->sorted);
    free(k->perm);
    memset(k, 0, sizeof *k);
}

famask_status famask_mask_sort_keys(famask_ctx *ctx, const famask_mask *mask, int32_t *perm,
                                    famask_key_order_info *info, famask_mask **out)
{
    famask_status st;
    fm_key_order sorted, chosen;
    *out = NULL;
    if (!mask)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'mask' is NULL");
    if ((st = fm_key_order_make(ctx, mask, FM_KEY_ORDER_SORT, &sorted)) != FAMASK_STATUS_OK)
        return st;
    if (info) {
        if ((st = fm_key_order_make(ctx, mask, FM_KEY_ORDER_AUTO, &chosen)) != FAMASK_STATUS_OK)
            goto fail;
        info->live_tiles = sorted.tiles_before;
        info->live_tiles_sorted = sorted.tiles_after;
        info->cuda_sorts = chosen.sorted != NULL;
        fm_key_order_free(&chosen);
    }
    const int64_t n = (int64_t)mask->batch_m * mask->heads_m * mask->seq_len_k;
    if (!sorted.sorted) { /* already in order */
        if ((st = famask_mask_clone(ctx, mask, out)) != FAMASK_STATUS_OK)
            goto fail;
        for (int64_t i = 0; perm && i < n; i++)
            perm[i] = (int32_t)(i % mask->seq_len_k);
    } else {
        *out = sorted.sorted;
        sorted.sorted = NULL;
        if (perm)
            memcpy(perm, sorted.perm, (size_t)n * sizeof *perm);
    }
fail:
    fm_key_order_free(&sorted);
    return st;
}
