/*
 * trace.cuh: an event trace of the Hopper backward's warps, for bench/trace-items.py.
 *
 * Built in only with -DFAMASK_TRACE=ON (CMake); otherwise every FM_TRACE_* below is nothing. It defines the trace's
 * device arrays, so one translation unit includes it: kernels/bwd-sm90.cu. In a traced build each
 * CTA's producer warp and the first thread of each consumer warpgroup record (code, clock64) pairs at fixed points
 * of the main kernel and of the dQ pass: where they wait, start a work item, a tile's products and its end. After
 * each backward call, fm_trace_dump writes the last call's events to the file named by FAMASK_TRACE_OUT. Times are
 * SM clocks: compare them within one CTA only. A traced build runs 5-10% slower (bench/RESULTS.md, session 14).
 *
 * Codes (the consumers' stream: 1 + warpgroup; the producer's: 0):
 *   consumers  1 waits for an item, 2 has it, 3 has a tile's (block's) data, 16 finds it partial (element masks),
 *              4 has S and dP, 15 issues the second products (dV, dK or dQ), 5 has them (the tile's end), 6 has
 *              issued the item's outputs
 *   producer   10 starts an item, 11 has issued its K and V (main) or Q and dO (dQ pass), 13 waits for a free stage,
 *              12 has issued a tile's (block's) loads
 * File: the int32 header {FM_TRACE_MAGIC, kernels, ctas, streams, cap}, the int32 event counts [kernel][cta][stream],
 * then each stream's events in that order, uint64 (code << 56 | clock64 mod 2^56).
 */
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FM_TRACE_MAGIC 0x46545231 /* "FTR1" */

namespace fm_trace
{
constexpr int KERNELS = 2, CTAS = 160, STREAMS = 3, CAP = 12288;

#ifdef FAMASK_TRACE
__device__ unsigned long long events[KERNELS][CTAS][STREAMS][CAP];
__device__ int counts[KERNELS][CTAS][STREAMS];

/* One stream's recorder: kernel k, stream s of this CTA. */
struct rec {
    int k, s, n;
    __device__ __forceinline__ void at(int code)
    {
        if (n < CAP && blockIdx.x < CTAS)
            events[k][blockIdx.x][s][n++] = ((unsigned long long)code << 56) | (clock64() & ((1ull << 56) - 1));
    }
    __device__ __forceinline__ void end() const
    {
        if (blockIdx.x < CTAS)
            counts[k][blockIdx.x][s] = n;
    }
};
#define FM_TRACE_REC(name, k, s) fm_trace::rec name = {k, s, 0}
#define FM_TRACE_AT(name, on, code)                                                                                    \
    do {                                                                                                               \
        if (on)                                                                                                        \
            name.at(code);                                                                                             \
    } while (0)
#define FM_TRACE_END(name, on)                                                                                         \
    do {                                                                                                               \
        if (on)                                                                                                        \
            name.end();                                                                                                \
    } while (0)
#else
#define FM_TRACE_REC(name, k, s)
#define FM_TRACE_AT(name, on, code)
#define FM_TRACE_END(name, on)
#endif

/* The last call's events into FAMASK_TRACE_OUT (after a sync of `stream`), and the counts reset; nothing in an
 * untraced build or without the variable. A file that cannot be written whole is reported on stderr and removed:
 * the trace is a measurement aid, and the call's results stand. */
inline void dump(cudaStream_t stream)
{
#ifdef FAMASK_TRACE
    const char *path = getenv("FAMASK_TRACE_OUT");
    if (!path || !*path)
        return;
    static int n[KERNELS][CTAS][STREAMS];
    static unsigned long long ev[CAP];
    if (cudaStreamSynchronize(stream) != cudaSuccess || cudaMemcpyFromSymbol(n, counts, sizeof n) != cudaSuccess) {
        fprintf(stderr, "famask: trace: cannot read the counts\n");
        return;
    }
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "famask: trace: cannot write %s\n", path);
        return;
    }
    const int32_t head[5] = {FM_TRACE_MAGIC, KERNELS, CTAS, STREAMS, CAP};
    bool ok = fwrite(head, sizeof head, 1, f) == 1 && fwrite(n, sizeof n, 1, f) == 1;
    for (int k = 0; k < KERNELS; k++)
        for (int c = 0; c < CTAS; c++)
            for (int s = 0; s < STREAMS && ok; s++) {
                const size_t m = (size_t)(n[k][c][s] < CAP ? n[k][c][s] : CAP);
                const size_t at = (((size_t)k * CTAS + c) * STREAMS + s) * CAP * sizeof(unsigned long long);
                ok = m == 0 || (cudaMemcpyFromSymbol(ev, events, m * sizeof(unsigned long long), at) == cudaSuccess &&
                                fwrite(ev, sizeof(unsigned long long), m, f) == m);
            }
    if (fclose(f) != 0 || !ok) {
        fprintf(stderr, "famask: trace: could not write all of %s; removed\n", path);
        remove(path);
    }
    static const int zero[KERNELS][CTAS][STREAMS] = {};
    cudaMemcpyToSymbol(counts, zero, sizeof zero);
#else
    (void)stream;
#endif
}
} // namespace fm_trace
