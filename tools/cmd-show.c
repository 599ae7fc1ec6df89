/*
 * cmd-show.c: `famask show SPEC|FILE`: draws one (batch row, head) of a mask. A mask of at most 128 x 128 is
 * drawn element by element ('#' visible, '.' masked, one query row a line); a larger one as its tile-class map
 * ('#' unmasked, '+' partial, '.' skipped) at the block size (default 128x64; when that gives more than 128
 * tiles a side and no --block was given, the block is scaled up by a whole factor until it fits).
 * --png writes a grey-level picture of the mask: white visible, black masked, at most 1024 pixels a side; a
 * pixel is the visible fraction of its rows in the column at its centre (exact when each pixel is one element).
 */
#include "cli.h"

#include <errno.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char cmd_show_usage[] =
    "usage: famask show SPEC|FILE [-n N] [--block QxK] [--png OUT.png] [--batch B --head H]\n"
    "\n"
    "Draws one batch row and head of a mask, from a YAML spec or a compiled .fmask or .npy file:\n"
    "up to 128 x 128 element by element ('#' visible, '.' masked, one query row a line),\n"
    "larger ones as the tile-class map of the attention kernels ('#' unmasked, '+' partial, '.' skipped).\n"
    "\n"
    "options:\n"
    "  -n N          sequence length, overriding a spec's seqlen (specs only)\n"
    "  --block QxK   tile size for the map (default 128x64, scaled up to fit 128 tiles a side unless given)\n"
    "  --png OUT     also write a PNG of the mask (white visible, black masked, at most 1024 pixels a side)\n"
    "  --batch B     batch row of the mask to draw (default 0)\n"
    "  --head H      head of the mask to draw (default 0)\n";

#define SHOW_MAX 128
#define PNG_MAX 1024

/* Masked rows of column v inside [r0, r1). */
static int64_t masked_in(const int32_t *v, int64_t r0, int64_t r1)
{
    int64_t m = 0;
    for (int x = 0; x < 4; x += 2) {
        int64_t s = v[x] > r0 ? v[x] : r0, e = v[x + 1] < r1 ? v[x + 1] : r1;
        m += e > s ? e - s : 0;
    }
    return m;
}

static int write_png(const char *path, const famask_mask *mask, int b, int h)
{
    int nq = famask_mask_seq_len_q(mask), nk = famask_mask_seq_len_k(mask), nh = famask_mask_heads(mask);
    /* One pixel per element when the mask fits, else downsampled; small masks scaled up to about 256 px. */
    int w = nk < PNG_MAX ? nk : PNG_MAX, ht = nq < PNG_MAX ? nq : PNG_MAX;
    int scale = 1;
    while ((w * (scale + 1) <= 256 && ht * (scale + 1) <= 256))
        scale++;
    int W = w * scale, H = ht * scale;
    const int32_t *bounds = famask_mask_bounds(mask) + ((int64_t)b * nh + h) * nk * 4;
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    png_bytep row = malloc((size_t)W);
    FILE *f = NULL;
    png_structp png = NULL;
    png_infop info = NULL;
    int fd = -1, rc = EXIT_OK;
    if (!tmp || !row) {
        cli_error("out of memory");
        rc = EXIT_INTERNAL;
        goto fail;
    }
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    fd = mkstemp(tmp);
    if (fd >= 0) { /* mkstemp creates 0600: give the picture the permissions a plain fopen would */
        mode_t um = umask(0);
        umask(um);
        if (fchmod(fd, 0666 & ~um) != 0) {
            cli_error("cannot create '%s': %s", path, strerror(errno));
            close(fd);
            unlink(tmp);
            rc = EXIT_CANTCREAT;
            goto fail;
        }
    }
    if (fd < 0 || !(f = fdopen(fd, "wb"))) {
        cli_error("cannot create '%s': %s", path, strerror(errno));
        rc = EXIT_CANTCREAT;
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        goto fail;
    }
    png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info || setjmp(png_jmpbuf(png))) {
        cli_error("cannot write '%s'", path);
        rc = EXIT_IOERR;
        goto fail;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)W, (png_uint_32)H, 8, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < ht; y++) {
        int64_t r0 = (int64_t)y * nq / ht, r1 = (int64_t)(y + 1) * nq / ht;
        for (int x = 0; x < w; x++) {
            int64_t c0 = (int64_t)x * nk / w, c1 = (int64_t)(x + 1) * nk / w;
            const int32_t *v = bounds + 4 * ((c0 + c1) / 2);
            int64_t vis = (r1 - r0) - masked_in(v, r0, r1);
            png_byte g = (png_byte)(255 * vis / (r1 - r0));
            memset(row + (size_t)x * scale, g, (size_t)scale);
        }
        for (int k = 0; k < scale; k++)
            png_write_row(png, row);
    }
    png_write_end(png, NULL);
    if (fclose(f) != 0) {
        f = NULL;
        cli_error("cannot write '%s': %s", path, strerror(errno));
        rc = EXIT_IOERR;
        goto fail;
    }
    f = NULL;
    if (rename(tmp, path) != 0) {
        cli_error("cannot create '%s': %s", path, strerror(errno));
        rc = EXIT_CANTCREAT;
        goto fail;
    }
