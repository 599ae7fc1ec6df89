/*
 * test-cli.c: golden tests of the famask CLI (FAMASK_CLI) for compile, show, stats, version and help: exact
 * output for small specs, exit codes (0, 64, 65, 66), diagnostics on stderr with the "famask: " prefix, the whole
 * bad-spec corpus through `famask compile -o` (exit 65, its message, nothing written), and --png output.
 */
#include "testlib.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[256];

/* Runs `famask ARGS` with stdout and stderr captured; returns the exit code (-1 if it did not exit). */
static int run(const char *args, char **out, char **err)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "\"%s\" %s >%s/out 2>%s/err", FAMASK_CLI, args, tmpdir, tmpdir);
    int status = system(cmd);
    char *bufs[2] = {NULL, NULL};
    const char *names[2] = {"out", "err"};
    for (int k = 0; k < 2; k++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", tmpdir, names[k]);
        FILE *f = fopen(path, "rb");
        size_t cap = 1 << 16, n = 0;
        bufs[k] = calloc(cap + 1, 1);
        while (f && bufs[k]) {
            size_t got = fread(bufs[k] + n, 1, cap - n, f);
            n += got;
            if (n == cap) {
                cap *= 2;
                bufs[k] = realloc(bufs[k], cap + 1);
            } else if (got == 0)
                break;
        }
        if (bufs[k])
            bufs[k][n] = '\0';
        if (f)
            fclose(f);
    }
    *out = bufs[0];
    *err = bufs[1];
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void golden(const char *args, int want_rc, const char *want_out, const char *want_err_part)
{
    char *out = NULL, *err = NULL;
    int rc = run(args, &out, &err);
    CHECK(rc == want_rc, "famask %s: exit %d, want %d (stderr: %s)", args, rc, want_rc, err);
    if (want_out)
        CHECK(strcmp(out, want_out) == 0, "famask %s: stdout\n%s\nwant\n%s", args, out, want_out);
    if (want_err_part)
        CHECK(strstr(err, want_err_part) != NULL, "famask %s: stderr '%s' lacks '%s'", args, err, want_err_part);
    else
        CHECK(err[0] == '\0', "famask %s: unexpected stderr '%s'", args, err);
    free(out);
    free(err);
}

static int dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static void test_golden(void)
{
    char want[256];
    snprintf(want, sizeof want, "famask %s\n", famask_version());
    golden("version", 0, want, NULL);
    golden("--version", 0, want, NULL);
    golden("compile specs/custom.yaml", 0,
           "specs/custom.yaml: batch 1, heads 1, seq_len_q 8, seq_len_k 8, 33 of 64 pairs visible\n", NULL);
    golden("compile specs/custom.yaml -n 8", 0,
           "specs/custom.yaml: batch 1, heads 1, seq_len_q 8, seq_len_k 8, 33 of 64 pairs visible\n", NULL);
    golden("show specs/custom.yaml", 0,
           "batch 0 head 0: 8 x 8, '#' visible, '.' masked\n"
           "#.......\n##......\n###.....\n####....\n#####...\n##.###..\n##.####.\n##.#####\n",
           NULL);
    golden("stats specs/custom.yaml", 0,
           "shape: batch 1, heads 1, seq_len_q 8, seq_len_k 8\n"
           "visible: 33 of 64 pairs (51.56%)\n"
           "tiles 128x64: 0 skipped (0.00%), 1 partial, 0 unmasked, of 1\n"
           "bytes: 128 column-sparse (16 per key column), 64 dense bool (0.5x)\n"
           "key order: live tiles of 64x128 1 as stored, 1 with the keys sorted; cuda keeps the stored order\n",
           NULL);
    /* A 256-token causal mask at 64x64 tiles: a 4 x 4 map, diagonal partial, above skipped, below unmasked. */
    golden("show specs/causal.yaml -n 256 --block 64x64", 0,
           "batch 0 head 0: 256 x 256 in 4 x 4 tiles of 64x64, '#' unmasked, '+' partial, '.' skipped\n"
           "+...\n#+..\n##+.\n###+\n",
           NULL);
    golden("stats specs/causal.yaml -n 256 --block 64x64", 0,
           "shape: batch 1, heads 1, seq_len_q 256, seq_len_k 256\n"
           "visible: 32896 of 65536 pairs (50.20%)\n"
           "tiles 64x64: 6 skipped (37.50%), 4 partial, 6 unmasked, of 16\n"
           "bytes: 4096 column-sparse (16 per key column), 65536 dense bool (16.0x)\n"
           "key order: live tiles of 64x128 6 as stored, 6 with the keys sorted; cuda keeps the stored order\n",
           NULL);
    golden("show specs/batch-heads.yaml -n 4 --batch 1 --head 1", 65, "", "documents sum to 4096, but seqlen is 4");
    golden("show specs/heads.yaml -n 6 --head 3", 0,
           "batch 0 head 3: 6 x 6, '#' visible, '.' masked\n#.....\n##....\n###...\n####..\n#####.\n######\n", NULL);
    golden("show specs/heads.yaml -n 6 --head 4", 64, "", "outside the mask's 1 batch rows and 4 heads");
    char *out = NULL, *err = NULL;
    CHECK(run("help", &out, &err) == 0 && strstr(out, "compile") && strstr(out, "exit codes"), "help: %s", out);
    free(out);
    free(err);
    CHECK(run("help compile", &out, &err) == 0 && strstr(out, "usage: famask compile"), "help compile: %s", out);
    free(out);
    free(err);
    CHECK(run("show --help", &out, &err) == 0 && strstr(out, "usage: famask show"), "show --help: %s", out);
    free(out);
    free(err);
}

