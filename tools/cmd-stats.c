/*
 * cmd-stats.c: `famask stats SPEC|FILE`: the shape and sequence lengths of a mask, its visible pairs, the tile
 * classes the attention kernels will see at a block size (default 128x64), its bytes in the column-sparse
 * form against a dense bool mask, and what sorting its keys would save (famask_mask_sort_keys). Counts are totals
 * over every (batch row, head) of the mask.
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char cmd_stats_usage[] =
    "usage: famask stats SPEC|FILE [-n N] [--block QxK]\n"
    "\n"
    "Reads a YAML spec or a compiled .fmask or .npy mask and prints its shape, its visible pairs, the tile\n"
    "classes at the block size (skipped: every pair masked; unmasked: every pair visible; partial: the rest,\n"
    "as the kernels' conservative rule decides) and the bytes of the column-sparse form against a dense bool\n"
    "mask, then the live tiles with the keys sorted by their last visible row and whether the cuda attention\n"
    "sorts them by itself. Counts are totals over all batch rows and heads.\n"
    "\n"
    "options:\n"
    "  -n N          sequence length, overriding a spec's seqlen (specs only)\n"
    "  --block QxK   query tile x key block for the tile counts (default 128x64)\n";

int cmd_stats(int argc, char **argv)
{
    const char *input = NULL;
    int seq_len = 0, bq = 128, bk = 64;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if ((strcmp(a, "-n") == 0 || strcmp(a, "--block") == 0) && i + 1 >= argc)
            return cli_usage("stats", "option '%s' needs a value", a);
        if (strcmp(a, "-n") == 0) {
            if (cli_parse_int(argv[++i], &seq_len) || seq_len < 1)
                return cli_usage("stats", "-n needs a positive integer, not '%s'", argv[i]);
        } else if (strcmp(a, "--block") == 0) {
            if (cli_parse_block(argv[++i], &bq, &bk))
                return cli_usage("stats", "--block needs QxK with positive Q and K (like 128x64), not '%s'", argv[i]);
        } else if (a[0] == '-' && a[1] != '\0') {
            return cli_usage("stats", "unknown option '%s'", a);
        } else if (!input) {
            input = a;
        } else {
            return cli_usage("stats", "unexpected argument '%s'", a);
        }
    }
    famask_ctx *ctx = NULL;
    famask_mask *mask = NULL;
    int rc = cli_open_mask("stats", input, seq_len, &ctx, &mask);
    if (rc)
        return rc;
    int nb = famask_mask_batch(mask), nh = famask_mask_heads(mask);
    int64_t nq = famask_mask_seq_len_q(mask), nk = famask_mask_seq_len_k(mask);
    int64_t visible = 0, pairs = (int64_t)nb * nh * nq * nk;
    famask_tile_counts total = {0, 0, 0};
    for (int b = 0; b < nb; b++)
        for (int h = 0; h < nh; h++) {
            famask_tile_counts c;
            visible += famask_mask_count_visible(mask, b, h);
            famask_status st = famask_mask_tiles(ctx, mask, b, h, bq, bk, NULL, &c);
            if (st) {
                rc = cli_fail(ctx, st);
                goto done;
            }
            total.skipped += c.skipped;
            total.partial += c.partial;
            total.unmasked += c.unmasked;
        }
    int64_t tiles = total.skipped + total.partial + total.unmasked;
    int64_t sparse = (int64_t)nb * nh * nk * 16, dense = pairs;
    printf("shape: batch %d, heads %d, seq_len_q %lld, seq_len_k %lld\n", nb, nh, (long long)nq, (long long)nk);
    printf("visible: %lld of %lld pairs (%.2f%%)\n", (long long)visible, (long long)pairs,
           100.0 * (double)visible / (double)pairs);
    printf("tiles %dx%d: %lld skipped (%.2f%%), %lld partial, %lld unmasked, of %lld\n", bq, bk,
           (long long)total.skipped, 100.0 * (double)total.skipped / (double)tiles, (long long)total.partial,
           (long long)total.unmasked, (long long)tiles);
    printf("bytes: %lld column-sparse (16 per key column), %lld dense bool (%.1fx)\n", (long long)sparse,
           (long long)dense, (double)dense / (double)sparse);
    {
        famask_key_order_info info;
        famask_mask *sorted = NULL;
        famask_status st = famask_mask_sort_keys(ctx, mask, NULL, &info, &sorted);
        famask_mask_free(sorted);
        if (st) {
            rc = cli_fail(ctx, st);
            goto done;
        }
        printf("key order: live tiles of 64x128 %lld as stored, %lld with the keys sorted; cuda %s\n",
               (long long)info.live_tiles, (long long)info.live_tiles_sorted,
               info.cuda_sorts ? "sorts them" : "keeps the stored order");
    }
done:
    famask_mask_free(mask);
    famask_ctx_free(ctx);
    return rc;
}
