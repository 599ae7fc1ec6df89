/*
 * fuzz-readers.c: a libFuzzer target for everything that parses bytes from outside: the dense readers
 * (.npy, .npz, gzip, raw) with the converter behind them, famask_npy_load, and the mask loaders (.fmask, .npy
 * vectors, FlashMask). Each input is written to a temporary file and given to each reader; any result but a
 * crash, a leak or undefined behaviour is fine, and a mask that loads must be valid. The first input byte picks
 * options (raw shape, .npz member name, value convention) so they get fuzzed too.
 * Built by tests/fuzz/CMakeLists.txt with clang (-DFAMASK_FUZZ=ON); .ci/test runs it for about a minute.
 */
#include "famask.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[64];

static void remove_input(void) { unlink(path); }

static void check_mask(const famask_mask *m)
{
    if (!m)
        return;
    const int32_t *v = famask_mask_bounds(m);
    int64_t cols = (int64_t)famask_mask_batch(m) * famask_mask_heads(m) * famask_mask_seq_len_k(m);
    for (int64_t c = 0; c < 4 * cols; c += 2)
        if (v[c] < 0 || v[c] > v[c + 1] || v[c + 1] > famask_mask_seq_len_q(m))
            abort(); /* a loaded mask must be valid */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!path[0]) {
        snprintf(path, sizeof path, "/tmp/famask-fuzz.XXXXXX");
        int fd = mkstemp(path);
        if (fd < 0)
            abort();
        close(fd);
        atexit(remove_input);
    }
    if (size < 1)
        return 0;
    unsigned sel = data[0];
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    fwrite(data + 1, 1, size - 1, f);
    fclose(f);

    famask_ctx *ctx = NULL;
    if (famask_ctx_create(&ctx))
        return 0;
    famask_convert_opts o;
    memset(&o, 0, sizeof o);
    o.flags = sel & 3;
    if (sel & 4)
        o.array = (sel & 8) ? "mask" : "arr_0";
    if ((sel & 0x30) == 0x30) { /* raw: a small shape from the selector */
        o.raw = 1;
        o.raw_dtype = (famask_dtype)((sel >> 6) * 3 % 10);
        o.raw_ndim = 2;
        o.raw_shape[0] = 1 + (sel & 7);
        o.raw_shape[1] = 1 + ((size - 1) % 13);
    }
    famask_mask *m = NULL;
    if (famask_mask_convert_file(ctx, path, &o, &m) == FAMASK_STATUS_OK)
        check_mask(m);
    famask_mask_free(m);
    m = NULL;
    famask_array *a = NULL;
    famask_npy_load(ctx, path, &a);
    famask_array_free(a);
    if (famask_mask_load(ctx, path, (sel & 0x40) ? 7 : 0, &m) == FAMASK_STATUS_OK)
        check_mask(m);
    famask_mask_free(m);
    m = NULL;
    if (famask_mask_load_flashmask(ctx, path, sel & 1, 0, &m) == FAMASK_STATUS_OK)
        check_mask(m);
    famask_mask_free(m);
    famask_ctx_free(ctx);
    return 0;
}
