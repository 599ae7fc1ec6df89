/*
 * test-key-order.c: the key order of src/key-order.c (the permutation of key columns that the CUDA attention
 * runs in where it skips more tiles), on the CPU.
 *
 * On random masks of several slices (random intervals, causal with random eviction rows, fully masked
 * columns), for the sort and reverse modes: each slice's order is a permutation; the sorted mask's column j is
 * the mask's column perm[j], vector for vector; the sort's columns come by (end of visible rows, first visible
 * row, index), measured by brute force over famask_mask_visible; the live-tile counts (64 rows x 128 keys) equal
 * a brute-force count over famask_mask_tiles of both masks. Then the auto mode's choice on the families: random
 * eviction is reordered (and loses at least a fifth of its tiles), causal, sliding window and documents are not;
 * off makes nothing. The public famask_mask_sort_keys against the same, and its promise, on the CPU attention
 * (f32, float64 sums): forward and backward with k, v permuted by perm and the sorted mask give the original's
 * o, lse, dq and the permuted dk, dv (up to the order of the sums: 1e-5 relative).
 */
#define _POSIX_C_SOURCE 200809L
#include "testlib.h"

#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* First visible row and one past the last of column j of slice (b, h), by brute force; {0, 0} if none. */
static void span(const famask_mask *m, int b, int h, int j, int *start, int *end)
{
    int nq = famask_mask_seq_len_q(m), s = -1, e = 0;
    for (int i = 0; i < nq; i++)
        if (famask_mask_visible(m, b, h, i, j)) {
            if (s < 0)
                s = i;
            e = i + 1;
        }
    *start = s < 0 ? 0 : s;
    *end = s < 0 ? 0 : e;
}

static int64_t live_tiles(famask_ctx *ctx, const famask_mask *m, int b, int h)
{
    famask_tile_counts c;
    CHECK_OK(ctx, famask_mask_tiles(ctx, m, b, h, 64, 128, NULL, &c));
    return c.partial + c.unmasked;
}

static void random_mask(int nq, int nk, int n_slices, int32_t *raw)
{
    for (int64_t c = 0; c < (int64_t)n_slices * nk; c++) {
        int j = (int)(c % nk), kind = tl_rand_int(0, 9);
        int32_t *v = raw + 4 * c;
        if (kind < 4) { /* causal, evicted from a random row on */
            int diag = j < nq ? j : nq;
            v[0] = tl_rand_int(diag, nq), v[1] = nq, v[2] = 0, v[3] = diag;
        } else if (kind == 4) { /* fully masked */
            v[0] = 0, v[1] = nq, v[2] = 0, v[3] = 0;
        } else {
            for (int x = 0; x < 2; x++) {
                int a = tl_rand_int(0, nq), e = tl_rand_int(a, nq);
                v[2 * x] = a, v[2 * x + 1] = e;
            }
        }
    }
}

