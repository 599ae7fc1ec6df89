/*
 * custom.c: the `custom` family: the four vectors given directly (`lts`, `lte`, `uts`, `ute`, each a list of
 * seq_len_k row bounds), or read from `file:` (an int32 .npy [seq_len_k, 4] or [B, H, seq_len_k, 4], or a
 * .fmask, resolved relative to the spec's folder). Any seq_len_q x seq_len_k.
 * Missing vectors: a pair with neither bound given is empty; a pair with one bound given gets start 0 or end
 * seq_len_q for the other (so `lts` alone masks [lts, N), FlashMask's one-vector causal form below the diagonal).
 */
#include "families.h"

#include <stdlib.h>
#include <string.h>

static famask_status compile_file(fm_compiler *cc, const fm_node *node, const fm_node *fn, int seq_len_q,
                                  int seq_len_k, famask_mask **out)
{
    char *path = NULL;
    famask_status st = FAMASK_STATUS_OK;
    if (fn->kind != FM_NODE_SCALAR || !*fn->value)
        return fm_spec_error(cc, fn, FAMASK_STATUS_BAD_SPEC, "'file' must be a path");
    static const char *const vec[] = {"lts", "lte", "uts", "ute", NULL};
    for (int k = 0; vec[k]; k++)
        if (fm_spec_get(node, vec[k]))
            return fm_spec_error(cc, fm_spec_key(node, vec[k]), FAMASK_STATUS_BAD_SPEC,
                                 "give either 'file' or the vectors 'lts'/'lte'/'uts'/'ute', not both");
    size_t nd = strlen(cc->dir), nf = strlen(fn->value);
    path = fm_malloc(cc->ctx, nd + nf + 2);
    if (!path)
        return FAMASK_STATUS_NO_MEMORY;
    if (fn->value[0] == '/' || nd == 0)
        memcpy(path, fn->value, nf + 1);
    else
        snprintf(path, nd + nf + 2, "%s/%s", cc->dir, fn->value);
    famask_mask *m = NULL;
    st = famask_mask_load(cc->ctx, path, seq_len_q, &m);
    if (st) {
        fm_error_prefix(cc->ctx, "%s:%d:%d", cc->name, fn->line, fn->col);
        goto fail;
    }
    if (m->seq_len_k != seq_len_k || m->seq_len_q != seq_len_q) {
        st = fm_spec_error(cc, fn, FAMASK_STATUS_BAD_SPEC, "'%s' holds a %d x %d mask, but the spec is %d x %d",
                           path, m->seq_len_q, m->seq_len_k, seq_len_q, seq_len_k);
        famask_mask_free(m);
        goto fail;
    }
    *out = m;
fail:
    free(path);
    return st;
}

FM_FAMILY_COMPILE(fm_compile_custom)
{
    static const char *const keys[] = {"type", "lts", "lte", "uts", "ute", "file", NULL};
    static const char *const names[4] = {"lts", "lte", "uts", "ute"};
    int *vec[4] = {NULL, NULL, NULL, NULL};
    int32_t *bounds = NULL;
    famask_status st = fm_spec_check_keys(cc, node, "custom", keys);
    if (st)
        return st;
    const fm_node *fn = fm_spec_get(node, "file");
    if (fn)
        return compile_file(cc, node, fn, seq_len_q, seq_len_k, out);
    const fm_node *vn[4];
    for (int x = 0; x < 4 && !st; x++) {
        vn[x] = fm_spec_get(node, names[x]);
        int n = 0;
        if (vn[x])
            st = fm_spec_int_list(cc, vn[x], names[x], 0, seq_len_q, &vec[x], &n);
        if (!st && vn[x] && n != seq_len_k)
            st = fm_spec_error(cc, vn[x], FAMASK_STATUS_BAD_SPEC,
                               "'%s' has %d values, but seqlen_k is %d: give one row bound per key column", names[x],
                               n, seq_len_k);
    }
    if (st)
        goto fail;
    bounds = fm_malloc(cc->ctx, (size_t)seq_len_k * 4 * sizeof *bounds);
    if (!bounds) {
        st = FAMASK_STATUS_NO_MEMORY;
        goto fail;
    }
    for (int j = 0; j < seq_len_k && !st; j++)
        for (int x = 0; x < 4 && !st; x += 2) {
            int pair = vec[x] || vec[x + 1];
            int s = vec[x] ? vec[x][j] : 0, e = vec[x + 1] ? vec[x + 1][j] : pair ? seq_len_q : 0;
            if (e < s)
                st = fm_spec_error(cc, vn[x + 1] ? vn[x + 1]->kids[j] : vn[x]->kids[j], FAMASK_STATUS_BAD_SPEC,
                                   "column %d: %s = %d is below %s = %d (an interval needs start <= end)", j,
                                   names[x + 1], e, names[x], s);
            bounds[4 * j + x] = s;
            bounds[4 * j + x + 1] = e;
        }
    if (!st)
        st = famask_mask_from_vectors(cc->ctx, 1, 1, seq_len_q, seq_len_k, bounds, out);
fail:
    for (int x = 0; x < 4; x++)
        free(vec[x]);
    free(bounds);
    return st;
}
