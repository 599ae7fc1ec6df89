/*
 * registry.c: the table of mask families by spec name, and the pieces every family shares: building a
 * [1, 1, seq_len_k, 4] mask from a fill function, and checking lists of lengths that must sum to the sequence.
 */
#include "families.h"

#include <stdlib.h>
#include <string.h>

const fm_family fm_families[] = {
    {"full", 1, fm_compile_full},
    {"causal", 1, fm_compile_causal},
    {"sliding_window", 0, fm_compile_sliding_window},
    {"causal_document", 0, fm_compile_causal_document},
    {"document", 0, fm_compile_document},
    {"shared_question", 0, fm_compile_shared_question},
    {"global_sliding_window", 0, fm_compile_global_sliding_window},
    {"causal_blockwise", 0, fm_compile_causal_blockwise},
    {"prefix_lm_causal", 0, fm_compile_prefix_lm_causal},
    {"prefix_lm_document", 0, fm_compile_prefix_lm_document},
    {"qk_sparse", 0, fm_compile_qk_sparse},
    {"random_eviction", 0, fm_compile_random_eviction},
    {"custom", 0, fm_compile_custom},
    {"all_of", 0, fm_compile_all_of},
    {"any_of", 0, fm_compile_any_of},
    {NULL, 0, NULL},
};

const fm_family *fm_family_find(const char *name)
{
    for (const fm_family *f = fm_families; f->name; f++)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

/* The canonical form of famask.h for a column of two valid intervals: the same result as
 * fm_column_canonicalise, without its general sort, because the compile path runs it on every key column. */
static inline void canonicalise2(int32_t *v, int seq_len_q, int j)
{
    int32_t s0 = v[0], e0 = v[1], s1 = v[2], e1 = v[3];
    if (s0 >= e0) { /* first empty: keep the second as the only candidate */
        s0 = s1;
        e0 = e1;
        s1 = e1 = 0;
    } else if (s1 < e1 && s1 < s0) { /* both non-empty: order by start */
        int32_t t = s0;
        s0 = s1;
        s1 = t;
        t = e0;
        e0 = e1;
        e1 = t;
    }
    if (s1 < e1 && s1 <= e0) { /* touching or overlapping: one run */
        e0 = e1 > e0 ? e1 : e0;
        s1 = e1 = 0;
    }
    v[FAMASK_LTS] = v[FAMASK_LTE] = seq_len_q;
    v[FAMASK_UTS] = v[FAMASK_UTE] = 0;
    if (s0 >= e0)
        return;
    if (s1 < e1) { /* two runs: the earlier above (UT), the later below (LT) */
        v[FAMASK_UTS] = s0;
        v[FAMASK_UTE] = e0;
        v[FAMASK_LTS] = s1;
        v[FAMASK_LTE] = e1;
    } else if (s0 < j) {
        v[FAMASK_UTS] = s0;
        v[FAMASK_UTE] = e0;
    } else {
        v[FAMASK_LTS] = s0;
        v[FAMASK_LTE] = e0;
    }
}

famask_status fm_family_build(famask_ctx *ctx, int seq_len_q, int seq_len_k, fm_fill_fn *fill, const void *params,
                              famask_mask **out)
{
    famask_mask *m = NULL;
    famask_status st = fm_mask_alloc(ctx, 1, 1, seq_len_q, seq_len_k, &m);
    if (st)
        return st;
    fill(params, seq_len_q, seq_len_k, m->bounds);
    for (int j = 0; j < seq_len_k; j++)
        canonicalise2(m->bounds + 4 * (int64_t)j, seq_len_q, j);
    *out = m;
    return FAMASK_STATUS_OK;
}

famask_status fm_lengths_check(famask_ctx *ctx, const int *lengths, int n, const char *what, int *sum)
{
    if (n < 1 || !lengths)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'%s' must list at least one length", what);
    int64_t total = 0;
    for (int k = 0; k < n; k++) {
        if (lengths[k] < 0)
            return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'%s[%d]' is %d, but lengths must be non-negative",
                            what, k, lengths[k]);
        total += lengths[k];
        if (total > FAMASK_MAX_SEQ_LEN)
            return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'%s' sum to more than %d tokens", what,
                            FAMASK_MAX_SEQ_LEN);
    }
    if (total < 1)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'%s' sum to 0 tokens", what);
    *sum = (int)total;
    return FAMASK_STATUS_OK;
}

famask_status fm_spec_lengths(fm_compiler *cc, const fm_node *node, const char *what, int seq_len_q, int seq_len_k,
                              int **out, int *n)
{
    *out = NULL;
    famask_status st = fm_spec_int_list(cc, node, what, 0, FAMASK_MAX_SEQ_LEN, out, n);
    if (st)
        return st;
    int64_t total = 0;
    for (int k = 0; k < *n; k++)
        total += (*out)[k];
    if (*n == 0)
        st = fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC, "'%s' is empty: list at least one length", what);
    else if (seq_len_q != seq_len_k)
        st = fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC,
                           "%s need seqlen_q == seqlen_k, but they are %d and %d", what, seq_len_q, seq_len_k);
    else if (total != seq_len_q)
        st = fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC, "%s sum to %lld, but seqlen is %d", what,
                           (long long)total, seq_len_q);
    if (st) {
        free(*out);
        *out = NULL;
    }
    return st;
}
