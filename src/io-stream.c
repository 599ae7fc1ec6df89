/*
 * io-stream.c: the byte plumbing under every reader and writer: output files written as path.tmp.XXXXXX and
 * renamed into place, and one input stream type that reads plain files or standard input, gzip (any number of
 * members) and zip members (stored or deflated, CRC32 and size checked), with a small look-ahead for sniffing
 * the format.
 */
#include "io.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ZBUF_SIZE (1 << 18)

/* ---- output --------------------------------------------------------------------------------------------- */

famask_status fm_out_open(famask_ctx *ctx, const char *path, fm_out *out)
{
    memset(out, 0, sizeof *out);
    if (strcmp(path, "-") == 0) {
        out->fp = stdout;
        return FAMASK_STATUS_OK;
    }
    size_t n = strlen(path);
    out->path = fm_malloc(ctx, n + 1);
    out->tmp = fm_malloc(ctx, n + 16);
    if (!out->path || !out->tmp)
        goto fail_mem;
    memcpy(out->path, path, n + 1);
    snprintf(out->tmp, n + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(out->tmp);
    if (fd < 0) {
        int e = errno;
        free(out->path);
        free(out->tmp);
        memset(out, 0, sizeof *out);
        return fm_error(ctx, FAMASK_STATUS_CANNOT_CREATE, "'%s': cannot create: %s", path, strerror(e));
    }
    /* mkstemp makes the file private (0600); an output is an ordinary file like any other. */
    (void)fchmod(fd, 0644);
    out->fp = fdopen(fd, "wb");
    if (!out->fp) {
        int e = errno;
        close(fd);
        unlink(out->tmp);
        free(out->path);
        free(out->tmp);
        memset(out, 0, sizeof *out);
        return fm_error(ctx, FAMASK_STATUS_CANNOT_CREATE, "'%s': cannot create: %s", path, strerror(e));
    }
    return FAMASK_STATUS_OK;
fail_mem:
    free(out->path);
    free(out->tmp);
    memset(out, 0, sizeof *out);
    return FAMASK_STATUS_NO_MEMORY;
}

void fm_out_write(fm_out *out, const void *data, size_t n)
{
    if (out->failed || n == 0)
        return;
    if (fwrite(data, 1, n, out->fp) != n)
        out->failed = errno ? errno : EIO;
}

famask_status fm_out_commit(famask_ctx *ctx, fm_out *out)
{
    famask_status st = FAMASK_STATUS_OK;
    if (!out->tmp) { /* standard output */
        if (fflush(out->fp) != 0 && !out->failed)
            out->failed = errno ? errno : EIO;
        if (out->failed)
            st = fm_error(ctx, FAMASK_STATUS_IO, "standard output: write error: %s", strerror(out->failed));
        memset(out, 0, sizeof *out);
        return st;
    }
    if (fflush(out->fp) != 0 && !out->failed)
        out->failed = errno ? errno : EIO;
    if (fclose(out->fp) != 0 && !out->failed)
        out->failed = errno ? errno : EIO;
    out->fp = NULL;
    if (!out->failed && rename(out->tmp, out->path) != 0)
        out->failed = errno ? errno : EIO;
    if (out->failed) {
        st = fm_error(ctx, FAMASK_STATUS_IO, "'%s': write error: %s", out->path, strerror(out->failed));
        unlink(out->tmp);
    }
    free(out->path);
    free(out->tmp);
    memset(out, 0, sizeof *out);
    return st;
}

void fm_out_abort(fm_out *out)
{
    if (out->tmp) {
        if (out->fp)
            fclose(out->fp);
        unlink(out->tmp);
    } else if (out->fp) {
        fflush(out->fp);
    }
    free(out->path);
    free(out->tmp);
    memset(out, 0, sizeof *out);
}

/* ---- input ---------------------------------------------------------------------------------------------- */

famask_status fm_stream_open(famask_ctx *ctx, const char *path, fm_stream *s)
{
    memset(s, 0, sizeof *s);
    s->limit = -1;
    s->file_size = -1;
    snprintf(s->name, sizeof s->name, "%s", strcmp(path, "-") == 0 ? "standard input" : path);
    if (strcmp(path, "-") == 0) {
        s->fp = stdin;
    } else {
        s->fp = fopen(path, "rb");
        if (!s->fp)
            return fm_error(ctx, FAMASK_STATUS_CANNOT_OPEN, "'%s': cannot open: %s", path, strerror(errno));
        s->own_fp = 1;
    }
    struct stat sb;
    if (fstat(fileno(s->fp), &sb) == 0) {
        if (S_ISDIR(sb.st_mode)) {
            fm_stream_close(s);
            return fm_error(ctx, FAMASK_STATUS_CANNOT_OPEN, "'%s': cannot open: is a directory", path);
        }
        if (S_ISREG(sb.st_mode))
            s->file_size = (int64_t)sb.st_size;
    }
    return FAMASK_STATUS_OK;
}

void fm_stream_close(fm_stream *s)
{
    if (s->own_fp && s->fp)
        fclose(s->fp);
    if (s->z_init)
        inflateEnd(&s->z);
    free(s->zbuf);
    memset(s, 0, sizeof *s);
}

/* Bytes of the underlying file (after any look-ahead that a mode switch handed back), within the limit. */
static famask_status raw_take(famask_ctx *ctx, fm_stream *s, unsigned char *buf, size_t n, size_t *got)
{
    size_t want = n;
    if (s->limit >= 0 && (int64_t)want > s->limit)
        want = (size_t)s->limit;
    size_t k = want ? fread(buf, 1, want, s->fp) : 0;
    if (k < want && ferror(s->fp))
        return fm_error(ctx, FAMASK_STATUS_IO, "'%s': read error: %s", s->name, strerror(errno));
    if (s->limit >= 0)
        s->limit -= (int64_t)k;
    s->raw_read += (int64_t)k;
    *got = k;
    return FAMASK_STATUS_OK;
}

static famask_status check_member_end(famask_ctx *ctx, fm_stream *s)
{
    if (!s->check_crc)
        return FAMASK_STATUS_OK;
    s->check_crc = 0;
    if (s->out_total != s->want_size)
        return fm_error(ctx, FAMASK_STATUS_BAD_DATA,
                        "'%s': zip member holds %lld bytes, its directory entry says %lld (corrupt zip file)",
                        s->name, (long long)s->out_total, (long long)s->want_size);
    if (s->crc != s->want_crc)
        return fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': zip member fails its CRC32 check (corrupt zip file)",
                        s->name);
    return FAMASK_STATUS_OK;
}

