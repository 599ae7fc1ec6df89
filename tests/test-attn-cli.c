/*
 * test-attn-cli.c: `famask attn` against the API: random tensors and a mask are written as .npy (and .fmask),
 * the CLI runs on them, and its outputs must equal, bit for bit, what famask_attn_fwd / famask_attn_bwd give on
 * the same arrays (the CPU path is deterministic). Shapes: q [B, Nq, H, D] (or [B, H, Nq, D] with --layout
 * bhnd), k, v [B, Nk, H_kv, D]. Then the CLI's refusals: exit codes, messages, and no output left behind.
 */
#include "testlib.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[256];

static const char *path(const char *name)
{
    /* A ring of buffers so that one printf may take several paths (at most 16 live at once). */
    static char buf[16][512];
    static int slot;
    char *p = buf[slot++ % 16];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

/* Runs the CLI with the arguments; returns its exit code, stderr kept in dir/err.txt. */
static int run_cli(const char *args)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' attn %s 2>'%s/err.txt' >'%s/out.txt'", FAMASK_CLI, args, dir, dir);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* The CLI's stderr of the last run. */
static const char *err_text(void)
{
    static char buf[4096];
    buf[0] = 0;
    FILE *f = fopen(path("err.txt"), "r");
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        fclose(f);
    }
    return buf;
}

static int err_has(const char *needle)
{
    return strstr(err_text(), needle) != NULL;
}

static int exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

static famask_array *random_array(famask_ctx *ctx, famask_dtype dt, int64_t a, int64_t b, int64_t c, int64_t d)
{
    int64_t shape[4] = {a, b, c, d};
    famask_array *x = NULL;
    CHECK_OK(ctx, famask_array_create(ctx, dt, 4, shape, &x));
    if (!x)
        return NULL;
    int64_t n = a * b * c * d;
    for (int64_t e = 0; e < n; e++) {
        float f = (float)tl_rand_normal();
        if (dt == FAMASK_DTYPE_F32) {
            ((float *)x->data)[e] = f;
        } else {
            uint32_t u;
            memcpy(&u, &f, 4);
            /* Any finite 16-bit pattern near N(0,1) will do: bf16 by truncation, f16 from a table-free cast. */
            ((uint16_t *)x->data)[e] =
                dt == FAMASK_DTYPE_BF16 ? (uint16_t)(u >> 16) : (uint16_t)(0x3800 | (tl_rand() & 0x83ff));
        }
    }
    return x;
}

static int same_array(const famask_array *x, const famask_array *y)
{
    if (!x || !y || x->dtype != y->dtype || x->ndim != y->ndim)
        return 0;
    size_t n = famask_dtype_size(x->dtype);
    for (int d = 0; d < x->ndim; d++) {
        if (x->shape[d] != y->shape[d])
            return 0;
        n *= (size_t)x->shape[d];
    }
    return memcmp(x->data, y->data, n) == 0;
}

static void bind(famask_tensor *t, famask_array *x, int bhnd)
{
    const int64_t *s = x->shape;
    t->data = x->data;
    t->stride_batch = s[1] * s[2] * s[3];
    t->stride_seq = bhnd ? s[3] : s[2] * s[3];
    t->stride_head = bhnd ? s[2] * s[3] : s[3];
}

