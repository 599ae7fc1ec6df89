/*
 * bench-convert.c: writes large dense masks [N, N] as .npy for timing `famask convert` (bench-convert.sh runs
 * it). Kinds: causal, causal_document (documents of 1000..5000 tokens, fixed seed), sliding (window 1024).
 * Dtypes: u8, bool (visible = 1), f32 (additive: 0 / -inf), and u8f (u8 in Fortran order). OUT "-" writes to
 * standard output, so a 64K x
 * 64K mask can be piped into famask without touching the disk. Stand-alone: needs only the C library.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: bench-convert KIND N DTYPE OUT  (KIND causal|causal_document|sliding, DTYPE "
                        "u8|bool|f32|u8f)\n");
        return 64;
    }
    const char *kind = argv[1], *dt = argv[3];
    long n = atol(argv[2]);
    int es = strcmp(dt, "f32") == 0 ? 4 : 1, fortran = strcmp(dt, "u8f") == 0;
    FILE *f = strcmp(argv[4], "-") == 0 ? stdout : fopen(argv[4], "wb");
    if (n < 1 || !f) {
        fprintf(stderr, "bad arguments\n");
        return 64;
    }
    char dict[160];
    int len = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': %s, 'shape': (%ld, %ld), }",
                       es == 4 ? "<f4" : strcmp(dt, "bool") == 0 ? "|b1" : "|u1", fortran ? "True" : "False", n, n);
    int total = (10 + len + 1 + 63) / 64 * 64;
    unsigned char head[256];
    memcpy(head, "\x93NUMPY\x01\x00", 8);
    head[8] = (unsigned char)((total - 10) & 0xff);
    head[9] = (unsigned char)((total - 10) >> 8);
    memcpy(head + 10, dict, (size_t)len);
    memset(head + 10 + len, ' ', (size_t)(total - 10 - len - 1));
    head[total - 1] = '\n';
    fwrite(head, 1, (size_t)total, f);
    /* document boundaries: doc_start[i] for row i */
    long *start = malloc((size_t)n * sizeof *start);
    uint64_t s = 12345;
    for (long i = 0, cur = 0, left = 0; i < n; i++) {
        if (left == 0) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            left = 1000 + (long)((s >> 33) % 4001);
            cur = i;
        }
        start[i] = cur;
        left--;
    }
    unsigned char *row = malloc((size_t)n * es);
    float minf = -INFINITY, zero = 0;
    for (long j = 0; fortran && j < n; j++) { /* Fortran order: key column j, every query row */
        for (long i = 0; i < n; i++) {
            long lo = strcmp(kind, "causal_document") == 0 ? start[i]
                      : strcmp(kind, "sliding") == 0       ? (i - 1023 > 0 ? i - 1023 : 0)
                                                           : 0;
            row[i] = (unsigned char)(j >= lo && j <= i);
        }
        if (fwrite(row, 1, (size_t)n, f) != (size_t)n) {
            perror("write");
            return 74;
        }
    }
    for (long i = 0; !fortran && i < n; i++) {
        long lo = 0, hi = i; /* visible keys [lo, hi] */
        if (strcmp(kind, "causal_document") == 0)
            lo = start[i];
        else if (strcmp(kind, "sliding") == 0)
            lo = i - 1023 > 0 ? i - 1023 : 0;
        for (long j = 0; j < n; j++) {
            int vis = j >= lo && j <= hi;
            if (es == 4)
                memcpy(row + 4 * j, vis ? &zero : &minf, 4);
            else
                row[j] = (unsigned char)vis;
        }
        if (fwrite(row, (size_t)es, (size_t)n, f) != (size_t)n) {
            perror("write");
            return 74;
        }
    }
    free(row);
    free(start);
    return fclose(f) == 0 ? 0 : 74;
}
