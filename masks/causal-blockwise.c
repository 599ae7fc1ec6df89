/*
 * causal-blockwise.c: the `causal_blockwise` family: visible(i, j) = j <= i and (i, j in the same block, or i in
 * the last block); the lengths sum to seq_len_q == seq_len_k. Column j of block [s, e), not the last, masks rows
 * [0, j) and [e, start of the last block); a column of the last block masks [0, j).
 */
#include "families.h"

static void col(int32_t *bounds, int64_t j, int seq_len_q, int64_t s, int64_t e, int64_t last_start)
{
    int in_last = s == last_start;
    fm_col_set(bounds, j, seq_len_q, 0, j, in_last ? 0 : e, in_last ? 0 : last_start);
}

famask_status famask_mask_causal_blockwise(famask_ctx *ctx, const int *lengths, int n, famask_mask **out)
{
    return fm_segments_build(ctx, lengths, n, "blocks", col, out);
}

FM_FAMILY_COMPILE(fm_compile_causal_blockwise)
{
    return fm_segments_compile(cc, node, "causal_blockwise", "blocks", seq_len_q, seq_len_k,
                               famask_mask_causal_blockwise, out);
}