static void test_exit_codes(void)
{
    golden("compile", 64, "", "famask: no spec file given");
    golden("compile specs/causal.yaml --frobnicate", 64, "", "famask: unknown option '--frobnicate'");
    golden("compile specs/causal.yaml -n x", 64, "", "-n needs a positive integer");
    golden("compile specs/causal.yaml -o out.bin", 64, "", "cannot tell the format of 'out.bin'");
    golden("stats specs/causal.yaml --block 0x64", 64, "", "--block needs QxK");
    golden("stats specs/custom-file.npy -n 8", 64, "", "-n applies to a spec, not to a compiled mask file");
    golden("compile specs/no-such.yaml", 66, "", "famask: cannot open 'specs/no-such.yaml'");
}

/* Every bad spec through the CLI: exit 65, "famask: " + its expected message on stderr, nothing written. */
static void test_bad_corpus(void)
{
    DIR *d = opendir("specs/bad");
    struct dirent *e;
    int n = 0;
    char outdir[320];
    snprintf(outdir, sizeof outdir, "%s/written", tmpdir);
    mkdir(outdir, 0700);
    while (d && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 5, ".yaml") != 0)
            continue;
        char path[512], line[512] = "", want[1024], args[1024];
        snprintf(path, sizeof path, "specs/bad/%s", e->d_name);
        FILE *f = fopen(path, "r");
        if (f && fgets(line, sizeof line, f) && strncmp(line, "# expect: ", 10) == 0) {
            line[strcspn(line, "\n")] = '\0';
            snprintf(want, sizeof want, "famask: %s%s\n", path, line + 10);
        } else {
            snprintf(want, sizeof want, "(no expect line in %s)", path);
        }
        if (f)
            fclose(f);
        snprintf(args, sizeof args, "compile %s -o %s/out.npy", path, outdir);
        char *out = NULL, *err = NULL;
        int rc = run(args, &out, &err);
        want[strlen(want) - 1] = '\0'; /* the message may go on after the expected part */
        CHECK(rc == 65 && strncmp(err, want, strlen(want)) == 0 && out[0] == '\0',
              "%s: exit %d, stderr '%s', want 65 and '%s'", path, rc, err, want);
        CHECK(dir_entries(outdir) == 0, "%s: something was written into %s", path, outdir);
        free(out);
        free(err);
        n++;
    }
    if (d)
        closedir(d);
    CHECK(n >= 20, "bad corpus through the CLI: %d files", n);
}

