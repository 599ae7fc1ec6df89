/*
 * cmd-stats.c: `famask stats` (not built yet).
 */
#include "cli.h"

const char cmd_stats_usage[] = "usage: famask stats ...\n\n(not built yet)\n";

int cmd_stats(int argc, char **argv)
{
    cli_error("'stats' is not built yet");
    return EXIT_INTERNAL;
}
