/*
 * cmd-attn.c: `famask attn`: attention forward (and backward with --do) on .npy tensors under a mask.
 *
 * Tensors are 4-D .npy arrays: q, o, d_o, dq [B, Nq, H, D] and k, v, dk, dv [B, Nk, H_kv, D] in the default
 * layout bnhd, or [B, H, Nq, D] / [B, H_kv, Nk, D] with --layout bhnd; lse [B, H, Nq] float32. All of q, k, v
 * (and d_o) share one dtype, which is the compute dtype and the outputs' dtype: float32, float16, or bf16 stored as
 * '<u2' (numpy has no bf16) with --bf16. Uses the public API only.
 */
#include "cli.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char cmd_attn_usage[] =
    "usage: famask attn --mask MASK --q Q.npy --k K.npy --v V.npy -o O.npy [--lse L.npy]\n"
    "                   [--do DO.npy --dq DQ.npy --dk DK.npy --dv DV.npy] [--scale S] [--layout bnhd|bhnd]\n"
    "                   [--device cpu|cuda|cuda-unfused] [-n N] [--bf16]\n"
    "\n"
    "Runs attention under a mask: o = softmax(scale * q k^T + mask) v, and with --do the backward (dq, dk, dv).\n"
    "\n"
    "  --mask MASK     a spec (.yaml) or a compiled mask (.fmask, .npy); its batch must be 1 or B, its heads 1,\n"
    "                  H_kv or H, its lengths Nq and Nk\n"
    "  -n N            sequence length of a spec mask (overrides its seqlen; specs only)\n"
    "  --q, --k, --v   input tensors, 4-D .npy: float32, float16, or bf16 bits in '<u2' with --bf16;\n"
    "                  q [B, Nq, H, D], k and v [B, Nk, H_kv, D] (layout bnhd)\n"
    "  -o O.npy        the output, shaped and typed like q (bf16 is written as '<u2')\n"
    "  --lse L.npy     also write the log-sum-exp of each row, float32 [B, H, Nq] (natural log; -inf for a row\n"
    "                  with no visible key)\n"
    "  --do DO.npy     the gradient of the output (like q): runs the backward and writes --dq (like q) and\n"
    "                  --dk, --dv (like k); all four go together\n"
    "  --scale S       softmax scale (default 1/sqrt(D))\n"
    "  --layout L      bnhd (default: [B, N, H, D], FlashAttention's) or bhnd ([B, H, N, D], PyTorch's)\n"
    "  --device D      cpu (default: float64 accumulation), cuda (the fused kernels) or cuda-unfused (cuBLAS,\n"
    "                  forward only)\n"
    "  --bf16          the '<u2' inputs hold bf16 bits (numpy has no bf16 dtype)\n"
    "\n"
    "Supported: head dims 32, 64, 96, 128, 256; H a multiple of H_kv; float32 on the cpu only.\n"
    "Each output file is written whole or not at all; nothing is written when the attention fails.\n";

typedef struct opts {
    const char *mask, *q, *k, *v, *o, *lse, *d_o, *dq, *dk, *dv;
    float scale;
    int bhnd, bf16, seq_len;
    famask_device device;
} opts;

