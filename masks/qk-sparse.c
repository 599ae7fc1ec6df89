/*
 * qk-sparse.c: the `qk_sparse` family: visible(i, j) = j <= i and not (s <= j <= i < e for a span [s, e)
 * containing j). Spans are half-open and disjoint (touching is fine). Any seq_len_q x seq_len_k: column j masks
 * rows [0, j), or [0, e) when j lies in span [s, e).
 */
#include "families.h"

#include <stdlib.h>
#include <string.h>

typedef struct params {
    const int *spans;
    int n;
} params;

static void fill(const void *p_, int seq_len_q, int seq_len_k, int32_t *bounds)
{
    const params *p = p_;
    for (int64_t j = 0; j < seq_len_k; j++)
        fm_col_set(bounds, j, seq_len_q, 0, j, 0, 0);
    for (int k = 0; k < p->n; k++) {
        int64_t s = p->spans[2 * k], e = p->spans[2 * k + 1];
        for (int64_t j = s; j < e && j < seq_len_k; j++)
            fm_col_set(bounds, j, seq_len_q, 0, e, 0, 0);
    }
}

static int cmp_start(const void *a, const void *b)
{
    const int *x = a, *y = b;
    return (x[0] > y[0]) - (x[0] < y[0]);
}

famask_status famask_mask_qk_sparse(famask_ctx *ctx, int seq_len_q, int seq_len_k, const int *spans, int n_spans,
                                    famask_mask **out)
{
    *out = NULL;
    if (n_spans < 0 || (n_spans > 0 && !spans))
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "bad span list");
    int limit = seq_len_q > seq_len_k ? seq_len_q : seq_len_k;
    int *sorted = fm_malloc(ctx, (size_t)(n_spans ? n_spans : 1) * 2 * sizeof(int));
    if (!sorted)
        return FAMASK_STATUS_NO_MEMORY;
    famask_status st = FAMASK_STATUS_OK;
    for (int k = 0; k < n_spans && !st; k++)
        if (spans[2 * k] < 0 || spans[2 * k + 1] < spans[2 * k] || spans[2 * k + 1] > limit)
            st = fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                          "span %d: [%d, %d) is not within 0 <= start <= end <= %d", k, spans[2 * k],
                          spans[2 * k + 1], limit);
    if (!st && n_spans) {
        memcpy(sorted, spans, (size_t)n_spans * 2 * sizeof(int));
        qsort(sorted, (size_t)n_spans, 2 * sizeof(int), cmp_start);
        for (int k = 1; k < n_spans && !st; k++)
            if (sorted[2 * k] < sorted[2 * k - 1])
                st = fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "spans [%d, %d) and [%d, %d) overlap",
                              sorted[2 * k - 2], sorted[2 * k - 1], sorted[2 * k], sorted[2 * k + 1]);
    }
    params p = {spans, n_spans};
    if (!st)
        st = fm_family_build(ctx, seq_len_q, seq_len_k, fill, &p, out);
    free(sorted);
    return st;
}

FM_FAMILY_COMPILE(fm_compile_qk_sparse)
{
    static const char *const keys[] = {"type", "spans", NULL};
    const fm_node *list = NULL;
    int *spans = NULL;
    int64_t limit = seq_len_q > seq_len_k ? seq_len_q : seq_len_k;
    famask_status st = fm_spec_check_keys(cc, node, "qk_sparse", keys);
    if (!st)
        st = fm_spec_require(cc, node, "spans", "qk_sparse", &list);
    if (!st)
        st = fm_spec_expect(cc, list, FM_NODE_SEQ, "'spans'");
    if (st)
        return st;
    spans = fm_malloc(cc->ctx, (size_t)(list->n ? list->n : 1) * 2 * sizeof(int));
    if (!spans)
        return FAMASK_STATUS_NO_MEMORY;
    for (int k = 0; k < list->n && !st; k++) {
        const fm_node *item = list->kids[k];
        int64_t s = 0, e = 0;
        if (item->kind != FM_NODE_SEQ || item->n != 2) {
            st = fm_spec_error(cc, item, FAMASK_STATUS_BAD_SPEC, "a span must be a pair [start, end]");
            break;
        }
        st = fm_spec_int(cc, item->kids[0], "span start", 0, limit, &s);
        if (!st)
            st = fm_spec_int(cc, item->kids[1], "span end", s, limit, &e);
        spans[2 * k] = (int)s;
        spans[2 * k + 1] = (int)e;
        /* Disjointness against every earlier span, so the message can point at the offending one. */
        for (int x = 0; x < k && !st; x++)
            if (spans[2 * x] < e && s < spans[2 * x + 1])
                st = fm_spec_error(cc, item, FAMASK_STATUS_BAD_SPEC,
                                   "span [%lld, %lld) overlaps span [%d, %d): spans must be disjoint", (long long)s,
                                   (long long)e, spans[2 * x], spans[2 * x + 1]);
    }
    if (!st)
        st = famask_mask_qk_sparse(cc->ctx, seq_len_q, seq_len_k, spans, list->n, out);
    free(spans);
    return st;
}
