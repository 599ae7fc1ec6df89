/*
 * testlib.c: the test harness (see testlib.h).
 */
#include "testlib.h"

#include "kernels.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int tl_passed, tl_failed;
static uint64_t state = 0x9E3779B97F4A7C15ull;

void tl_seed(const char *program)
{
    const char *env = getenv("FAMASK_TEST_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
    state = seed ^ 0x9E3779B97F4A7C15ull;
    printf("%s: seed %llu (replay with FAMASK_TEST_SEED=%llu)\n", program, (unsigned long long)seed,
           (unsigned long long)seed);
}

int tl_tmpdir(const char *program, char *dir, size_t size)
{
    snprintf(dir, size, "/tmp/famask-%s-XXXXXX", program);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return -1;
    }
    return 0;
}

uint64_t tl_rand(void)
{
    /* splitmix64 */
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int tl_rand_int(int lo, int hi)
{
    return lo + (int)(tl_rand() % (uint64_t)(hi - lo + 1));
}

double tl_rand_unit(void)
{
    return (double)(tl_rand() >> 11) * (1.0 / 9007199254740992.0);
}

double tl_rand_normal(void)
{
    double u = tl_rand_unit(), v = tl_rand_unit();
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

int tl_each_spec(famask_ctx *ctx, void (*fn)(famask_ctx *ctx, const char *name, famask_mask *mask, void *user),
                 void *user)
{
    DIR *d = opendir(FAMASK_SOURCE_DIR "/specs");
    if (!d) {
        CHECK(0, "cannot open %s", FAMASK_SOURCE_DIR "/specs");
        return 0;
    }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".yaml") != 0)
            continue;
        char spec[1024];
        snprintf(spec, sizeof spec, "%s/specs/%s", FAMASK_SOURCE_DIR, e->d_name);
        famask_mask *m = NULL;
        CHECK_OK(ctx, famask_mask_compile_file(ctx, spec, 0, &m));
        if (!m)
            continue;
        fn(ctx, e->d_name, m, user);
        famask_mask_free(m);
        n++;
    }
    closedir(d);
    return n;
}

int tl_finish(void)
{
    printf("%d passed, %d failed\n", tl_passed, tl_failed);
    return tl_failed ? 1 : 0;
}

int tl_keys_reordered(famask_ctx *ctx, famask_mask *mask, int n_head_kv, int expect_evict)
{
    famask_mask *sorted = NULL;
    const int32_t *perm = NULL;
    const int heads_m = famask_mask_heads(mask);
    const char *mode = getenv("FAMASK_KEY_ORDER");
    int reordered = (heads_m == 1 || heads_m == n_head_kv) &&
                    fm_cuda_mask_key_order(ctx, mask, NULL, &sorted, &perm) == FAMASK_STATUS_OK && sorted != NULL;
    if (expect_evict && (!mode || !*mode))
        CHECK(reordered, "the eviction mask ran in its own key order");
    return reordered;
}
