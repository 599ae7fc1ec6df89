/*
 * internal.h: what the library's modules share and users do not see: the context and mask structures,
 * error recording, allocation helpers and the column canonicalisation.
 */
#ifndef FAMASK_INTERNAL_H
#define FAMASK_INTERNAL_H

#include "famask.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#define FM_ERRMSG_MAX 2048

struct famask_ctx {
    char errmsg[FM_ERRMSG_MAX];
    /* Device scratch owned by the kernels module (the unfused path's cuBLAS handles and workspace), made on first
     * use; famask_ctx_free releases it through scratch_free. One context is used by one thread at a time. */
    void *scratch;
    void (*scratch_free)(void *scratch);
};

struct famask_mask {
    int batch_m, heads_m, seq_len_q, seq_len_k;
    int32_t *bounds; /* [batch_m, heads_m, seq_len_k, 4], canonical */
    /* Device copy, owned by the kernels module; dev_free releases it. */
    void *dev;
    void (*dev_free)(void *dev);
};

#if defined(__GNUC__)
#define FM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define FM_PRINTF(a, b)
#endif

/* Records a message in ctx (which may be NULL) and returns status: `return fm_error(ctx, S, "...", ...);` */
famask_status fm_error(famask_ctx *ctx, famask_status status, const char *fmt, ...) FM_PRINTF(3, 4);
famask_status fm_verror(famask_ctx *ctx, famask_status status, const char *fmt, va_list ap);
/* Prepends "prefix: " to the message already in ctx (for adding a file name or position). */
void fm_error_prefix(famask_ctx *ctx, const char *fmt, ...) FM_PRINTF(2, 3);

/* malloc/calloc that record FAMASK_STATUS_NO_MEMORY in ctx on failure (size 0 allocates 1 byte). */
void *fm_malloc(famask_ctx *ctx, size_t size);
void *fm_calloc(famask_ctx *ctx, size_t n, size_t size);

/* A mask of the given shape with every column visible (canonical empty intervals); *out NULL on failure. */
famask_status fm_mask_alloc(famask_ctx *ctx, int batch_m, int heads_m, int seq_len_q, int seq_len_k,
                            famask_mask **out);

/* Checks shape arguments (positive, within FAMASK_MAX_SEQ_LEN). */
famask_status fm_check_shape(famask_ctx *ctx, int batch_m, int heads_m, int seq_len_q, int seq_len_k);

/* Pointer to the [seq_len_k, 4] vectors of (b, h). */
static inline int32_t *fm_mask_column(const famask_mask *m, int b, int h, int j)
{
    return m->bounds + (((int64_t)b * m->heads_m + h) * m->seq_len_k + j) * 4;
}

/* Canonicalises one column's two intervals in place (see famask.h). v must be valid (0 <= s <= e <= seq_len_q). */
void fm_column_canonicalise(int32_t v[4], int seq_len_q, int j);

/* Writes the masked runs of a set given as up to n_in half-open intervals (any order, may overlap or be empty)
 * into runs[2 * k], sorted and merged; returns the number of runs k (runs must hold 2 * n_in ints). */
int fm_runs_merge(const int32_t *intervals, int n_in, int32_t *runs);

/* Drops the device copy of a mask (after its host vectors change). */
void fm_mask_drop_device(famask_mask *m);

/* Key order (src/key-order.c): a permutation of each slice's key columns under which tile skipping skips more.
 * Modes: OFF makes none; AUTO sorts and keeps the order only where it pays (see the file); SORT always keeps it
 * when it differs from the identity; REVERSE reverses every slice (tests: a permutation on every mask). */
enum { FM_KEY_ORDER_OFF = 0, FM_KEY_ORDER_AUTO = 1, FM_KEY_ORDER_SORT = 2, FM_KEY_ORDER_REVERSE = 3 };

typedef struct fm_key_order {
    famask_mask *sorted; /* NULL: the mask keeps its order; else column j of slice s is column perm[s][j] of it */
    int32_t *perm;       /* [batch_m, heads_m, seq_len_k] (NULL with sorted) */
    int64_t tiles_before, tiles_after; /* live tiles of 64 query rows x 128 keys over every slice, in the mask's
                                          order and in the sorted one */
} fm_key_order;

/* Fills *out (zeroed first; nothing to free on failure). Fails only with NO_MEMORY. */
famask_status fm_key_order_make(famask_ctx *ctx, const famask_mask *m, int mode, fm_key_order *out);
void fm_key_order_free(fm_key_order *k);
/* Live tiles of 64 query rows x 128 keys of one slice's vectors [seq_len_k, 4], its columns taken in the order
 * perm (NULL: their own). */
int64_t fm_key_order_live_tiles(const int32_t *bounds, int seq_len_q, int seq_len_k, const int32_t *perm);

#endif /* FAMASK_INTERNAL_H */
