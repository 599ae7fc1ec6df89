/*
 * famask.c: the famask command-line tool: the command table and dispatch.
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

int cmd_compile(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_show(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_attn(int argc, char **argv);
int cmd_bench(int argc, char **argv);
static int cmd_version(int argc, char **argv);
static int cmd_help(int argc, char **argv);

extern const char cmd_compile_usage[], cmd_convert_usage[], cmd_show_usage[], cmd_stats_usage[], cmd_attn_usage[],
    cmd_bench_usage[];

static const char version_usage[] = "usage: famask version\n\nPrints the version of famask.\n";
static const char help_usage[] = "usage: famask help [COMMAND]\n\nLists the commands, or prints the help of one.\n";

const cli_command cli_commands[] = {
    {"compile", cmd_compile, "compile a YAML mask spec into the column-sparse form", cmd_compile_usage},
    {"convert", cmd_convert, "convert a dense mask (.npy, .npz, .npy.gz, raw) into the column-sparse form",
     cmd_convert_usage},
    {"show", cmd_show, "draw a small mask, or the tile-class map of a large one", cmd_show_usage},
    {"stats", cmd_stats, "lengths, visible fraction, tile counts and bytes of a mask", cmd_stats_usage},
    {"attn", cmd_attn, "run attention (forward, and backward with --do) on .npy tensors", cmd_attn_usage},
    {"bench", cmd_bench, "time attention on random tensors under a mask", cmd_bench_usage},
    {"version", cmd_version, "print the version", version_usage},
    {"help", cmd_help, "list the commands, or print the help of one", help_usage},
    {NULL, NULL, NULL, NULL},
};

static void print_overview(FILE *f)
{
    fprintf(f, "usage: famask <command> [options] <args>\n\ncommands:\n");
    for (const cli_command *c = cli_commands; c->name; c++)
        fprintf(f, "  %-8s %s\n", c->name, c->summary);
    fprintf(f, "\nexit codes: 0 ok, 64 usage, 65 bad data or spec, 66 cannot open input, 69 no CUDA device,\n"
               "            70 internal, 73 cannot create output, 74 i/o\n"
               "\n'famask help <command>' or 'famask <command> --help' prints a command's options.\n");
}

static int cmd_version(int argc, char **argv)
{
    if (cli_wants_help(argc, argv))
        return cli_help("version");
    if (argc > 1)
        return cli_usage("version", "unexpected argument '%s'", argv[1]);
    printf("famask %s\n", famask_version());
    return EXIT_OK;
}

static int cmd_help(int argc, char **argv)
{
    if (argc > 2)
        return cli_usage("help", "unexpected argument '%s'", argv[2]);
    if (argc == 2 && strcmp(argv[1], "-h") != 0 && strcmp(argv[1], "--help") != 0)
        return cli_help(argv[1]);
    print_overview(stdout);
    return EXIT_OK;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_overview(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        print_overview(stdout);
        return EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0)
        return cmd_version(1, argv + 1);
    for (const cli_command *c = cli_commands; c->name; c++)
        if (strcmp(c->name, argv[1]) == 0) {
            if (c->fn != cmd_help && cli_wants_help(argc - 1, argv + 1))
                return cli_help(c->name);
            return c->fn(argc - 1, argv + 1);
        }
    cli_error("unknown command '%s'", argv[1]);
    print_overview(stderr);
    return EXIT_USAGE;
}