static int parse_args(int argc, char **argv, opts *op)
{
    memset(op, 0, sizeof *op);
    op->device = FAMASK_DEVICE_CPU;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--bf16") == 0) {
            op->bf16 = 1;
            continue;
        }
        static const char *const valued[] = {"--mask",  "--q",      "--k",      "--v",  "-o",
                                             "--lse",   "--do",     "--dq",     "--dk", "--dv",
                                             "--scale", "--layout", "--device", "-n",   NULL};
        int known = 0;
        for (int k = 0; valued[k]; k++)
            known |= strcmp(a, valued[k]) == 0;
        if (!known)
            return cli_usage("attn", a[0] == '-' ? "unknown option '%s'" : "unexpected argument '%s'", a);
        if (i + 1 >= argc)
            return cli_usage("attn", "option '%s' needs a value", a);
        const char *val = argv[++i];
        if (strcmp(a, "--mask") == 0)
            op->mask = val;
        else if (strcmp(a, "--q") == 0)
            op->q = val;
        else if (strcmp(a, "--k") == 0)
            op->k = val;
        else if (strcmp(a, "--v") == 0)
            op->v = val;
        else if (strcmp(a, "-o") == 0)
            op->o = val;
        else if (strcmp(a, "--lse") == 0)
            op->lse = val;
        else if (strcmp(a, "--do") == 0)
            op->d_o = val;
        else if (strcmp(a, "--dq") == 0)
            op->dq = val;
        else if (strcmp(a, "--dk") == 0)
            op->dk = val;
        else if (strcmp(a, "--dv") == 0)
            op->dv = val;
        else if (strcmp(a, "--scale") == 0) {
            char *end = NULL;
            double s = strtod(val, &end);
            if (!*val || *end || !isfinite(s) || !isfinite((float)s))
                return cli_usage("attn", "--scale '%s' is not a finite number", val);
            op->scale = (float)s;
            if (op->scale == 0.0f && s != 0.0)
                return cli_usage("attn", "--scale '%s' underflows float32", val);
            if (s == 0.0)
                return cli_usage("attn", "--scale 0 is not a scale (leave --scale out for 1/sqrt(D))");
        } else if (strcmp(a, "--layout") == 0) {
            if (strcmp(val, "bnhd") == 0)
                op->bhnd = 0;
            else if (strcmp(val, "bhnd") == 0)
                op->bhnd = 1;
            else
                return cli_usage("attn", "--layout '%s' is not bnhd or bhnd", val);
        } else if (strcmp(a, "--device") == 0) {
            if (strcmp(val, "cpu") == 0)
                op->device = FAMASK_DEVICE_CPU;
            else if (strcmp(val, "cuda") == 0)
                op->device = FAMASK_DEVICE_CUDA;
            else if (strcmp(val, "cuda-unfused") == 0)
                op->device = FAMASK_DEVICE_CUDA_UNFUSED;
            else
                return cli_usage("attn", "--device '%s' is not cpu, cuda or cuda-unfused", val);
        } else if (cli_parse_int(val, &op->seq_len) || op->seq_len < 1) {
            return cli_usage("attn", "-n '%s' is not a positive integer", val);
        }
    }
    if (!op->mask || !op->q || !op->k || !op->v || !op->o)
        return cli_usage("attn", "--mask, --q, --k, --v and -o are required");
    if (cli_check_seq_len("attn", op->mask, op->seq_len))
        return EXIT_USAGE;
    int nb = !!op->d_o + !!op->dq + !!op->dk + !!op->dv;
    if (nb != 0 && nb != 4)
        return cli_usage("attn", "--do, --dq, --dk and --dv go together (the backward needs all four)");
    return EXIT_OK;
}

