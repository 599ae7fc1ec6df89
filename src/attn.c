/* attn.c: placeholder until the attention API lands. */
#include "internal.h"

famask_status famask_attn_fwd(famask_ctx *ctx, famask_mask *mask, const famask_attn_args *args)
{
    return fm_error(ctx, FAMASK_STATUS_UNSUPPORTED, "attention is not built yet");
}

famask_status famask_attn_bwd(famask_ctx *ctx, famask_mask *mask, const famask_attn_args *args)
{
    return fm_error(ctx, FAMASK_STATUS_UNSUPPORTED, "attention is not built yet");
}
