/*
 * test-masks.c: every mask family against a brute-force predicate written here from SPEC.md's table (not from
 * masks/), on random parameters and the lengths 1, 2, 63, 64, 65, 127, 128, 129 and a few thousand; the same
 * parameters written as a YAML spec must compile to the identical mask; compositions against the composed
 * predicate, including the NOT_REPRESENTABLE verdict (checked by counting runs in the dense result); stacking;
 * builder argument errors; and the host tile classes per family at 128x64 (skipped tiles all masked, unmasked
 * tiles all visible), printing how many fully visible tiles the rule calls partial; and the families' one-pass
 * canonicaliser against the library's general one.
 */
#include "testlib.h"

#include "../masks/families.h" /* fm_col_set: the families' one-pass clip and canonicalisation */

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum {
    T_FULL, T_CAUSAL, T_SLIDING, T_CDOC, T_DOC, T_SQ, T_GSW, T_BLOCKWISE, T_PLC, T_PLD, T_QK, T_EVICT, T_SEEDED,
    T_CUSTOM, T_COUNT
};
static const char *const type_names[T_COUNT] = {
    "full", "causal", "sliding_window", "causal_document", "document", "shared_question", "global_sliding_window",
    "causal_blockwise", "prefix_lm_causal", "prefix_lm_document", "qk_sparse", "random_eviction",
    "random_eviction (seeded)", "custom"};

#define MAXN 48

typedef struct fcase {
    int type, nq, nk;
    int left, right, global, causal, prefix;
    int n, len[MAXN], pre[MAXN];                     /* documents, blocks, prefix documents */
    int ns, q[MAXN], na[MAXN], ans[MAXN][4];         /* shared_question samples */
    int nspans, spans[2 * MAXN];                     /* qk_sparse */
    int nev, ev[2 * MAXN];                           /* random_eviction */
    uint64_t seed;                                   /* seeded eviction */
    double rate;
    int start_row;
    int32_t *raw;                                    /* custom: [nk, 4] */
    /* Derived per position, for the predicate. */
    int *seg, *seg_start, *sub, *evrow;
    int nseg;
} fcase;

/* ---- the reference: SPEC.md's table, one line per type ------------------------------------------------------ */

