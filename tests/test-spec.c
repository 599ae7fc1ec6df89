/*
 * test-spec.c: the spec parser and compiler through the library: every example in specs/ compiles; every file in
 * specs/bad/ fails with BAD_SPEC or NOT_REPRESENTABLE and the message of its "# expect:" line (position
 * included, no "famask: " prefix); -n overrides seqlen; batch/heads stacking and broadcasting against the
 * builders; aliases; the short composition form; SPEC.md's examples against the C builders.
 */
#include "testlib.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int list_yaml(const char *dir, char names[][512], int max)
{
    DIR *d = opendir(dir);
    int n = 0;
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max)
        if (ends_with(e->d_name, ".yaml"))
            snprintf(names[n++], 512, "%s/%s", dir, e->d_name);
    closedir(d);
    return n;
}

static void test_examples(famask_ctx *ctx)
{
    static char names[128][512];
    int n = list_yaml("specs", names, 128);
    CHECK(n >= 15, "specs/ should hold an example per type (found %d)", n);
    for (int k = 0; k < n; k++) {
        famask_mask *m = NULL;
        famask_status st = famask_mask_compile_file(ctx, names[k], 0, &m);
        CHECK(st == FAMASK_STATUS_OK && m, "%s: %s", names[k], famask_ctx_errmsg(ctx));
        famask_mask_free(m);
    }
}

static void test_bad_corpus(famask_ctx *ctx)
{
    static char names[128][512];
    int n = list_yaml("specs/bad", names, 128);
    CHECK(n >= 20, "specs/bad/ should hold the error corpus (found %d)", n);
    for (int k = 0; k < n; k++) {
        char line[512] = "", expect[1100] = "";
        FILE *f = fopen(names[k], "r");
        if (f && fgets(line, sizeof line, f) && strncmp(line, "# expect: ", 10) == 0) {
            snprintf(expect, sizeof expect, "%.500s%.500s", names[k], line + 10);
            expect[strcspn(expect, "\n")] = '\0';
        }
        if (f)
            fclose(f);
        CHECK(expect[0], "%s has no '# expect: ' first line", names[k]);
        famask_mask *m = NULL;
        famask_status st = famask_mask_compile_file(ctx, names[k], 0, &m);
        const char *msg = famask_ctx_errmsg(ctx);
        CHECK((st == FAMASK_STATUS_BAD_SPEC || st == FAMASK_STATUS_NOT_REPRESENTABLE) && !m,
              "%s: status %s (%s)", names[k], famask_status_str(st), msg);
        CHECK(strstr(msg, expect) == msg, "%s:\n  expected '%s'\n  got      '%s'", names[k], expect, msg);
        famask_mask_free(m);
    }
}

static famask_status compile(famask_ctx *ctx, const char *yaml, int seq_len, famask_mask **out)
{
    return famask_mask_compile_string(ctx, yaml, strlen(yaml), "t.yaml", seq_len, out);
}

static void expect_error(famask_ctx *ctx, const char *yaml, famask_status want, const char *msg)
{
    famask_mask *m = NULL;
    famask_status st = compile(ctx, yaml, 0, &m);
    int ok = want == FAMASK_STATUS_OK ? st == want && m : st == want && !m && strstr(famask_ctx_errmsg(ctx), msg);
    CHECK(ok, "spec:\n%s\nwant %s '%s', got %s '%s'", yaml,
          famask_status_str(want), msg, famask_status_str(st), famask_ctx_errmsg(ctx));
    famask_mask_free(m);
}

