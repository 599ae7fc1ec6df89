/*
 * ref-attn.h: the CPU reference attention (src/ref-attn.c), called by the dispatch in src/attn.c once the
 * arguments are validated. Shapes and the mask-head rule are those of famask.h's famask_attn_args.
 */
#ifndef FM_REF_ATTN_H
#define FM_REF_ATTN_H

#include "famask.h"

/* args validated by src/attn.c; softmax_scale already resolved (never 0). */
famask_status fm_ref_attn_fwd(famask_ctx *ctx, const famask_mask *mask, const famask_attn_args *args);
famask_status fm_ref_attn_bwd(famask_ctx *ctx, const famask_mask *mask, const famask_attn_args *args);

/* The mask batch row and head a (batch row, query head) reads: the broadcast rule of famask.h. */
static inline int fm_attn_mask_batch(const famask_mask *mask, int b)
{
    return famask_mask_batch(mask) == 1 ? 0 : b;
}

static inline int fm_attn_mask_head(const famask_mask *mask, int n_head, int n_head_kv, int h)
{
    int heads_m = famask_mask_heads(mask);
    if (heads_m == n_head)
        return h;
    if (heads_m == n_head_kv)
        return h / (n_head / n_head_kv);
    return 0;
}

#endif /* FM_REF_ATTN_H */
