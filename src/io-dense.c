/*
 * io-dense.c: the readers of dense masks, in one place, feeding the streaming converter (convert.c) chunk by
 * chunk: .npy (any version, C or Fortran order, either endianness), .npz (zip, stored or deflated members,
 * zip64), gzip around either (or around raw bytes), and raw bytes of a given dtype and shape; a path or standard
 * input. Dense shapes [Nq, Nk], [B, Nq, Nk], [B, H, Nq, Nk]. The container is recognised from its first bytes.
 */
#include "io.h"

#include <stdlib.h>
#include <string.h>

#define CHUNK_BYTES ((size_t)8 << 20)

/* ---- zip (.npz) ----------------------------------------------------------------------------------------- */

static uint32_t le16(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t le32(const unsigned char *p) { return le16(p) | le16(p + 2) << 16; }
static uint64_t le64(const unsigned char *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

typedef struct zip_entry {
    char name[256];
    int method;
    uint32_t crc, flags;
    int64_t csize, usize, offset;
} zip_entry;

static famask_status zip_read_at(famask_ctx *ctx, fm_stream *s, int64_t off, void *buf, size_t n)
{
    if (fseeko(s->fp, (off_t)off, SEEK_SET) != 0 || fread(buf, 1, n, s->fp) != n)
        return fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': corrupt zip file (cannot read %zu bytes at offset %lld)",
                        s->name, n, (long long)off);
    return FAMASK_STATUS_OK;
}

/* Reads the central directory; *entries is malloc'ed. */
static famask_status zip_directory(famask_ctx *ctx, fm_stream *s, zip_entry **entries, int *n_entries)
{
    *entries = NULL;
    *n_entries = 0;
    unsigned char *tail = NULL, *cd = NULL;
    zip_entry *e = NULL;
    famask_status st;
    int64_t size = s->file_size;
    if (size < 22)
        return fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': truncated zip file", s->name);
    int64_t tn = size < 65557 ? size : 65557;
    if (!(tail = fm_malloc(ctx, (size_t)tn)))
        return FAMASK_STATUS_NO_MEMORY;
    if ((st = zip_read_at(ctx, s, size - tn, tail, (size_t)tn)))
        goto fail;
    int64_t eocd = -1;
    for (int64_t k = tn - 22; k >= 0; k--)
        if (memcmp(tail + k, "PK\x05\x06", 4) == 0) {
            eocd = k;
            break;
        }
    if (eocd < 0) {
        st = fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': corrupt or truncated zip file (no end of directory)",
                      s->name);
        goto fail;
    }
    uint64_t count = le16(tail + eocd + 10), cd_size = le32(tail + eocd + 12), cd_off = le32(tail + eocd + 16);
    if (count == 0xffff || cd_size == 0xffffffffu || cd_off == 0xffffffffu) { /* zip64 */
        unsigned char rec[56];
        if (eocd < 20 || memcmp(tail + eocd - 20, "PK\x06\x07", 4) != 0) {
            st = fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': corrupt zip64 file (no locator)", s->name);
            goto fail;
        }
        if ((st = zip_read_at(ctx, s, (int64_t)le64(tail + eocd - 20 + 8), rec, sizeof rec)))
            goto fail;
        if (memcmp(rec, "PK\x06\x06", 4) != 0) {
            st = fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': corrupt zip64 file (bad directory record)", s->name);
            goto fail;
        }
        count = le64(rec + 32);
        cd_size = le64(rec + 40);
        cd_off = le64(rec + 48);
    }
    if (cd_size > ((uint64_t)64 << 20) || cd_off + cd_size > (uint64_t)size || count > cd_size / 46) {
        st = fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': corrupt zip directory", s->name);
        goto fail;
    }
    if (!(cd = fm_malloc(ctx, (size_t)cd_size)) || !(e = fm_calloc(ctx, (size_t)count + 1, sizeof *e))) {
        st = FAMASK_STATUS_NO_MEMORY;
        goto fail;
    }
    if ((st = zip_read_at(ctx, s, (int64_t)cd_off, cd, (size_t)cd_size)))
        goto fail;
    size_t p = 0;
    for (uint64_t k = 0; k < count; k++) {
        if (p + 46 > cd_size || memcmp(cd + p, "PK\x01\x02", 4) != 0) {
            st = fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': corrupt zip directory (entry %llu)", s->name,
                          (unsigned long long)k);
            goto fail;
        }
        const unsigned char *h = cd + p;
        size_t nlen = le16(h + 28), xlen = le16(h + 30), clen = le16(h + 32);
        if (p + 46 + nlen + xlen + clen > cd_size) {
            st = fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': corrupt zip directory (entry %llu)", s->name,
                          (unsigned long long)k);
            goto fail;
        }
        zip_entry *z = e + k;
        z->flags = le16(h + 8);
        z->method = (int)le16(h + 10);
        z->crc = le32(h + 16);
        uint64_t csize = le32(h + 20), usize = le32(h + 24), off = le32(h + 42);
        size_t cn = nlen < sizeof z->name - 1 ? nlen : sizeof z->name - 1;
        memcpy(z->name, h + 46, cn);
        z->name[cn] = '\0';
        /* zip64 extra field: the 64-bit values of the fields that hold 0xffffffff, in this order */
        const unsigned char *x = h + 46 + nlen, *xend = x + xlen;
        while (x + 4 <= xend) {
            uint32_t id = le16(x), len = le16(x + 2);
            const unsigned char *d = x + 4, *dend = d + len;
            if (dend > xend)
                break;
            if (id == 1) {
                if (usize == 0xffffffffu && d + 8 <= dend) {
                    usize = le64(d);
                    d += 8;
                }
                if (csize == 0xffffffffu && d + 8 <= dend) {
                    csize = le64(d);
                    d += 8;
                }
                if (off == 0xffffffffu && d + 8 <= dend)
                    off = le64(d);
            }
            x = dend;
        }
        if (csize > (uint64_t)size || off > (uint64_t)size || usize > ((uint64_t)1 << 62)) {
            st = fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': corrupt zip directory (entry '%s')", s->name, z->name);
            goto fail;
        }
        z->csize = (int64_t)csize;
        z->usize = (int64_t)usize;
        z->offset = (int64_t)off;
        p += 46 + nlen + xlen + clen;
    }
    free(tail);
    free(cd);
    *entries = e;
    *n_entries = (int)count;
    return FAMASK_STATUS_OK;
