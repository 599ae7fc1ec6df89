/*
 * io-npy.c: NumPy .npy files (format versions 1.0, 2.0 and 3.0) and the famask_array API: the header (magic,
 * version, the Python-literal dict with descr, fortran_order and shape), whole-array load (C or Fortran order,
 * little or big endian; the result is always C order, little endian) and save (temporary file + rename).
 * Arrays of up to FAMASK_MAX_DIMS dimensions of the famask_dtype element types; bf16 travels as '<u2'.
 */
#include "io.h"

#include <stdlib.h>
#include <string.h>

#define NPY_MAX_HEADER (1 << 20)

size_t famask_dtype_size(famask_dtype dtype)
{
    switch (dtype) {
    case FAMASK_DTYPE_BOOL:
    case FAMASK_DTYPE_U8:
    case FAMASK_DTYPE_I8:
        return 1;
    case FAMASK_DTYPE_I16:
    case FAMASK_DTYPE_F16:
    case FAMASK_DTYPE_BF16:
        return 2;
    case FAMASK_DTYPE_I32:
    case FAMASK_DTYPE_F32:
        return 4;
    case FAMASK_DTYPE_I64:
    case FAMASK_DTYPE_F64:
        return 8;
    }
    return 0;
}

const char *famask_dtype_name(famask_dtype dtype)
{
    switch (dtype) {
    case FAMASK_DTYPE_BOOL: return "bool";
    case FAMASK_DTYPE_U8: return "u8";
    case FAMASK_DTYPE_I8: return "i8";
    case FAMASK_DTYPE_I16: return "i16";
    case FAMASK_DTYPE_I32: return "i32";
    case FAMASK_DTYPE_I64: return "i64";
    case FAMASK_DTYPE_F16: return "f16";
    case FAMASK_DTYPE_BF16: return "bf16";
    case FAMASK_DTYPE_F32: return "f32";
    case FAMASK_DTYPE_F64: return "f64";
    }
    return "unknown";
}

/* The numpy descr of a famask dtype (little endian; bf16 has none of its own and travels as uint16). */
static const char *dtype_descr(famask_dtype dtype)
{
    switch (dtype) {
    case FAMASK_DTYPE_BOOL: return "|b1";
    case FAMASK_DTYPE_U8: return "|u1";
    case FAMASK_DTYPE_I8: return "|i1";
    case FAMASK_DTYPE_I16: return "<i2";
    case FAMASK_DTYPE_I32: return "<i4";
    case FAMASK_DTYPE_I64: return "<i8";
    case FAMASK_DTYPE_F16: return "<f2";
    case FAMASK_DTYPE_BF16: return "<u2";
    case FAMASK_DTYPE_F32: return "<f4";
    case FAMASK_DTYPE_F64: return "<f8";
    }
    return NULL;
}

/* ---- header parsing: a small reader for the one Python literal numpy writes ------------------------------ */

typedef struct lit {
    const char *p, *end;
} lit;

static void lit_space(lit *l)
{
    while (l->p < l->end && (*l->p == ' ' || *l->p == '\t' || *l->p == '\n' || *l->p == '\r'))
        l->p++;
}

static int lit_char(lit *l, char c)
{
    lit_space(l);
    if (l->p < l->end && *l->p == c) {
        l->p++;
        return 1;
    }
    return 0;
}

/* A quoted string into out (cap bytes); 0 on failure. */
static int lit_string(lit *l, char *out, size_t cap)
{
    lit_space(l);
    if (l->p >= l->end || (*l->p != '\'' && *l->p != '"'))
        return 0;
    char q = *l->p++;
    size_t n = 0;
    while (l->p < l->end && *l->p != q) {
        if (n + 1 >= cap)
            return 0;
        out[n++] = *l->p++;
    }
    if (l->p >= l->end)
        return 0;
    l->p++;
    out[n] = '\0';
    return 1;
}

static int lit_word(lit *l, const char *w)
{
    lit_space(l);
    size_t n = strlen(w);
    if ((size_t)(l->end - l->p) >= n && memcmp(l->p, w, n) == 0) {
        l->p += n;
        return 1;
    }
    return 0;
}

static int lit_int(lit *l, int64_t *v)
{
    lit_space(l);
    int64_t x = 0;
    const char *start = l->p;
    while (l->p < l->end && *l->p >= '0' && *l->p <= '9') {
        if (x > ((int64_t)1 << 50))
            return 0;
        x = x * 10 + (*l->p++ - '0');
    }
    if (l->p < l->end && *l->p == 'L') /* Python 2 longs */
        l->p++;
    *v = x;
    return l->p > start;
}

