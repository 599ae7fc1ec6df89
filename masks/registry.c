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

famask_status fm_family_build(famask_ctx *ctx, int seq_len_q, int seq_len_k, fm_fill_fn *fill, const void *params,
                              famask_mask **out)
{
    /* Not fm_mask_alloc: its all-visible initialisation would be a wasted pass, since fill writes every column
     * (canonical already, through fm_col_set). */
    famask_status st = fm_check_shape(ctx, 1, 1, seq_len_q, seq_len_k);
    if (st)
        return st;
    famask_mask *m = fm_calloc(ctx, 1, sizeof *m);
    if (!m)
        return FAMASK_STATUS_NO_MEMORY;
    m->bounds = fm_malloc(ctx, (size_t)seq_len_k * 4 * sizeof(int32_t));
    if (!m->bounds) {
        free(m);
        return FAMASK_STATUS_NO_MEMORY;
    }
    m->batch_m = m->heads_m = 1;
    m->seq_len_q = seq_len_q;
    m->seq_len_k = seq_len_k;
    fill(params, seq_len_q, seq_len_k, m->bounds);
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
        st = fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC, "%s need seqlen_q == seqlen_k, but they are %d and %d",
                           what, seq_len_q, seq_len_k);
    else if (total != seq_len_q)
        st = fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC, "%s sum to %lld, but seqlen is %d", what, (long long)total,
                           seq_len_q);
    if (st) {
        free(*out);
        *out = NULL;
    }
    return st;
}

typedef struct segments {
    const int *lengths;
    int n;
    fm_segment_col_fn *col;
} segments;

static void fill_segments(const void *p_, int seq_len_q, int seq_len_k, int32_t *bounds)
{
    const segments *p = p_;
    int64_t last_start = seq_len_k - p->lengths[p->n - 1], s = 0;
    for (int d = 0; d < p->n; d++) {
        int64_t e = s + p->lengths[d];
        for (int64_t j = s; j < e; j++)
            p->col(bounds, j, seq_len_q, s, e, last_start);
        s = e;
    }
}

famask_status fm_segments_build(famask_ctx *ctx, const int *lengths, int n, const char *what, fm_segment_col_fn *col,
                                famask_mask **out)
{
    *out = NULL;
    int total = 0;
    famask_status st = fm_lengths_check(ctx, lengths, n, what, &total);
    if (st)
        return st;
    segments p = {lengths, n, col};
    return fm_family_build(ctx, total, total, fill_segments, &p, out);
}

famask_status fm_segments_compile(fm_compiler *cc, const fm_node *node, const char *type, const char *key,
                                  int seq_len_q, int seq_len_k,
                                  famask_status (*build)(famask_ctx *, const int *, int, famask_mask **),
                                  famask_mask **out)
{
    const char *const keys[] = {"type", key, NULL};
    const fm_node *n = NULL;
    int *lengths = NULL, count = 0;
    famask_status st = fm_spec_check_keys(cc, node, type, keys);
    if (!st)
        st = fm_spec_require(cc, node, key, type, &n);
    if (!st)
        st = fm_spec_lengths(cc, n, key, seq_len_q, seq_len_k, &lengths, &count);
    if (!st)
        st = build(cc->ctx, lengths, count, out);
    free(lengths);
    return st;
}