fail:
    free(tail);
    free(cd);
    free(e);
    return st;
}

/* The array name numpy gives a member: the file name without ".npy". */
static void array_name(const char *member, char *out, size_t cap)
{
    snprintf(out, cap, "%s", member);
    size_t n = strlen(out);
    if (n > 4 && strcmp(out + n - 4, ".npy") == 0)
        out[n - 4] = '\0';
}

static famask_status open_npz_member(famask_ctx *ctx, fm_stream *s, const char *want)
{
    zip_entry *e = NULL;
    int n = 0;
    char *names = NULL;
    if (s->file_size < 0 || s->fp == stdin)
        return fm_error(ctx, FAMASK_STATUS_BAD_DATA,
                        "'%s': a .npz archive cannot be read from a pipe (its directory is at the end): give a file",
                        s->name);
    famask_status st = zip_directory(ctx, s, &e, &n);
    if (st)
        return st;
    int pick = -1;
    char nm[256];
    if (want) {
        for (int k = 0; k < n && pick < 0; k++) {
            array_name(e[k].name, nm, sizeof nm);
            if (strcmp(nm, want) == 0 || strcmp(e[k].name, want) == 0)
                pick = k;
        }
    } else if (n == 1) {
        pick = 0;
    }
    if (pick < 0) {
        size_t cap = 64 + (size_t)n * 258, len = 0;
        if (!(names = fm_malloc(ctx, cap))) {
            st = FAMASK_STATUS_NO_MEMORY;
            goto fail;
        }
        names[0] = '\0';
        for (int k = 0; k < n; k++) {
            array_name(e[k].name, nm, sizeof nm);
            len += (size_t)snprintf(names + len, cap - len, "%s'%s'", k ? ", " : "", nm);
        }
        if (want)
            st = fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': no array '%s' in the archive (it holds %s)", s->name,
                          want, n ? names : "nothing");
        else
            st = fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': the archive holds %d arrays (%s): name one with --array",
                          s->name, n, names);
        goto fail;
    }
    zip_entry *z = e + pick;
    if (z->flags & 1) {
        st = fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': member '%s' is encrypted", s->name, z->name);
        goto fail;
    }
    if (z->method != 0 && z->method != 8) {
        st = fm_error(ctx, FAMASK_STATUS_BAD_DATA,
                      "'%s': member '%s' uses zip compression method %d (only stored and deflated are read)", s->name,
                      z->name, z->method);
        goto fail;
    }
    unsigned char lh[30];
    if ((st = zip_read_at(ctx, s, z->offset, lh, sizeof lh)))
        goto fail;
    if (memcmp(lh, "PK\x03\x04", 4) != 0) {
        st = fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': corrupt zip file (bad local header of '%s')", s->name,
                      z->name);
        goto fail;
    }
    int64_t data = z->offset + 30 + le16(lh + 26) + le16(lh + 28);
    if (data + z->csize > s->file_size) {
        st = fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': truncated zip member '%s'", s->name, z->name);
        goto fail;
    }
    /* messages name the member as archive:member */
    size_t used = strlen(s->name), nl = strlen(z->name);
    if (used + 1 + nl < sizeof s->name) {
        s->name[used] = ':';
        memcpy(s->name + used + 1, z->name, nl + 1);
    }
    st = fm_stream_start_zip_member(ctx, s, data, z->csize, z->method, z->crc, z->usize);