/* Prints "famask: <message>" and returns the exit code of status (the CLI's own data errors). */
static int fail_msg(famask_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static int fail_msg(famask_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("famask: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return cli_exit_code(status);
}

/* Checks one loaded tensor: 4-D, the compute dtype; fills its strides for the layout. */
static int bind_tensor(const char *path, const famask_array *arr, const opts *op, famask_dtype dtype, famask_tensor *t)
{
    if (arr->ndim != 4)
        return fail_msg(FAMASK_STATUS_BAD_DATA, "'%s': a %d-D array; attention tensors are 4-D (%s)", path, arr->ndim,
                        op->bhnd ? "[B, H, N, D] for --layout bhnd" : "[B, N, H, D]");
    if (arr->dtype != dtype)
        return fail_msg(FAMASK_STATUS_BAD_DATA, "'%s' is %s but '%s' is %s; the tensors share one dtype", path,
                        famask_dtype_name(arr->dtype), op->q, famask_dtype_name(dtype));
    const int64_t *s = arr->shape;
    t->data = arr->data;
    if (op->bhnd) { /* [B, H, N, D] */
        t->stride_seq = s[3];
        t->stride_head = s[2] * s[3];
        t->stride_batch = s[1] * s[2] * s[3];
    } else { /* [B, N, H, D] */
        t->stride_head = s[3];
        t->stride_seq = s[2] * s[3];
        t->stride_batch = s[1] * s[2] * s[3];
    }
    return EXIT_OK;
}

static size_t array_bytes(const famask_array *arr)
{
    size_t n = famask_dtype_size(arr->dtype);
    for (int d = 0; d < arr->ndim; d++)
        n *= (size_t)arr->shape[d];
    return n;
}

/* Runs on a CUDA device: copies the inputs (the first four arrays; NULL ones are absent) to device memory,
 * points the tensors and lse there, runs, and copies the outputs (the last four) and lse back. */
static famask_status run_on_device(famask_ctx *ctx, famask_mask *mask, famask_attn_args *a, int backward,
                                   famask_array *const arrays[8], famask_tensor *const tensors[8], famask_array *lse)
{
    void *dev[9] = {NULL};
    famask_status st = famask_mask_upload(ctx, mask, NULL);
    for (int t = 0; t < 8 && !st; t++) {
        if (!arrays[t])
            continue;
        if (!(st = famask_device_alloc(ctx, array_bytes(arrays[t]), &dev[t])) && t < 4)
            st = famask_device_upload(ctx, dev[t], arrays[t]->data, array_bytes(arrays[t]));
        tensors[t]->data = dev[t];
    }
    if (!st && !(st = famask_device_alloc(ctx, array_bytes(lse), &dev[8])))
        a->lse = dev[8];
    if (!st)
        st = famask_attn_fwd(ctx, mask, a);
    if (!st && backward)
        st = famask_attn_bwd(ctx, mask, a);
    for (int t = 4; t < 8 && !st; t++)
        if (arrays[t])
            st = famask_device_download(ctx, arrays[t]->data, dev[t], array_bytes(arrays[t]));
    if (!st)
        st = famask_device_download(ctx, lse->data, dev[8], array_bytes(lse));
    for (int t = 0; t < 9; t++)
        famask_device_free(dev[t]);
    return st;
}

int cmd_attn(int argc, char **argv)
{
    opts op;
    int rc = parse_args(argc, argv, &op);
    if (rc)
        return rc;
    famask_ctx *ctx = NULL;
    famask_mask *mask = NULL;
    famask_array *q = NULL, *k = NULL, *v = NULL, *d_o = NULL, *o = NULL, *lse = NULL, *dq = NULL, *dk = NULL,
                 *dv = NULL;
    famask_status st = famask_ctx_create(&ctx);
    if (st) {
        cli_error("out of memory");
        return EXIT_INTERNAL;
    }
    const int backward = op.d_o != NULL;
    famask_attn_args a;
    memset(&a, 0, sizeof a);

    /* ---- inputs ---- */
    if ((st = famask_npy_load(ctx, op.q, &q)) || (st = famask_npy_load(ctx, op.k, &k)) ||
        (st = famask_npy_load(ctx, op.v, &v)) || (backward && (st = famask_npy_load(ctx, op.d_o, &d_o))))
        goto lib_fail;
    famask_dtype dtype = q->dtype;
    if (dtype == FAMASK_DTYPE_BF16 && !op.bf16) {
        rc = fail_msg(FAMASK_STATUS_BAD_DATA, "'%s' is a uint16 array; if it holds bf16 bits, pass --bf16", op.q);
        goto done;
    }
    if (dtype != FAMASK_DTYPE_BF16 && op.bf16) {
        rc = fail_msg(FAMASK_STATUS_BAD_DATA, "--bf16 was given but '%s' is %s, not '<u2' bf16 bits", op.q,
                      famask_dtype_name(dtype));
        goto done;
    }
    if (dtype != FAMASK_DTYPE_F32 && dtype != FAMASK_DTYPE_F16 && dtype != FAMASK_DTYPE_BF16) {
        rc =
            fail_msg(FAMASK_STATUS_BAD_DATA, "'%s' is %s; attention takes float32, float16 or bf16 ('<u2' with --bf16)",
                     op.q, famask_dtype_name(dtype));
        goto done;
    }
    if ((rc = bind_tensor(op.q, q, &op, dtype, &a.q)) || (rc = bind_tensor(op.k, k, &op, dtype, &a.k)) ||
        (rc = bind_tensor(op.v, v, &op, dtype, &a.v)) ||
        (backward && (rc = bind_tensor(op.d_o, d_o, &op, dtype, &a.d_o))))
        goto done;
    for (int d = 0; d < 4; d++) {
        if (q->shape[d] > FAMASK_MAX_SEQ_LEN || k->shape[d] > FAMASK_MAX_SEQ_LEN) {
            rc = fail_msg(FAMASK_STATUS_BAD_DATA, "'%s' or '%s' has a dimension past %d", op.q, op.k,
                          FAMASK_MAX_SEQ_LEN);
            goto done;
        }
        if (v->shape[d] != k->shape[d]) {
            rc = fail_msg(FAMASK_STATUS_BAD_DATA, "'%s' and '%s' must have the same shape", op.k, op.v);
            goto done;
        }
        if (backward && d_o->shape[d] != q->shape[d]) {
            rc = fail_msg(FAMASK_STATUS_BAD_DATA, "'%s' must have the shape of '%s'", op.d_o, op.q);
            goto done;
        }
    }
    if (k->shape[0] != q->shape[0] || k->shape[3] != q->shape[3]) {
        rc = fail_msg(FAMASK_STATUS_BAD_DATA,
                      "'%s' and '%s' must agree in batch (%lld, %lld) and head_dim (%lld, %lld)", op.q, op.k,
                      (long long)q->shape[0], (long long)k->shape[0], (long long)q->shape[3], (long long)k->shape[3]);
        goto done;
    }
    const int n_ax = op.bhnd ? 2 : 1, h_ax = op.bhnd ? 1 : 2;
    a.batch = (int)q->shape[0];
    a.seq_len_q = (int)q->shape[n_ax];
    a.n_head = (int)q->shape[h_ax];
    a.head_dim = (int)q->shape[3];
    a.seq_len_k = (int)k->shape[n_ax];
    a.n_head_kv = (int)k->shape[h_ax];
    /* A .npy mask does not record seq_len_q; q's length is the one it must have. */
    if (cli_ends_with(op.mask, ".npy"))
        st = famask_mask_load(ctx, op.mask, a.seq_len_q, &mask);
    else
        st = cli_load_mask(ctx, op.mask, op.seq_len, &mask);
    if (st)
        goto lib_fail;
    a.dtype = dtype;
    a.softmax_scale = op.scale;
    a.device = op.device;

    /* ---- outputs, held in memory until everything has run ---- */
    int64_t lse_shape[3] = {a.batch, a.n_head, a.seq_len_q};
    if ((st = famask_array_create(ctx, dtype, 4, q->shape, &o)) ||
        (st = famask_array_create(ctx, FAMASK_DTYPE_F32, 3, lse_shape, &lse)))
        goto lib_fail;
    if (backward && ((st = famask_array_create(ctx, dtype, 4, q->shape, &dq)) ||
                     (st = famask_array_create(ctx, dtype, 4, k->shape, &dk)) ||
                     (st = famask_array_create(ctx, dtype, 4, k->shape, &dv))))
        goto lib_fail;
    a.lse = lse->data;
    famask_array *outs[4] = {o, dq, dk, dv};
    famask_tensor *touts[4] = {&a.o, &a.dq, &a.dk, &a.dv};
    for (int t = 0; t < (backward ? 4 : 1); t++)
        if ((rc = bind_tensor(op.q, outs[t], &op, dtype, touts[t])))
            goto done;

    famask_array *arrays[8] = {q, k, v, d_o, o, dq, dk, dv};
    famask_tensor *tensors[8] = {&a.q, &a.k, &a.v, &a.d_o, &a.o, &a.dq, &a.dk, &a.dv};
    if (op.device != FAMASK_DEVICE_CPU)
        st = run_on_device(ctx, mask, &a, backward, arrays, tensors, lse);
    else if (!(st = famask_attn_fwd(ctx, mask, &a)) && backward)
        st = famask_attn_bwd(ctx, mask, &a);
    if (st)
        goto lib_fail;

    /* ---- write: each file whole or not at all ---- */
    if ((st = famask_npy_save(ctx, op.o, o)) || (op.lse && (st = famask_npy_save(ctx, op.lse, lse))))
        goto lib_fail;
    if (backward && ((st = famask_npy_save(ctx, op.dq, dq)) || (st = famask_npy_save(ctx, op.dk, dk)) ||
                     (st = famask_npy_save(ctx, op.dv, dv))))
        goto lib_fail;
    rc = EXIT_OK;
    goto done;
lib_fail:
    rc = cli_fail(ctx, st);
done:;
    famask_array *all[] = {q, k, v, d_o, o, lse, dq, dk, dv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        famask_array_free(all[i]);
    famask_mask_free(mask);
    famask_ctx_free(ctx);
    return rc;
}