static void test_errors(famask_ctx *ctx)
{
    expect_error(ctx, "seqlen: 8\nmask: {type: causal, extra: 1}\n", FAMASK_STATUS_BAD_SPEC,
                 "t.yaml:2:22: unknown key 'extra' in causal (known keys: type)");
    expect_error(ctx, "seqlen: 8\nmask: [causal]\n", FAMASK_STATUS_BAD_SPEC, "t.yaml:2:7: a mask must be");
    expect_error(ctx, "seqlen: 8\nmask: {left: 3}\n", FAMASK_STATUS_BAD_SPEC, "t.yaml:2:7: a mask mapping needs 'type:'");
    expect_error(ctx, "seqlen: 8\nmask: *nope\n", FAMASK_STATUS_BAD_SPEC, "t.yaml:2:7:");
    expect_error(ctx, "seqlen: 8\nmask: causal\n---\nseqlen: 8\n", FAMASK_STATUS_BAD_SPEC, "a second yaml document");
    expect_error(ctx, "seqlen: 8\nheads: []\n", FAMASK_STATUS_BAD_SPEC, "t.yaml:2:8: 'heads' is empty");
    expect_error(ctx, "seqlen: 8\nbatch:\n  - {mask: causal, heads: [{mask: full}]}\n", FAMASK_STATUS_BAD_SPEC,
                 "t.yaml:3:5: a batch entry needs exactly one of 'mask' or 'heads'");
    expect_error(ctx, "seqlen: 8\nmask: {type: all_of, masks: []}\n", FAMASK_STATUS_BAD_SPEC, "lists no masks");
    expect_error(ctx, "seqlen: 8\nmask: {type: custom, file: x.npy, lts: [0]}\n", FAMASK_STATUS_BAD_SPEC,
                 "give either 'file' or the vectors");
    expect_error(ctx, "seqlen: 8\nmask: {type: random_eviction, evict: [[1, 4]], seed: 3}\n", FAMASK_STATUS_BAD_SPEC,
                 "'seed' belongs to the seeded form");
    expect_error(ctx, "seqlen: 8\nmask: {type: random_eviction, evict: [[1, 4], [1, 6]]}\n", FAMASK_STATUS_BAD_SPEC,
                 "key 1 is evicted twice");
    expect_error(ctx, "seqlen: 8\nmask: {type: document, documents: [8, 0]}\n", FAMASK_STATUS_OK, "");
    /* A file mask: resolved next to the spec, and its errors carry the position. */
    famask_mask *m = NULL;
    famask_status st = famask_mask_compile_file(ctx, "specs/custom.yaml", 0, &m);
    famask_mask_free(m);
    CHECK_OK(ctx, st);
    famask_mask *v = NULL;
    CHECK_OK(ctx, famask_mask_compile_file(ctx, "specs/custom-file.yaml", 0, &v));
    CHECK_OK(ctx, famask_mask_compile_file(ctx, "specs/custom.yaml", 0, &m));
    CHECK(v && m && famask_mask_equal(v, m), "custom file: reads the vectors next to the spec");
    famask_mask_free(v);
    famask_mask_free(m);
    m = v = NULL;
    /* A [B, H] file is the whole mask at the top level, and refused inside a heads entry. */
    char dir[] = "/tmp/famask-test-spec-XXXXXX", path[256], yaml[512];
    if (mkdtemp(dir)) {
        famask_mask *parts[6] = {NULL}, *stacked = NULL;
        for (int k = 0; k < 6; k++)
            CHECK_OK(ctx, famask_mask_sliding_window(ctx, 32, 32, k, k % 2, &parts[k]));
        CHECK_OK(ctx, famask_mask_stack(ctx, (const famask_mask *const *)parts, 2, 3, &stacked));
        snprintf(path, sizeof path, "%s/bh.npy", dir);
        CHECK_OK(ctx, famask_mask_save(ctx, stacked, path, FAMASK_FORMAT_NPY));
        snprintf(yaml, sizeof yaml, "seqlen: 32\nmask: {type: custom, file: %s}\n", path);
        CHECK_OK(ctx, compile(ctx, yaml, 0, &v));
        CHECK(v && famask_mask_equal(v, stacked), "a [2, 3] file at the top level");
        famask_mask_free(v);
        v = NULL;
        snprintf(yaml, sizeof yaml, "seqlen: 32\nheads:\n  - mask: {type: custom, file: %s}\n", path);
        CHECK(compile(ctx, yaml, 0, &v) == FAMASK_STATUS_BAD_SPEC && !v &&
                  strstr(famask_ctx_errmsg(ctx), "t.yaml:3:11: this mask has 2 batch rows and 3 heads"),
              "a [2, 3] file inside heads: %s", famask_ctx_errmsg(ctx));
        snprintf(yaml, sizeof yaml, "seqlen: 31\nmask: {type: custom, file: %s}\n", path);
        CHECK(compile(ctx, yaml, 0, &v) != FAMASK_STATUS_OK && !v && strstr(famask_ctx_errmsg(ctx), "t.yaml:2:28: "),
              "a file of the wrong length: %s", famask_ctx_errmsg(ctx));
        remove(path);
        remove(dir);
        for (int k = 0; k < 6; k++)
            famask_mask_free(parts[k]);
        famask_mask_free(stacked);
    }
    const char *file_spec = "seqlen: 8\nmask: {type: custom, file: no-such-file.npy}\n";
    st = compile(ctx, file_spec, 0, &m);
    CHECK(st != FAMASK_STATUS_OK && !m && strncmp(famask_ctx_errmsg(ctx), "t.yaml:2:28: ", 13) == 0,
          "file errors name the position: %s", famask_ctx_errmsg(ctx));
}