static famask_status parse_descr(famask_ctx *ctx, const char *name, const char *d, fm_npy_header *h)
{
    snprintf(h->descr, sizeof h->descr, "%.15s", d);
    if (strlen(d) < 3 || !strchr("<>|=", d[0]) || !strchr("biuf", d[1]))
        goto bad;
    char *end = NULL;
    long size = strtol(d + 2, &end, 10);
    if (*end || (size != 1 && size != 2 && size != 4 && size != 8))
        goto bad;
    if (d[1] == 'b' && size != 1)
        goto bad;
    if (d[1] == 'f' && size == 1)
        goto bad;
    h->kind = d[1];
    h->elem_size = (int)size;
    h->big_endian = d[0] == '>' && size > 1;
    return FAMASK_STATUS_OK;
bad:
    return fm_error(ctx, FAMASK_STATUS_BAD_DATA,
                    "'%s': unsupported .npy dtype '%s' (supported: bool, int8..int64, uint8..uint64, float16/32/64)",
                    name, d);
}

static famask_status parse_dict(famask_ctx *ctx, const char *name, const char *text, size_t len, fm_npy_header *h)
{
    lit l = {text, text + len};
    int have_descr = 0, have_order = 0, have_shape = 0;
    char key[32], descr[64];
    if (!lit_char(&l, '{'))
        goto bad;
    for (;;) {
        if (lit_char(&l, '}'))
            break;
        if (!lit_string(&l, key, sizeof key) || !lit_char(&l, ':'))
            goto bad;
        if (strcmp(key, "descr") == 0) {
            if (!lit_string(&l, descr, sizeof descr)) {
                lit_space(&l);
                return fm_error(ctx, FAMASK_STATUS_BAD_DATA,
                                "'%s': unsupported .npy dtype (structured arrays are not masks)", name);
            }
            famask_status st = parse_descr(ctx, name, descr, h);
            if (st)
                return st;
            have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0) {
            if (lit_word(&l, "True"))
                h->fortran = 1;
            else if (lit_word(&l, "False"))
                h->fortran = 0;
            else
                goto bad;
            have_order = 1;
        } else if (strcmp(key, "shape") == 0) {
            if (!lit_char(&l, '('))
                goto bad;
            h->ndim = 0;
            while (!lit_char(&l, ')')) {
                int64_t v = 0;
                if (!lit_int(&l, &v))
                    goto bad;
                if (h->ndim == FAMASK_MAX_DIMS)
                    return fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': .npy array has more than %d dimensions",
                                    name, FAMASK_MAX_DIMS);
                h->shape[h->ndim++] = v;
                if (!lit_char(&l, ',')) {
                    if (!lit_char(&l, ')'))
                        goto bad;
                    break;
                }
            }
            have_shape = 1;
        } else {
            return fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': unexpected key '%s' in the .npy header", name, key);
        }
        if (!lit_char(&l, ',')) {
            if (!lit_char(&l, '}'))
                goto bad;
            break;
        }
    }
    if (!have_descr || !have_order || !have_shape)
        return fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': .npy header lacks '%s'", name,
                        !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
    return FAMASK_STATUS_OK;
bad:
    return fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': malformed .npy header at byte %d of the dictionary", name,
                    (int)(l.p - text));
}

famask_status fm_npy_read_header(famask_ctx *ctx, fm_stream *s, fm_npy_header *h)
{
    memset(h, 0, sizeof *h);
    unsigned char pre[12];
    char *text = NULL;
    famask_status st = fm_stream_read_exact(ctx, s, pre, 10, ".npy header");
    if (st)
        return st;
    if (memcmp(pre, "\x93NUMPY", 6) != 0)
        return fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': not a .npy file (bad magic)", s->name);
    size_t hlen;
    if (pre[6] == 1) {
        hlen = (size_t)pre[8] | (size_t)pre[9] << 8;
    } else if (pre[6] == 2 || pre[6] == 3) {
        if ((st = fm_stream_read_exact(ctx, s, pre + 10, 2, ".npy header")))
            return st;
        hlen = (size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
    } else {
        return fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': unsupported .npy format version %d.%d", s->name, pre[6],
                        pre[7]);
    }
    if (hlen > NPY_MAX_HEADER)
        return fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': .npy header of %zu bytes is implausibly long", s->name,
                        hlen);
    text = fm_malloc(ctx, hlen + 1);
    if (!text)
        return FAMASK_STATUS_NO_MEMORY;
    if ((st = fm_stream_read_exact(ctx, s, text, hlen, ".npy header")))
        goto fail;
    text[hlen] = '\0';
    if ((st = parse_dict(ctx, s->name, text, hlen, h)))
        goto fail;
    int64_t count = 1;
    for (int d = 0; d < h->ndim; d++) {
        if (h->shape[d] > 0 && count > (((int64_t)1 << 60) / h->elem_size) / h->shape[d]) {
            st = fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': .npy shape is too large", s->name);
            goto fail;
        }
        count *= h->shape[d];
    }
    h->count = count;
    free(text);
    return FAMASK_STATUS_OK;
