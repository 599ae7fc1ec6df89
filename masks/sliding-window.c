/*
 * sliding-window.c: the `sliding_window` family, visible(i, j) = i - left <= j <= i + right, for any
 * seq_len_q x seq_len_k: column j masks rows [0, j - right) and (j + left, seq_len_q).
 */
#include "families.h"

typedef struct params {
    int left, right;
} params;

static void fill(const void *p_, int seq_len_q, int seq_len_k, int32_t *bounds)
{
    const params *p = p_;
    for (int j = 0; j < seq_len_k; j++)
        fm_col_set(bounds, j, seq_len_q, 0, (int64_t)j - p->right, (int64_t)j + p->left + 1,
                   seq_len_q);
}

famask_status famask_mask_sliding_window(famask_ctx *ctx, int seq_len_q, int seq_len_k, int left, int right,
                                         famask_mask **out)
{
    *out = NULL;
    if (left < 0 || right < 0)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                        "sliding window 'left' (%d) and 'right' (%d) must be non-negative", left, right);
    params p = {left, right};
    return fm_family_build(ctx, seq_len_q, seq_len_k, fill, &p, out);
}

FM_FAMILY_COMPILE(fm_compile_sliding_window)
{
    static const char *const keys[] = {"type", "left", "right", NULL};
    const fm_node *n = NULL;
    int64_t left = 0, right = 0;
    famask_status st = fm_spec_check_keys(cc, node, "sliding_window", keys);
    if (!st)
        st = fm_spec_require(cc, node, "left", "sliding_window", &n);
    if (!st)
        st = fm_spec_int(cc, n, "left", 0, FAMASK_MAX_SEQ_LEN, &left);
    if (!st && (n = fm_spec_get(node, "right")))
        st = fm_spec_int(cc, n, "right", 0, FAMASK_MAX_SEQ_LEN, &right);
    return st ? st : famask_mask_sliding_window(cc->ctx, seq_len_q, seq_len_k, (int)left, (int)right, out);
}
