/*
 * random-eviction.c: the `random_eviction` family (KV-cache eviction): visible(i, j) = j <= i, and i < row for
 * an evicted key j evicted from row `row` (row > j). Any seq_len_q x seq_len_k: column j masks rows [0, j),
 * plus [row, N) when evicted.
 *
 * The seeded form draws, for each key j, two numbers: the outputs 2j and 2j + 1 of the splitmix64 sequence
 * seeded with `seed` (output k is mix(seed + (k + 1) * 0x9E3779B97F4A7C15), mix being splitmix64's finaliser).
 * Key j is evicted when (first >> 11) * 2^-53 < rate; it is then evicted from row lo + second % (N - lo), where
 * lo = max(start_row, j + 1) and N = seq_len_q; when lo >= N the key is kept. Each key's draw depends only on
 * (seed, j), so the same seed gives the same eviction of the keys two sequences share.
 */
#include "families.h"

#include <stdlib.h>

typedef struct params {
    const int *evict;
    int n;
    int seeded;
    uint64_t seed;
    double rate;
    int start_row;
} params;

static uint64_t splitmix64_at(uint64_t seed, uint64_t k)
{
    uint64_t z = seed + (k + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void fill(const void *p_, int seq_len_q, int seq_len_k, int32_t *bounds)
{
    const params *p = p_;
    for (int64_t j = 0; j < seq_len_k; j++) {
        int64_t row = seq_len_q;
        if (p->seeded) {
            uint64_t a = splitmix64_at(p->seed, 2 * (uint64_t)j), b = splitmix64_at(p->seed, 2 * (uint64_t)j + 1);
            int64_t lo = p->start_row > j + 1 ? p->start_row : j + 1;
            if ((double)(a >> 11) * (1.0 / 9007199254740992.0) < p->rate && lo < seq_len_q)
                row = lo + (int64_t)(b % (uint64_t)(seq_len_q - lo));
        }
        fm_col_set(bounds, j, seq_len_q, 0, j, row, seq_len_q);
    }
    for (int k = 0; k < p->n; k++)
        fm_col_set(bounds, p->evict[2 * k], seq_len_q, 0, p->evict[2 * k], p->evict[2 * k + 1],
                   seq_len_q);
}

famask_status famask_mask_random_eviction(famask_ctx *ctx, int seq_len_q, int seq_len_k, const int *evict, int n,
                                          famask_mask **out)
{
    *out = NULL;
    if (n < 0 || (n > 0 && !evict))
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "bad eviction list");
    famask_status st = fm_check_shape(ctx, 1, 1, seq_len_q, seq_len_k);
    if (st)
        return st;
    uint8_t *seen = fm_calloc(ctx, (size_t)seq_len_k, 1);
    if (!seen)
        return FAMASK_STATUS_NO_MEMORY;
    for (int k = 0; k < n && !st; k++) {
        int key = evict[2 * k], row = evict[2 * k + 1];
        if (key < 0 || key >= seq_len_k || row <= key || row > seq_len_q)
            st = fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                          "eviction %d: (key %d, row %d) needs 0 <= key < seq_len_k (%d) and key < row <= "
                          "seq_len_q (%d)",
                          k, key, row, seq_len_k, seq_len_q);
        else if (seen[key]++)
            st = fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "eviction %d: key %d is evicted twice", k, key);
    }
    params p = {evict, n, 0, 0, 0.0, 0};
    if (!st)
        st = fm_family_build(ctx, seq_len_q, seq_len_k, fill, &p, out);
    free(seen);
    return st;
}

famask_status famask_mask_random_eviction_seeded(famask_ctx *ctx, int seq_len_q, int seq_len_k, uint64_t seed,
                                                 double rate, int start_row, famask_mask **out)
{
    *out = NULL;
    if (!(rate >= 0.0 && rate <= 1.0) || start_row < 0)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                        "'rate' (%g) must be within 0..1 and 'start_row' (%d) non-negative", rate, start_row);
    params p = {NULL, 0, 1, seed, rate, start_row};
    return fm_family_build(ctx, seq_len_q, seq_len_k, fill, &p, out);
}

FM_FAMILY_COMPILE(fm_compile_random_eviction)
{
    static const char *const keys[] = {"type", "evict", "seed", "rate", "start_row", NULL};
    const fm_node *list = fm_spec_get(node, "evict"), *n = NULL;
    int *evict = NULL;
    uint8_t *seen = NULL;
    famask_status st = fm_spec_check_keys(cc, node, "random_eviction", keys);
    if (st)
        return st;
    if (!list) {
        int64_t seed = 0, start_row = 0;
        double rate = 0;
        if (!st && (n = fm_spec_get(node, "seed")))
            st = fm_spec_int(cc, n, "seed", 0, INT64_MAX, &seed);
        if (!st)
            st = fm_spec_require(cc, node, "rate", "random_eviction (give 'evict', or 'rate' and 'seed')", &n);
        if (!st)
            st = fm_spec_double(cc, n, "rate", 0.0, 1.0, &rate);
        if (!st && (n = fm_spec_get(node, "start_row")))
            st = fm_spec_int(cc, n, "start_row", 0, FAMASK_MAX_SEQ_LEN, &start_row);
        return st ? st
                  : famask_mask_random_eviction_seeded(cc->ctx, seq_len_q, seq_len_k, (uint64_t)seed, rate,
                                                       (int)start_row, out);
    }
    static const char *const seeded[] = {"seed", "rate", "start_row", NULL};
    for (int k = 0; seeded[k]; k++)
        if (fm_spec_get(node, seeded[k]))
            return fm_spec_error(cc, fm_spec_key(node, seeded[k]), FAMASK_STATUS_BAD_SPEC,
                                 "'%s' belongs to the seeded form: give either 'evict' or 'seed'/'rate'/'start_row'",
                                 seeded[k]);
    st = fm_spec_expect(cc, list, FM_NODE_SEQ, "'evict'");
    if (st)
        return st;
    evict = fm_malloc(cc->ctx, (size_t)(list->n ? list->n : 1) * 2 * sizeof(int));
    seen = fm_calloc(cc->ctx, (size_t)seq_len_k, 1);
    if (!evict || !seen) {
        st = FAMASK_STATUS_NO_MEMORY;
        goto fail;
    }
    for (int k = 0; k < list->n && !st; k++) {
        const fm_node *item = list->kids[k];
        int64_t key = 0, row = 0;
        if (item->kind != FM_NODE_SEQ || item->n != 2) {
            st = fm_spec_error(cc, item, FAMASK_STATUS_BAD_SPEC, "an eviction must be a pair [key, row]");
            break;
        }
        st = fm_spec_int(cc, item->kids[0], "evicted key", 0, (int64_t)seq_len_k - 1, &key);
        if (!st && key + 1 > seq_len_q)
            st = fm_spec_error(cc, item->kids[0], FAMASK_STATUS_BAD_SPEC,
                               "key %lld has no row after it to be evicted from (seqlen_q is %d)", (long long)key,
                               seq_len_q);
        if (!st)
            st = fm_spec_int(cc, item->kids[1], "eviction row (must be after the key)", key + 1, seq_len_q, &row);
        if (!st && seen[key]++)
            st = fm_spec_error(cc, item, FAMASK_STATUS_BAD_SPEC, "key %lld is evicted twice", (long long)key);
        evict[2 * k] = (int)key;
        evict[2 * k + 1] = (int)row;
    }
    if (!st)
        st = famask_mask_random_eviction(cc->ctx, seq_len_q, seq_len_k, evict, list->n, out);
fail:
    free(evict);
    free(seen);
    return st;
}