fail:
    free(text);
    return st;
}

size_t fm_npy_format_header(char *buf, size_t cap, const char *descr, int fortran, int ndim, const int64_t *shape)
{
    char dict[512];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': %s, 'shape': (", descr,
                     fortran ? "True" : "False");
    for (int d = 0; d < ndim; d++)
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%lld,%s", (long long)shape[d], d + 1 < ndim ? " " : "");
    n += snprintf(dict + n, sizeof dict - (size_t)n, "), }");
    /* numpy writes (n,) for one dimension and (a, b) for more: drop the comma after the last of several */
    if (ndim > 1) {
        char *c = strstr(dict, ",), }");
        memmove(c, c + 1, strlen(c + 1) + 1);
        n--;
    }
    /* Pad so that the data starts on a multiple of 64 bytes, as numpy does. */
    size_t pre = 10, total = pre + (size_t)n + 1;
    total = (total + 63) / 64 * 64;
    if (total - pre > 65535) { /* version 2.0: 4-byte length */
        pre = 12;
        total = (pre + (size_t)n + 1 + 63) / 64 * 64;
    }
    if (total > cap)
        return 0;
    size_t hlen = total - pre;
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = pre == 10 ? 1 : 2;
    buf[7] = 0;
    buf[8] = (char)(hlen & 0xff);
    buf[9] = (char)((hlen >> 8) & 0xff);
    if (pre == 12) {
        buf[10] = (char)((hlen >> 16) & 0xff);
        buf[11] = (char)((hlen >> 24) & 0xff);
    }
    memcpy(buf + pre, dict, (size_t)n);
    memset(buf + pre + n, ' ', total - pre - (size_t)n - 1);
    buf[total - 1] = '\n';
    return total;
}

/* ---- arrays --------------------------------------------------------------------------------------------- */

famask_status famask_array_create(famask_ctx *ctx, famask_dtype dtype, int ndim, const int64_t *shape,
                                  famask_array **out)
{
    *out = NULL;
    size_t es = famask_dtype_size(dtype);
    if (!es)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "unknown dtype %d", (int)dtype);
    if (ndim < 0 || ndim > FAMASK_MAX_DIMS || (ndim > 0 && !shape))
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "array of %d dimensions (at most %d)", ndim,
                        FAMASK_MAX_DIMS);
    int64_t count = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "array dimension %d is negative (%lld)", d,
                            (long long)shape[d]);
        if (shape[d] > 0 && count > (((int64_t)1 << 60) / (int64_t)es) / shape[d])
            return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "array is too large");
        count *= shape[d];
    }
    famask_array *a = fm_calloc(ctx, 1, sizeof *a);
    if (!a)
        return FAMASK_STATUS_NO_MEMORY;
    a->data = fm_calloc(ctx, (size_t)count, es);
    if (!a->data) {
        free(a);
        return FAMASK_STATUS_NO_MEMORY;
    }
    a->dtype = dtype;
    a->ndim = ndim;
    for (int d = 0; d < ndim; d++)
        a->shape[d] = shape[d];
    *out = a;
    return FAMASK_STATUS_OK;
}

void famask_array_free(famask_array *array)
{
    if (!array)
        return;
    free(array->data);
    free(array);
}

/* Fortran order (first index fastest) into C order (last index fastest). */
static void fortran_to_c(const unsigned char *src, unsigned char *dst, int ndim, const int64_t *shape, int64_t count,
                         int es)
{
    int64_t fstride[FAMASK_MAX_DIMS], idx[FAMASK_MAX_DIMS] = {0};
    int64_t s = 1;
    for (int d = 0; d < ndim; d++) {
        fstride[d] = s;
        s *= shape[d];
    }
    int64_t off = 0; /* Fortran offset of the C index idx */
    for (int64_t c = 0; c < count; c++) {
        memcpy(dst + c * es, src + off * es, (size_t)es);
        for (int d = ndim - 1; d >= 0; d--) { /* odometer over the C index */
            if (++idx[d] < shape[d]) {
                off += fstride[d];
                break;
            }
            off -= fstride[d] * (idx[d] - 1);
            idx[d] = 0;
        }
    }
}

