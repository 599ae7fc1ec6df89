/*
 * causal-document.c: the `causal_document` family (packed sequences): visible(i, j) = i and j in the same
 * document and j <= i; the lengths sum to seq_len_q == seq_len_k. Column j of document [s, e) masks rows
 * [0, j) and [e, N).
 */
#include "families.h"

#include <stdlib.h>

typedef struct params {
    const int *lengths;
    int n;
} params;

static void fill(const void *p_, int seq_len_q, int seq_len_k, int32_t *bounds)
{
    const params *p = p_;
    int64_t s = 0;
    for (int d = 0; d < p->n; d++) {
        int64_t e = s + p->lengths[d];
        for (int64_t j = s; j < e; j++)
            fm_col_set(bounds, j, seq_len_q, 0, j, e, seq_len_q);
        s = e;
    }
}

famask_status famask_mask_causal_document(famask_ctx *ctx, const int *lengths, int n_docs, famask_mask **out)
{
    *out = NULL;
    int n = 0;
    famask_status st = fm_lengths_check(ctx, lengths, n_docs, "documents", &n);
    if (st)
        return st;
    params p = {lengths, n_docs};
    return fm_family_build(ctx, n, n, fill, &p, out);
}

FM_FAMILY_COMPILE(fm_compile_causal_document)
{
    static const char *const keys[] = {"type", "documents", NULL};
    const fm_node *n = NULL;
    int *lengths = NULL, count = 0;
    famask_status st = fm_spec_check_keys(cc, node, "causal_document", keys);
    if (!st)
        st = fm_spec_require(cc, node, "documents", "causal_document", &n);
    if (!st)
        st = fm_spec_lengths(cc, n, "documents", seq_len_q, seq_len_k, &lengths, &count);
    if (!st)
        st = famask_mask_causal_document(cc->ctx, lengths, count, out);
    free(lengths);
    return st;
}