static famask_status inflate_some(famask_ctx *ctx, fm_stream *s, unsigned char *buf, size_t n, size_t *got)
{
    size_t produced = 0;
    const char *what = s->mode == FM_STREAM_GZIP ? "gzip data" : "zip member";
    while (produced < n && !s->z_done) {
        if (s->z.avail_in == 0) {
            size_t k = 0;
            famask_status st = raw_take(ctx, s, s->zbuf, ZBUF_SIZE, &k);
            if (st)
                return st;
            if (k == 0)
                return fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': truncated %s", s->name, what);
            s->z.next_in = s->zbuf;
            s->z.avail_in = (uInt)k;
        }
        size_t room = n - produced;
        if (room > (1u << 30))
            room = 1u << 30;
        s->z.next_out = buf + produced;
        s->z.avail_out = (uInt)room;
        int r = inflate(&s->z, Z_NO_FLUSH);
        produced += room - s->z.avail_out;
        if (r == Z_STREAM_END) {
            if (s->mode == FM_STREAM_DEFLATE) {
                s->z_done = 1;
                break;
            }
            /* gzip: another member may follow (concatenated files); anything else is an error. */
            if (s->z.avail_in == 0) {
                size_t k = 0;
                famask_status st = raw_take(ctx, s, s->zbuf, ZBUF_SIZE, &k);
                if (st)
                    return st;
                s->z.next_in = s->zbuf;
                s->z.avail_in = (uInt)k;
            }
            if (s->z.avail_in == 0) {
                s->z_done = 1;
                break;
            }
            if (s->z.next_in[0] != 0x1f)
                return fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': unexpected bytes after the gzip data",
                                s->name);
            inflateReset(&s->z);
        } else if (r == Z_BUF_ERROR) {
            continue; /* needs more input: the loop refills */
        } else if (r != Z_OK) {
            return fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': corrupt %s: %s", s->name, what,
                            s->z.msg ? s->z.msg : "inflate failed");
        }
    }
    *got = produced;
    return FAMASK_STATUS_OK;
}

/* Reads from the decoded level (no look-ahead). */
static famask_status decode_read(famask_ctx *ctx, fm_stream *s, unsigned char *buf, size_t n, size_t *got)
{
    famask_status st = s->mode == FM_STREAM_PLAIN ? raw_take(ctx, s, buf, n, got) : inflate_some(ctx, s, buf, n, got);
    if (st)
        return st;
    if (s->check_crc) {
        size_t done = 0;
        while (done < *got) { /* crc32 takes a uInt length */
            size_t k = *got - done > (1u << 30) ? (1u << 30) : *got - done;
            s->crc = (uint32_t)crc32(s->crc, buf + done, (uInt)k);
            done += k;
        }
        s->out_total += (int64_t)*got;
        if (*got < n || s->out_total > s->want_size)
            return check_member_end(ctx, s);
    }
    return FAMASK_STATUS_OK;
}