static void test_random(famask_ctx *ctx)
{
    for (int rep = 0; rep < 60; rep++) {
        const int nq = tl_rand_int(1, 700), nk = tl_rand_int(1, 700);
        const int bm = tl_rand_int(1, 2), hm = tl_rand_int(1, 3),
                  mode = rep % 2 ? FM_KEY_ORDER_REVERSE : FM_KEY_ORDER_SORT;
        int32_t *raw = malloc((size_t)bm * hm * nk * 4 * sizeof *raw);
        famask_mask *m = NULL;
        random_mask(nq, nk, bm * hm, raw);
        CHECK_OK(ctx, famask_mask_from_vectors(ctx, bm, hm, nq, nk, raw, &m));
        free(raw);
        if (!m)
            continue;
        fm_key_order ko;
        CHECK_OK(ctx, fm_key_order_make(ctx, m, mode, &ko));
        int64_t before = 0, after = 0;
        int bad_perm = 0, bad_cols = 0, bad_order = 0, bad_count = 0;
        int *seen = calloc((size_t)nk, sizeof *seen);
        for (int b = 0; b < bm; b++)
            for (int h = 0; h < hm; h++) {
                const int64_t sl = (int64_t)b * hm + h;
                const int32_t *p = ko.perm ? ko.perm + sl * nk : NULL;
                before += live_tiles(ctx, m, b, h);
                if (!ko.sorted) {
                    after += live_tiles(ctx, m, b, h);
                    continue;
                }
                after += live_tiles(ctx, ko.sorted, b, h);
                memset(seen, 0, (size_t)nk * sizeof *seen);
                int prev_s = -1, prev_e = -1;
                for (int j = 0; j < nk; j++) {
                    if (p[j] < 0 || p[j] >= nk || seen[p[j]]++) {
                        bad_perm++;
                        continue;
                    }
                    bad_cols += memcmp(ko.sorted->bounds + (sl * nk + j) * 4, m->bounds + (sl * nk + p[j]) * 4,
                                       4 * sizeof(int32_t)) != 0;
                    if (mode == FM_KEY_ORDER_REVERSE) {
                        bad_order += p[j] != nk - 1 - j;
                        continue;
                    }
                    int s, e;
                    span(m, b, h, p[j], &s, &e);
                    if (j > 0 && (e < prev_e || (e == prev_e && (s < prev_s || (s == prev_s && p[j] < p[j - 1])))))
                        bad_order++;
                    prev_s = s, prev_e = e;
                }
                bad_count +=
                    fm_key_order_live_tiles(m->bounds + sl * nk * 4, nq, nk, p) != live_tiles(ctx, ko.sorted, b, h);
            }
        CHECK(bad_perm == 0 && bad_cols == 0 && bad_order == 0 && bad_count == 0,
              "mode %d nq %d nk %d slices %dx%d: %d bad permutation entries, %d columns moved wrong, %d out of "
              "order, %d slices with wrong tile counts",
              mode, nq, nk, bm, hm, bad_perm, bad_cols, bad_order, bad_count);
        CHECK(ko.tiles_before == before && ko.tiles_after == after,
              "mode %d nq %d nk %d: live tiles %lld -> %lld, brute force %lld -> %lld", mode, nq, nk,
              (long long)ko.tiles_before, (long long)ko.tiles_after, (long long)before, (long long)after);
        /* the reverse of more than one column always moves something */
        CHECK(mode != FM_KEY_ORDER_REVERSE || (nk > 1) == (ko.sorted != NULL), "reverse of %d columns: sorted %p", nk,
              (void *)ko.sorted);
        free(seen);
        fm_key_order_free(&ko);
        famask_mask_free(m);
    }
}

static void expect_auto(famask_ctx *ctx, const char *what, famask_mask *m, int reordered)
{
    fm_key_order ko;
    if (!m) {
        CHECK(0, "%s: no mask", what);
        return;
    }
    CHECK_OK(ctx, fm_key_order_make(ctx, m, FM_KEY_ORDER_AUTO, &ko));
    CHECK((ko.sorted != NULL) == reordered, "%s: auto %s the keys (live tiles %lld -> %lld)", what,
          ko.sorted ? "reorders" : "keeps", (long long)ko.tiles_before, (long long)ko.tiles_after);
    if (reordered)
        CHECK(ko.tiles_after * 5 <= ko.tiles_before * 4, "%s: live tiles %lld -> %lld", what,
              (long long)ko.tiles_before, (long long)ko.tiles_after);
    printf("%-28s auto: %s, live tiles %lld -> %lld\n", what, ko.sorted ? "reordered" : "kept",
           (long long)ko.tiles_before, (long long)ko.tiles_after);
    fm_key_order_free(&ko);
    fm_key_order off;
    CHECK_OK(ctx, fm_key_order_make(ctx, m, FM_KEY_ORDER_OFF, &off));
    CHECK(!off.sorted && !off.perm && off.tiles_before == 0, "%s: off made an order", what);
    famask_mask_free(m);
}

static void test_auto(famask_ctx *ctx)
{
    famask_mask *m = NULL;
    const int docs[] = {1000, 3000, 96, 2000, 1096};
    /* keys evicted soon after they appear (as by a KV cache policy): half of them, each at a row in
     * (j, j + 512], the benchmark's model */
    int *pairs = malloc(2 * 8192 * sizeof *pairs), n = 0;
    for (int j = 0; j < 8191; j++)
        if (tl_rand_int(0, 1)) {
            int r = j + 1 + tl_rand_int(0, 511);
            pairs[2 * n] = j, pairs[2 * n + 1] = r < 8192 ? r : 8192, n++;
        }
    CHECK_OK(ctx, famask_mask_random_eviction(ctx, 8192, 8192, pairs, n, &m));
    expect_auto(ctx, "random eviction 8192 (soon)", m, 1);
    free(pairs);
    /* evicted at a row uniform in (j, seq_len_q): sorting by the end spreads each block's first rows, and would
     * cost tiles */
    CHECK_OK(ctx, famask_mask_random_eviction_seeded(ctx, 8192, 8192, 7, 0.5, 0, &m));
    expect_auto(ctx, "random eviction 8192 (late)", m, 0);
    CHECK_OK(ctx, famask_mask_causal(ctx, 8192, 8192, &m));
    expect_auto(ctx, "causal 8192", m, 0);
    CHECK_OK(ctx, famask_mask_sliding_window(ctx, 8192, 8192, 1023, 0, &m));
    expect_auto(ctx, "sliding window 8192", m, 0);
    CHECK_OK(ctx, famask_mask_causal_document(ctx, docs, 5, &m));
    expect_auto(ctx, "causal document 7192", m, 0);
    CHECK_OK(ctx, famask_mask_document(ctx, docs, 5, &m));
    expect_auto(ctx, "document 7192", m, 0);
    /* a short one: the sort saves too little to pay for the copies */
    int few[] = {3, 9, 40, 41, 100, 120, 200, 210};
    CHECK_OK(ctx, famask_mask_random_eviction(ctx, 256, 256, few, 4, &m));
    expect_auto(ctx, "random eviction 256", m, 0);
}

