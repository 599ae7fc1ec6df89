/*
 * cast.c: famask_cast, element-wise conversion between the float dtypes (F64, F32, F16, BF16), so that callers
 * (the CLI among them) can prepare bf16 / fp16 tensors without a half-precision type of their own.
 */
#include "internal.h"

#include "half.h"

static int is_float(famask_dtype t)
{
    return t == FAMASK_DTYPE_F64 || t == FAMASK_DTYPE_F32 || t == FAMASK_DTYPE_F16 || t == FAMASK_DTYPE_BF16;
}

static double load(famask_dtype t, const void *p, size_t i)
{
    switch (t) {
    case FAMASK_DTYPE_F64:
        return ((const double *)p)[i];
    case FAMASK_DTYPE_F32:
        return ((const float *)p)[i];
    case FAMASK_DTYPE_F16:
        return fm_f16_to_f32(((const uint16_t *)p)[i]);
    default:
        return fm_bf16_to_f32(((const uint16_t *)p)[i]);
    }
}

static void store(famask_dtype t, void *p, size_t i, double v)
{
    switch (t) {
    case FAMASK_DTYPE_F64:
        ((double *)p)[i] = v;
        break;
    case FAMASK_DTYPE_F32:
        ((float *)p)[i] = (float)v;
        break;
    case FAMASK_DTYPE_F16:
        ((uint16_t *)p)[i] = fm_f64_to_f16(v);
        break;
    default:
        ((uint16_t *)p)[i] = fm_f64_to_bf16(v);
        break;
    }
}

famask_status famask_cast(famask_ctx *ctx, void *dst, famask_dtype dst_dtype, const void *src, famask_dtype src_dtype,
                          size_t n)
{
    if (!is_float(dst_dtype) || !is_float(src_dtype))
        return fm_error(ctx, FAMASK_STATUS_UNSUPPORTED, "cast from %s to %s: only f64, f32, f16 and bf16 convert",
                        famask_dtype_name(src_dtype), famask_dtype_name(dst_dtype));
    if (n && (!dst || !src))
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "cast of %zu elements with a NULL buffer", n);
    for (size_t i = 0; i < n; i++)
        store(dst_dtype, dst, i, load(src_dtype, src, i));
    return FAMASK_STATUS_OK;
}
