/*
 * cmd-compile.c: `famask compile SPEC [-n N] [-o OUT]`: compiles a YAML spec into the column-sparse mask
 * [batch_m, heads_m, seq_len_k, 4] and writes it (.fmask, .npy, .txt or the text listing for `-o -`), or in
 * FlashMask's layout with --layout flashmask. Without -o it only checks the spec and prints a one-line summary.
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

const char cmd_compile_usage[] =
    "usage: famask compile SPEC [-n N] [-o OUT] [--layout flashmask]\n"
    "\n"
    "Compiles a YAML mask spec (see specs/README.md) into the column-sparse form.\n"
    "\n"
    "options:\n"
    "  -n N        sequence length, overriding the spec's seqlen (both seqlen_q and seqlen_k)\n"
    "  -o OUT      write the mask: OUT.fmask (native, compressed), OUT.npy (int32 [B, H, seq_len_k, 4]),\n"
    "              OUT.txt or - (a text listing, one column a line; - is standard output)\n"
    "  --layout flashmask\n"
    "              write OUT.npy in FlashMask's startend_row_indices layout (int32 [B, H, seq_len_k, n] with\n"
    "              the fewest vectors n of 1, 2 or 4) plus OUT.npy.json holding the causal flag; the vector\n"
    "              count and the flag are reported on standard error\n"
    "\n"
    "Without -o the spec is only checked, and one summary line is printed:\n"
    "  SPEC: batch B, heads H, seq_len_q NQ, seq_len_k NK, V of P pairs visible\n"
    "Nothing is written when the spec has an error; the error names file:line:col (exit code 65).\n";

int cmd_compile(int argc, char **argv)
{
    const char *spec = NULL, *out_path = NULL;
    int seq_len = 0, flashmask = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-n") == 0 || strcmp(a, "-o") == 0) {
            if (i + 1 >= argc)
                return cli_usage("compile", "option '%s' needs a value", a);
            if (a[1] == 'n') {
                if (cli_parse_int(argv[++i], &seq_len) || seq_len < 1)
                    return cli_usage("compile", "-n needs a positive integer, not '%s'", argv[i]);
            } else {
                out_path = argv[++i];
            }
        } else if (strcmp(a, "--layout") == 0) {
            if (i + 1 >= argc)
                return cli_usage("compile", "option '--layout' needs a value");
            if (strcmp(argv[++i], "flashmask") != 0)
                return cli_usage("compile", "unknown layout '%s' (the one layout is 'flashmask')", argv[i]);
            flashmask = 1;
        } else if (a[0] == '-' && a[1] != '\0') {
            return cli_usage("compile", "unknown option '%s'", a);
        } else if (!spec) {
            spec = a;
        } else {
            return cli_usage("compile", "unexpected argument '%s'", a);
        }
    }
    if (!spec)
        return cli_usage("compile", "no spec file given");
    if (flashmask && (!out_path || !cli_ends_with(out_path, ".npy")))
        return cli_usage("compile", "--layout flashmask writes a .npy file: give -o OUT.npy");
    if (out_path && strcmp(out_path, "-") != 0 && !cli_ends_with(out_path, ".fmask") &&
        !cli_ends_with(out_path, ".npy") && !cli_ends_with(out_path, ".txt"))
        return cli_usage("compile",
                         "cannot tell the format of '%s' from its name: use .fmask, .npy or .txt, or - for text",
                         out_path);

    famask_ctx *ctx = NULL;
    famask_mask *mask = NULL;
    int rc = EXIT_OK;
    famask_status st = famask_ctx_create(&ctx);
    if (st) {
        cli_error("out of memory");
        return EXIT_INTERNAL;
    }
    st = famask_mask_compile_file(ctx, spec, seq_len, &mask);
    if (st) {
        rc = cli_fail(ctx, st);
        goto done;
    }
    rc = cli_write_mask(ctx, mask, spec, out_path, flashmask);
done:
    famask_mask_free(mask);
    famask_ctx_free(ctx);
    return rc;
}
