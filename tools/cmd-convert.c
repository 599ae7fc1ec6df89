/*
 * cmd-convert.c: `famask convert IN [-o OUT] [options]`: a dense mask ([Nq, Nk], [B, Nq, Nk] or [B, H, Nq, Nk]
 * in .npy, .npz, gzip or raw bytes; - for standard input) into the column-sparse form [B, H, Nk, 4], written as
 * .fmask, .npy, FlashMask's startend_row_indices, or a text listing.
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char cmd_convert_usage[] =
    "usage: famask convert IN [-o OUT] [--array NAME] [--true-means visible|masked]\n"
    "                      [--shape [B,[H,]]Nq,Nk [--dtype T]] [--keep-shape] [--layout famask|flashmask]\n"
    "\n"
    "Converts a dense mask into the column-sparse form (two masked row intervals per key column).\n"
    "IN is a .npy (bool, uint8..uint64, int8..int64, float16/32/64; C or Fortran order), a .npz, either one\n"
    "gzip-compressed (.npy.gz), raw bytes (with --shape), or - for standard input; the format is recognised\n"
    "from the content. Shapes: [Nq, Nk], [B, Nq, Nk], [B, H, Nq, Nk].\n"
    "\n"
    "Values: bool and integer masks follow PyTorch (nonzero = may attend); float masks are additive\n"
    "(0 = visible, -inf = masked, anything else is an error).\n"
    "\n"
    "options:\n"
    "  -o OUT              write the mask: OUT.fmask (native, compressed), OUT.npy (int32 [B, H, Nk, 4]),\n"
    "                      or - (a text listing on standard output); without -o only a summary is printed\n"
    "  --array NAME        the array of a .npz to read (default: the only one)\n"
    "  --true-means M      what a nonzero bool/integer means: visible (default) or masked\n"
    "  --shape DIMS        raw input: its shape, comma-separated (2 to 4 numbers)\n"
    "  --dtype T           raw input: bool, u8, i8, i16, i32, i64, f16, bf16, f32 or f64 (default u8)\n"
    "  --keep-shape        keep identical batch rows and heads (default: they collapse to one)\n"
    "  --layout flashmask  write OUT.npy as FlashMask's startend_row_indices int32 [B, H, Nk, {1,2,4}] with the\n"
    "                      fewest vectors; the causal flag goes to OUT.npy.json and to standard error\n"
    "\n"
    "A column with more than two masked runs cannot be represented: the command names the first one, its runs\n"
    "and how many columns fail, and writes nothing (exit code 65). Malformed input: exit code 65 or 66.\n"
    "Memory stays O(Nk) plus one chunk of rows, whatever Nq, B and H.\n";

static int parse_dtype(const char *s, famask_dtype *out)
{
    for (int d = FAMASK_DTYPE_BOOL; d <= FAMASK_DTYPE_F64; d++)
        if (strcmp(s, famask_dtype_name((famask_dtype)d)) == 0) {
            *out = (famask_dtype)d;
            return 0;
        }
    static const struct {
        const char *name;
        famask_dtype dtype;
    } alias[] = {{"uint8", FAMASK_DTYPE_U8},      {"int8", FAMASK_DTYPE_I8},     {"int16", FAMASK_DTYPE_I16},
                 {"int32", FAMASK_DTYPE_I32},     {"int64", FAMASK_DTYPE_I64},   {"float16", FAMASK_DTYPE_F16},
                 {"bfloat16", FAMASK_DTYPE_BF16}, {"float32", FAMASK_DTYPE_F32}, {"float64", FAMASK_DTYPE_F64}};
    for (size_t k = 0; k < sizeof alias / sizeof alias[0]; k++)
        if (strcmp(s, alias[k].name) == 0) {
            *out = alias[k].dtype;
            return 0;
        }
    return -1;
}

static int parse_shape(const char *s, famask_convert_opts *o)
{
    int n = 0;
    const char *p = s;
    while (*p) {
        if (n == 4 || *p < '0' || *p > '9')
            return -1;
        char *end = NULL;
        long long v = strtoll(p, &end, 10);
        if (v < 1)
            return -1;
        o->raw_shape[n++] = v;
        p = end;
        if (*p == ',')
            p++;
        else if (*p)
            return -1;
    }
    if (n < 2)
        return -1;
    o->raw_ndim = n;
    return 0;
}

typedef struct progress {
    const char *name;
    int last; /* last percentage shown */
} progress;

static void show_progress(void *user, int64_t done, int64_t total)
{
    progress *p = user;
    int pct = total > 0 ? (int)(done * 100 / total) : 0;
    if (pct == p->last)
        return;
    p->last = pct;
    fprintf(stderr, "\rfamask: converting %s: %3d%%", p->name, pct);
    if (done >= total)
        fputc('\n', stderr);
    fflush(stderr);
}

