/*
 * io.h: what the readers and writers share inside the library (not public): an output file written beside
 * its target and renamed into place, a byte stream that reads plain files, standard input, gzip and zip members
 * alike, and the .npy header (parse and format).
 */
#ifndef FAMASK_IO_H
#define FAMASK_IO_H

#include "internal.h"

#include <stdint.h>
#include <stdio.h>
#include <zlib.h>

/* ---- output: path.tmp.XXXXXX beside the target, renamed on commit, removed on abort ---------------------- */

typedef struct fm_out {
    FILE *fp;
    char *path; /* the target */
    char *tmp;  /* the temporary file; NULL when writing to standard output */
    int failed; /* a write failed: commit refuses */
} fm_out;

/* Opens the output ("-" is standard output). CANNOT_CREATE naming the path on failure. */
famask_status fm_out_open(famask_ctx *ctx, const char *path, fm_out *out);
/* Writes n bytes (errors are remembered and reported by commit). */
void fm_out_write(fm_out *out, const void *data, size_t n);
/* Flushes, closes and renames into place; on any failure removes the temporary file (IO naming the path). */
famask_status fm_out_commit(famask_ctx *ctx, fm_out *out);
/* Closes and removes the temporary file (no-op on a zeroed or committed fm_out). */
void fm_out_abort(fm_out *out);

/* ---- input stream --------------------------------------------------------------------------------------- */

enum { FM_STREAM_PLAIN = 0, FM_STREAM_GZIP = 1, FM_STREAM_DEFLATE = 2 };

typedef struct fm_stream {
    FILE *fp;
    int own_fp;
    char name[512]; /* for messages */
    /* bytes read ahead by fm_stream_peek, returned before anything else */
    unsigned char peek[16];
    int peek_len, peek_pos;
    int64_t limit;       /* bytes still to take from fp (zip members), -1 for no limit */
    int64_t file_size;   /* size of a regular file, -1 if unknown (pipe) */
    int64_t raw_read;    /* bytes taken from fp so far (progress) */
    int mode;            /* FM_STREAM_* */
    z_stream z;
    int z_init, z_done;
    unsigned char *zbuf; /* compressed input */
    /* zip members: the CRC32 and size the directory promises, checked at the end */
    int check_crc;
    uint32_t crc, want_crc;
    int64_t out_total, want_size;
} fm_stream;

/* Opens path ("-" is standard input) as a plain stream. CANNOT_OPEN naming the path on failure. */
famask_status fm_stream_open(famask_ctx *ctx, const char *path, fm_stream *s);
/* Returns up to n bytes at the head of the stream without consuming them (fewer at the end). */
famask_status fm_stream_peek(famask_ctx *ctx, fm_stream *s, size_t n, const unsigned char **bytes, size_t *got);
/* Reads up to n bytes; *got < n only at the end of the stream. BAD_DATA for corrupt compressed data. */
famask_status fm_stream_read(famask_ctx *ctx, fm_stream *s, void *buf, size_t n, size_t *got);
/* Reads exactly n bytes; BAD_DATA "truncated ..." naming what when the stream ends first. */
famask_status fm_stream_read_exact(famask_ctx *ctx, fm_stream *s, void *buf, size_t n, const char *what);
/* OK if the stream has no more bytes (a zip member's CRC is checked then), else BAD_DATA "unexpected bytes
 * after <what>" or the error met while looking. */
famask_status fm_stream_expect_end(famask_ctx *ctx, fm_stream *s, const char *what);
/* Switches the stream to decompressing gzip from here on. */
famask_status fm_stream_start_gzip(famask_ctx *ctx, fm_stream *s);
/* Positions a seekable stream at a zip member (offset of its data, compressed size, method 0 or 8, CRC32 and
 * uncompressed size from the directory). */
famask_status fm_stream_start_zip_member(famask_ctx *ctx, fm_stream *s, int64_t offset, int64_t csize, int method,
                                         uint32_t crc, int64_t usize);
void fm_stream_close(fm_stream *s);

/* ---- .npy header ---------------------------------------------------------------------------------------- */

typedef struct fm_npy_header {
    char kind;        /* 'b' bool, 'u' unsigned, 'i' signed, 'f' float */
    int elem_size;    /* bytes */
    int big_endian;   /* the data needs byte swapping on this (little-endian) host */
    int fortran;      /* fortran_order */
    int ndim;
    int64_t shape[FAMASK_MAX_DIMS];
    int64_t count;    /* product of shape */
    char descr[16];   /* as written, for messages */
} fm_npy_header;

/* Reads and parses the header at the head of s (magic, version, dict), leaving s at the data. */
famask_status fm_npy_read_header(famask_ctx *ctx, fm_stream *s, fm_npy_header *h);
/* Formats a version 1.0 header (or 2.0 when it does not fit) padded to a multiple of 64 bytes; returns its
 * length (at most cap; cap >= 256 + 24 * ndim suffices). */
size_t fm_npy_format_header(char *buf, size_t cap, const char *descr, int fortran, int ndim, const int64_t *shape);

/* The famask_dtype of a .npy header (uint16 is bf16's carrier; wider unsigned types have none). */
famask_status fm_npy_dtype(famask_ctx *ctx, const char *name, const fm_npy_header *h, famask_dtype *dtype);

/* Byte-swaps n elements of size es in place. */
void fm_swap_bytes(void *data, int64_t n, int es);

/* ---- the dense converter's private side (convert.c) ----------------------------------------------------- */

/* famask_converter_create, or (fortran != 0) a converter that takes the elements in Fortran order through
 * fm_converter_push_fortran, a multiple of fm_converter_row_len at a time. */
famask_status fm_converter_create(famask_ctx *ctx, famask_dtype dtype, int ndim, const int64_t *shape,
                                  unsigned flags, int fortran, famask_converter **out);
famask_status fm_converter_push_fortran(famask_ctx *ctx, famask_converter *conv, const void *data, int64_t n);
/* Rows the converter expects in all, and elements a row: seq_len_k in C order, batch * n_head in Fortran order
 * (there a "row" is one query row of one key column across every batch row and head). */
int64_t fm_converter_total(const famask_converter *conv);
int64_t fm_converter_row_len(const famask_converter *conv);

#endif /* FAMASK_IO_H */
