/*
 * cmd-bench.c: `famask bench` (not built yet).
 */
#include "cli.h"

const char cmd_bench_usage[] = "usage: famask bench ...\n\n(not built yet)\n";

int cmd_bench(int argc, char **argv)
{
    cli_error("'bench' is not built yet");
    return EXIT_INTERNAL;
}
