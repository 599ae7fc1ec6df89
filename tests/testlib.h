/*
 * testlib.h: the small harness every test program uses: checks that count and report, a seeded
 * random generator (FAMASK_TEST_SEED overrides the seed; the seed is printed so a failure can be replayed),
 * and the closing "N passed, N failed" line.
 */
#ifndef FAMASK_TESTLIB_H
#define FAMASK_TESTLIB_H

#include "famask.h"

#include <stdint.h>
#include <stdio.h>

extern int tl_passed, tl_failed;

/* CHECK(cond, fmt, ...): counts a pass or prints the failure with file:line and the message. */
#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        if (cond) {                                                                                                    \
            tl_passed++;                                                                                               \
        } else {                                                                                                       \
            tl_failed++;                                                                                               \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                                       \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fputc('\n', stderr);                                                                                       \
        }                                                                                                              \
    } while (0)

/* CHECK_OK(ctx, call): the call must return FAMASK_STATUS_OK; prints the context's message if not. */
#define CHECK_OK(ctx, call)                                                                                            \
    do {                                                                                                               \
        famask_status st_ = (call);                                                                                    \
        CHECK(st_ == FAMASK_STATUS_OK, "%s -> %s: %s", #call, famask_status_str(st_), famask_ctx_errmsg(ctx));         \
    } while (0)

/* Seeds the generator from FAMASK_TEST_SEED or the clock and prints the seed. */
void tl_seed(const char *program);

/* A fresh directory /tmp/famask-<program>-XXXXXX in dir (size bytes); 0, or -1 after printing why. */
int tl_tmpdir(const char *program, char *dir, size_t size);
uint64_t tl_rand(void);
/* Uniform integer in [lo, hi] (inclusive). */
int tl_rand_int(int lo, int hi);
/* Uniform in [0, 1). */
double tl_rand_unit(void);
/* Standard normal. */
double tl_rand_normal(void);
/* Compiles every example spec/ *.yaml of the source tree and calls fn with its file name and mask (the callee
 * frees neither); a spec that fails to compile is a failed check. Returns how many specs fn saw. */
int tl_each_spec(famask_ctx *ctx, void (*fn)(famask_ctx *ctx, const char *name, famask_mask *mask, void *user),
                 void *user);
/* For the CUDA tests, after an attention call on mask with n_head_kv key heads: 1 if the call ran with its keys
 * reordered (kernels/key-order.cu: the mask's cached key order has a sorted mask and the mask has one head or
 * one per key head), else 0. expect_evict: the case's mask is one whose keys the default mode reorders; then,
 * with FAMASK_KEY_ORDER unset, a call that did not is a failed check. */
int tl_keys_reordered(famask_ctx *ctx, famask_mask *mask, int n_head_kv, int expect_evict);
/* Prints "N passed, N failed" and returns the exit code (0 or 1). */
int tl_finish(void);

#endif
