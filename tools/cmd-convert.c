/*
 * cmd-convert.c: `famask convert` (not built yet).
 */
#include "cli.h"

const char cmd_convert_usage[] = "usage: famask convert ...\n\n(not built yet)\n";

int cmd_convert(int argc, char **argv)
{
    cli_error("'convert' is not built yet");
    return EXIT_INTERNAL;
}
