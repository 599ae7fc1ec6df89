/* io-mask.c: placeholder until the mask readers and writers land. */
#include "internal.h"

famask_status famask_mask_save(famask_ctx *ctx, const famask_mask *mask, const char *path, famask_format format)
{
    return fm_error(ctx, FAMASK_STATUS_UNSUPPORTED, "mask files are not built yet");
}

famask_status famask_mask_load(famask_ctx *ctx, const char *path, int seq_len_q, famask_mask **out)
{
    *out = NULL;
    return fm_error(ctx, FAMASK_STATUS_UNSUPPORTED, "mask files are not built yet");
}
