/*
 * prefix-lm-causal.c: the `prefix_lm_causal` family: visible(i, j) = j < prefix or j <= i, for any
 * seq_len_q x seq_len_k: a prefix column is visible to every row, any other column j masks rows [0, j).
 */
#include "families.h"

static void fill(const void *p_, int seq_len_q, int seq_len_k, int32_t *bounds)
{
    int prefix = *(const int *)p_;
    for (int j = 0; j < seq_len_k; j++)
        fm_col_set(bounds, j, seq_len_q, 0, j < prefix ? 0 : j, 0, 0);
}

famask_status famask_mask_prefix_lm_causal(famask_ctx *ctx, int seq_len_q, int seq_len_k, int prefix,
                                           famask_mask **out)
{
    *out = NULL;
    if (prefix < 0)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'prefix' is %d, but must be non-negative", prefix);
    return fm_family_build(ctx, seq_len_q, seq_len_k, fill, &prefix, out);
}

FM_FAMILY_COMPILE(fm_compile_prefix_lm_causal)
{
    static const char *const keys[] = {"type", "prefix", NULL};
    const fm_node *n = NULL;
    int64_t prefix = 0;
    famask_status st = fm_spec_check_keys(cc, node, "prefix_lm_causal", keys);
    if (!st)
        st = fm_spec_require(cc, node, "prefix", "prefix_lm_causal", &n);
    if (!st)
        st = fm_spec_int(cc, n, "prefix", 0, seq_len_k, &prefix);
    return st ? st : famask_mask_prefix_lm_causal(cc->ctx, seq_len_q, seq_len_k, (int)prefix, out);
}
