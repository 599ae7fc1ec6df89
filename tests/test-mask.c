/*
 * test-mask.c: the mask object: validation, canonical form, dense form, visible counts, collapse, and the
 * host tile classification against brute force on random masks.
 */
#include "testlib.h"

#include <stdlib.h>
#include <string.h>

/* Random valid vectors for one column: each interval empty, random, or touching the other. */
static void random_column(int32_t v[4], int nq)
{
    for (int x = 0; x < 4; x += 2) {
        int s = tl_rand_int(0, nq), e = tl_rand_int(s, nq);
        if (tl_rand_int(0, 3) == 0)
            e = s;
        v[x] = s;
        v[x + 1] = e;
    }
    if (tl_rand_int(0, 4) == 0) { /* touching intervals must merge */
        v[2] = v[1];
        v[3] = tl_rand_int(v[2], nq);
    }
}

static int raw_masked(const int32_t *v, int i)
{
    return (v[0] <= i && i < v[1]) || (v[2] <= i && i < v[3]);
}

static void test_validation(famask_ctx *ctx)
{
    famask_mask *m = NULL;
    int32_t bad[4 * 3] = {4, 4, 0, 0, 2, 1, 0, 0, 4, 4, 0, 0};
    CHECK(famask_mask_from_vectors(ctx, 1, 1, 4, 3, bad, &m) == FAMASK_STATUS_BAD_MASK && !m,
          "a reversed interval must be rejected");
    CHECK(strstr(famask_ctx_errmsg(ctx), "column 1") != NULL, "message names the column: %s", famask_ctx_errmsg(ctx));
    int32_t big[4] = {0, 5, 0, 0};
    CHECK(famask_mask_from_vectors(ctx, 1, 1, 4, 1, big, &m) == FAMASK_STATUS_BAD_MASK, "end past seq_len_q");
    int32_t neg[4] = {4, 4, -1, 0};
    CHECK(famask_mask_from_vectors(ctx, 1, 1, 4, 1, neg, &m) == FAMASK_STATUS_BAD_MASK, "negative start");
    CHECK(famask_mask_create(ctx, 1, 1, 0, 4, &m) == FAMASK_STATUS_INVALID_ARGUMENT && !m, "seq_len_q 0");
    CHECK(famask_mask_create(ctx, 0, 1, 4, 4, &m) == FAMASK_STATUS_INVALID_ARGUMENT && !m, "batch 0");
}

static void test_canonical(famask_ctx *ctx)
{
    for (int rep = 0; rep < 200; rep++) {
        int nq = tl_rand_int(1, 70), nk = tl_rand_int(1, 70), nb = tl_rand_int(1, 2), nh = tl_rand_int(1, 3);
        int32_t *raw = malloc((size_t)nb * nh * nk * 4 * sizeof *raw);
        for (int c = 0; c < nb * nh * nk; c++)
            random_column(raw + 4 * c, nq);
        famask_mask *m = NULL;
        CHECK_OK(ctx, famask_mask_from_vectors(ctx, nb, nh, nq, nk, raw, &m));
        if (!m) {
            free(raw);
            continue;
        }
        const int32_t *cv = famask_mask_bounds(m);
        int bad_meaning = 0, bad_form = 0;
        for (int b = 0; b < nb; b++)
            for (int h = 0; h < nh; h++)
                for (int j = 0; j < nk; j++) {
                    int64_t c = ((int64_t)b * nh + h) * nk + j;
                    const int32_t *r = raw + 4 * c, *v = cv + 4 * c;
                    for (int i = 0; i < nq; i++)
                        bad_meaning += raw_masked(r, i) != !famask_mask_visible(m, b, h, i, j);
                    int lt_empty = v[0] == v[1], ut_empty = v[2] == v[3];
                    /* empty intervals are written as [nq, nq) and [0, 0) */
                    bad_form += lt_empty && (v[0] != nq);
                    bad_form += ut_empty && (v[2] != 0);
                    /* two runs: UT strictly before LT, with a gap */
                    bad_form += !lt_empty && !ut_empty && !(v[3] < v[0]);
                    /* one run: in UT iff it starts above the diagonal */
                    bad_form += !ut_empty && lt_empty && !(v[2] < j);
                    bad_form += ut_empty && !lt_empty && !(v[0] >= j);
                }
        CHECK(bad_meaning == 0, "canonicalisation changed %d cells (nq %d nk %d)", bad_meaning, nq, nk);
        CHECK(bad_form == 0, "%d columns not in canonical form (nq %d nk %d)", bad_form, nq, nk);
        /* idempotent */
        famask_mask *m2 = NULL;
        CHECK_OK(ctx, famask_mask_from_vectors(ctx, nb, nh, nq, nk, cv, &m2));
        CHECK(m2 && famask_mask_equal(m, m2), "canonical form is not a fixed point");
        /* visible count and dense form agree with the predicate */
        uint8_t *dense = malloc((size_t)nq * nk);
        for (int b = 0; b < nb; b++)
            for (int h = 0; h < nh; h++) {
                CHECK_OK(ctx, famask_mask_to_dense(ctx, m, b, h, dense));
                int64_t count = 0, mism = 0;
                for (int i = 0; i < nq; i++)
                    for (int j = 0; j < nk; j++) {
                        count += dense[(int64_t)i * nk + j];
                        mism += dense[(int64_t)i * nk + j] != famask_mask_visible(m, b, h, i, j);
                    }
                CHECK(mism == 0, "dense form differs from the predicate in %lld cells", (long long)mism);
                CHECK(count == famask_mask_count_visible(m, b, h), "visible count %lld, dense count %lld",
                      (long long)famask_mask_count_visible(m, b, h), (long long)count);
            }
        free(dense);
        famask_mask_free(m2);
        famask_mask_free(m);
        free(raw);
    }
}