static uint64_t sm64(uint64_t seed, uint64_t k)
{
    uint64_t z = seed + (k + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The documented seeded draw (specs/README.md): the eviction row of key j, or -1 when kept. */
static int seeded_row(const fcase *c, int j)
{
    uint64_t a = sm64(c->seed, 2 * (uint64_t)j), b = sm64(c->seed, 2 * (uint64_t)j + 1);
    double u = (double)(a >> 11) / 9007199254740992.0;
    int lo = c->start_row > j + 1 ? c->start_row : j + 1;
    if (u < c->rate && lo < c->nq)
        return lo + (int)(b % (uint64_t)(c->nq - lo));
    return -1;
}

static void derive(fcase *c)
{
    int n = c->nq > c->nk ? c->nq : c->nk;
    c->seg = calloc((size_t)n, sizeof(int));
    c->seg_start = calloc(MAXN + 1, sizeof(int));
    c->sub = calloc((size_t)n, sizeof(int));
    c->evrow = malloc((size_t)n * sizeof(int));
    for (int x = 0; x < n; x++)
        c->evrow[x] = -1;
    int pos = 0;
    if (c->type == T_CDOC || c->type == T_DOC || c->type == T_BLOCKWISE || c->type == T_PLD) {
        for (int d = 0; d < c->n; d++) {
            c->seg_start[d] = pos;
            for (int x = 0; x < c->len[d]; x++, pos++)
                c->seg[pos] = d;
        }
        c->nseg = c->n;
    }
    if (c->type == T_SQ) {
        int answer = 0;
        for (int s = 0; s < c->ns; s++) {
            for (int x = 0; x < c->q[s]; x++, pos++) {
                c->seg[pos] = s;
                c->sub[pos] = -1; /* question */
            }
            for (int a = 0; a < c->na[s]; a++, answer++)
                for (int x = 0; x < c->ans[s][a]; x++, pos++) {
                    c->seg[pos] = s;
                    c->sub[pos] = answer;
                }
        }
    }
    if (c->type == T_EVICT)
        for (int k = 0; k < c->nev; k++)
            c->evrow[c->ev[2 * k]] = c->ev[2 * k + 1];
    if (c->type == T_SEEDED)
        for (int j = 0; j < c->nk; j++)
            c->evrow[j] = seeded_row(c, j);
}

static void release(fcase *c)
{
    free(c->seg);
    free(c->seg_start);
    free(c->sub);
    free(c->evrow);
    free(c->raw);
}

static int ref_visible(const fcase *c, int i, int j)
{
    switch (c->type) {
    case T_FULL:
        return 1;
    case T_CAUSAL:
        return j <= i;
    case T_SLIDING:
        return i - c->left <= j && j <= i + c->right;
    case T_CDOC:
        return c->seg[i] == c->seg[j] && j <= i;
    case T_DOC:
        return c->seg[i] == c->seg[j];
    case T_SQ:
        return c->seg[i] == c->seg[j] && j <= i && (c->sub[j] < 0 || c->sub[i] == c->sub[j]);
    case T_GSW:
        return (j < c->global || i < c->global || (i - c->left <= j && j <= i + c->right)) && (!c->causal || j <= i);
    case T_BLOCKWISE:
        return j <= i && (c->seg[i] == c->seg[j] || i >= c->seg_start[c->n - 1]);
    case T_PLC:
        return j < c->prefix || j <= i;
    case T_PLD:
        return c->seg[i] == c->seg[j] && (j < c->seg_start[c->seg[j]] + c->pre[c->seg[j]] || j <= i);
    case T_QK:
        if (j > i)
            return 0;
        for (int k = 0; k < c->nspans; k++)
            if (c->spans[2 * k] <= j && j <= i && i < c->spans[2 * k + 1])
                return 0;
        return 1;
    case T_EVICT:
    case T_SEEDED:
        return j <= i && !(c->evrow[j] >= 0 && i >= c->evrow[j]);
    case T_CUSTOM: {
        const int32_t *v = c->raw + 4 * j;
        return !((v[0] <= i && i < v[1]) || (v[2] <= i && i < v[3]));
    }
    }
    return -1;
}

/* ---- random parameters --------------------------------------------------------------------------------------- */

static int pick_len(void)
{
    static const int lens[] = {1, 2, 63, 64, 65, 127, 128, 129};
    int r = tl_rand_int(0, 11);
    return r < 8 ? lens[r] : tl_rand_int(3, 300);
}

/* Splits n into k non-negative parts; with `ones`, as many parts of length 1 as fit. */
static int partition(int n, int *out, int kmax)
{
    int k = tl_rand_int(1, kmax);
    if (tl_rand_int(0, 3) == 0 && n >= 1 && n <= kmax) { /* documents of length 1 */
        for (int x = 0; x < n; x++)
            out[x] = 1;
        return n;
    }
    int cuts[MAXN + 1];
    cuts[0] = 0;
    cuts[k] = n;
    for (int x = 1; x < k; x++)
        cuts[x] = tl_rand_int(0, n);
    for (int x = 1; x < k; x++) /* sort the inner cuts */
        for (int y = x; y > 1 && cuts[y - 1] > cuts[y]; y--) {
            int t = cuts[y];
            cuts[y] = cuts[y - 1];
            cuts[y - 1] = t;
        }
    for (int x = 0; x < k; x++)
        out[x] = cuts[x + 1] - cuts[x];
    return k;
}

static void random_case(fcase *c, int type, int nq, int nk)
{
    memset(c, 0, sizeof *c);
    c->type = type;
    int summed = type == T_CDOC || type == T_DOC || type == T_SQ || type == T_BLOCKWISE || type == T_PLD;
    c->nq = nq;
    c->nk = summed ? nq : nk;
    int n = c->nq;
    int big = n > c->nk ? n : c->nk;
    c->left = tl_rand_int(0, 3) ? tl_rand_int(0, big) : tl_rand_int(0, 4);
    c->right = tl_rand_int(0, 2) ? 0 : tl_rand_int(0, big);
    c->global = tl_rand_int(0, 3) ? tl_rand_int(0, big / 4 + 1) : tl_rand_int(0, big + 2);
    c->causal = tl_rand_int(0, 1);
    c->prefix = tl_rand_int(0, c->nk);
    if (type == T_CDOC || type == T_DOC || type == T_BLOCKWISE || type == T_PLD) {
        c->n = partition(n, c->len, MAXN);
        for (int d = 0; d < c->n; d++)
            c->pre[d] = tl_rand_int(0, c->len[d]);
    }
    if (type == T_SQ) {
        int parts[MAXN];
        c->ns = partition(n, parts, 12);
        for (int s = 0; s < c->ns; s++) {
            int sub[MAXN];
            int k = partition(parts[s], sub, 5);
            c->q[s] = sub[0];
            c->na[s] = k - 1;
            for (int a = 1; a < k; a++)
                c->ans[s][a - 1] = sub[a];
        }
    }
    if (type == T_QK) {
        int pos = tl_rand_int(0, big);
        while (c->nspans < MAXN && pos < big && tl_rand_int(0, 5)) {
            int s = pos, e = tl_rand_int(s, s + big / 3 + 1);
            if (e > big)
                e = big;
            c->spans[2 * c->nspans] = s;
            c->spans[2 * c->nspans + 1] = e;
            c->nspans++;
            pos = e + tl_rand_int(0, big / 4 + 1);
        }
    }
    if (type == T_EVICT) {
        for (int j = 0; j < c->nk && c->nev < MAXN; j++)
            if (j + 1 <= c->nq - 1 + 1 && j < c->nq && tl_rand_int(0, 7) == 0) {
                c->ev[2 * c->nev] = j;
                c->ev[2 * c->nev + 1] = tl_rand_int(j + 1, c->nq);
                c->nev++;
            }
    }
    if (type == T_SEEDED) {
        c->seed = tl_rand();
        c->rate = tl_rand_int(0, 4) / 4.0;
        c->start_row = tl_rand_int(0, c->nq + 1);
    }
    if (type == T_CUSTOM) {
        c->raw = malloc((size_t)c->nk * 4 * sizeof(int32_t));
        for (int j = 0; j < c->nk; j++)
            for (int x = 0; x < 4; x += 2) {
                int s = tl_rand_int(0, c->nq), e = tl_rand_int(s, c->nq);
                c->raw[4 * j + x] = s;
                c->raw[4 * j + x + 1] = e;
            }
    }
    derive(c);
}

static famask_status build(famask_ctx *ctx, const fcase *c, famask_mask **out)
{
    switch (c->type) {
    case T_FULL:
        return famask_mask_full(ctx, c->nq, c->nk, out);
    case T_CAUSAL:
        return famask_mask_causal(ctx, c->nq, c->nk, out);
    case T_SLIDING:
        return famask_mask_sliding_window(ctx, c->nq, c->nk, c->left, c->right, out);
    case T_CDOC:
        return famask_mask_causal_document(ctx, c->len, c->n, out);
    case T_DOC:
        return famask_mask_document(ctx, c->len, c->n, out);
    case T_SQ: {
        famask_qa_sample s[MAXN];
        for (int k = 0; k < c->ns; k++) {
            s[k].question = c->q[k];
            s[k].answers = c->ans[k];
            s[k].n_answers = c->na[k];
        }
        return famask_mask_shared_question(ctx, s, c->ns, out);
    }
    case T_GSW:
        return famask_mask_global_sliding_window(ctx, c->nq, c->nk, c->global, c->left, c->right, c->causal, out);
    case T_BLOCKWISE:
        return famask_mask_causal_blockwise(ctx, c->len, c->n, out);
    case T_PLC:
        return famask_mask_prefix_lm_causal(ctx, c->nq, c->nk, c->prefix, out);
    case T_PLD: {
        famask_prefix_doc d[MAXN];
        for (int k = 0; k < c->n; k++) {
            d[k].length = c->len[k];
            d[k].prefix = c->pre[k];
        }
        return famask_mask_prefix_lm_document(ctx, d, c->n, out);
    }
    case T_QK:
        return famask_mask_qk_sparse(ctx, c->nq, c->nk, c->spans, c->nspans, out);
    case T_EVICT:
        return famask_mask_random_eviction(ctx, c->nq, c->nk, c->ev, c->nev, out);
    case T_SEEDED:
        return famask_mask_random_eviction_seeded(ctx, c->nq, c->nk, c->seed, c->rate, c->start_row, out);
    case T_CUSTOM:
        return famask_mask_from_vectors(ctx, 1, 1, c->nq, c->nk, c->raw, out);
    }
    return FAMASK_STATUS_INTERNAL;
}

/* ---- the same case as YAML ---------------------------------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void put(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if ((size_t)n < b->cap - b->n) {
            b->n += (size_t)n;
            return;
        }
        b->cap = 2 * b->cap + (size_t)n + 64;
        b->p = realloc(b->p, b->cap);
    }
}

static void put_list(sbuf *b, const char *key, const int *v, int n, int stride, int off)
{
    put(b, "  %s: [", key);
    for (int k = 0; k < n; k++)
        put(b, "%s%d", k ? ", " : "", v[k * stride + off]);
    put(b, "]\n");
}

static char *case_yaml(const fcase *c)
{
    sbuf b = {malloc(256), 0, 256};
    b.p[0] = '\0';
    if (c->nq == c->nk)
        put(&b, "seqlen: %d\n", c->nq);
    else
        put(&b, "seqlen_q: %d\nseqlen_k: %d\n", c->nq, c->nk);
    put(&b, "mask:\n  type: %s\n", c->type == T_SEEDED ? "random_eviction" : type_names[c->type]);
    switch (c->type) {
    case T_SLIDING:
        put(&b, "  left: %d\n  right: %d\n", c->left, c->right);
        break;
    case T_CDOC:
    case T_DOC:
        put_list(&b, "documents", c->len, c->n, 1, 0);
        break;
    case T_BLOCKWISE:
        put_list(&b, "blocks", c->len, c->n, 1, 0);
        break;
    case T_SQ:
        put(&b, "  samples:\n");
        for (int s = 0; s < c->ns; s++) {
            put(&b, "    - question: %d\n      answers: [", c->q[s]);
            for (int a = 0; a < c->na[s]; a++)
                put(&b, "%s%d", a ? ", " : "", c->ans[s][a]);
            put(&b, "]\n");
        }
        break;
    case T_GSW:
        put(&b, "  global: %d\n  left: %d\n  right: %d\n  causal: %s\n", c->global, c->left, c->right,
            c->causal ? "true" : "false");
        break;
    case T_PLC:
        put(&b, "  prefix: %d\n", c->prefix);
        break;
    case T_PLD:
        put(&b, "  documents:\n");
        for (int d = 0; d < c->n; d++)
            put(&b, "    - {length: %d, prefix: %d}\n", c->len[d], c->pre[d]);
        break;
    case T_QK:
        put(&b, "  spans: [");
        for (int k = 0; k < c->nspans; k++)
            put(&b, "%s[%d, %d]", k ? ", " : "", c->spans[2 * k], c->spans[2 * k + 1]);
        put(&b, "]\n");
        break;
    case T_EVICT:
        put(&b, "  evict: [");
        for (int k = 0; k < c->nev; k++)
            put(&b, "%s[%d, %d]", k ? ", " : "", c->ev[2 * k], c->ev[2 * k + 1]);
        put(&b, "]\n");
        break;
    case T_SEEDED:
        put(&b, "  seed: %llu\n  rate: %.17g\n  start_row: %d\n", (unsigned long long)c->seed, c->rate,
            c->start_row);
        break;
    case T_CUSTOM: {
        static const char *const names[4] = {"lts", "lte", "uts", "ute"};
        for (int x = 0; x < 4; x++)
            put_list(&b, names[x], c->raw, c->nk, 4, x);
        break;
    }
    }
    return b.p;
}

/* ---- checks ------------------------------------------------------------------------------------------------- */

static int bad_pairs(const famask_mask *m, const fcase *c, int *first_i, int *first_j)
{
    int bad = 0;
    for (int i = 0; i < c->nq; i++)
        for (int j = 0; j < c->nk; j++)
            if (famask_mask_visible(m, 0, 0, i, j) != ref_visible(c, i, j)) {
                if (!bad++) {
                    *first_i = i;
                    *first_j = j;
                }
            }
    return bad;
}

static void check_case(famask_ctx *ctx, fcase *c, int rep)
{
    famask_mask *m = NULL, *s = NULL;
    famask_status st = build(ctx, c, &m);
    CHECK(st == FAMASK_STATUS_OK, "%s %dx%d rep %d: builder failed: %s", type_names[c->type], c->nq, c->nk, rep,
          famask_ctx_errmsg(ctx));
    if (st)
        return;
    int bi = 0, bj = 0, bad = bad_pairs(m, c, &bi, &bj);
    CHECK(bad == 0, "%s %dx%d rep %d: %d pairs differ from the predicate, first (%d, %d): mask %d, reference %d",
          type_names[c->type], c->nq, c->nk, rep, bad, bi, bj, famask_mask_visible(m, 0, 0, bi, bj),
          ref_visible(c, bi, bj));
    /* The canonical form of famask.h: LT empty as [Nq, Nq), UT empty as [0, 0), a lone run above the diagonal
     * (start < j) in UT, else in LT, two runs with the earlier in UT. */
    int canon = 1;
    for (int j = 0; j < c->nk && canon; j++) {
        const int32_t *v = famask_mask_bounds(m) + 4 * j;
        int lt = v[0] < v[1], ut = v[2] < v[3];
        canon = (lt || (v[0] == c->nq && v[1] == c->nq)) && (ut || (v[2] == 0 && v[3] == 0)) &&
                (!(lt && ut) || v[3] < v[0]) && (!ut || lt || v[2] < j) && (!lt || ut || v[0] >= j);
        CHECK(canon, "%s rep %d: column %d is not canonical: [%d %d %d %d]", type_names[c->type], rep, j, v[0], v[1],
              v[2], v[3]);
    }
    if (c->type == T_SEEDED)
        c->seed >>= 1; /* the spec language takes seeds up to 2^63 - 1: compare against the builder at that seed */
    if (c->type == T_SEEDED) {
        famask_mask_free(m);
        m = NULL;
        CHECK_OK(ctx, build(ctx, c, &m));
    }
    char *yaml = case_yaml(c);
    st = famask_mask_compile_string(ctx, yaml, strlen(yaml), "case.yaml", 0, &s);
    CHECK(st == FAMASK_STATUS_OK && m && famask_mask_equal(m, s), "%s rep %d: the spec compiles to %s:\n%s%s",
          type_names[c->type], rep, st ? famask_ctx_errmsg(ctx) : "a different mask", yaml, "");
    free(yaml);
    famask_mask_free(s);
    famask_mask_free(m);
}

static void test_families(famask_ctx *ctx)
{
    for (int type = 0; type < T_COUNT; type++) {
        for (int rep = 0; rep < 60; rep++) {
            fcase c;
            int nq = pick_len(), nk = tl_rand_int(0, 2) ? nq : pick_len();
            random_case(&c, type, nq, nk);
            check_case(ctx, &c, rep);
            release(&c);
        }
        fcase c; /* one long case: a few thousand tokens, lengths that are not tile multiples */
        random_case(&c, type, tl_rand_int(2000, 3000), tl_rand_int(2000, 3000));
        check_case(ctx, &c, -1);
        release(&c);
    }
}

/* ---- compositions ------------------------------------------------------------------------------------------- */

static void test_compositions(famask_ctx *ctx)
{
    int representable = 0, rejected = 0;
    for (int rep = 0; rep < 300; rep++) {
        int n = tl_rand_int(1, 4), nq = pick_len() % 90 + 1, unite = tl_rand_int(0, 1);
        fcase c[4];
        famask_mask *parts[4] = {NULL, NULL, NULL, NULL}, *out = NULL;
        for (int k = 0; k < n; k++) {
            random_case(&c[k], tl_rand_int(0, T_COUNT - 1), nq, nq);
            CHECK_OK(ctx, build(ctx, &c[k], &parts[k]));
        }
        famask_status st = unite ? famask_mask_all_of(ctx, (const famask_mask *const *)parts, n, &out)
                                 : famask_mask_any_of(ctx, (const famask_mask *const *)parts, n, &out);
        /* The composed predicate, and the most runs of masked rows any column needs under it. */
        int max_runs = 0, bad = 0;
        for (int j = 0; j < nq; j++) {
            int runs = 0, prev = 0;
            for (int i = 0; i < nq; i++) {
                int vis = unite;
                for (int k = 0; k < n; k++)
                    vis = unite ? vis && ref_visible(&c[k], i, j) : vis || ref_visible(&c[k], i, j);
                runs += !vis && !prev;
                prev = !vis;
                if (out && famask_mask_visible(out, 0, 0, i, j) != vis)
                    bad++;
            }
            max_runs = runs > max_runs ? runs : max_runs;
        }
        if (max_runs <= 2) {
            CHECK(st == FAMASK_STATUS_OK && bad == 0, "%s of %d masks (rep %d): status %s, %d pairs differ: %s",
                  unite ? "all_of" : "any_of", n, rep, famask_status_str(st), bad, famask_ctx_errmsg(ctx));
            representable++;
        } else {
            CHECK(st == FAMASK_STATUS_NOT_REPRESENTABLE && !out && strstr(famask_ctx_errmsg(ctx), "column"),
                  "%s (rep %d) needs %d runs, but gave %s", unite ? "all_of" : "any_of", rep, max_runs,
                  famask_status_str(st));
            rejected++;
        }
        famask_mask_free(out);
        for (int k = 0; k < n; k++) {
            famask_mask_free(parts[k]);
            release(&c[k]);
        }
    }
    printf("compositions: %d representable, %d rejected as needing three runs\n", representable, rejected);
    CHECK(representable > 50 && rejected > 0,
          "the random compositions should exercise both verdicts (about 13 rejections expected)");
}

static void test_stack(famask_ctx *ctx)
{
    famask_mask *a = NULL, *b = NULL, *s = NULL;
    CHECK_OK(ctx, famask_mask_causal(ctx, 70, 70, &a));
    CHECK_OK(ctx, famask_mask_sliding_window(ctx, 70, 70, 5, 2, &b));
    const famask_mask *parts[6] = {a, b, b, a, a, a};
    CHECK_OK(ctx, famask_mask_stack(ctx, parts, 2, 3, &s));
    int bad = 0;
    for (int k = 0; k < 6 && s; k++)
        for (int i = 0; i < 70; i++)
            for (int j = 0; j < 70; j++)
                bad += famask_mask_visible(s, k / 3, k % 3, i, j) != famask_mask_visible(parts[k], 0, 0, i, j);
    CHECK(s && famask_mask_batch(s) == 2 && famask_mask_heads(s) == 3 && bad == 0, "stack: %d pairs differ", bad);
    famask_mask *c = NULL, *bad_out = NULL;
    CHECK_OK(ctx, famask_mask_causal(ctx, 70, 71, &c));
    const famask_mask *mixed[2] = {a, c};
    CHECK(famask_mask_stack(ctx, mixed, 1, 2, &bad_out) == FAMASK_STATUS_INVALID_ARGUMENT && !bad_out,
          "stack of different lengths must fail");
    CHECK(famask_mask_all_of(ctx, mixed, 2, &bad_out) == FAMASK_STATUS_INVALID_ARGUMENT && !bad_out,
          "all_of of different lengths must fail");
    /* A broadcast operand: all_of of a [2, 3] stack with a [1, 1] mask applies the latter to every slice. */
    const famask_mask *bc[2] = {s, b};
    CHECK_OK(ctx, famask_mask_all_of(ctx, bc, 2, &bad_out));
    bad = 0;
    for (int k = 0; k < 6 && bad_out; k++)
        for (int i = 0; i < 70; i++)
            for (int j = 0; j < 70; j++)
                bad += famask_mask_visible(bad_out, k / 3, k % 3, i, j) !=
                       (famask_mask_visible(parts[k], 0, 0, i, j) && famask_mask_visible(b, 0, 0, i, j));
    CHECK(bad_out && famask_mask_heads(bad_out) == 3 && bad == 0, "broadcast all_of: %d pairs differ", bad);
    famask_mask_free(bad_out);
    famask_mask_free(a);
    famask_mask_free(b);
    famask_mask_free(c);
    famask_mask_free(s);
}

static void test_builder_errors(famask_ctx *ctx)
{
    famask_mask *m = NULL;
    int neg[3] = {4, -1, 5}, zero[2] = {0, 0};
    CHECK(famask_mask_causal_document(ctx, neg, 3, &m) == FAMASK_STATUS_INVALID_ARGUMENT && !m, "negative length");
    CHECK(famask_mask_document(ctx, zero, 2, &m) == FAMASK_STATUS_INVALID_ARGUMENT && !m, "documents summing to 0");
    CHECK(famask_mask_causal_blockwise(ctx, zero, 0, &m) == FAMASK_STATUS_INVALID_ARGUMENT && !m, "no blocks");
    CHECK(famask_mask_sliding_window(ctx, 8, 8, -1, 0, &m) == FAMASK_STATUS_INVALID_ARGUMENT && !m, "negative left");
    int spans[4] = {0, 5, 4, 8};
    CHECK(famask_mask_qk_sparse(ctx, 8, 8, spans, 2, &m) == FAMASK_STATUS_INVALID_ARGUMENT && !m, "overlap");
    CHECK(strstr(famask_ctx_errmsg(ctx), "overlap") != NULL, "overlap message: %s", famask_ctx_errmsg(ctx));
    int ev[4] = {2, 5, 2, 6}, ev_bad[2] = {3, 3};
    CHECK(famask_mask_random_eviction(ctx, 8, 8, ev, 2, &m) == FAMASK_STATUS_INVALID_ARGUMENT && !m, "twice");
    CHECK(famask_mask_random_eviction(ctx, 8, 8, ev_bad, 1, &m) == FAMASK_STATUS_INVALID_ARGUMENT && !m,
          "row must follow the key");
    CHECK(famask_mask_random_eviction_seeded(ctx, 8, 8, 1, 1.5, 0, &m) == FAMASK_STATUS_INVALID_ARGUMENT && !m,
          "rate above 1");
    famask_prefix_doc d[1] = {{4, 5}};
    CHECK(famask_mask_prefix_lm_document(ctx, d, 1, &m) == FAMASK_STATUS_INVALID_ARGUMENT && !m, "prefix > length");
    CHECK(famask_mask_causal(ctx, 0, 8, &m) == FAMASK_STATUS_INVALID_ARGUMENT && !m, "seq_len_q 0");
    /* The seeded draw is reproducible: the same seed gives the same mask, another seed (almost surely) not. */
    famask_mask *a = NULL, *b = NULL, *c = NULL;
    CHECK_OK(ctx, famask_mask_random_eviction_seeded(ctx, 500, 500, 7, 0.5, 0, &a));
    CHECK_OK(ctx, famask_mask_random_eviction_seeded(ctx, 500, 500, 7, 0.5, 0, &b));
    CHECK_OK(ctx, famask_mask_random_eviction_seeded(ctx, 500, 500, 8, 0.5, 0, &c));
    CHECK(a && b && c && famask_mask_equal(a, b) && !famask_mask_equal(a, c), "seeded eviction reproducibility");
    famask_mask_free(a);
    famask_mask_free(b);
    famask_mask_free(c);
}

/* ---- tile classes per family -------------------------------------------------------------------------------- */

static void test_tiles(famask_ctx *ctx)
{
    const int bq = 128, bk = 64;
    for (int type = 0; type < T_COUNT; type++) {
        fcase c;
        random_case(&c, type, tl_rand_int(1500, 2500), tl_rand_int(1500, 2500));
        if (type == T_SLIDING || type == T_GSW)
            c.left = tl_rand_int(100, 400); /* windows that leave skipped and unmasked tiles both */
        famask_mask *m = NULL;
        CHECK_OK(ctx, build(ctx, &c, &m));
        if (!m) {
            release(&c);
            continue;
        }
        int tq = (c.nq + bq - 1) / bq, tk = (c.nk + bk - 1) / bk;
        uint8_t *cls = malloc((size_t)tq * tk);
        famask_tile_counts counts;
        CHECK_OK(ctx, famask_mask_tiles(ctx, m, 0, 0, bq, bk, cls, &counts));
        int64_t wrong = 0, conservative = 0, truly_visible = 0, truly_masked = 0;
        for (int y = 0; y < tq; y++)
            for (int x = 0; x < tk; x++) {
                int any_vis = 0, any_mask = 0;
                for (int i = y * bq; i < (y + 1) * bq && i < c.nq; i++)
                    for (int j = x * bk; j < (x + 1) * bk && j < c.nk; j++) {
                        int v = ref_visible(&c, i, j);
                        any_vis |= v;
                        any_mask |= !v;
                    }
                int k = cls[(size_t)y * tk + x];
                wrong += (k == FAMASK_TILE_SKIPPED && any_vis) || (k == FAMASK_TILE_UNMASKED && any_mask);
                conservative += k == FAMASK_TILE_PARTIAL && !any_mask;
                truly_visible += !any_mask;
                truly_masked += !any_vis;
            }
        CHECK(wrong == 0, "%s: %lld tiles classified wrongly", type_names[type], (long long)wrong);
        printf("tiles %dx%d %-24s %4dx%-4d: %5lld skipped (%lld all masked), %5lld partial, %5lld unmasked; "
               "%lld fully visible tiles called partial\n",
               bq, bk, type_names[type], c.nq, c.nk, (long long)counts.skipped, (long long)truly_masked,
               (long long)counts.partial, (long long)counts.unmasked, (long long)conservative);
        (void)truly_visible;
        free(cls);
        famask_mask_free(m);
        release(&c);
    }
}

/* fm_col_set (the compile path's two-interval canonicaliser) against the library's general one, on random,
 * out-of-range, empty, touching and overlapping intervals. */
static void test_col_set(void)
{
    int bad = 0;
    for (int rep = 0; rep < 200000; rep++) {
        int nq = tl_rand_int(1, 40), j = tl_rand_int(0, 45);
        int64_t in[4];
        for (int x = 0; x < 4; x++)
            in[x] = tl_rand_int(-5, nq + 5);
        if (tl_rand_int(0, 3) == 0)
            in[2] = in[1]; /* touching */
        int32_t got[4 * 46], want[4];
        fm_col_set(got, j, nq, in[0], in[1], in[2], in[3]);
        for (int x = 0; x < 4; x++)
            want[x] = (int32_t)(in[x] < 0 ? 0 : in[x] > nq ? nq : in[x]);
        for (int x = 0; x < 4; x += 2)
            if (want[x + 1] < want[x])
                want[x + 1] = want[x];
        fm_column_canonicalise(want, nq, j);
        if (memcmp(got + 4 * j, want, sizeof want) != 0 && !bad++)
            CHECK(0, "fm_col_set(j %d, nq %d, [%lld %lld) [%lld %lld)) = [%d %d %d %d], canonical [%d %d %d %d]", j,
                  nq, (long long)in[0], (long long)in[1], (long long)in[2], (long long)in[3], got[4 * j],
                  got[4 * j + 1], got[4 * j + 2], got[4 * j + 3], want[0], want[1], want[2], want[3]);
    }
    CHECK(bad == 0, "fm_col_set differs from fm_column_canonicalise in %d cases", bad);
}

int main(void)
{
    tl_seed("test-masks");
    famask_ctx *ctx = NULL;
    if (famask_ctx_create(&ctx))
        return 1;
    test_col_set();
    test_families(ctx);
    test_compositions(ctx);
    test_stack(ctx);
    test_builder_errors(ctx);
    test_tiles(ctx);
    famask_ctx_free(ctx);
    return tl_finish();
}
