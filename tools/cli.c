/*
 * cli.c: shared pieces of the famask commands (see cli.h).
 */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_exit_code(famask_status status)
{
    switch (status) {
    case FAMASK_STATUS_OK:
        return EXIT_OK;
    case FAMASK_STATUS_INVALID_ARGUMENT:
        return EXIT_USAGE;
    case FAMASK_STATUS_BAD_SPEC:
    case FAMASK_STATUS_BAD_MASK:
    case FAMASK_STATUS_NOT_REPRESENTABLE:
    case FAMASK_STATUS_BAD_DATA:
    case FAMASK_STATUS_UNSUPPORTED:
        return EXIT_DATA;
    case FAMASK_STATUS_CANNOT_OPEN:
        return EXIT_NOINPUT;
    case FAMASK_STATUS_NO_DEVICE:
        return EXIT_NODEVICE;
    case FAMASK_STATUS_CANNOT_CREATE:
        return EXIT_CANTCREAT;
    case FAMASK_STATUS_IO:
        return EXIT_IOERR;
    case FAMASK_STATUS_NO_MEMORY:
    case FAMASK_STATUS_CUDA:
    case FAMASK_STATUS_INTERNAL:
        return EXIT_INTERNAL;
    }
    return EXIT_INTERNAL;
}

int cli_fail(famask_ctx *ctx, famask_status status)
{
    const char *msg = famask_ctx_errmsg(ctx);
    fprintf(stderr, "famask: %s\n", msg && *msg ? msg : famask_status_str(status));
    return cli_exit_code(status);
}

void cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("famask: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int cli_usage(const char *command, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("famask: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fprintf(stderr, "famask: see 'famask help %s'\n", command);
    return EXIT_USAGE;
}

int cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            return 0;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return 1;
    }
    return 0;
}

int cli_help(const char *command)
{
    for (const cli_command *c = cli_commands; c->name; c++)
        if (strcmp(c->name, command) == 0) {
            fputs(c->usage, stdout);
            return EXIT_OK;
        }
    return cli_usage("help", "unknown command '%s'", command);
}

int cli_parse_int(const char *s, int *out)
{
    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (errno || *end || v > INT_MAX)
        return -1;
    *out = (int)v;
    return 0;
}

int cli_parse_block(const char *s, int *block_q, int *block_k)
{
    char buf[64];
    const char *x = strchr(s, 'x');
    if (!x || (size_t)(x - s) >= sizeof buf)
        return -1;
    memcpy(buf, s, (size_t)(x - s));
    buf[x - s] = '\0';
    return cli_parse_int(buf, block_q) || cli_parse_int(x + 1, block_k) || *block_q < 1 || *block_k < 1 ? -1 : 0;
}

int cli_check_seq_len(const char *command, const char *input, int seq_len)
{
    if (seq_len > 0 && (cli_ends_with(input, ".fmask") || cli_ends_with(input, ".npy")))
        return cli_usage(command, "-n applies to a spec, not to a compiled mask file like '%s'", input);
    return EXIT_OK;
}

int cli_ends_with(const char *path, const char *suffix)
{
    size_t n = strlen(path), m = strlen(suffix);
    return n >= m && strcmp(path + n - m, suffix) == 0;
}

famask_status cli_load_mask(famask_ctx *ctx, const char *path, int seq_len, famask_mask **out)
{
    if (cli_ends_with(path, ".fmask") || cli_ends_with(path, ".npy"))
        return famask_mask_load(ctx, path, 0, out);
    return famask_mask_compile_file(ctx, path, seq_len, out);
}

int cli_open_mask(const char *command, const char *input, int seq_len, famask_ctx **ctx, famask_mask **mask)
{
    *ctx = NULL;
    *mask = NULL;
    if (!input)
        return cli_usage(command, "no spec or mask file given");
    if (cli_check_seq_len(command, input, seq_len))
        return EXIT_USAGE;
    if (famask_ctx_create(ctx)) {
        cli_error("out of memory");
        return EXIT_INTERNAL;
    }
    famask_status st = cli_load_mask(*ctx, input, seq_len, mask);
    if (st) {
        int rc = cli_fail(*ctx, st);
        famask_ctx_free(*ctx);
        *ctx = NULL;
        return rc;
    }
    return EXIT_OK;
}

int cli_write_mask(famask_ctx *ctx, const famask_mask *mask, const char *input, const char *out_path, int flashmask)
{
    famask_status st = FAMASK_STATUS_OK;
    if (flashmask) {
        int n = 0, causal = 0;
        if (!(st = famask_mask_save_flashmask(ctx, mask, out_path, &n, &causal)))
            fprintf(stderr, "famask: %s: FlashMask layout with %d vector%s, causal %s (also in %s.json)\n", out_path, n,
                    n == 1 ? "" : "s", causal ? "true" : "false", out_path);
    } else if (out_path) {
        st = famask_mask_save(ctx, mask, out_path, FAMASK_FORMAT_AUTO);
    } else {
        int64_t visible = 0;
        int nb = famask_mask_batch(mask), nh = famask_mask_heads(mask);
        for (int b = 0; b < nb; b++)
            for (int h = 0; h < nh; h++)
                visible += famask_mask_count_visible(mask, b, h);
        printf("%s: batch %d, heads %d, seq_len_q %d, seq_len_k %d, %lld of %lld pairs visible\n", input, nb, nh,
               famask_mask_seq_len_q(mask), famask_mask_seq_len_k(mask), (long long)visible,
               (long long)nb * nh * famask_mask_seq_len_q(mask) * famask_mask_seq_len_k(mask));
    }
    return st ? cli_fail(ctx, st) : EXIT_OK;
}
