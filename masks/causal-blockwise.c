/*
 * causal-blockwise.c: the `causal_blockwise` family: visible(i, j) = j <= i and (i, j in the same block, or i in
 * the last block); the lengths sum to seq_len_q == seq_len_k. Column j of block [s, e), not the last, masks rows
 * [0, j) and [e, start of the last block); a column of the last block masks [0, j).
 */
#include "families.h"

#include <stdlib.h>

typedef struct params {
    const int *lengths;
    int n;
} params;

static void fill(const void *p_, int seq_len_q, int seq_len_k, int32_t *bounds)
{
    const params *p = p_;
    int64_t last = seq_len_k - p->lengths[p->n - 1], s = 0;
    for (int d = 0; d < p->n; d++) {
        int64_t e = s + p->lengths[d];
        for (int64_t j = s; j < e; j++)
            fm_col_set(bounds, j, seq_len_q, 0, j, d == p->n - 1 ? 0 : e, d == p->n - 1 ? 0 : last);
        s = e;
    }
}

famask_status famask_mask_causal_blockwise(famask_ctx *ctx, const int *lengths, int n_blocks, famask_mask **out)
{
    *out = NULL;
    int n = 0;
    famask_status st = fm_lengths_check(ctx, lengths, n_blocks, "blocks", &n);
    if (st)
        return st;
    params p = {lengths, n_blocks};
    return fm_family_build(ctx, n, n, fill, &p, out);
}

FM_FAMILY_COMPILE(fm_compile_causal_blockwise)
{
    static const char *const keys[] = {"type", "blocks", NULL};
    const fm_node *n = NULL;
    int *lengths = NULL, count = 0;
    famask_status st = fm_spec_check_keys(cc, node, "causal_blockwise", keys);
    if (!st)
        st = fm_spec_require(cc, node, "blocks", "causal_blockwise", &n);
    if (!st)
        st = fm_spec_lengths(cc, n, "blocks", seq_len_q, seq_len_k, &lengths, &count);
    if (!st)
        st = famask_mask_causal_blockwise(cc->ctx, lengths, count, out);
    free(lengths);
    return st;
}
