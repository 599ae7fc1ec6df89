/*
 * shared-question.c: the `shared_question` family (one question, several answers that must not see each other,
 * packed as samples): visible(i, j) = i and j in the same sample, j <= i, and (j in the sample's question, or i
 * and j in the same answer). seq_len_q == seq_len_k == the sum of all question and answer lengths.
 * A question column j of sample [s, e) masks rows [0, j) and [e, N); an answer column j of answer [a, b) masks
 * [0, j) and [b, N).
 */
#include "families.h"

#include <stdlib.h>

typedef struct params {
    const famask_qa_sample *samples;
    int n;
} params;

static void fill(const void *p_, int seq_len_q, int seq_len_k, int32_t *bounds)
{
    const params *p = p_;
    int64_t s = 0;
    for (int k = 0; k < p->n; k++) {
        const famask_qa_sample *q = &p->samples[k];
        int64_t e = s + q->question;
        for (int a = 0; a < q->n_answers; a++)
            e += q->answers[a];
        int64_t j = s;
        for (; j < s + q->question; j++)
            fm_col_set(bounds, j, seq_len_q, 0, j, e, seq_len_q);
        for (int a = 0; a < q->n_answers; a++) {
            int64_t b = j + q->answers[a];
            for (; j < b; j++)
                fm_col_set(bounds, j, seq_len_q, 0, j, b, seq_len_q);
        }
        s = e;
    }
}

famask_status famask_mask_shared_question(famask_ctx *ctx, const famask_qa_sample *samples, int n_samples,
                                          famask_mask **out)
{
    *out = NULL;
    if (n_samples < 1 || !samples)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'samples' must list at least one sample");
    int64_t total = 0;
    for (int k = 0; k < n_samples; k++) {
        const famask_qa_sample *q = &samples[k];
        if (q->question < 0 || q->n_answers < 0 || (q->n_answers > 0 && !q->answers))
            return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "sample %d: negative question length or bad answers",
                            k);
        total += q->question;
        for (int a = 0; a < q->n_answers; a++) {
            if (q->answers[a] < 0)
                return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "sample %d answer %d: length %d is negative", k,
                                a, q->answers[a]);
            total += q->answers[a];
        }
        if (total > FAMASK_MAX_SEQ_LEN)
            return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'samples' sum to more than %d tokens",
                            FAMASK_MAX_SEQ_LEN);
    }
    if (total < 1)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'samples' sum to 0 tokens");
    params p = {samples, n_samples};
    return fm_family_build(ctx, (int)total, (int)total, fill, &p, out);
}

FM_FAMILY_COMPILE(fm_compile_shared_question)
{
    static const char *const keys[] = {"type", "samples", NULL};
    static const char *const sample_keys[] = {"question", "answers", NULL};
    const fm_node *list = NULL;
    famask_qa_sample *samples = NULL;
    int **answers = NULL, n = 0;
    int64_t total = 0;
    famask_status st = fm_spec_check_keys(cc, node, "shared_question", keys);
    if (!st)
        st = fm_spec_require(cc, node, "samples", "shared_question", &list);
    if (!st)
        st = fm_spec_expect(cc, list, FM_NODE_SEQ, "'samples'");
    if (st)
        return st;
    n = list->n;
    if (n == 0)
        return fm_spec_error(cc, list, FAMASK_STATUS_BAD_SPEC, "'samples' is empty: list at least one sample");
    samples = fm_calloc(cc->ctx, (size_t)n, sizeof *samples);
    answers = fm_calloc(cc->ctx, (size_t)n, sizeof *answers);
    if (!samples || !answers) {
        st = FAMASK_STATUS_NO_MEMORY;
        goto fail;
    }
    for (int k = 0; k < n && !st; k++) {
        const fm_node *item = list->kids[k], *q = NULL, *a = NULL;
        int64_t qlen = 0;
        st = fm_spec_expect(cc, item, FM_NODE_MAP, "a sample (write {question: q, answers: [a1, ...]})");
        if (!st)
            st = fm_spec_check_keys(cc, item, "sample", sample_keys);
        if (!st)
            st = fm_spec_require(cc, item, "question", "sample", &q);
        if (!st)
            st = fm_spec_int(cc, q, "question", 0, FAMASK_MAX_SEQ_LEN, &qlen);
        if (!st)
            st = fm_spec_require(cc, item, "answers", "sample", &a);
        if (!st)
            st = fm_spec_int_list(cc, a, "answers", 0, FAMASK_MAX_SEQ_LEN, &answers[k], &samples[k].n_answers);
        if (st)
            break;
        samples[k].question = (int)qlen;
        samples[k].answers = answers[k];
        total += qlen;
        for (int x = 0; x < samples[k].n_answers; x++)
            total += answers[k][x];
    }
    if (st)
        goto fail;
    if (seq_len_q != seq_len_k)
        st = fm_spec_error(cc, list, FAMASK_STATUS_BAD_SPEC,
                           "samples need seqlen_q == seqlen_k, but they are %d and %d", seq_len_q, seq_len_k);
    else if (total != seq_len_q)
        st = fm_spec_error(cc, list, FAMASK_STATUS_BAD_SPEC, "samples sum to %lld, but seqlen is %d",
                           (long long)total, seq_len_q);
    else
        st = famask_mask_shared_question(cc->ctx, samples, n, out);
fail:
    for (int k = 0; answers && k < n; k++)
        free(answers[k]);
    free(answers);
    free(samples);
    return st;
}
