/*
 * compose.c: compositions on the per-column intervals: all_of (visible in every mask: the masked sets unite),
 * any_of (visible in some mask: the masked sets intersect), and stack (per-(batch row, head) masks into one
 * [batch_m, heads_m, seq_len_k, 4] mask). Inputs of all_of/any_of share seq_len_q and seq_len_k; batch and heads
 * are each 1 (broadcast) or a common value. A result column with more than two masked runs is
 * FAMASK_STATUS_NOT_REPRESENTABLE, naming the column and the runs.
 */
#include "families.h"

#include <stdlib.h>
#include <string.h>

/* Sorts and merges n half-open intervals (in place in iv, 2n ints); returns the number of runs. */
static int merge_runs(int32_t *iv, int n)
{
    int m = 0;
    for (int a = 0; a < n; a++) { /* insertion sort of the non-empty ones by start; n is small */
        int32_t s = iv[2 * a], e = iv[2 * a + 1];
        if (s >= e)
            continue;
        int p = m++;
        while (p > 0 && iv[2 * (p - 1)] > s) {
            iv[2 * p] = iv[2 * (p - 1)];
            iv[2 * p + 1] = iv[2 * (p - 1) + 1];
            p--;
        }
        iv[2 * p] = s;
        iv[2 * p + 1] = e;
    }
    int k = 0;
    for (int a = 0; a < m; a++) {
        if (k > 0 && iv[2 * a] <= iv[2 * k - 1]) {
            if (iv[2 * a + 1] > iv[2 * k - 1])
                iv[2 * k - 1] = iv[2 * a + 1];
        } else {
            iv[2 * k] = iv[2 * a];
            iv[2 * k + 1] = iv[2 * a + 1];
            k++;
        }
    }
    return k;
}

/* Intersection of two sorted disjoint run lists; returns the number of runs written to out. */
static int intersect_runs(const int32_t *a, int na, const int32_t *b, int nb, int32_t *out)
{
    int x = 0, y = 0, k = 0;
    while (x < na && y < nb) {
        int32_t s = a[2 * x] > b[2 * y] ? a[2 * x] : b[2 * y];
        int32_t e = a[2 * x + 1] < b[2 * y + 1] ? a[2 * x + 1] : b[2 * y + 1];
        if (s < e) {
            out[2 * k] = s;
            out[2 * k + 1] = e;
            k++;
        }
        if (a[2 * x + 1] < b[2 * y + 1])
            x++;
        else
            y++;
    }
    return k;
}

static famask_status compose(famask_ctx *ctx, const famask_mask *const *masks, int n, int unite, famask_mask **out)
{
    const char *op = unite ? "all_of" : "any_of";
    famask_mask *m = NULL;
    int32_t *buf = NULL;
    famask_status st = FAMASK_STATUS_OK;
    *out = NULL;
    if (n < 1 || !masks)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "%s needs at least one mask", op);
    int nb = 1, nh = 1, nq = masks[0]->seq_len_q, nk = masks[0]->seq_len_k;
    for (int k = 0; k < n; k++) {
        const famask_mask *x = masks[k];
        if (x->seq_len_q != nq || x->seq_len_k != nk)
            return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                            "%s: mask %d is %d x %d, but mask 0 is %d x %d (seq_len_q x seq_len_k)", op, k,
                            x->seq_len_q, x->seq_len_k, nq, nk);
        if ((x->batch_m != 1 && nb != 1 && x->batch_m != nb) || (x->heads_m != 1 && nh != 1 && x->heads_m != nh))
            return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                            "%s: mask %d has batch %d and heads %d, which do not broadcast with %d and %d", op, k,
                            x->batch_m, x->heads_m, nb, nh);
        nb = x->batch_m > nb ? x->batch_m : nb;
        nh = x->heads_m > nh ? x->heads_m : nh;
    }
    st = fm_mask_alloc(ctx, nb, nh, nq, nk, &m);
    if (st)
        return st;
    /* Working space: 2n intervals for all_of; for any_of two run lists of up to n + 1 runs each. */
    buf = fm_malloc(ctx, (size_t)(4 * n + 8) * 2 * sizeof *buf);
    if (!buf) {
        st = FAMASK_STATUS_NO_MEMORY;
        goto fail;
    }
    for (int b = 0; b < nb; b++)
        for (int h = 0; h < nh; h++)
            for (int j = 0; j < nk; j++) {
                int runs = 0;
                int32_t *res = buf;
                if (unite) {
                    for (int k = 0; k < n; k++) {
                        const famask_mask *x = masks[k];
                        memcpy(buf + 4 * k, fm_mask_column(x, x->batch_m > 1 ? b : 0, x->heads_m > 1 ? h : 0, j),
                               4 * sizeof *buf);
                    }
                    runs = merge_runs(buf, 2 * n);
                } else {
                    int32_t *cur = buf, *nxt = buf + 2 * (2 * n + 4);
                    for (int k = 0; k < n; k++) {
                        const famask_mask *x = masks[k];
                        int32_t col[4];
                        memcpy(col, fm_mask_column(x, x->batch_m > 1 ? b : 0, x->heads_m > 1 ? h : 0, j),
                               sizeof col);
                        int nc = merge_runs(col, 2);
                        if (k == 0) {
                            memcpy(cur, col, sizeof col);
                            runs = nc;
                        } else {
                            runs = intersect_runs(cur, runs, col, nc, nxt);
                            int32_t *t = cur;
                            cur = nxt;
                            nxt = t;
                        }
                    }
                    res = cur;
                }
                if (runs > 2) {
                    char list[256];
                    size_t used = 0;
                    for (int r = 0; r < runs && used + 40 < sizeof list; r++)
                        used += (size_t)snprintf(list + used, sizeof list - used, "%s[%d, %d)", r ? " " : "",
                                                 res[2 * r], res[2 * r + 1]);
                    if (nb > 1 || nh > 1)
                        st = fm_error(ctx, FAMASK_STATUS_NOT_REPRESENTABLE,
                                      "batch %d head %d column %d: %s masks %d separate runs of rows %s, but a "
                                      "column holds at most two",
                                      b, h, j, op, runs, list);
                    else
                        st = fm_error(ctx, FAMASK_STATUS_NOT_REPRESENTABLE,
                                      "column %d: %s masks %d separate runs of rows %s, but a column holds at most "
                                      "two",
                                      j, op, runs, list);
                    goto fail;
                }
                int32_t *v = fm_mask_column(m, b, h, j);
                v[FAMASK_LTS] = v[FAMASK_LTE] = nq;
                v[FAMASK_UTS] = v[FAMASK_UTE] = 0;
                if (runs >= 1) {
                    v[FAMASK_UTS] = res[0];
                    v[FAMASK_UTE] = res[1];
                }
                if (runs == 2) {
                    v[FAMASK_LTS] = res[2];
                    v[FAMASK_LTE] = res[3];
                }
                fm_column_canonicalise(v, nq, j);
            }
    free(buf);
    *out = m;
    return FAMASK_STATUS_OK;
