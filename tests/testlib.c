/*
 * testlib.c: the test harness (see testlib.h).
 */
#include "testlib.h"

#include <math.h>
#include <stdlib.h>
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

uint64_t tl_rand(void)
{
    /* splitmix64 */
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int tl_rand_int(int lo, int hi) { return lo + (int)(tl_rand() % (uint64_t)(hi - lo + 1)); }

double tl_rand_unit(void) { return (double)(tl_rand() >> 11) * (1.0 / 9007199254740992.0); }

double tl_rand_normal(void)
{
    double u = tl_rand_unit(), v = tl_rand_unit();
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

int tl_finish(void)
{
    printf("%d passed, %d failed\n", tl_passed, tl_failed);
    return tl_failed ? 1 : 0;
}
