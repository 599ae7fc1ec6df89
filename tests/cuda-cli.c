/*
 * cuda-cli.c: the command line on the GPU: `famask attn --device cuda` (forward and backward, through the
 * public device-memory helpers) against `--device cpu` on the same .npy files, `--device cuda-unfused`, and a
 * `famask bench --device cuda` run. f16 tensors [B, N, H, D] with GQA under a sliding-window spec.
 * Exits 77 without a device.
 */
#include "testlib.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static char dir[256];

static const char *path(const char *name)
{
    static char buf[16][512]; /* one famask attn command line names up to 10 paths */
    static int k;
    k = (k + 1) % 16;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static int run(const char *args)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' %s >'%s/out.txt' 2>'%s/err.txt'", FAMASK_CLI, args, dir, dir);
    int rc = system(cmd);
    if (rc != 0) {
        char show[600];
        snprintf(show, sizeof show, "cat '%s/err.txt' >&2", dir);
        if (system(show) != 0)
            fprintf(stderr, "(no stderr)\n");
    }
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* A random normal f16 tensor of the given shape, saved as NAME. */
static void save_random(famask_ctx *ctx, const char *name, const int64_t shape[4])
{
    famask_array *a = NULL;
    CHECK_OK(ctx, famask_array_create(ctx, FAMASK_DTYPE_F16, 4, shape, &a));
    if (!a)
        return;
    size_t n = (size_t)(shape[0] * shape[1] * shape[2] * shape[3]);
    float *f = malloc(n * sizeof *f);
    for (size_t i = 0; i < n; i++)
        f[i] = (float)tl_rand_normal();
    CHECK_OK(ctx, famask_cast(ctx, a->data, FAMASK_DTYPE_F16, f, FAMASK_DTYPE_F32, n));
    CHECK_OK(ctx, famask_npy_save(ctx, path(name), a));
    free(f);
    famask_array_free(a);
}

/* max |x - y| / max |y| of two saved arrays of the same shape (f16 or f32). */
static double rel_diff(famask_ctx *ctx, const char *x_name, const char *y_name)
{
    famask_array *x = NULL, *y = NULL;
    double emax = 0, ymax = 0;
    CHECK_OK(ctx, famask_npy_load(ctx, path(x_name), &x));
    CHECK_OK(ctx, famask_npy_load(ctx, path(y_name), &y));
    if (!x || !y || x->dtype != y->dtype || x->ndim != y->ndim) {
        CHECK(0, "%s and %s do not match", x_name, y_name);
        emax = INFINITY;
        goto done;
    }
    size_t n = 1;
    for (int d = 0; d < x->ndim; d++)
        n *= (size_t)x->shape[d];
    double *xd = malloc(n * sizeof *xd), *yd = malloc(n * sizeof *yd);
    CHECK_OK(ctx, famask_cast(ctx, xd, FAMASK_DTYPE_F64, x->data, x->dtype, n));
    CHECK_OK(ctx, famask_cast(ctx, yd, FAMASK_DTYPE_F64, y->data, y->dtype, n));
    for (size_t i = 0; i < n; i++) {
        if (isinf(yd[i]) && xd[i] == yd[i]) /* lse of a fully masked row: -inf on both */
            continue;
        double e = fabs(xd[i] - yd[i]);
        emax = isnan(e) || e > emax ? (isnan(e) ? INFINITY : e) : emax;
        ymax = fabs(yd[i]) > ymax ? fabs(yd[i]) : ymax;
    }
    free(xd);
    free(yd);
done:
    famask_array_free(x);
    famask_array_free(y);
    return ymax > 0 ? emax / ymax : emax;
}

int main(void)
{
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
        printf("cuda-cli: no cuda device, skipped\n");
        return 77;
    }
    tl_seed("cuda-cli");
    if (tl_tmpdir("cuda-cli", dir, sizeof dir))
        return 1;
    famask_ctx *ctx = NULL;
    famask_ctx_create(&ctx);
    /* B 2, Nq = Nk = 1000 (not a tile multiple), H 4 over Hkv 2, D 64. */
    const int64_t qs[4] = {2, 1000, 4, 64}, ks[4] = {2, 1000, 2, 64};
    save_random(ctx, "q.npy", qs);
    save_random(ctx, "k.npy", ks);
    save_random(ctx, "v.npy", ks);
    save_random(ctx, "do.npy", qs);
    char args[4096];
    const char *mask = FAMASK_SOURCE_DIR "/specs/sliding-window.yaml";
    const char *dev[2] = {"cpu", "cuda"};
    for (int d = 0; d < 2; d++) {
        snprintf(args, sizeof args,
                 "attn --mask %s -n 1000 --q %s --k %s --v %s -o %s --lse %s --do %s --dq %s --dk %s --dv %s "
                 "--device %s",
                 mask, path("q.npy"), path("k.npy"), path("v.npy"), path(d ? "o-gpu.npy" : "o-cpu.npy"),
                 path(d ? "l-gpu.npy" : "l-cpu.npy"), path("do.npy"), path(d ? "dq-gpu.npy" : "dq-cpu.npy"),
                 path(d ? "dk-gpu.npy" : "dk-cpu.npy"), path(d ? "dv-gpu.npy" : "dv-cpu.npy"), dev[d]);
        CHECK(run(args) == 0, "famask attn --device %s failed", dev[d]);
    }
    static const char *const outs[] = {"o", "l", "dq", "dk", "dv"};
    for (int t = 0; t < 5; t++) {
        char g[32], c[32];
        snprintf(g, sizeof g, "%s-gpu.npy", outs[t]);
        snprintf(c, sizeof c, "%s-cpu.npy", outs[t]);
        double e = rel_diff(ctx, g, c);
        double bound = t == 1 ? 1e-3 : t == 0 ? 3e-3 : 5e-3;
        printf("attn --device cuda vs cpu: %s relative difference %.3g (bound %.0e)\n", outs[t], e, bound);
        CHECK(e <= bound, "%s: cuda and cpu differ by %.3g", outs[t], e);
    }
    snprintf(args, sizeof args, "attn --mask %s -n 1000 --q %s --k %s --v %s -o %s --device cuda-unfused", mask,
             path("q.npy"), path("k.npy"), path("v.npy"), path("o-unf.npy"));
    CHECK(run(args) == 0, "famask attn --device cuda-unfused failed");
    double e = rel_diff(ctx, "o-unf.npy", "o-cpu.npy");
    printf("attn --device cuda-unfused vs cpu: o relative difference %.3g\n", e);
    CHECK(e <= 3e-3, "cuda-unfused and cpu differ by %.3g", e);
    snprintf(args, sizeof args, "bench --mask %s -n 4096 -b 2 -H 4 --kv-heads 2 -D 128 --bwd --reps 3 --warmup 1",
             FAMASK_SOURCE_DIR "/specs/causal.yaml");
    CHECK(run(args) == 0, "famask bench --device cuda failed");
    snprintf(args, sizeof args, "rm -rf '%s'", dir);
    if (system(args) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    famask_ctx_free(ctx);
    return tl_finish();
}