static void test_lengths_and_shapes(famask_ctx *ctx)
{
    famask_mask *a = NULL, *b = NULL;
    /* -n overrides seqlen, and sums are checked against the override. */
    CHECK_OK(ctx, compile(ctx, "seqlen: 8\nmask: causal\n", 100, &a));
    CHECK(a && famask_mask_seq_len_q(a) == 100 && famask_mask_seq_len_k(a) == 100, "-n overrides seqlen");
    famask_mask_free(a);
    a = NULL;
    CHECK(compile(ctx, "seqlen: 8\nmask: {type: document, documents: [4, 4]}\n", 9, &a) == FAMASK_STATUS_BAD_SPEC &&
              strstr(famask_ctx_errmsg(ctx), "documents sum to 8, but seqlen is 9"),
          "sums are checked against -n: %s", famask_ctx_errmsg(ctx));
    /* seqlen_q != seqlen_k for a position family. */
    CHECK_OK(ctx, compile(ctx, "seqlen_q: 5\nseqlen_k: 9\nmask: causal\n", 0, &a));
    CHECK_OK(ctx, famask_mask_causal(ctx, 5, 9, &b));
    CHECK(a && b && famask_mask_equal(a, b), "seqlen_q/seqlen_k");
    famask_mask_free(a);
    famask_mask_free(b);
    /* specs/README.md's bottom-right causal mask for decoding: a sliding window with left = seqlen_k and
     * right = seqlen_k - seqlen_q shows row i the keys 0 .. i + seqlen_k - seqlen_q. */
    CHECK_OK(ctx, compile(ctx, "seqlen_q: 5\nseqlen_k: 9\nmask: {type: sliding_window, left: 9, right: 4}\n", 0, &a));
    int bad = 0;
    for (int i = 0; a && i < 5; i++)
        for (int j = 0; j < 9; j++)
            bad += famask_mask_visible(a, 0, 0, i, j) != (j <= i + 9 - 5);
    CHECK(a && bad == 0, "bottom-right causal: %d pairs differ", bad);
    famask_mask_free(a);
    /* Batch rows and heads: a one-mask entry broadcasts over the heads of the others. */
    const char *bh = "seqlen: 16\n"
                     "batch:\n"
                     "  - mask: {type: causal_document, documents: [6, 10]}\n"
                     "  - heads:\n"
                     "      - mask: causal\n"
                     "      - mask: {type: sliding_window, left: 3}\n";
    famask_mask *s = NULL, *p[3] = {NULL, NULL, NULL};
    int docs[2] = {6, 10};
    CHECK_OK(ctx, compile(ctx, bh, 0, &s));
    CHECK_OK(ctx, famask_mask_causal_document(ctx, docs, 2, &p[0]));
    CHECK_OK(ctx, famask_mask_causal(ctx, 16, 16, &p[1]));
    CHECK_OK(ctx, famask_mask_sliding_window(ctx, 16, 16, 3, 0, &p[2]));
    if (s && p[0] && p[1] && p[2]) {
        const famask_mask *parts[4] = {p[0], p[0], p[1], p[2]};
        CHECK_OK(ctx, famask_mask_stack(ctx, parts, 2, 2, &b));
        CHECK(b && famask_mask_equal(s, b), "batch/heads spec against stacked builders");
        famask_mask_free(b);
    }
    famask_mask_free(s);
    /* Top-level heads, aliases, and the short composition form equal to the long one. */
    const char *alias = "seqlen: 16\n"
                        "heads:\n"
                        "  - mask: &w {type: sliding_window, left: 3}\n"
                        "  - mask: *w\n";
    CHECK_OK(ctx, compile(ctx, alias, 0, &s));
    if (s && p[2]) {
        const famask_mask *parts[2] = {p[2], p[2]};
        CHECK_OK(ctx, famask_mask_stack(ctx, parts, 1, 2, &b));
        CHECK(b && famask_mask_equal(s, b), "aliases and top-level heads");
        famask_mask_free(b);
    }
    famask_mask_free(s);
    const char *longf = "seqlen: 16\nmask:\n  type: all_of\n  masks:\n"
                        "    - {type: causal_document, documents: [6, 10]}\n    - {type: sliding_window, left: 3}\n";
    const char *shortf = "seqlen: 16\nmask:\n  all_of: [{type: causal_document, documents: [6, 10]}, "
                         "{type: sliding_window, left: 3}]\n";
    CHECK_OK(ctx, compile(ctx, longf, 0, &s));
    CHECK_OK(ctx, compile(ctx, shortf, 0, &b));
    const famask_mask *ab[2] = {p[0], p[2]};
    famask_mask *c = NULL;
    CHECK_OK(ctx, famask_mask_all_of(ctx, ab, 2, &c));
    CHECK(s && b && c && famask_mask_equal(s, b) && famask_mask_equal(s, c), "all_of: long, short and builder forms");
    famask_mask_free(s);
    famask_mask_free(b);
    famask_mask_free(c);
    for (int k = 0; k < 3; k++)
        famask_mask_free(p[k]);
    /* The README's quick-start spec has SPEC.md's documents. */
    int qs[4] = {2048, 1024, 3072, 2048};
    CHECK_OK(ctx, famask_mask_compile_file(ctx, "specs/causal-document.yaml", 0, &s));
    CHECK_OK(ctx, famask_mask_causal_document(ctx, qs, 4, &b));
    CHECK(s && b && famask_mask_equal(s, b), "specs/causal-document.yaml");
    famask_mask_free(s);
    famask_mask_free(b);
    /* Messages come without the CLI's prefix; an unreadable path is CANNOT_OPEN. */
    CHECK(famask_mask_compile_file(ctx, "specs/no-such.yaml", 0, &s) == FAMASK_STATUS_CANNOT_OPEN && !s &&
              strncmp(famask_ctx_errmsg(ctx), "cannot open 'specs/no-such.yaml'", 32) == 0,
          "missing file: %s", famask_ctx_errmsg(ctx));
}

int main(void)
{
    tl_seed("test-spec");
    famask_ctx *ctx = NULL;
    if (famask_ctx_create(&ctx))
        return 1;
    test_examples(ctx);
    test_bad_corpus(ctx);
    test_errors(ctx);
    test_lengths_and_shapes(ctx);
    famask_ctx_free(ctx);
    return tl_finish();
}
