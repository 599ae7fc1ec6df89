/*
 * causal-document.c: the `causal_document` family (packed sequences): visible(i, j) = i and j in the same
 * document and j <= i; the lengths sum to seq_len_q == seq_len_k. Column j of document [s, e) masks rows
 * [0, j) and [e, N).
 */
#include "families.h"

static void col(int32_t *bounds, int64_t j, int seq_len_q, int64_t s, int64_t e, int64_t last_start)
{
    fm_col_set(bounds, j, seq_len_q, 0, j, e, seq_len_q);
}

famask_status famask_mask_causal_document(famask_ctx *ctx, const int *lengths, int n, famask_mask **out)
{
    return fm_segments_build(ctx, lengths, n, "documents", col, out);
}

FM_FAMILY_COMPILE(fm_compile_causal_document)
{
    return fm_segments_compile(cc, node, "causal_document", "documents", seq_len_q, seq_len_k,
                               famask_mask_causal_document, out);
}
