/*
 * cmd-bench.c: `famask bench`: times famask_attn_fwd (and famask_attn_bwd) under a mask on random normal
 * tensors [B, N, H, D] (or [B, H, N, D]), and prints the median time and the sparsity-aware TFLOP/s
 * (forward 4 B H D per visible pair, backward 2.5 times that). Wall-clock time around each call and a device
 * synchronisation; for comparisons with other libraries use bench/peers.py, which times peers in one process.
 */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char cmd_bench_usage[] =
    "usage: famask bench --mask SPEC|FILE [-n N] [-b B] [-H H] [--kv-heads HKV] [-D D] [--dtype bf16|f16]\n"
    "                    [--layout bnhd|bhnd] [--device cuda|cpu|cuda-unfused] [--bwd] [--deterministic]\n"
    "                    [--reps R] [--warmup W] [--seed S]\n"
    "\n"
    "Times attention under the mask on random normal tensors and prints the median time of R calls after W\n"
    "warm-up calls, with TFLOP/s counting only visible (i, j) pairs. Sequence lengths come from the mask.\n"
    "\n"
    "options:\n"
    "  --mask M          a YAML spec or a compiled .fmask / .npy mask (required)\n"
    "  -n N              sequence length, overriding a spec's seqlen\n"
    "  -b B              batch (default: the mask's batch)\n"
    "  -H H              query heads (default 16); --kv-heads HKV key/value heads (default H)\n"
    "  -D D              head dim: 32, 64, 96, 128 or 256 (default 128)\n"
    "  --dtype T         bf16 (default) or f16\n"
    "  --layout L        bnhd ([B, N, H, D], default) or bhnd ([B, H, N, D])\n"
    "  --device D        cuda (default), cpu or cuda-unfused (forward only)\n"
    "  --bwd             also time the backward; --deterministic selects its deterministic mode\n"
    "  --reps R          timed calls (default 10); --warmup W untimed calls first (default 3)\n"
    "  --seed S          seed of the random inputs (default 1)\n";

typedef struct opts {
    const char *mask;
    int seq_len, batch, heads, kv_heads, head_dim, bhnd, bwd, deterministic, reps, warmup;
    unsigned seed;
    famask_dtype dtype;
    famask_device device;
} opts;

static int parse(int argc, char **argv, opts *op)
{
    static const char *const valued[] = {"--mask",   "-n",       "-b",     "-H",       "--kv-heads", "-D", "--dtype",
                                         "--layout", "--device", "--reps", "--warmup", "--seed",     NULL};
    static const char *const ints[] = {"-n", "-b", "-H", "--kv-heads", "-D", "--reps", "--warmup", "--seed", NULL};
    *op = (opts){.heads = 16,
                 .head_dim = 128,
                 .reps = 10,
                 .warmup = 3,
                 .seed = 1,
                 .dtype = FAMASK_DTYPE_BF16,
                 .device = FAMASK_DEVICE_CUDA};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_value = 0;
        for (int k = 0; valued[k]; k++)
            has_value |= strcmp(a, valued[k]) == 0;
        if (!has_value) {
            if (strcmp(a, "--bwd") == 0)
                op->bwd = 1;
            else if (strcmp(a, "--deterministic") == 0)
                op->deterministic = 1;
            else
                return cli_usage("bench", "unexpected argument '%s'", a);
            continue;
        }
        if (i + 1 >= argc)
            return cli_usage("bench", "option '%s' needs a value", a);
        const char *v = argv[++i];
        int n = 0;
        for (int k = 0; ints[k]; k++)
            if (strcmp(a, ints[k]) == 0 && (cli_parse_int(v, &n) || (n < 1 && strcmp(a, "--warmup") != 0)))
                return cli_usage("bench", "%s needs a positive integer, not '%s'", a, v);
        if (strcmp(a, "--mask") == 0)
            op->mask = v;
        else if (strcmp(a, "-n") == 0)
            op->seq_len = n;
        else if (strcmp(a, "-b") == 0)
            op->batch = n;
        else if (strcmp(a, "-H") == 0)
            op->heads = n;
        else if (strcmp(a, "--kv-heads") == 0)
            op->kv_heads = n;
        else if (strcmp(a, "-D") == 0)
            op->head_dim = n;
        else if (strcmp(a, "--reps") == 0)
            op->reps = n;
        else if (strcmp(a, "--warmup") == 0)
            op->warmup = n;
        else if (strcmp(a, "--seed") == 0)
            op->seed = (unsigned)n;
        else if (strcmp(a, "--dtype") == 0 && (strcmp(v, "bf16") == 0 || strcmp(v, "f16") == 0))
            op->dtype = v[0] == 'b' ? FAMASK_DTYPE_BF16 : FAMASK_DTYPE_F16;
        else if (strcmp(a, "--layout") == 0 && (strcmp(v, "bnhd") == 0 || strcmp(v, "bhnd") == 0))
            op->bhnd = strcmp(v, "bhnd") == 0;
        else if (strcmp(a, "--device") == 0 && strcmp(v, "cuda") == 0)
            op->device = FAMASK_DEVICE_CUDA;
        else if (strcmp(a, "--device") == 0 && strcmp(v, "cpu") == 0)
            op->device = FAMASK_DEVICE_CPU;
        else if (strcmp(a, "--device") == 0 && strcmp(v, "cuda-unfused") == 0)
            op->device = FAMASK_DEVICE_CUDA_UNFUSED;
        else
            return cli_usage("bench", "'%s' is not a value of %s", v, a);
    }
    if (!op->mask)
        return cli_usage("bench", "--mask is required");
    if (cli_check_seq_len("bench", op->mask, op->seq_len))
        return EXIT_USAGE;
    if (op->bwd && op->device == FAMASK_DEVICE_CUDA_UNFUSED)
        return cli_usage("bench", "--bwd: the cuda-unfused device is forward only");
    if (!op->kv_heads)
        op->kv_heads = op->heads;
    return EXIT_OK;
}