fail:
    if (png)
        png_destroy_write_struct(&png, info ? &info : NULL);
    if (f)
        fclose(f);
    if (rc != EXIT_OK && fd >= 0)
        unlink(tmp);
    free(tmp);
    free(row);
    return rc;
}

int cmd_show(int argc, char **argv)
{
    const char *input = NULL, *png_path = NULL;
    int seq_len = 0, bq = 128, bk = 64, block_given = 0, b = 0, h = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int takes = strcmp(a, "-n") == 0 || strcmp(a, "--block") == 0 || strcmp(a, "--png") == 0 ||
                    strcmp(a, "--batch") == 0 || strcmp(a, "--head") == 0;
        if (takes && i + 1 >= argc)
            return cli_usage("show", "option '%s' needs a value", a);
        if (strcmp(a, "-n") == 0) {
            if (cli_parse_int(argv[++i], &seq_len) || seq_len < 1)
                return cli_usage("show", "-n needs a positive integer, not '%s'", argv[i]);
        } else if (strcmp(a, "--block") == 0) {
            if (cli_parse_block(argv[++i], &bq, &bk))
                return cli_usage("show", "--block needs QxK with positive Q and K (like 128x64), not '%s'", argv[i]);
            block_given = 1;
        } else if (strcmp(a, "--png") == 0) {
            png_path = argv[++i];
        } else if (strcmp(a, "--batch") == 0 || strcmp(a, "--head") == 0) {
            if (cli_parse_int(argv[++i], a[2] == 'b' ? &b : &h))
                return cli_usage("show", "%s needs a non-negative integer, not '%s'", a, argv[i]);
        } else if (a[0] == '-' && a[1] != '\0') {
            return cli_usage("show", "unknown option '%s'", a);
        } else if (!input) {
            input = a;
        } else {
            return cli_usage("show", "unexpected argument '%s'", a);
        }
    }
    famask_ctx *ctx = NULL;
    famask_mask *mask = NULL;
    uint8_t *cells = NULL;
    int rc = cli_open_mask("show", input, seq_len, &ctx, &mask);
    if (rc)
        return rc;
    int nb = famask_mask_batch(mask), nh = famask_mask_heads(mask);
    int nq = famask_mask_seq_len_q(mask), nk = famask_mask_seq_len_k(mask);
    if (b >= nb || h >= nh) {
        rc = cli_usage("show", "--batch %d --head %d is outside the mask's %d batch rows and %d heads", b, h, nb, nh);
        goto done;
    }
    if (nq <= SHOW_MAX && nk <= SHOW_MAX) {
        printf("batch %d head %d: %d x %d, '#' visible, '.' masked\n", b, h, nq, nk);
        char *line = malloc((size_t)nk + 2);
        if (!line) {
            cli_error("out of memory");
            rc = EXIT_INTERNAL;
            goto done;
        }
        for (int i = 0; i < nq; i++) {
            for (int j = 0; j < nk; j++)
                line[j] = famask_mask_visible(mask, b, h, i, j) ? '#' : '.';
            line[nk] = '\n';
            line[nk + 1] = '\0';
            fputs(line, stdout);
        }
        free(line);
    } else {
        int f = 1;
        while (!block_given && ((nq + (int64_t)bq * f - 1) / ((int64_t)bq * f) > SHOW_MAX ||
                                (nk + (int64_t)bk * f - 1) / ((int64_t)bk * f) > SHOW_MAX))
            f++;
        bq *= f;
        bk *= f;
        int tq = (int)((nq + (int64_t)bq - 1) / bq), tk = (int)((nk + (int64_t)bk - 1) / bk);
        famask_tile_counts counts;
        cells = malloc((size_t)tq * tk);
        if (!cells) {
            cli_error("out of memory");
            rc = EXIT_INTERNAL;
            goto done;
        }
        famask_status st = famask_mask_tiles(ctx, mask, b, h, bq, bk, cells, &counts);
        if (st) {
            rc = cli_fail(ctx, st);
            goto done;
        }
        printf("batch %d head %d: %d x %d in %d x %d tiles of %dx%d, '#' unmasked, '+' partial, '.' skipped\n", b, h,
               nq, nk, tq, tk, bq, bk);
        static const char glyph[3] = {'.', '+', '#'};
        for (int y = 0; y < tq; y++) {
            for (int x = 0; x < tk; x++)
                putchar(glyph[cells[(size_t)y * tk + x] % 3]);
            putchar('\n');
        }
    }
    if (png_path)
        rc = write_png(png_path, mask, b, h);
done:
    free(cells);
    famask_mask_free(mask);
    famask_ctx_free(ctx);
    return rc;
}