famask_status fm_stream_read(famask_ctx *ctx, fm_stream *s, void *buf, size_t n, size_t *got)
{
    unsigned char *p = buf;
    size_t k = 0;
    while (k < n && s->peek_pos < s->peek_len)
        p[k++] = s->peek[s->peek_pos++];
    size_t total = k;
    /* fread and inflate may return short counts before the end: loop until n or a read of nothing */
    while (total < n) {
        size_t g = 0;
        famask_status st = decode_read(ctx, s, p + total, n - total, &g);
        if (st)
            return st;
        if (g == 0)
            break;
        total += g;
    }
    *got = total;
    return FAMASK_STATUS_OK;
}

famask_status fm_stream_read_exact(famask_ctx *ctx, fm_stream *s, void *buf, size_t n, const char *what)
{
    size_t got = 0;
    famask_status st = fm_stream_read(ctx, s, buf, n, &got);
    if (st)
        return st;
    if (got < n)
        return fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': truncated %s (%zu of %zu bytes)", s->name, what, got,
                        n);
    return FAMASK_STATUS_OK;
}

famask_status fm_stream_peek(famask_ctx *ctx, fm_stream *s, size_t n, const unsigned char **bytes, size_t *got)
{
    if (n > sizeof s->peek)
        n = sizeof s->peek;
    if (s->peek_pos > 0) { /* keep what is left at the front */
        memmove(s->peek, s->peek + s->peek_pos, (size_t)(s->peek_len - s->peek_pos));
        s->peek_len -= s->peek_pos;
        s->peek_pos = 0;
    }
    while ((size_t)s->peek_len < n) {
        size_t g = 0;
        famask_status st = decode_read(ctx, s, s->peek + s->peek_len, n - (size_t)s->peek_len, &g);
        if (st)
            return st;
        if (g == 0)
            break;
        s->peek_len += (int)g;
    }
    *bytes = s->peek;
    *got = (size_t)s->peek_len < n ? (size_t)s->peek_len : n;
    return FAMASK_STATUS_OK;
}

famask_status fm_stream_expect_end(famask_ctx *ctx, fm_stream *s, const char *what)
{
    const unsigned char *b = NULL;
    size_t got = 0;
    famask_status st = fm_stream_peek(ctx, s, 1, &b, &got);
    if (st)
        return st;
    if (got)
        return fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': unexpected bytes after %s", s->name, what);
    return FAMASK_STATUS_OK;
}

static famask_status start_inflate(famask_ctx *ctx, fm_stream *s, int window_bits)
{
    s->zbuf = fm_malloc(ctx, ZBUF_SIZE);
    if (!s->zbuf)
        return FAMASK_STATUS_NO_MEMORY;
    memset(&s->z, 0, sizeof s->z);
    /* Bytes already looked at are compressed input: they go first. */
    size_t pend = (size_t)(s->peek_len - s->peek_pos);
    memcpy(s->zbuf, s->peek + s->peek_pos, pend);
    s->peek_len = s->peek_pos = 0;
    s->z.next_in = s->zbuf;
    s->z.avail_in = (uInt)pend;
    if (inflateInit2(&s->z, window_bits) != Z_OK)
        return fm_error(ctx, FAMASK_STATUS_NO_MEMORY, "zlib: cannot start inflating");
    s->z_init = 1;
    return FAMASK_STATUS_OK;
}

famask_status fm_stream_start_gzip(famask_ctx *ctx, fm_stream *s)
{
    s->mode = FM_STREAM_GZIP;
    return start_inflate(ctx, s, 16 + MAX_WBITS);
}

famask_status fm_stream_start_zip_member(famask_ctx *ctx, fm_stream *s, int64_t offset, int64_t csize, int method,
                                         uint32_t crc, int64_t usize)
{
    s->peek_len = s->peek_pos = 0;
    if (fseeko(s->fp, (off_t)offset, SEEK_SET) != 0)
        return fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': cannot seek to a zip member: %s", s->name,
                        strerror(errno));
    s->limit = csize;
    s->check_crc = 1;
    s->crc = (uint32_t)crc32(0, NULL, 0);
    s->want_crc = crc;
    s->want_size = usize;
    s->out_total = 0;
    if (method == 0)
        return FAMASK_STATUS_OK;
    s->mode = FM_STREAM_DEFLATE;
    return start_inflate(ctx, s, -MAX_WBITS);
}

void fm_swap_bytes(void *data, int64_t n, int es)
{
    unsigned char *p = data;
    if (es <= 1)
        return;
    for (int64_t k = 0; k < n; k++, p += es)
        for (int a = 0, b = es - 1; a < b; a++, b--) {
            unsigned char t = p[a];
            p[a] = p[b];
            p[b] = t;
        }
}
