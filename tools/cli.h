/*
 * cli.h: what the famask commands share: the command table entry, exit codes, diagnostics, and loading a
 * mask from a spec or a compiled file. Uses the public API only.
 */
#ifndef FAMASK_CLI_H
#define FAMASK_CLI_H

#include "famask.h"

/* Exit codes (listed in `famask help`). */
enum {
    EXIT_OK = 0,
    EXIT_USAGE = 64,
    EXIT_DATA = 65,
    EXIT_NOINPUT = 66,
    EXIT_NODEVICE = 69,
    EXIT_INTERNAL = 70,
    EXIT_CANTCREAT = 73,
    EXIT_IOERR = 74,
};

typedef struct cli_command {
    const char *name;
    int (*fn)(int argc, char **argv); /* argv[0] is the command's name */
    const char *summary;
    const char *usage; /* the full help text */
} cli_command;

extern const cli_command cli_commands[];

/* The exit code for a library status. */
int cli_exit_code(famask_status status);
/* Prints "famask: <ctx message>" (or the status text) on stderr; returns cli_exit_code(status). */
int cli_fail(famask_ctx *ctx, famask_status status);
/* Prints "famask: <message>" and a pointer to the command's help on stderr; returns EXIT_USAGE. */
int cli_usage(const char *command, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Prints "famask: <message>" on stderr. */
void cli_error(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* 1 if argv[i] is "-h" or "--help" for some i: the command then prints its usage. */
int cli_wants_help(int argc, char **argv);
/* Prints the usage of a command to stdout; returns EXIT_OK. */
int cli_help(const char *command);

/* Parses a non-negative decimal int (no sign, no junk); 0 on success, -1 otherwise. */
int cli_parse_int(const char *s, int *out);

/* Parses a block size "QxK" (positive Q and K); 0 on success, -1 otherwise. */
int cli_parse_block(const char *s, int *block_q, int *block_k);

/* -n (seq_len > 0) only applies to specs: for a compiled mask file prints the usage error and returns EXIT_USAGE,
 * else returns EXIT_OK. */
int cli_check_seq_len(const char *command, const char *input, int seq_len);

/* Loads a mask from a spec (.yaml/.yml) or a compiled file (.fmask, .npy); seq_len > 0 overrides a spec's
 * seqlen. */
famask_status cli_load_mask(famask_ctx *ctx, const char *path, int seq_len, famask_mask **out);
/* The mask of a command that reads one (show, stats): the input must be given (else a usage error), -n only with
 * a spec; then a fresh context in *ctx and the mask in *mask. Returns EXIT_OK, or the exit code after reporting
 * the error (nothing left to free then). */
int cli_open_mask(const char *command, const char *input, int seq_len, famask_ctx **ctx, famask_mask **mask);

/* Writes a compiled or converted mask: to out_path (format from the extension; FlashMask's layout if flashmask,
 * reporting its vectors and causal flag on stderr), or, with no out_path, a one-line summary on stdout that names
 * the input. Returns the exit code. */
int cli_write_mask(famask_ctx *ctx, const famask_mask *mask, const char *input, const char *out_path, int flashmask);

/* 1 if path ends with suffix. */
int cli_ends_with(const char *path, const char *suffix);

#endif
