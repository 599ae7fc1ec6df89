/*
 * prefix-lm-document.c: the `prefix_lm_document` family (packed prefix-LM documents): visible(i, j) = i and j in
 * the same document and (j < doc_start + prefix or j <= i); the lengths sum to seq_len_q == seq_len_k.
 * Column j of document [s, e) masks rows [0, s) and [e, N) inside the prefix, [0, j) and [e, N) after it.
 */
#include "families.h"

#include <stdlib.h>

typedef struct params {
    const famask_prefix_doc *docs;
    int n;
} params;

static void fill(const void *p_, int seq_len_q, int seq_len_k, int32_t *bounds)
{
    const params *p = p_;
    int64_t s = 0;
    for (int d = 0; d < p->n; d++) {
        int64_t e = s + p->docs[d].length, pe = s + p->docs[d].prefix;
        for (int64_t j = s; j < e; j++)
            fm_col_set(bounds, j, seq_len_q, 0, j < pe ? s : j, e, seq_len_q);
        s = e;
    }
}

famask_status famask_mask_prefix_lm_document(famask_ctx *ctx, const famask_prefix_doc *docs, int n_docs,
                                             famask_mask **out)
{
    *out = NULL;
    if (n_docs < 1 || !docs)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'documents' must list at least one document");
    int64_t total = 0;
    for (int d = 0; d < n_docs; d++) {
        if (docs[d].length < 0 || docs[d].prefix < 0 || docs[d].prefix > docs[d].length)
            return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                            "document %d: need 0 <= prefix (%d) <= length (%d)", d, docs[d].prefix, docs[d].length);
        total += docs[d].length;
        if (total > FAMASK_MAX_SEQ_LEN)
            return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'documents' sum to more than %d tokens",
                            FAMASK_MAX_SEQ_LEN);
    }
    if (total < 1)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'documents' sum to 0 tokens");
    params p = {docs, n_docs};
    return fm_family_build(ctx, (int)total, (int)total, fill, &p, out);
}

FM_FAMILY_COMPILE(fm_compile_prefix_lm_document)
{
    static const char *const keys[] = {"type", "documents", NULL};
    static const char *const doc_keys[] = {"length", "prefix", NULL};
    const fm_node *list = NULL;
    famask_prefix_doc *docs = NULL;
    int64_t total = 0;
    famask_status st = fm_spec_check_keys(cc, node, "prefix_lm_document", keys);
    if (!st)
        st = fm_spec_require(cc, node, "documents", "prefix_lm_document", &list);
    if (!st)
        st = fm_spec_expect(cc, list, FM_NODE_SEQ, "'documents'");
    if (st)
        return st;
    if (list->n == 0)
        return fm_spec_error(cc, list, FAMASK_STATUS_BAD_SPEC, "'documents' is empty: list at least one document");
    docs = fm_calloc(cc->ctx, (size_t)list->n, sizeof *docs);
    if (!docs)
        return FAMASK_STATUS_NO_MEMORY;
    for (int d = 0; d < list->n && !st; d++) {
        const fm_node *item = list->kids[d], *ln = NULL, *pn = NULL;
        int64_t len = 0, pre = 0;
        st = fm_spec_expect(cc, item, FM_NODE_MAP, "a document (write {length: n, prefix: p})");
        if (!st)
            st = fm_spec_check_keys(cc, item, "document", doc_keys);
        if (!st)
            st = fm_spec_require(cc, item, "length", "document", &ln);
        if (!st)
            st = fm_spec_int(cc, ln, "length", 0, FAMASK_MAX_SEQ_LEN, &len);
        if (!st)
            st = fm_spec_require(cc, item, "prefix", "document", &pn);
        if (!st)
            st = fm_spec_int(cc, pn, "prefix", 0, FAMASK_MAX_SEQ_LEN, &pre);
        if (!st && pre > len)
            st = fm_spec_error(cc, pn, FAMASK_STATUS_BAD_SPEC, "prefix %lld is longer than the document (%lld)",
                               (long long)pre, (long long)len);
        docs[d].length = (int)len;
        docs[d].prefix = (int)pre;
        total += len;
    }
    if (!st && seq_len_q != seq_len_k)
        st = fm_spec_error(cc, list, FAMASK_STATUS_BAD_SPEC,
                           "documents need seqlen_q == seqlen_k, but they are %d and %d", seq_len_q, seq_len_k);
    else if (!st && total != seq_len_q)
        st = fm_spec_error(cc, list, FAMASK_STATUS_BAD_SPEC, "documents sum to %lld, but seqlen is %d",
                           (long long)total, seq_len_q);
    if (!st)
        st = famask_mask_prefix_lm_document(cc->ctx, docs, list->n, out);
    free(docs);
    return st;
}
