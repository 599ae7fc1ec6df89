/*
 * families.h: what the mask families share. A family is a parameter parser (spec node -> C parameters, errors
 * with file:line:col) plus a fill function that writes the raw intervals of every key column of a
 * [1, 1, seq_len_k, 4] mask; the C builders of famask.h and the spec compiler both go through the fill function,
 * and masks/registry.c lists the families by name.
 */
#ifndef FAMASK_FAMILIES_H
#define FAMASK_FAMILIES_H

#include "internal.h"
#include "spec.h"

/* Writes every column 0..seq_len_k-1 of bounds [seq_len_k, 4] (uninitialised on entry), in canonical form:
 * fm_col_set does the clipping and canonicalisation. */
typedef void fm_fill_fn(const void *params, int seq_len_q, int seq_len_k, int32_t *bounds);

/* A [1, 1, seq_len_k, 4] mask filled by fill. */
famask_status fm_family_build(famask_ctx *ctx, int seq_len_q, int seq_len_k, fm_fill_fn *fill, const void *params,
                              famask_mask **out);

/* The canonical form of famask.h for a column of two valid intervals: the same result as
 * fm_column_canonicalise, without its general sort, because the compile path runs it on every key column. */
static inline void fm_col_canonical(int32_t *v, int seq_len_q, int j)
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

/* Sets column j of bounds [seq_len_k, 4] to the masked rows [a0, a1) and [b0, b1) (in either order, touching or
 * overlapping allowed), each clipped to [0, seq_len_q), and writes the column in canonical form. 64-bit arguments
 * so that j + window cannot overflow. */
static inline void fm_col_set(int32_t *bounds, int64_t j, int seq_len_q, int64_t a0, int64_t a1, int64_t b0, int64_t b1)
{
    int64_t in[4] = {a0, a1, b0, b1};
    int32_t *v = bounds + 4 * j;
    for (int x = 0; x < 4; x++)
        v[x] = (int32_t)(in[x] < 0 ? 0 : in[x] > seq_len_q ? seq_len_q : in[x]);
    fm_col_canonical(v, seq_len_q, (int)j);
}

/* Checks a list of lengths (non-negative, sum within FAMASK_MAX_SEQ_LEN and at least 1); *sum gets the total.
 * what names the list in messages ("documents"). */
famask_status fm_lengths_check(famask_ctx *ctx, const int *lengths, int n, const char *what, int *sum);

/* Reads a list of lengths from a spec node and checks that they sum to seq_len (== seq_len_q == seq_len_k). */
famask_status fm_spec_lengths(fm_compiler *cc, const fm_node *node, const char *what, int seq_len_q, int seq_len_k,
                              int **out, int *n);

/* Families defined by a list of segment lengths summing to the sequence (documents, blocks): col writes column
 * j of segment [s, e) through fm_col_set; last_start is where the last segment begins. */
typedef void fm_segment_col_fn(int32_t *bounds, int64_t j, int seq_len_q, int64_t s, int64_t e, int64_t last_start);
/* The builder of such a family: checks the lengths (what names the list in messages) and fills every column. */
famask_status fm_segments_build(famask_ctx *ctx, const int *lengths, int n, const char *what, fm_segment_col_fn *col,
                                famask_mask **out);
/* Its spec form: `type: NAME` and `KEY: [lengths]`, nothing else; build is the family's C builder. */
famask_status fm_segments_compile(fm_compiler *cc, const fm_node *node, const char *type, const char *key,
                                  int seq_len_q, int seq_len_k,
                                  famask_status (*build)(famask_ctx *, const int *, int, famask_mask **),
                                  famask_mask **out);

/* One registered family: its spec name and how to compile a spec node (NULL node: the bare-name form). */
typedef struct fm_family {
    const char *name;
    int bare_ok; /* 1 if the type name alone (`mask: causal`) is a complete mask */
    famask_status (*compile)(fm_compiler *cc, const fm_node *node, int seq_len_q, int seq_len_k, famask_mask **out);
} fm_family;

/* The registry, terminated by a NULL name (masks/registry.c). */
extern const fm_family fm_families[];
const fm_family *fm_family_find(const char *name);

/* The spec compile functions, one per family file. */
#define FM_FAMILY_COMPILE(fn)                                                                                          \
    famask_status fn(fm_compiler *cc, const fm_node *node, int seq_len_q, int seq_len_k, famask_mask **out)
FM_FAMILY_COMPILE(fm_compile_full);
FM_FAMILY_COMPILE(fm_compile_causal);
FM_FAMILY_COMPILE(fm_compile_sliding_window);
FM_FAMILY_COMPILE(fm_compile_causal_document);
FM_FAMILY_COMPILE(fm_compile_document);
FM_FAMILY_COMPILE(fm_compile_shared_question);
FM_FAMILY_COMPILE(fm_compile_global_sliding_window);
FM_FAMILY_COMPILE(fm_compile_causal_blockwise);
FM_FAMILY_COMPILE(fm_compile_prefix_lm_causal);
FM_FAMILY_COMPILE(fm_compile_prefix_lm_document);
FM_FAMILY_COMPILE(fm_compile_qk_sparse);
FM_FAMILY_COMPILE(fm_compile_random_eviction);
FM_FAMILY_COMPILE(fm_compile_custom);
FM_FAMILY_COMPILE(fm_compile_all_of);
FM_FAMILY_COMPILE(fm_compile_any_of);

#endif /* FAMASK_FAMILIES_H */
