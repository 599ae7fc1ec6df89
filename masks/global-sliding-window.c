/*
 * global-sliding-window.c: the `global_sliding_window` family (Longformer/BigBird style): visible(i, j) =
 * j < global or i < global or i - left <= j <= i + right; with causal, additionally j <= i. Any
 * seq_len_q x seq_len_k. Non-causal: a column j >= global masks rows [global, j - right) and
 * [max(global, j + left + 1), N). Causal: column j masks [0, j), and [j + left + 1, N) when j >= global.
 */
#include "families.h"

typedef struct params {
    int global, left, right, causal;
} params;

static void fill(const void *p_, int seq_len_q, int seq_len_k, int32_t *bounds)
{
    const params *p = p_;
    for (int64_t j = 0; j < seq_len_k; j++) {
        int64_t after = j + p->left + 1;
        if (p->causal)
            fm_col_set(bounds, j, seq_len_q, 0, j, j < p->global ? 0 : after, j < p->global ? 0 : seq_len_q);
        else if (j < p->global)
            fm_col_set(bounds, j, seq_len_q, 0, 0, 0, 0);
        else
            fm_col_set(bounds, j, seq_len_q, p->global, j - p->right, after > p->global ? after : p->global, seq_len_q);
    }
}

famask_status famask_mask_global_sliding_window(famask_ctx *ctx, int seq_len_q, int seq_len_k, int global,
                                                int left, int right, int causal, famask_mask **out)
{
    *out = NULL;
    if (global < 0 || left < 0 || right < 0)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                        "'global' (%d), 'left' (%d) and 'right' (%d) must be non-negative", global, left, right);
    params p = {global, left, right, causal != 0};
    return fm_family_build(ctx, seq_len_q, seq_len_k, fill, &p, out);
}

FM_FAMILY_COMPILE(fm_compile_global_sliding_window)
{
    static const char *const keys[] = {"type", "global", "left", "right", "causal", NULL};
    const fm_node *n = NULL;
    int64_t global = 0, left = 0, right = 0;
    int causal = 0;
    famask_status st = fm_spec_check_keys(cc, node, "global_sliding_window", keys);
    if (!st)
        st = fm_spec_require(cc, node, "global", "global_sliding_window", &n);
    if (!st)
        st = fm_spec_int(cc, n, "global", 0, FAMASK_MAX_SEQ_LEN, &global);
    if (!st)
        st = fm_spec_require(cc, node, "left", "global_sliding_window", &n);
    if (!st)
        st = fm_spec_int(cc, n, "left", 0, FAMASK_MAX_SEQ_LEN, &left);
    if (!st && (n = fm_spec_get(node, "right")))
        st = fm_spec_int(cc, n, "right", 0, FAMASK_MAX_SEQ_LEN, &right);
    if (!st && (n = fm_spec_get(node, "causal")))
        st = fm_spec_bool(cc, n, "causal", &causal);
    return st ? st
              : famask_mask_global_sliding_window(cc->ctx, seq_len_q, seq_len_k, (int)global, (int)left, (int)right,
                                                  causal, out);
}