static void test_outputs(void)
{
    char args[1024], path[512];
    char *out = NULL, *err = NULL;
    /* PNG: the signature, and a temporary-free folder afterwards. */
    snprintf(path, sizeof path, "%s/m.png", tmpdir);
    snprintf(args, sizeof args, "show specs/causal-document.yaml --png %s", path);
    int rc = run(args, &out, &err);
    unsigned char sig[8] = {0};
    FILE *f = fopen(path, "rb");
    size_t got = f ? fread(sig, 1, 8, f) : 0;
    if (f)
        fclose(f);
    CHECK(rc == 0 && got == 8 && memcmp(sig, "\x89PNG\r\n\x1a\n", 8) == 0, "--png: exit %d, %s", rc, err);
    free(out);
    free(err);
    /* Writing the mask: every format reads back to the same statistics as the spec itself. */
    char *want = NULL, *e2 = NULL;
    CHECK(run("stats specs/causal-document.yaml", &want, &e2) == 0, "stats of the spec");
    free(e2);
    static const char *const exts[2] = {"fmask", "npy"};
    for (int k = 0; k < 2; k++) {
        char *a = NULL;
        snprintf(path, sizeof path, "%s/m.%s", tmpdir, exts[k]);
        snprintf(args, sizeof args, "compile specs/causal-document.yaml -o %s", path);
        rc = run(args, &out, &err);
        CHECK(rc == 0 && out[0] == '\0' && err[0] == '\0', "compile -o .%s: exit %d, %s", exts[k], rc, err);
        free(out);
        free(err);
        snprintf(args, sizeof args, "stats %s", path);
        rc = run(args, &a, &e2);
        CHECK(rc == 0 && strcmp(a, want) == 0, "stats of the written .%s:\n%s\nof the spec:\n%s", exts[k], a, want);
        free(a);
        free(e2);
    }
    free(want);
    /* The .fmask of the 8192-token quick-start mask is small: its vectors are piecewise linear. */
    struct stat sb;
    snprintf(path, sizeof path, "%s/m.fmask", tmpdir);
    CHECK(stat(path, &sb) == 0 && sb.st_size < 4096, ".fmask of causal-document.yaml: %lld bytes",
          (long long)sb.st_size);
    /* The text listing on stdout: a header and one line per key column. */
    rc = run("compile specs/custom.yaml -o -", &out, &err);
    int lines = 0;
    for (const char *c = out; *c; c++)
        lines += *c == '\n';
    CHECK(rc == 0 && lines == 9 && strstr(out, "LT [5, 8)"), "compile -o -: exit %d, %d lines:\n%s", rc, lines, out);
    free(out);
    free(err);
    /* FlashMask's layout: the fewest vectors, reported on stderr, and reading back to the same mask. */
    snprintf(path, sizeof path, "%s/fm.npy", tmpdir);
    snprintf(args, sizeof args, "compile specs/causal-document.yaml -o %s --layout flashmask", path);
    rc = run(args, &out, &err);
    char want_err[1200];
    snprintf(want_err, sizeof want_err, "famask: %s: FlashMask layout with 1 vector, causal true (also in %s.json)\n",
             path, path);
    CHECK(rc == 0 && out[0] == '\0' && strcmp(err, want_err) == 0, "--layout flashmask: exit %d, stderr %s", rc, err);
    free(out);
    free(err);
    famask_ctx *ctx = NULL;
    famask_mask *a = NULL, *b = NULL;
    if (famask_ctx_create(&ctx) == FAMASK_STATUS_OK) {
        CHECK_OK(ctx, famask_mask_load_flashmask(ctx, path, -1, 0, &a));
        CHECK_OK(ctx, famask_mask_compile_file(ctx, "specs/causal-document.yaml", 0, &b));
        CHECK(a && b && famask_mask_equal(a, b), "the FlashMask file reads back to the compiled mask");
    }
    famask_mask_free(a);
    famask_mask_free(b);
    famask_ctx_free(ctx);
    golden("compile specs/causal.yaml --layout flashmask", 64, "", "--layout flashmask writes a .npy file");
}

/* famask bench on the cpu device: the header line, a forward and a backward line, and its usage errors. */
static void test_bench(void)
{
    char *out = NULL, *err = NULL;
    int rc = run("bench --mask specs/causal.yaml -n 100 -H 2 --kv-heads 1 -D 32 --device cpu --bwd --reps 2 "
                 "--warmup 0",
                 &out, &err);
    CHECK(rc == 0, "bench on the cpu: exit %d (stderr: %s)", rc, err);
    CHECK(strstr(out, "B 1 H 2 Hkv 1 Nq 100 Nk 100 D 32 bf16 bnhd on cpu, visible 50.50%") != NULL, "bench header: %s",
          out);
    CHECK(strstr(out, "\nfwd: median ") != NULL && strstr(out, "\nbwd: median ") != NULL, "bench lines: %s", out);
    free(out);
    free(err);
    golden("bench -H 2", 64, "", "--mask is required");
    golden("bench --mask specs/causal.yaml -D 80 --device cpu -n 64 --reps 1", 65, NULL,
           "'head_dim' 80 is not supported");
    golden("bench --mask specs/causal.yaml --device cuda-unfused --bwd", 64, "", "forward only");
    golden("bench --mask specs/causal.yaml --dtype f64", 64, "", "'f64' is not a value of --dtype");
}

int main(void)
{
    tl_seed("test-cli");
    if (tl_tmpdir("test-cli", tmpdir, sizeof tmpdir))
        return 1;
    test_golden();
    test_exit_codes();
    test_bad_corpus();
    test_outputs();
    test_bench();
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return tl_finish();
}