static void round_trip(famask_ctx *ctx, famask_dtype dt, int bhnd, int use_fmask)
{
    int B = 2, H = 4, Hkv = 2, Nq = 37, Nk = 29, D = 32;
    /* A mask per kv head: random valid vectors with some fully masked columns. */
    int32_t *vec = malloc((size_t)Hkv * Nk * 4 * sizeof *vec);
    for (int c = 0; c < Hkv * Nk; c++) {
        int s = tl_rand_int(0, Nq), e = tl_rand_int(s, Nq);
        vec[4 * c] = s;
        vec[4 * c + 1] = e;
        vec[4 * c + 2] = 0;
        vec[4 * c + 3] = tl_rand_int(0, 3) ? c % Nk : Nq;
    }
    famask_mask *m = NULL;
    CHECK_OK(ctx, famask_mask_from_vectors(ctx, 1, Hkv, Nq, Nk, vec, &m));
    free(vec);
    const char *mpath = path(use_fmask ? "m.fmask" : "m.npy");
    CHECK_OK(ctx, famask_mask_save(ctx, m, mpath, use_fmask ? FAMASK_FORMAT_FMASK : FAMASK_FORMAT_NPY));
    int64_t n1 = bhnd ? H : Nq, n2 = bhnd ? Nq : H, k1 = bhnd ? Hkv : Nk, k2 = bhnd ? Nk : Hkv;
    famask_array *q = random_array(ctx, dt, B, n1, n2, D), *k = random_array(ctx, dt, B, k1, k2, D);
    famask_array *v = random_array(ctx, dt, B, k1, k2, D), *d_o = random_array(ctx, dt, B, n1, n2, D);
    famask_array *o = NULL, *lse = NULL, *dq = NULL, *dk = NULL, *dv = NULL;
    int64_t lse_shape[3] = {B, H, Nq};
    CHECK_OK(ctx, famask_array_create(ctx, dt, 4, q->shape, &o));
    CHECK_OK(ctx, famask_array_create(ctx, FAMASK_DTYPE_F32, 3, lse_shape, &lse));
    CHECK_OK(ctx, famask_array_create(ctx, dt, 4, q->shape, &dq));
    CHECK_OK(ctx, famask_array_create(ctx, dt, 4, k->shape, &dk));
    CHECK_OK(ctx, famask_array_create(ctx, dt, 4, k->shape, &dv));
    CHECK_OK(ctx, famask_npy_save(ctx, path("q.npy"), q));
    CHECK_OK(ctx, famask_npy_save(ctx, path("k.npy"), k));
    CHECK_OK(ctx, famask_npy_save(ctx, path("v.npy"), v));
    CHECK_OK(ctx, famask_npy_save(ctx, path("do.npy"), d_o));

    famask_attn_args a;
    memset(&a, 0, sizeof a);
    a.batch = B;
    a.n_head = H;
    a.n_head_kv = Hkv;
    a.seq_len_q = Nq;
    a.seq_len_k = Nk;
    a.head_dim = D;
    a.dtype = dt;
    a.softmax_scale = 0.3f;
    a.device = FAMASK_DEVICE_CPU;
    bind(&a.q, q, bhnd);
    bind(&a.k, k, bhnd);
    bind(&a.v, v, bhnd);
    bind(&a.o, o, bhnd);
    bind(&a.d_o, d_o, bhnd);
    bind(&a.dq, dq, bhnd);
    bind(&a.dk, dk, bhnd);
    bind(&a.dv, dv, bhnd);
    a.lse = lse->data;
    CHECK_OK(ctx, famask_attn_fwd(ctx, m, &a));
    CHECK_OK(ctx, famask_attn_bwd(ctx, m, &a));

    char args[2048];
    snprintf(args, sizeof args,
             "--mask '%s' --q '%s' --k '%s' --v '%s' -o '%s' --lse '%s' --do '%s' --dq '%s' --dk '%s' --dv '%s' "
             "--scale 0.3 --layout %s%s",
             mpath, path("q.npy"), path("k.npy"), path("v.npy"), path("o.npy"), path("lse.npy"), path("do.npy"),
             path("dq.npy"), path("dk.npy"), path("dv.npy"), bhnd ? "bhnd" : "bnhd",
             dt == FAMASK_DTYPE_BF16 ? " --bf16" : "");
    int rc = run_cli(args);
    const char *what = famask_dtype_name(dt);
    CHECK(rc == 0, "cli %s %s: exit %d: %s", what, bhnd ? "bhnd" : "bnhd", rc, err_text());
    const char *names[5] = {"o.npy", "lse.npy", "dq.npy", "dk.npy", "dv.npy"};
    famask_array *want[5] = {o, lse, dq, dk, dv};
    for (int t = 0; t < 5 && rc == 0; t++) {
        famask_array *got = NULL;
        CHECK_OK(ctx, famask_npy_load(ctx, path(names[t]), &got));
        CHECK(same_array(got, want[t]), "cli %s %s: %s differs from the API's result", what, bhnd ? "bhnd" : "bnhd",
              names[t]);
        famask_array_free(got);
    }
    printf("round trip %s %s %s: exit %d\n", what, bhnd ? "bhnd" : "bnhd", use_fmask ? ".fmask" : ".npy", rc);
    famask_array *all[] = {q, k, v, d_o, o, lse, dq, dk, dv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        famask_array_free(all[i]);
    famask_mask_free(m);
}

/* A YAML spec as the mask, with -n giving the length: the CLI must compile it as the API does. */
static void spec_round_trip(famask_ctx *ctx)
{
    static const char yaml[] = "mask:\n  type: causal_document\n  documents: [10, 14]\n";
    FILE *f = fopen(path("doc.yaml"), "w");
    CHECK(f != NULL, "cannot write the spec");
    if (!f)
        return;
    fputs(yaml, f);
    fclose(f);
    famask_mask *m = NULL;
    CHECK_OK(ctx, famask_mask_compile_string(ctx, yaml, sizeof yaml - 1, "doc.yaml", 24, &m));
    famask_array *q = random_array(ctx, FAMASK_DTYPE_F32, 1, 24, 2, 64),
                 *k = random_array(ctx, FAMASK_DTYPE_F32, 1, 24, 1, 64);
    famask_array *o = NULL, *got = NULL;
    CHECK_OK(ctx, famask_array_create(ctx, FAMASK_DTYPE_F32, 4, q->shape, &o));
    CHECK_OK(ctx, famask_npy_save(ctx, path("sq.npy"), q));
    CHECK_OK(ctx, famask_npy_save(ctx, path("sk.npy"), k));
    famask_attn_args a;
    memset(&a, 0, sizeof a);
    a.batch = 1;
    a.n_head = 2;
    a.n_head_kv = 1;
    a.seq_len_q = a.seq_len_k = 24;
    a.head_dim = 64;
    a.dtype = FAMASK_DTYPE_F32;
    bind(&a.q, q, 0);
    bind(&a.k, k, 0);
    bind(&a.v, k, 0);
    bind(&a.o, o, 0);
    if (m)
        CHECK_OK(ctx, famask_attn_fwd(ctx, m, &a));
    char args[2048];
    snprintf(args, sizeof args, "--mask '%s' -n 24 --q '%s' --k '%s' --v '%s' -o '%s'", path("doc.yaml"),
             path("sq.npy"), path("sk.npy"), path("sk.npy"), path("so.npy"));
    int rc = run_cli(args);
    CHECK(rc == 0, "cli with a spec: exit %d: %s", rc, err_text());
    if (rc == 0) {
        CHECK_OK(ctx, famask_npy_load(ctx, path("so.npy"), &got));
        CHECK(same_array(got, o), "cli with a spec: o differs from the API's result");
    }
    printf("spec round trip: exit %d\n", rc);
    famask_array_free(q);
    famask_array_free(k);
    famask_array_free(o);
    famask_array_free(got);
    famask_mask_free(m);
}

static void refusals(famask_ctx *ctx)
{
    /* Fresh valid inputs (f32, bnhd, D 32) to break one thing at a time. */
    famask_mask *m = NULL;
    CHECK_OK(ctx, famask_mask_create(ctx, 1, 1, 8, 8, &m));
    CHECK_OK(ctx, famask_mask_save(ctx, m, path("m8.npy"), FAMASK_FORMAT_NPY));
    famask_mask_free(m);
    famask_array *q = random_array(ctx, FAMASK_DTYPE_F32, 1, 8, 2, 32),
                 *kbad = random_array(ctx, FAMASK_DTYPE_F32, 1, 8, 2, 64);
    famask_array *q48 = random_array(ctx, FAMASK_DTYPE_F32, 1, 8, 2, 48), *q3 = NULL;
    famask_array *qbf = random_array(ctx, FAMASK_DTYPE_BF16, 1, 8, 2, 32);
    int64_t s3[3] = {8, 2, 32};
    CHECK_OK(ctx, famask_array_create(ctx, FAMASK_DTYPE_F32, 3, s3, &q3));
    CHECK_OK(ctx, famask_npy_save(ctx, path("q8.npy"), q));
    CHECK_OK(ctx, famask_npy_save(ctx, path("k64.npy"), kbad));
    CHECK_OK(ctx, famask_npy_save(ctx, path("q48.npy"), q48));
    CHECK_OK(ctx, famask_npy_save(ctx, path("q3.npy"), q3));
    CHECK_OK(ctx, famask_npy_save(ctx, path("qbf.npy"), qbf));
    famask_array_free(q);
    famask_array_free(kbad);
    famask_array_free(q48);
    famask_array_free(q3);
    famask_array_free(qbf);
    char ok[1024], args[2048];
    snprintf(ok, sizeof ok, "--mask '%s' --k '%s' --v '%s'", path("m8.npy"), path("q8.npy"), path("q8.npy"));
    char out[512];
    snprintf(out, sizeof out, "%s", path("never.npy"));
    struct {
        const char *extra, *needle;
        int code;
    } cases[] = {
        {"-o OUT", "--q", 64},                              /* --q missing */
        {"--q Q8 -o OUT --do Q8", "go together", 64},       /* backward half given */
        {"--q Q8 -o OUT --layout nhbd", "--layout", 64},    /* bad layout */
        {"--q Q8 -o OUT --scale abc", "--scale", 64},       /* bad scale */
        {"--q Q8 -o OUT --device tpu", "--device", 64},     /* bad device */
        {"--q Q8 -o OUT --frobnicate", "--frobnicate", 64}, /* unknown option */
        {"--q DIR/missing.npy -o OUT", "missing.npy", 66},  /* cannot open */
        {"--q Q48 -o OUT", "48", 65},                       /* head_dim 48 for k of 32 */
        {"--q Q3 -o OUT", "4-D", 65},                       /* 3-D array */
        {"--q QBF -o OUT", "--bf16", 65},                   /* '<u2' without --bf16 */
        {"--q Q8 -o OUT --bf16", "--bf16", 65},             /* --bf16 on float32 */
        {"--q Q8 -o OUT -n 0", "-n", 64},                   /* bad -n */
        {"--q Q8 -o OUT -n 8", "-n applies to a spec", 64}, /* -n on a compiled mask */
        {"--q Q8 -o DIR/nodir/o.npy", "nodir", 73},         /* cannot create the output */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        /* Substitute the placeholders. */
        char extra[1024] = {0};
        const char *s = cases[c].extra;
        while (*s) {
            const char *rep = NULL;
            size_t skip = 0;
            if (!strncmp(s, "OUT", 3))
                rep = out, skip = 3;
            else if (!strncmp(s, "Q48", 3))
                rep = path("q48.npy"), skip = 3;
            else if (!strncmp(s, "QBF", 3))
                rep = path("qbf.npy"), skip = 3;
            else if (!strncmp(s, "Q8", 2))
                rep = path("q8.npy"), skip = 2;
            else if (!strncmp(s, "Q3", 2))
                rep = path("q3.npy"), skip = 2;
            else if (!strncmp(s, "DIR", 3))
                rep = dir, skip = 3;
            if (rep) {
                strncat(extra, rep, sizeof extra - strlen(extra) - 1);
                s += skip;
            } else {
                size_t n = strlen(extra);
                extra[n] = *s++;
                extra[n + 1] = 0;
            }
        }
        snprintf(args, sizeof args, "%s %s", ok, extra);
        int rc = run_cli(args);
        CHECK(rc == cases[c].code, "cli '%s': exit %d, want %d: %s", cases[c].extra, rc, cases[c].code, err_text());
        CHECK(err_has(cases[c].needle), "cli '%s': stderr should mention '%s'", cases[c].extra, cases[c].needle);
        CHECK(!exists(out), "cli '%s': output written by a failed run", cases[c].extra);
        remove(out);
    }
    /* --device cuda with float32 tensors: no device (69, without CUDA or a GPU) or the kernels' dtype refusal (65). */
    snprintf(args, sizeof args, "%s --q '%s' -o '%s' --device cuda", ok, path("q8.npy"), out);
    int rc = run_cli(args);
    CHECK(rc == 69 || rc == 65, "cli --device cuda: exit %d, want 69 or 65: %s", rc, err_text());
    CHECK(!exists(out), "cli --device cuda: output written");
    /* A good run writes the output, and -h prints the usage on stdout. */
    snprintf(args, sizeof args, "%s --q '%s' -o '%s'", ok, path("q8.npy"), out);
    CHECK(run_cli(args) == 0 && exists(out), "a valid forward must exit 0 and write -o");
    remove(out);
    CHECK(run_cli("--help") == 0, "attn --help");
}

int main(void)
{
    tl_seed("test-attn-cli");
    famask_ctx *ctx = NULL;
    if (famask_ctx_create(&ctx) != FAMASK_STATUS_OK)
        return 1;
    if (tl_tmpdir("attn-cli", dir, sizeof dir))
        return 1;
    static const famask_dtype dts[] = {FAMASK_DTYPE_F32, FAMASK_DTYPE_F16, FAMASK_DTYPE_BF16};
    for (int t = 0; t < 3; t++)
        for (int bhnd = 0; bhnd < 2; bhnd++)
            round_trip(ctx, dts[t], bhnd, t == 1);
    spec_round_trip(ctx);
    refusals(ctx);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    famask_ctx_free(ctx);
    return tl_finish();
}