int cmd_convert(int argc, char **argv)
{
    const char *in = NULL, *out_path = NULL, *layout = "famask";
    famask_convert_opts opts;
    memset(&opts, 0, sizeof opts);
    opts.raw_dtype = FAMASK_DTYPE_U8;
    int have_dtype = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int takes = strcmp(a, "-o") == 0 || strcmp(a, "--array") == 0 || strcmp(a, "--true-means") == 0 ||
                    strcmp(a, "--shape") == 0 || strcmp(a, "--dtype") == 0 || strcmp(a, "--layout") == 0;
        if (takes) {
            if (i + 1 >= argc)
                return cli_usage("convert", "option '%s' needs a value", a);
            const char *v = argv[++i];
            if (strcmp(a, "-o") == 0) {
                out_path = v;
            } else if (strcmp(a, "--array") == 0) {
                opts.array = v;
            } else if (strcmp(a, "--true-means") == 0) {
                if (strcmp(v, "masked") == 0)
                    opts.flags |= FAMASK_DENSE_TRUE_MEANS_MASKED;
                else if (strcmp(v, "visible") == 0)
                    opts.flags &= ~(unsigned)FAMASK_DENSE_TRUE_MEANS_MASKED;
                else
                    return cli_usage("convert", "--true-means takes 'visible' or 'masked', not '%s'", v);
            } else if (strcmp(a, "--shape") == 0) {
                if (parse_shape(v, &opts))
                    return cli_usage("convert", "--shape takes 2 to 4 positive numbers such as 1,8,4096,4096, not '%s'",
                                     v);
                opts.raw = 1;
            } else if (strcmp(a, "--dtype") == 0) {
                if (parse_dtype(v, &opts.raw_dtype))
                    return cli_usage("convert", "unknown dtype '%s' (bool, u8, i8, i16, i32, i64, f16, bf16, f32, f64)",
                                     v);
                have_dtype = 1;
            } else {
                if (strcmp(v, "flashmask") != 0 && strcmp(v, "famask") != 0)
                    return cli_usage("convert", "--layout takes 'famask' or 'flashmask', not '%s'", v);
                layout = v;
            }
        } else if (strcmp(a, "--keep-shape") == 0) {
            opts.flags |= FAMASK_DENSE_KEEP_SHAPE;
        } else if (a[0] == '-' && a[1] != '\0') {
            return cli_usage("convert", "unknown option '%s'", a);
        } else if (!in) {
            in = a;
        } else {
            return cli_usage("convert", "unexpected argument '%s'", a);
        }
    }
    if (!in)
        return cli_usage("convert", "no input given (a file, or - for standard input)");
    if (have_dtype && !opts.raw)
        return cli_usage("convert", "--dtype describes raw input: give --shape too");
    int flashmask = strcmp(layout, "flashmask") == 0;
    if (flashmask && (!out_path || !cli_ends_with(out_path, ".npy")))
        return cli_usage("convert", "--layout flashmask writes a .npy: give -o OUT.npy");
    if (out_path && !flashmask && strcmp(out_path, "-") != 0 && !cli_ends_with(out_path, ".fmask") &&
        !cli_ends_with(out_path, ".npy"))
        return cli_usage("convert", "cannot tell the format of '%s' from its name: use .fmask or .npy, or - for text",
                         out_path);

    famask_ctx *ctx = NULL;
    famask_mask *mask = NULL;
    int rc = EXIT_OK;
    if (famask_ctx_create(&ctx)) {
        cli_error("out of memory");
        return EXIT_INTERNAL;
    }
    /* progress only where someone watches, and only when the input is large enough to wait for */
    progress prog = {in, -1};
    if (isatty(fileno(stderr))) {
        FILE *f = strcmp(in, "-") == 0 ? NULL : fopen(in, "rb");
        long long size = -1;
        if (f && fseeko(f, 0, SEEK_END) == 0)
            size = (long long)ftello(f);
        if (f)
            fclose(f);
        if (size < 0 || size > (256ll << 20)) {
            opts.progress = show_progress;
            opts.progress_user = &prog;
        }
    }
    famask_status st = famask_mask_convert_file(ctx, in, &opts, &mask);
    if (st) {
        if (prog.last >= 0 && prog.last < 100)
            fputc('\n', stderr);
        rc = cli_fail(ctx, st);
        goto done;
    }
    rc = cli_write_mask(ctx, mask, in, out_path, flashmask);
done:
    famask_mask_free(mask);
    famask_ctx_free(ctx);
    return rc;
}