fail:
    free(names);
    free(e);
    return st;
}

/* ---- the converter's element type for a .npy dtype ------------------------------------------------------ */

static famask_dtype dense_dtype(const fm_npy_header *h)
{
    if (h->kind == 'b')
        return FAMASK_DTYPE_BOOL;
    if (h->kind == 'f')
        return h->elem_size == 2 ? FAMASK_DTYPE_F16 : h->elem_size == 4 ? FAMASK_DTYPE_F32 : FAMASK_DTYPE_F64;
    /* integers, signed or not: only zero or nonzero matters, so the width is all the converter needs */
    return h->elem_size == 1 ? FAMASK_DTYPE_U8 : h->elem_size == 2 ? FAMASK_DTYPE_I16
                              : h->elem_size == 4 ? FAMASK_DTYPE_I32
                                                  : FAMASK_DTYPE_I64;
}

/* ---- the driver ----------------------------------------------------------------------------------------- */

famask_status famask_mask_convert_file(famask_ctx *ctx, const char *path, const famask_convert_opts *opts,
                                       famask_mask **out)
{
    *out = NULL;
    famask_convert_opts none;
    memset(&none, 0, sizeof none);
    if (!opts)
        opts = &none;
    if (!path)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "path must not be NULL");
    fm_stream s;
    famask_converter *conv = NULL;
    unsigned char *chunk = NULL;
    famask_status st = fm_stream_open(ctx, path, &s);
    if (st)
        return st;
    const unsigned char *magic = NULL;
    size_t got = 0;
    int gz = 0, is_npz = 0;
    fm_npy_header h;
    memset(&h, 0, sizeof h);
    famask_dtype dtype;
    if ((st = fm_stream_peek(ctx, &s, 6, &magic, &got)))
        goto fail;
    if (got >= 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
        gz = 1;
        if ((st = fm_stream_start_gzip(ctx, &s)) || (st = fm_stream_peek(ctx, &s, 6, &magic, &got)))
            goto fail;
    } else if (!opts->raw && got >= 4 && memcmp(magic, "PK\x03\x04", 4) == 0) {
        is_npz = 1;
        if ((st = open_npz_member(ctx, &s, opts->array)) || (st = fm_stream_peek(ctx, &s, 6, &magic, &got)))
            goto fail;
    } else if (!opts->raw && got >= 4 && memcmp(magic, "PK", 2) == 0) {
        st = fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': an empty or corrupt zip file", s.name);
        goto fail;
    }
    if (opts->array && !is_npz) {
        st = fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'%s': --array names a member of a .npz archive, and "
                                                           "this is not one", s.name);
        goto fail;
    }
    if (opts->raw) {
        h.ndim = opts->raw_ndim;
        if (h.ndim < 2 || h.ndim > 4) {
            st = fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "raw input needs a shape of 2, 3 or 4 dimensions");
            goto fail;
        }
        dtype = opts->raw_dtype;
        h.elem_size = (int)famask_dtype_size(dtype);
        if (!h.elem_size) {
            st = fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "raw input: unknown dtype %d", (int)dtype);
            goto fail;
        }
        h.count = 1;
        for (int d = 0; d < h.ndim; d++) {
            h.shape[d] = opts->raw_shape[d];
            if (h.shape[d] < 1 || h.shape[d] > ((int64_t)1 << 31)) {
                st = fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "raw input: dimension %d of the shape is %lld", d,
                              (long long)h.shape[d]);
                goto fail;
            }
            h.count *= h.shape[d];
            if (h.count > ((int64_t)1 << 56)) {
                st = fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "raw input: the shape is too large");
                goto fail;
            }
        }
        int64_t want = h.count * h.elem_size;
        if (!gz && s.file_size >= 0 && s.file_size != want) {
            st = fm_error(ctx, FAMASK_STATUS_BAD_DATA,
                          "'%s' has %lld bytes, but the given shape and dtype %s make %lld: check --shape and "
                          "--dtype",
                          s.name, (long long)s.file_size, famask_dtype_name(dtype), (long long)want);
            goto fail;
        }
    } else {
        if (got < 6 || memcmp(magic, "\x93NUMPY", 6) != 0) {
            st = fm_error(ctx, FAMASK_STATUS_BAD_DATA,
                          "'%s': not a .npy, .npz or gzip file (bad magic); for raw bytes give --shape and --dtype",
                          s.name);
            goto fail;
        }
        if ((st = fm_npy_read_header(ctx, &s, &h)))
            goto fail;
        dtype = dense_dtype(&h);
    }
    if (h.ndim < 2 || h.ndim > 4) {
        st = fm_error(ctx, FAMASK_STATUS_BAD_DATA,
                      "'%s': a dense mask has 2, 3 or 4 dimensions ([Nq, Nk], [B, Nq, Nk], [B, H, Nq, Nk]), not %d",
                      s.name, h.ndim);
        goto fail;
    }
    /* Where the input's size is known, a header promising more data than there is fails here, before the
     * converter allocates for the shape it claims. */
    int64_t need = h.count * h.elem_size;
    int64_t have = s.check_crc ? s.want_size - s.out_total
                   : s.mode == FM_STREAM_PLAIN && s.file_size >= 0 ? s.file_size - s.raw_read
                                                                   : -1;
    if (have >= 0) {
        have += s.peek_len - s.peek_pos;
        if (need > have) {
            st = fm_error(ctx, FAMASK_STATUS_BAD_DATA,
                          "'%s': truncated data: the shape needs %lld bytes, the input holds %lld", s.name,
                          (long long)need, (long long)have);
            goto fail;
        }
    }
    int fortran = h.fortran;
    if ((st = fm_converter_create(ctx, dtype, h.ndim, h.shape, opts->flags, fortran, &conv))) {
        fm_error_prefix(ctx, "'%s'", s.name);
        goto fail;
    }
    int es = h.elem_size;
    size_t unit = (size_t)fm_converter_row_len(conv) * es; /* bytes of one row (see io.h for Fortran order) */
    size_t per = CHUNK_BYTES / unit ? CHUNK_BYTES / unit : 1;
    int64_t total = fm_converter_total(conv), done = 0, total_bytes = h.count * es;
    if (!(chunk = fm_malloc(ctx, per * unit))) {
        st = FAMASK_STATUS_NO_MEMORY;
        goto fail;
    }
    while (done < total) {
        int64_t n = total - done < (int64_t)per ? total - done : (int64_t)per;
        size_t bytes = (size_t)n * unit;
        if ((st = fm_stream_read(ctx, &s, chunk, bytes, &got)))
            goto fail;
        if (got < bytes) {
            st = fm_error(ctx, FAMASK_STATUS_BAD_DATA,
                          "'%s': truncated data: the shape needs %lld bytes, the input ends after %lld", s.name,
                          (long long)total_bytes, (long long)(done * (int64_t)unit + (int64_t)got));
            goto fail;
        }
        if (h.big_endian)
            fm_swap_bytes(chunk, (int64_t)bytes / es, es);
        st = fortran ? fm_converter_push_fortran(ctx, conv, chunk, n * fm_converter_row_len(conv))
                     : famask_converter_push(ctx, conv, chunk, n);
        if (st)
            goto fail;
        done += n;
        if (opts->progress)
            opts->progress(opts->progress_user, done * (int64_t)unit, total_bytes);
    }
    if ((st = fm_stream_expect_end(ctx, &s, "the data the shape needs")))
        goto fail;
    st = famask_converter_finish(ctx, conv, out);
    if (st)
        fm_error_prefix(ctx, "'%s'", s.name);
fail:
    free(chunk);
    famask_converter_free(conv);
    fm_stream_close(&s);
    return st;
}
