/* spec.c: placeholder until the spec compiler lands. */
#include "internal.h"

famask_status famask_mask_compile_file(famask_ctx *ctx, const char *path, int seq_len, famask_mask **out)
{
    *out = NULL;
    return fm_error(ctx, FAMASK_STATUS_UNSUPPORTED, "spec compilation is not built yet");
}

famask_status famask_mask_compile_string(famask_ctx *ctx, const char *yaml, size_t len, const char *name,
                                         int seq_len, famask_mask **out)
{
    *out = NULL;
    return fm_error(ctx, FAMASK_STATUS_UNSUPPORTED, "spec compilation is not built yet");
}
