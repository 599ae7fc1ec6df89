/*
 * tile-rule.h: per-key-block summaries of the mask vectors and the tile classification rule.
 *
 * One definition shared by the host (src/mask.c, the CPU attention) and the CUDA kernels, so that every path
 * classifies a tile the same way. Plain C; compiles as CUDA C++ too.
 */
#ifndef FAMASK_TILE_RULE_H
#define FAMASK_TILE_RULE_H

#include <stdint.h>

#ifdef __CUDACC__
#define FM_HD __host__ __device__ __forceinline__
#else
#define FM_HD static inline
#endif

/* Min/max of the starts and ends of each interval slot over one key block's columns (past seq_len_k left out).
 * Index 0 is LT, 1 is UT. */
typedef struct fm_block_summary {
    int32_t smin[2], smax[2], emin[2], emax[2];
} fm_block_summary;

enum { FM_TILE_SKIPPED = 0, FM_TILE_PARTIAL = 1, FM_TILE_UNMASKED = 2 };

/* Summary of columns [c0, c1) of one (b, h): bounds points at that (b, h)'s [seq_len_k, 4] vectors. */
FM_HD void fm_block_summarise(const int32_t *bounds, int c0, int c1, fm_block_summary *s)
{
    for (int x = 0; x < 2; x++) {
        s->smin[x] = INT32_MAX;
        s->smax[x] = INT32_MIN;
        s->emin[x] = INT32_MAX;
        s->emax[x] = INT32_MIN;
    }
    for (int c = c0; c < c1; c++) {
        const int32_t *v = bounds + 4 * (int64_t)c;
        for (int x = 0; x < 2; x++) {
            int32_t st = v[2 * x], en = v[2 * x + 1];
            s->smin[x] = st < s->smin[x] ? st : s->smin[x];
            s->smax[x] = st > s->smax[x] ? st : s->smax[x];
            s->emin[x] = en < s->emin[x] ? en : s->emin[x];
            s->emax[x] = en > s->emax[x] ? en : s->emax[x];
        }
    }
}

/* The class of query tile [r0, r1) (r1 already clipped to seq_len_q) against a summarised key block. */
FM_HD int fm_tile_classify(const fm_block_summary *s, int r0, int r1)
{
    int unmasked = 1;
    for (int x = 0; x < 2; x++) {
        if (r0 >= s->smax[x] && r1 <= s->emin[x])
            return FM_TILE_SKIPPED;
        if (!(r1 <= s->smin[x] || r0 >= s->emax[x]))
            unmasked = 0;
    }
    return unmasked ? FM_TILE_UNMASKED : FM_TILE_PARTIAL;
}

#endif /* FAMASK_TILE_RULE_H */
