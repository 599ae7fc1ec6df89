/*
 * cmd-attn.c: `famask attn` (not built yet).
 */
#include "cli.h"

const char cmd_attn_usage[] = "usage: famask attn ...\n\n(not built yet)\n";

int cmd_attn(int argc, char **argv)
{
    cli_error("'attn' is not built yet");
    return EXIT_INTERNAL;
}
