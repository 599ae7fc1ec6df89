/*
 * cmd-show.c: `famask show` (not built yet).
 */
#include "cli.h"

const char cmd_show_usage[] = "usage: famask show ...\n\n(not built yet)\n";

int cmd_show(int argc, char **argv)
{
    cli_error("'show' is not built yet");
    return EXIT_INTERNAL;
}