/* Normal(0, 1) by Box-Muller from a 64-bit LCG: reproducible for a seed, good enough for timing inputs. */
static float normal(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    double u = ((*s >> 11) + 0.5) / 9007199254740992.0;
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    double v = (double)(*s >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Runs the call warmup + reps times; times holds the reps' milliseconds, sorted. */
static famask_status time_calls(famask_ctx *ctx, famask_mask *mask, const famask_attn_args *a, int backward,
                                const opts *op, double *times)
{
    for (int r = 0; r < op->warmup + op->reps; r++) {
        double t0 = now_ms();
        famask_status st = backward ? famask_attn_bwd(ctx, mask, a) : famask_attn_fwd(ctx, mask, a);
        if (!st && a->device != FAMASK_DEVICE_CPU)
            st = famask_device_synchronize(ctx);
        if (st)
            return st;
        if (r >= op->warmup)
            times[r - op->warmup] = now_ms() - t0;
    }
    qsort(times, (size_t)op->reps, sizeof *times, cmp_double);
    return FAMASK_STATUS_OK;
}

/* Visible pairs summed over every (batch row, query head), with the mask's broadcast rules. */
static double visible_pairs(const famask_mask *mask, int batch, int heads, int kv_heads)
{
    int mb = famask_mask_batch(mask), mh = famask_mask_heads(mask);
    double total = 0;
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++) {
            int hm = mh == heads ? h : mh == kv_heads ? h / (heads / kv_heads) : 0;
            total += (double)famask_mask_count_visible(mask, mb == 1 ? 0 : b, hm);
        }
    return total;
}

int cmd_bench(int argc, char **argv)
{
    opts op;
    int rc = parse(argc, argv, &op);
    if (rc)
        return rc;
    famask_ctx *ctx = NULL;
    famask_mask *mask = NULL;
    void *host[4] = {NULL}, *buf[8] = {NULL};
    float *lse = NULL;
    double *times = NULL;
    const int on_device = op.device != FAMASK_DEVICE_CPU;
    famask_status st = famask_ctx_create(&ctx);
    if (st) {
        cli_error("out of memory");
        return EXIT_INTERNAL;
    }
    if ((st = cli_load_mask(ctx, op.mask, op.seq_len, &mask)))
        goto lib_fail;
    famask_attn_args a = {0};
    a.batch = op.batch ? op.batch : famask_mask_batch(mask);
    a.n_head = op.heads;
    a.n_head_kv = op.kv_heads;
    a.seq_len_q = famask_mask_seq_len_q(mask);
    a.seq_len_k = famask_mask_seq_len_k(mask);
    a.head_dim = op.head_dim;
    a.dtype = op.dtype;
    a.device = op.device;
    a.deterministic = op.deterministic;

    /* q, o, d_o, dq: [B, Nq, H, D]; k, v, dk, dv: [B, Nk, Hkv, D] (strides below pick the layout). */
    int64_t n_q = (int64_t)a.batch * a.seq_len_q * a.n_head * a.head_dim;
    int64_t n_k = (int64_t)a.batch * a.seq_len_k * a.n_head_kv * a.head_dim;
    const int64_t count[8] = {n_q, n_k, n_k, n_q, n_q, n_q, n_k, n_k}; /* q k v d_o o dq dk dv */
    famask_tensor *tensor[8] = {&a.q, &a.k, &a.v, &a.d_o, &a.o, &a.dq, &a.dk, &a.dv};
    size_t lse_bytes = (size_t)a.batch * a.n_head * a.seq_len_q * sizeof(float);
    int n_used = op.bwd ? 8 : 5;
    uint64_t seed = op.seed * 0x9E3779B97F4A7C15ull + 1;
    size_t elem = famask_dtype_size(op.dtype);
    for (int t = 0; t < n_used; t++) {
        size_t bytes = (size_t)count[t] * elem;
        int is_input = t < 4;
        if (on_device) {
            if ((st = famask_device_alloc(ctx, bytes, &buf[t])))
                goto lib_fail;
        } else if (!(buf[t] = calloc(1, bytes))) {
            st = FAMASK_STATUS_NO_MEMORY;
            goto lib_fail;
        }
        if (is_input) {
            float *f = malloc((size_t)count[t] * sizeof *f);
            if (!f || !(host[t] = malloc(bytes))) {
                free(f);
                st = FAMASK_STATUS_NO_MEMORY;
                goto lib_fail;
            }
            for (int64_t e = 0; e < count[t]; e++)
                f[e] = normal(&seed);
            st = famask_cast(ctx, host[t], op.dtype, f, FAMASK_DTYPE_F32, (size_t)count[t]);
            free(f);
            if (st || (st = on_device ? famask_device_upload(ctx, buf[t], host[t], bytes) : FAMASK_STATUS_OK))
                goto lib_fail;
            if (!on_device)
                memcpy(buf[t], host[t], bytes);
        }
        int seq = t == 1 || t == 2 || t >= 6 ? a.seq_len_k : a.seq_len_q;
        int heads = t == 1 || t == 2 || t >= 6 ? a.n_head_kv : a.n_head;
        tensor[t]->data = buf[t];
        tensor[t]->stride_batch = (int64_t)seq * heads * a.head_dim;
        tensor[t]->stride_seq = op.bhnd ? a.head_dim : (int64_t)heads * a.head_dim;
        tensor[t]->stride_head = op.bhnd ? (int64_t)seq * a.head_dim : a.head_dim;
    }
    if (on_device ? (st = famask_device_alloc(ctx, lse_bytes, (void **)&lse)) != FAMASK_STATUS_OK
                  : !(lse = calloc(1, lse_bytes))) {
        st = st ? st : FAMASK_STATUS_NO_MEMORY;
        goto lib_fail;
    }
    a.lse = lse;
    if (on_device && (st = famask_mask_upload(ctx, mask, NULL)))
        goto lib_fail;
    if (!(times = malloc((size_t)op.reps * sizeof *times))) {
        st = FAMASK_STATUS_NO_MEMORY;
        goto lib_fail;
    }

    double pairs = visible_pairs(mask, a.batch, a.n_head, a.n_head_kv);
    double flops = 4.0 * a.head_dim * pairs;
    static const char *const device_names[] = {"cpu", "cuda", "cuda-unfused"};
    printf("mask %s: B %d H %d Hkv %d Nq %d Nk %d D %d %s %s on %s, visible %.2f%%\n", op.mask, a.batch, a.n_head,
           a.n_head_kv, a.seq_len_q, a.seq_len_k, a.head_dim, op.dtype == FAMASK_DTYPE_BF16 ? "bf16" : "f16",
           op.bhnd ? "bhnd" : "bnhd", device_names[op.device],
           100.0 * pairs / ((double)a.batch * a.n_head * a.seq_len_q * a.seq_len_k));
    for (int backward = 0; backward <= op.bwd; backward++) {
        if ((st = time_calls(ctx, mask, &a, backward, &op, times)))
            goto lib_fail;
        double med = times[op.reps / 2], f = backward ? 2.5 * flops : flops;
        printf("%s%s: median %.3f ms (min %.3f, max %.3f, %d reps), %.4g TFLOP/s\n", backward ? "bwd" : "fwd",
               backward && op.deterministic ? " (deterministic)" : "", med, times[0], times[op.reps - 1], op.reps,
               f / (med * 1e9));
    }
    rc = EXIT_OK;
    goto done;
lib_fail:
    rc = cli_fail(ctx, st);
done:
    for (int t = 0; t < 8; t++) {
        if (on_device)
            famask_device_free(buf[t]);
        else
            free(buf[t]);
    }
    for (int t = 0; t < 4; t++)
        free(host[t]);
    if (on_device)
        famask_device_free(lse);
    else
        free(lse);
    free(times);
    famask_mask_free(mask);
    famask_ctx_free(ctx);
    return rc;
}