fail:
    free(buf);
    famask_mask_free(m);
    return st;
}

famask_status famask_mask_all_of(famask_ctx *ctx, const famask_mask *const *masks, int n, famask_mask **out)
{
    return compose(ctx, masks, n, 1, out);
}

famask_status famask_mask_any_of(famask_ctx *ctx, const famask_mask *const *masks, int n, famask_mask **out)
{
    return compose(ctx, masks, n, 0, out);
}

famask_status famask_mask_stack(famask_ctx *ctx, const famask_mask *const *parts, int batch_m, int heads_m,
                                famask_mask **out)
{
    *out = NULL;
    if (!parts || batch_m < 1 || heads_m < 1)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "stack needs at least one part");
    int nq = parts[0]->seq_len_q, nk = parts[0]->seq_len_k;
    for (int k = 0; k < batch_m * heads_m; k++) {
        const famask_mask *x = parts[k];
        if (x->batch_m != 1 || x->heads_m != 1 || x->seq_len_q != nq || x->seq_len_k != nk)
            return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                            "stack: part %d (batch %d head %d) is [%d, %d] x %d x %d, but parts must be [1, 1] "
                            "x %d x %d",
                            k, k / heads_m, k % heads_m, x->batch_m, x->heads_m, x->seq_len_q, x->seq_len_k, nq, nk);
    }
    famask_mask *m = NULL;
    famask_status st = fm_mask_alloc(ctx, batch_m, heads_m, nq, nk, &m);
    if (st)
        return st;
    for (int b = 0; b < batch_m; b++)
        for (int h = 0; h < heads_m; h++)
            memcpy(fm_mask_column(m, b, h, 0), parts[b * heads_m + h]->bounds, (size_t)nk * 4 * sizeof(int32_t));
    *out = m;
    return FAMASK_STATUS_OK;
}

/* all_of / any_of in a spec: {type: all_of, masks: [...]} or the short form {all_of: [...]}. */
static famask_status compile_composition(fm_compiler *cc, const fm_node *node, int seq_len_q, int seq_len_k,
                                         int unite, famask_mask **out)
{
    const char *op = unite ? "all_of" : "any_of";
    static const char *const keys[] = {"type", "masks", NULL};
    const fm_node *list = NULL;
    famask_mask **parts = NULL;
    famask_status st = FAMASK_STATUS_OK;
    if (!node)
        return fm_spec_error(cc, NULL, FAMASK_STATUS_BAD_SPEC, "'%s' needs its masks: write {type: %s, masks: [...]}",
                             op, op);
    if (fm_spec_get(node, "type")) {
        st = fm_spec_check_keys(cc, node, op, keys);
        if (!st)
            st = fm_spec_require(cc, node, "masks", op, &list);
    } else {
        list = fm_spec_get(node, op);
    }
    if (!st)
        st = fm_spec_expect(cc, list, FM_NODE_SEQ, "'masks'");
    if (st)
        return st;
    if (list->n == 0)
        return fm_spec_error(cc, list, FAMASK_STATUS_BAD_SPEC, "'%s' lists no masks: give at least one", op);
    if (cc->depth > 64)
        return fm_spec_error(cc, node, FAMASK_STATUS_BAD_SPEC, "compositions nest deeper than 64");
    parts = fm_calloc(cc->ctx, (size_t)list->n, sizeof *parts);
    if (!parts)
        return FAMASK_STATUS_NO_MEMORY;
    cc->depth++;
    for (int k = 0; k < list->n && !st; k++)
        st = fm_spec_compile_mask(cc, list->kids[k], seq_len_q, seq_len_k, &parts[k]);
    cc->depth--;
    if (!st) {
        st = compose(cc->ctx, (const famask_mask *const *)parts, list->n, unite, out);
        if (st)
            fm_error_prefix(cc->ctx, "%s:%d:%d", cc->name, node->line, node->col);
    }
    for (int k = 0; k < list->n; k++)
        famask_mask_free(parts[k]);
    free(parts);
    return st;
}

FM_FAMILY_COMPILE(fm_compile_all_of)
{
    return compile_composition(cc, node, seq_len_q, seq_len_k, 1, out);
}

FM_FAMILY_COMPILE(fm_compile_any_of)
{
    return compile_composition(cc, node, seq_len_q, seq_len_k, 0, out);
}
