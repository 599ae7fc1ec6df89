/*
 * cmd-compile.c: `famask compile` (not built yet).
 */
#include "cli.h"

const char cmd_compile_usage[] = "usage: famask compile ...\n\n(not built yet)\n";

int cmd_compile(int argc, char **argv)
{
    cli_error("'compile' is not built yet");
    return EXIT_INTERNAL;
}