/* [1, n, h, d] f32 tensors, contiguous */
static famask_tensor tensor(float *data, int h, int d)
{
    famask_tensor t;
    t.data = data;
    t.stride_head = d;
    t.stride_seq = (int64_t)h * d;
    t.stride_batch = 0;
    return t;
}

static double worst(const float *a, const float *b, int64_t n)
{
    double w = 0, scale = 1e-30;
    for (int64_t i = 0; i < n; i++)
        scale = fabs(b[i]) > scale ? fabs(b[i]) : scale;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]) / scale;
        if (!(e <= w)) /* NaN too */
            w = e;
    }
    return w;
}

static void test_public(famask_ctx *ctx)
{
    famask_mask *out = NULL;
    CHECK(famask_mask_sort_keys(ctx, NULL, NULL, NULL, &out) == FAMASK_STATUS_INVALID_ARGUMENT && !out,
          "NULL mask accepted");
    for (int rep = 0; rep < 12; rep++) {
        const int nk = tl_rand_int(1, 300), h = 2, hkv = 1 + rep % 2, d = 32;
        const int nq = rep == 5 ? tl_rand_int(nk, 300) : tl_rand_int(1, 300); /* rep 5: causal with no fully masked
                                                                                  column, already in order */
        const int hm = rep % 3 == 0 ? 1 : hkv; /* one mask, or one per key head (what a permutation of k allows) */
        int32_t *raw = malloc((size_t)hm * nk * 4 * sizeof *raw), *perm = malloc((size_t)hm * nk * sizeof *perm);
        famask_mask *m = NULL, *sorted = NULL;
        random_mask(nq, nk, hm, raw);
        if (rep == 5) /* causal: already in order */
            for (int64_t c = 0; c < (int64_t)hm * nk; c++) {
                const int j = (int)(c % nk);
                raw[4 * c] = nq, raw[4 * c + 1] = nq, raw[4 * c + 2] = 0, raw[4 * c + 3] = j < nq ? j : nq;
            }
        CHECK_OK(ctx, famask_mask_from_vectors(ctx, 1, hm, nq, nk, raw, &m));
        free(raw);
        famask_key_order_info info;
        fm_key_order ko, au;
        CHECK_OK(ctx, famask_mask_sort_keys(ctx, m, perm, &info, &sorted));
        CHECK_OK(ctx, fm_key_order_make(ctx, m, FM_KEY_ORDER_SORT, &ko));
        CHECK_OK(ctx, fm_key_order_make(ctx, m, FM_KEY_ORDER_AUTO, &au));
        if (!m || !sorted) {
            CHECK(0, "setup");
            goto next;
        }
        CHECK(info.live_tiles == ko.tiles_before && info.live_tiles_sorted == ko.tiles_after &&
                  info.cuda_sorts == (au.sorted != NULL),
              "info %lld -> %lld cuda %d, against %lld -> %lld, %d", (long long)info.live_tiles,
              (long long)info.live_tiles_sorted, info.cuda_sorts, (long long)ko.tiles_before, (long long)ko.tiles_after,
              au.sorted != NULL);
        CHECK(famask_mask_equal(sorted, ko.sorted ? ko.sorted : m), "sorted mask differs (rep %d)", rep);
        {
            int bad = 0;
            for (int64_t i = 0; i < (int64_t)hm * nk; i++)
                bad += perm[i] != (ko.perm ? ko.perm[i] : (int32_t)(i % nk));
            CHECK(bad == 0, "%d permutation entries differ", bad);
        }
        CHECK(rep != 5 || (!ko.sorted && info.live_tiles == info.live_tiles_sorted), "causal was reordered");
        {
            /* the promise, on the CPU attention: q, d_o as they are; k, v (and dk, dv) through perm */
            const int64_t nq_el = (int64_t)nq * h * d, nk_el = (int64_t)nk * hkv * d;
            float *buf = malloc(sizeof(float) * (size_t)(4 * nq_el + 6 * nk_el + 2 * nq_el + 2 * (int64_t)h * nq)),
                  *q = buf, *d_o = q + nq_el, *k = d_o + nq_el, *v = k + nk_el, *kp = v + nk_el, *vp = kp + nk_el,
                  *o[2], *dq[2], *dk[2], *dv[2], *lse[2];
            float *at = vp + nk_el;
            for (int x = 0; x < 2; x++) {
                o[x] = at, at += nq_el;
                dq[x] = at, at += nq_el;
                lse[x] = at, at += (int64_t)h * nq;
            }
            float *dkv = malloc(sizeof(float) * (size_t)(4 * nk_el));
            dk[0] = dkv, dv[0] = dkv + nk_el, dk[1] = dkv + 2 * nk_el, dv[1] = dkv + 3 * nk_el;
            for (int64_t i = 0; i < nq_el; i++)
                q[i] = (float)tl_rand_normal(), d_o[i] = (float)tl_rand_normal();
            for (int64_t i = 0; i < nk_el; i++)
                k[i] = (float)tl_rand_normal(), v[i] = (float)tl_rand_normal();
            /* row (j, g) of kp is row (perm[j], g) of k, perm of the slice that key head g reads */
            for (int j = 0; j < nk; j++)
                for (int g = 0; g < hkv; g++) {
                    const int pj = perm[(int64_t)(hm == 1 ? 0 : g) * nk + j];
                    memcpy(kp + ((int64_t)j * hkv + g) * d, k + ((int64_t)pj * hkv + g) * d, sizeof(float) * d);
                    memcpy(vp + ((int64_t)j * hkv + g) * d, v + ((int64_t)pj * hkv + g) * d, sizeof(float) * d);
                }
            for (int x = 0; x < 2; x++) {
                famask_attn_args a;
                memset(&a, 0, sizeof a);
                a.batch = 1, a.n_head = h, a.n_head_kv = hkv, a.seq_len_q = nq, a.seq_len_k = nk, a.head_dim = d;
                a.dtype = FAMASK_DTYPE_F32;
                a.device = FAMASK_DEVICE_CPU;
                a.q = tensor(q, h, d), a.d_o = tensor(d_o, h, d);
                a.k = tensor(x ? kp : k, hkv, d), a.v = tensor(x ? vp : v, hkv, d);
                a.o = tensor(o[x], h, d), a.dq = tensor(dq[x], h, d);
                a.dk = tensor(dk[x], hkv, d), a.dv = tensor(dv[x], hkv, d);
                a.lse = lse[x];
                CHECK_OK(ctx, famask_attn_fwd(ctx, x ? sorted : m, &a));
                CHECK_OK(ctx, famask_attn_bwd(ctx, x ? sorted : m, &a));
            }
            /* dk, dv of the sorted run back to the original rows */
            for (int j = 0; j < nk; j++)
                for (int g = 0; g < hkv; g++) {
                    const int pj = perm[(int64_t)(hm == 1 ? 0 : g) * nk + j];
                    memcpy(kp + ((int64_t)pj * hkv + g) * d, dk[1] + ((int64_t)j * hkv + g) * d, sizeof(float) * d);
                    memcpy(vp + ((int64_t)pj * hkv + g) * d, dv[1] + ((int64_t)j * hkv + g) * d, sizeof(float) * d);
                }
            int lse_bad = 0;
            for (int64_t i = 0; i < (int64_t)h * nq; i++)
                lse_bad += !(lse[0][i] == lse[1][i] || fabs((double)lse[0][i] - lse[1][i]) <= 1e-5 * fabs(lse[0][i]));
            const double eo = worst(o[1], o[0], nq_el), eq = worst(dq[1], dq[0], nq_el), ek = worst(kp, dk[0], nk_el),
                         ev = worst(vp, dv[0], nk_el);
            CHECK(eo <= 1e-5 && eq <= 1e-5 && ek <= 1e-5 && ev <= 1e-5 && lse_bad == 0,
                  "sorted keys change attention (nq %d nk %d h %d hkv %d heads_m %d): o %.1e dq %.1e dk %.1e dv "
                  "%.1e, %d lse differ",
                  nq, nk, h, hkv, hm, eo, eq, ek, ev, lse_bad);
            free(buf);
            free(dkv);
        }
    next:
        fm_key_order_free(&ko);
        fm_key_order_free(&au);
        famask_mask_free(sorted);
        famask_mask_free(m);
        free(perm);
    }
}

int main(void)
{
    tl_seed("test-key-order");
    famask_ctx *ctx = NULL;
    famask_ctx_create(&ctx);
    test_random(ctx);
    test_auto(ctx);
    test_public(ctx);
    famask_ctx_free(ctx);
    return tl_finish();
}