famask_status fm_npy_dtype(famask_ctx *ctx, const char *name, const fm_npy_header *h, famask_dtype *dtype)
{
    switch (h->kind) {
    case 'b':
        *dtype = FAMASK_DTYPE_BOOL;
        return FAMASK_STATUS_OK;
    case 'u':
        if (h->elem_size == 1) {
            *dtype = FAMASK_DTYPE_U8;
            return FAMASK_STATUS_OK;
        }
        if (h->elem_size == 2) { /* how bf16 travels */
            *dtype = FAMASK_DTYPE_BF16;
            return FAMASK_STATUS_OK;
        }
        break;
    case 'i':
        *dtype = h->elem_size == 1   ? FAMASK_DTYPE_I8
                 : h->elem_size == 2 ? FAMASK_DTYPE_I16
                 : h->elem_size == 4 ? FAMASK_DTYPE_I32
                                     : FAMASK_DTYPE_I64;
        return FAMASK_STATUS_OK;
    case 'f':
        *dtype = h->elem_size == 2 ? FAMASK_DTYPE_F16 : h->elem_size == 4 ? FAMASK_DTYPE_F32 : FAMASK_DTYPE_F64;
        return FAMASK_STATUS_OK;
    }
    return fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': .npy dtype '%s' has no famask array type", name, h->descr);
}

famask_status famask_npy_load(famask_ctx *ctx, const char *path, famask_array **out)
{
    *out = NULL;
    fm_stream s;
    fm_npy_header h;
    famask_array *a = NULL;
    unsigned char *tmp = NULL;
    famask_dtype dtype;
    famask_status st = fm_stream_open(ctx, path, &s);
    if (st)
        return st;
    if ((st = fm_npy_read_header(ctx, &s, &h)) || (st = fm_npy_dtype(ctx, s.name, &h, &dtype)))
        goto fail;
    size_t bytes = (size_t)h.count * (size_t)h.elem_size;
    if (s.file_size >= 0 && (int64_t)bytes > s.file_size) { /* before allocating what a bad header claims */
        st = fm_error(ctx, FAMASK_STATUS_BAD_DATA, "'%s': truncated .npy data (the header promises %zu bytes)",
                      s.name, bytes);
        goto fail;
    }
    if ((st = famask_array_create(ctx, dtype, h.ndim, h.shape, &a)))
        goto fail;
    unsigned char *dst = a->data;
    if (h.fortran && h.ndim > 1) {
        if (!(tmp = fm_malloc(ctx, bytes))) {
            st = FAMASK_STATUS_NO_MEMORY;
            goto fail;
        }
        dst = tmp;
    }
    if ((st = fm_stream_read_exact(ctx, &s, dst, bytes, ".npy data")))
        goto fail;
    if ((st = fm_stream_expect_end(ctx, &s, "the .npy data")))
        goto fail;
    if (h.big_endian)
        fm_swap_bytes(dst, h.count, h.elem_size);
    if (tmp)
        fortran_to_c(tmp, a->data, h.ndim, h.shape, h.count, h.elem_size);
    free(tmp);
    fm_stream_close(&s);
    *out = a;
    return FAMASK_STATUS_OK;
fail:
    free(tmp);
    famask_array_free(a);
    fm_stream_close(&s);
    return st;
}

famask_status famask_npy_save(famask_ctx *ctx, const char *path, const famask_array *array)
{
    const char *descr = array ? dtype_descr(array->dtype) : NULL;
    if (!descr || array->ndim < 0 || array->ndim > FAMASK_MAX_DIMS || !array->data)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'%s': not a valid array to save", path);
    int64_t count = 1;
    for (int d = 0; d < array->ndim; d++) {
        if (array->shape[d] < 0)
            return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'%s': array dimension %d is negative", path, d);
        count *= array->shape[d];
    }
    char head[1024];
    size_t hn = fm_npy_format_header(head, sizeof head, descr, 0, array->ndim, array->shape);
    fm_out o;
    famask_status st = fm_out_open(ctx, path, &o);
    if (st)
        return st;
    fm_out_write(&o, head, hn);
    fm_out_write(&o, array->data, (size_t)count * famask_dtype_size(array->dtype));
    return fm_out_commit(ctx, &o);
}
