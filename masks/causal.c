/*
 * causal.c: the `causal` family, visible(i, j) = j <= i, for any seq_len_q x seq_len_k (rows and columns both
 * counted from 0, top-left aligned): column j masks rows [0, j).
 */
#include "families.h"

static void fill(const void *params, int seq_len_q, int seq_len_k, int32_t *bounds)
{
    for (int j = 0; j < seq_len_k; j++)
        fm_col_set(bounds, j, seq_len_q, 0, j, 0, 0);
}

famask_status famask_mask_causal(famask_ctx *ctx, int seq_len_q, int seq_len_k, famask_mask **out)
{
    *out = NULL;
    return fm_family_build(ctx, seq_len_q, seq_len_k, fill, NULL, out);
}

FM_FAMILY_COMPILE(fm_compile_causal)
{
    static const char *const keys[] = {"type", NULL};
    famask_status st = node ? fm_spec_check_keys(cc, node, "causal", keys) : FAMASK_STATUS_OK;
    return st ? st : famask_mask_causal(cc->ctx, seq_len_q, seq_len_k, out);
}