static void test_collapse(famask_ctx *ctx)
{
    int nq = 9, nk = 7;
    int32_t raw[2 * 3 * 7 * 4];
    for (int c = 0; c < 7; c++)
        random_column(raw + 4 * c, nq);
    for (int s = 1; s < 6; s++)
        memcpy(raw + s * 28, raw, 28 * sizeof(int32_t));
    famask_mask *m = NULL, *c = NULL;
    CHECK_OK(ctx, famask_mask_from_vectors(ctx, 2, 3, nq, nk, raw, &m));
    CHECK_OK(ctx, famask_mask_collapse(ctx, m, &c));
    CHECK(c && famask_mask_batch(c) == 1 && famask_mask_heads(c) == 1, "identical slices collapse to [1, 1]");
    famask_mask_free(c);
    /* column 0: visible in head 0, fully masked in head 1, in both batch rows: batch rows stay identical */
    for (int b = 0; b < 2; b++) {
        int32_t *h0 = raw + (b * 3 + 0) * 28, *h1 = raw + (b * 3 + 1) * 28;
        h0[0] = h0[1] = nq;
        h0[2] = h0[3] = 0;
        h1[0] = 0;
        h1[1] = nq;
        h1[2] = h1[3] = 0;
    }
    famask_mask_free(m);
    CHECK_OK(ctx, famask_mask_from_vectors(ctx, 2, 3, nq, nk, raw, &m));
    CHECK_OK(ctx, famask_mask_collapse(ctx, m, &c));
    CHECK(c && famask_mask_batch(c) == 1 && famask_mask_heads(c) == 3, "batch collapses, heads stay");
    famask_mask_free(c);
    famask_mask_free(m);
}

static void test_tiles(famask_ctx *ctx)
{
    static const int blocks[][2] = {{1, 1}, {16, 16}, {128, 64}, {64, 128}, {7, 5}, {3, 64}};
    for (int rep = 0; rep < 150; rep++) {
        int nq = tl_rand_int(1, 300), nk = tl_rand_int(1, 300);
        int32_t *raw = malloc((size_t)nk * 4 * sizeof *raw);
        int kind = tl_rand_int(0, 2);
        for (int j = 0; j < nk; j++) {
            if (kind == 0) {
                random_column(raw + 4 * j, nq);
            } else { /* structured: causal-like with a random lower cut, so that tiles of every class occur */
                int cut = tl_rand_int(j < nq ? j : nq, nq);
                int32_t v[4] = {cut, nq, 0, j < nq ? j : nq};
                memcpy(raw + 4 * j, v, sizeof v);
            }
        }
        famask_mask *m = NULL;
        CHECK_OK(ctx, famask_mask_from_vectors(ctx, 1, 1, nq, nk, raw, &m));
        if (!m) {
            free(raw);
            continue;
        }
        const int *bl = blocks[rep % 6];
        int tq = (nq + bl[0] - 1) / bl[0], tk = (nk + bl[1] - 1) / bl[1];
        uint8_t *cls = malloc((size_t)tq * tk);
        famask_tile_counts counts;
        CHECK_OK(ctx, famask_mask_tiles(ctx, m, 0, 0, bl[0], bl[1], cls, &counts));
        int wrong = 0;
        int64_t n[3] = {0, 0, 0};
        for (int qb = 0; qb < tq; qb++)
            for (int kb = 0; kb < tk; kb++) {
                int vis = 0, tot = 0;
                for (int i = qb * bl[0]; i < (qb + 1) * bl[0] && i < nq; i++)
                    for (int j = kb * bl[1]; j < (kb + 1) * bl[1] && j < nk; j++) {
                        vis += famask_mask_visible(m, 0, 0, i, j);
                        tot++;
                    }
                int c = cls[qb * tk + kb];
                n[c]++;
                wrong += (c == FAMASK_TILE_SKIPPED && vis != 0) || (c == FAMASK_TILE_UNMASKED && vis != tot);
                /* with one-element tiles the rule is exact */
                if (bl[0] == 1 && bl[1] == 1)
                    wrong += c == FAMASK_TILE_PARTIAL;
            }
        CHECK(wrong == 0, "%d tiles misclassified (nq %d nk %d block %dx%d)", wrong, nq, nk, bl[0], bl[1]);
        CHECK(n[0] == counts.skipped && n[1] == counts.partial && n[2] == counts.unmasked, "counts disagree");
        free(cls);
        famask_mask_free(m);
        free(raw);
    }
}

int main(void)
{
    tl_seed("test-mask");
    famask_ctx *ctx = NULL;
    famask_ctx_create(&ctx);
    test_validation(ctx);
    test_canonical(ctx);
    test_collapse(ctx);
    test_tiles(ctx);
    famask_ctx_free(ctx);
    return tl_finish();
}
