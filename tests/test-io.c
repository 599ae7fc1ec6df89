/*
 * test-io.c: mask files and arrays: .npy round trips of every dtype and shape, hand-written Fortran-order and
 * big-endian .npy files, .fmask round trips on random masks, every single-byte corruption and every truncation
 * of a .fmask rejected, the size and speed of a long causal_document mask, .npy mask vectors, the FlashMask
 * layout (fewest vectors, exact round trip, meaning checked cell by cell), the text listing, and writers that
 * leave nothing behind when they fail, and every example in specs/ through each format. Files go to a fresh
 * temporary directory.
 */
#include "testlib.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char dir[256];

static const char *tmp_path(const char *name)
{
    static char p[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

static unsigned char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)len + 1);
    *n = fread(p, 1, (size_t)len, f);
    fclose(f);
    return p;
}

static void write_all(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    fwrite(p, 1, n, f);
    fclose(f);
}

/* Number of entries in the temporary directory whose name contains ".tmp." */
static int count_tmp_files(void)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

static void random_column(int32_t v[4], int nq)
{
    for (int x = 0; x < 4; x += 2) {
        int s = tl_rand_int(0, nq), e = tl_rand_int(s, nq);
        if (tl_rand_int(0, 3) == 0)
            e = s;
        v[x] = s;
        v[x + 1] = e;
    }
}

static famask_mask *random_mask(famask_ctx *ctx, int nb, int nh, int nq, int nk)
{
    int32_t *raw = malloc((size_t)nb * nh * nk * 4 * sizeof *raw);
    for (int c = 0; c < nb * nh * nk; c++)
        random_column(raw + 4 * c, nq);
    famask_mask *m = NULL;
    CHECK_OK(ctx, famask_mask_from_vectors(ctx, nb, nh, nq, nk, raw, &m));
    free(raw);
    return m;
}

static void test_dtypes(void)
{
    static const size_t sizes[] = {1, 1, 1, 2, 4, 8, 2, 2, 4, 8};
    static const char *names[] = {"bool", "u8", "i8", "i16", "i32", "i64", "f16", "bf16", "f32", "f64"};
    for (int d = 0; d <= FAMASK_DTYPE_F64; d++) {
        CHECK(famask_dtype_size((famask_dtype)d) == sizes[d], "size of dtype %d", d);
        CHECK(strcmp(famask_dtype_name((famask_dtype)d), names[d]) == 0, "name of dtype %d", d);
    }
    CHECK(famask_dtype_size((famask_dtype)99) == 0, "unknown dtype has size 0");
}

static void test_npy_round_trip(famask_ctx *ctx)
{
    for (int rep = 0; rep < 60; rep++) {
        famask_dtype dt = (famask_dtype)tl_rand_int(0, FAMASK_DTYPE_F64);
        int ndim = tl_rand_int(0, 4);
        int64_t shape[4];
        for (int d = 0; d < ndim; d++)
            shape[d] = tl_rand_int(0, 3) == 0 ? tl_rand_int(0, 1) : tl_rand_int(1, 9);
        famask_array *a = NULL, *b = NULL;
        CHECK_OK(ctx, famask_array_create(ctx, dt, ndim, shape, &a));
        if (!a)
            continue;
        size_t n = famask_dtype_size(dt);
        for (int d = 0; d < ndim; d++)
            n *= (size_t)shape[d];
        for (size_t k = 0; k < n; k++)
            ((unsigned char *)a->data)[k] = (unsigned char)tl_rand();
        if (dt == FAMASK_DTYPE_BOOL)
            for (size_t k = 0; k < n; k++)
                ((unsigned char *)a->data)[k] &= 1;
        const char *p = tmp_path("a.npy");
        CHECK_OK(ctx, famask_npy_save(ctx, p, a));
        CHECK_OK(ctx, famask_npy_load(ctx, p, &b));
        int same = b && b->dtype == dt && b->ndim == ndim && memcmp(a->data, b->data, n) == 0;
        for (int d = 0; b && d < ndim; d++)
            same &= b->shape[d] == shape[d];
        CHECK(same, "npy round trip of %s, %d dims", famask_dtype_name(dt), ndim);
        /* the data starts on a multiple of 64 bytes, like numpy's own files */
        size_t len = 0;
        unsigned char *bytes = read_all(p, &len);
        CHECK(bytes && (len - n) % 64 == 0 && bytes[len - n - 1] == '\n', "npy header padded to 64 bytes");
        free(bytes);
        famask_array_free(a);
        famask_array_free(b);
    }
}

/* A .npy file by hand: the header as numpy writes it, then the given bytes. */
static void write_npy(const char *path, const char *descr, int fortran, const char *shape, const void *data,
                      size_t n)
{
    char dict[256];
    int len = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }", descr,
                       fortran ? "True" : "False", shape);
    int total = (10 + len + 1 + 63) / 64 * 64;
    unsigned char *buf = calloc(1, (size_t)total + n);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (unsigned char)((total - 10) & 0xff);
    buf[9] = (unsigned char)((total - 10) >> 8);
    memcpy(buf + 10, dict, (size_t)len);
    memset(buf + 10 + len, ' ', (size_t)(total - 10 - len - 1));
    buf[total - 1] = '\n';
    memcpy(buf + total, data, n);
    write_all(path, buf, (size_t)total + n);
    free(buf);
}

static void test_npy_orders(famask_ctx *ctx)
{
    /* a 2 x 3 x 4 int16 array, value = 100 a + 10 b + c, written in Fortran order and big endian */
    int16_t f[24];
    unsigned char be[48];
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 4; c++) {
                int16_t v = (int16_t)(100 * a + 10 * b + c);
                f[a + 2 * (b + 3 * c)] = v;
                int k = (a * 3 + b) * 4 + c;
                be[2 * k] = (unsigned char)(v >> 8);
                be[2 * k + 1] = (unsigned char)(v & 0xff);
            }
    famask_array *x = NULL;
    write_npy(tmp_path("f.npy"), "<i2", 1, "(2, 3, 4)", f, sizeof f);
    CHECK_OK(ctx, famask_npy_load(ctx, tmp_path("f.npy"), &x));
    int bad = !x || x->ndim != 3;
    for (int k = 0; !bad && k < 24; k++)
        bad |= ((int16_t *)x->data)[k] != (k / 12) * 100 + (k / 4 % 3) * 10 + k % 4;
    CHECK(!bad, "Fortran-order .npy loads in C order");
    famask_array_free(x);
    x = NULL;
    write_npy(tmp_path("b.npy"), ">i2", 0, "(2, 3, 4)", be, sizeof be);
    CHECK_OK(ctx, famask_npy_load(ctx, tmp_path("b.npy"), &x));
    bad = !x;
    for (int k = 0; !bad && k < 24; k++)
        bad |= ((int16_t *)x->data)[k] != (k / 12) * 100 + (k / 4 % 3) * 10 + k % 4;
    CHECK(!bad, "big-endian .npy loads little endian");
    famask_array_free(x);
    x = NULL;
    /* malformed files */
    write_npy(tmp_path("t.npy"), "<i2", 0, "(2, 3, 4)", be, sizeof be - 1);
    CHECK(famask_npy_load(ctx, tmp_path("t.npy"), &x) == FAMASK_STATUS_BAD_DATA && !x, "truncated data");
    CHECK(strstr(famask_ctx_errmsg(ctx), "truncated") != NULL, "message says truncated: %s", famask_ctx_errmsg(ctx));
    write_npy(tmp_path("u.npy"), "<c8", 0, "(2,)", be, 16);
    CHECK(famask_npy_load(ctx, tmp_path("u.npy"), &x) == FAMASK_STATUS_BAD_DATA, "complex dtype rejected");
    CHECK(strstr(famask_ctx_errmsg(ctx), "'<c8'") != NULL, "message names the dtype: %s", famask_ctx_errmsg(ctx));
    write_all(tmp_path("m.npy"), "\x93NUMPX\x01\x00\x00\x00", 10);
    CHECK(famask_npy_load(ctx, tmp_path("m.npy"), &x) == FAMASK_STATUS_BAD_DATA, "bad magic rejected");
    CHECK(famask_npy_load(ctx, tmp_path("absent.npy"), &x) == FAMASK_STATUS_CANNOT_OPEN, "missing file");
}

static void test_fmask_round_trip(famask_ctx *ctx)
{
    for (int rep = 0; rep < 100; rep++) {
        int nb = tl_rand_int(1, 3), nh = tl_rand_int(1, 3), nq = tl_rand_int(1, 90), nk = tl_rand_int(1, 90);
        famask_mask *m = random_mask(ctx, nb, nh, nq, nk), *r = NULL;
        if (!m)
            continue;
        CHECK_OK(ctx, famask_mask_save(ctx, m, tmp_path("r.fmask"), FAMASK_FORMAT_AUTO));
        CHECK_OK(ctx, famask_mask_load(ctx, tmp_path("r.fmask"), 0, &r));
        CHECK(r && famask_mask_equal(m, r), ".fmask round trip [%d, %d, %d, %d]", nb, nh, nq, nk);
        famask_mask_free(r);
        r = NULL;
        CHECK_OK(ctx, famask_mask_save(ctx, m, tmp_path("r.npy"), FAMASK_FORMAT_AUTO));
        CHECK_OK(ctx, famask_mask_load(ctx, tmp_path("r.npy"), nq, &r));
        CHECK(r && famask_mask_equal(m, r), ".npy round trip [%d, %d, %d, %d]", nb, nh, nq, nk);
        famask_mask_free(r);
        famask_mask_free(m);
    }
}

static void test_fmask_corruption(famask_ctx *ctx)
{
    famask_mask *m = random_mask(ctx, 2, 2, 37, 29), *r = NULL;
    if (!m)
        return;
    CHECK_OK(ctx, famask_mask_save(ctx, m, tmp_path("c.fmask"), FAMASK_FORMAT_FMASK));
    size_t n = 0;
    unsigned char *good = read_all(tmp_path("c.fmask"), &n);
    unsigned char *bad = malloc(n + 1);
    int accepted = 0, wrong_status = 0;
    for (size_t k = 0; k < n; k++) {
        memcpy(bad, good, n);
        bad[k] ^= (unsigned char)tl_rand_int(1, 255);
        write_all(tmp_path("x.fmask"), bad, n);
        famask_status st = famask_mask_load(ctx, tmp_path("x.fmask"), 0, &r);
        accepted += st == FAMASK_STATUS_OK;
        wrong_status += st != FAMASK_STATUS_OK && st != FAMASK_STATUS_BAD_DATA;
        famask_mask_free(r);
        r = NULL;
    }
    CHECK(accepted == 0, "%d of %zu single-byte corruptions accepted", accepted, n);
    CHECK(wrong_status == 0, "%d corruptions gave a status other than bad data", wrong_status);
    accepted = 0;
    for (size_t k = 0; k < n; k++) {
        write_all(tmp_path("x.fmask"), good, k);
        famask_status st = famask_mask_load(ctx, tmp_path("x.fmask"), 0, &r);
        accepted += st != FAMASK_STATUS_BAD_DATA;
        famask_mask_free(r);
        r = NULL;
    }
    CHECK(accepted == 0, "%d of %zu truncations not rejected as bad data", accepted, n);
    memcpy(bad, good, n);
    bad[n] = 0;
    write_all(tmp_path("x.fmask"), bad, n + 1);
    CHECK(famask_mask_load(ctx, tmp_path("x.fmask"), 0, &r) == FAMASK_STATUS_BAD_DATA, "trailing byte rejected");
    /* a newer version is rejected with a message saying so */
    memcpy(bad, good, n);
    bad[8] = 2;
    write_all(tmp_path("x.fmask"), bad, n);
    CHECK(famask_mask_load(ctx, tmp_path("x.fmask"), 0, &r) == FAMASK_STATUS_BAD_DATA &&
              strstr(famask_ctx_errmsg(ctx), "newer") != NULL,
          "newer version: %s", famask_ctx_errmsg(ctx));
    free(good);
    free(bad);
    famask_mask_free(m);
}

static void test_fmask_long_document(famask_ctx *ctx)
{
    int n = 1 << 20;
    int32_t *v = malloc((size_t)n * 4 * sizeof *v);
    int start = 0;
    while (start < n) {
        int len = tl_rand_int(1, 20000), end = start + len < n ? start + len : n;
        for (int j = start; j < end; j++) { /* masked: rows above j, and rows of later documents */
            v[4 * j + 0] = end;
            v[4 * j + 1] = n;
            v[4 * j + 2] = 0;
            v[4 * j + 3] = j;
        }
        start = end;
    }
    famask_mask *m = NULL, *r = NULL;
    CHECK_OK(ctx, famask_mask_from_vectors(ctx, 1, 1, n, n, v, &m));
    free(v);
    if (!m)
        return;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_OK(ctx, famask_mask_save(ctx, m, tmp_path("doc.fmask"), FAMASK_FORMAT_FMASK));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) * 1e-6;
    struct stat sb;
    stat(tmp_path("doc.fmask"), &sb);
    printf("causal_document, 1,048,576 columns: %lld bytes, written in %.2f ms\n", (long long)sb.st_size, ms);
    CHECK(sb.st_size < 64 * 1024, "long causal_document .fmask is %lld bytes", (long long)sb.st_size);
    CHECK_OK(ctx, famask_mask_load(ctx, tmp_path("doc.fmask"), 0, &r));
    CHECK(r && famask_mask_equal(m, r), "long causal_document round trip");
    famask_mask_free(r);
    famask_mask_free(m);
}

static void test_npy_vectors(famask_ctx *ctx)
{
    /* [seq_len_k, 4] is accepted; a bad interval names its column */
    int32_t v[3 * 4] = {4, 4, 0, 0, 4, 4, 0, 1, 3, 1, 0, 0};
    famask_array a = {FAMASK_DTYPE_I32, 2, {3, 4}, v};
    famask_mask *m = NULL;
    CHECK_OK(ctx, famask_npy_save(ctx, tmp_path("v.npy"), &a));
    CHECK(famask_mask_load(ctx, tmp_path("v.npy"), 4, &m) == FAMASK_STATUS_BAD_MASK && !m, "bad vectors rejected");
    CHECK(strstr(famask_ctx_errmsg(ctx), "column 2") != NULL, "message names the column: %s",
          famask_ctx_errmsg(ctx));
    v[8] = 1;
    v[9] = 3;
    CHECK_OK(ctx, famask_npy_save(ctx, tmp_path("v.npy"), &a));
    CHECK_OK(ctx, famask_mask_load(ctx, tmp_path("v.npy"), 4, &m));
    CHECK(m && famask_mask_batch(m) == 1 && famask_mask_seq_len_k(m) == 3 && !famask_mask_visible(m, 0, 0, 2, 2) &&
              famask_mask_visible(m, 0, 0, 3, 2) && !famask_mask_visible(m, 0, 0, 0, 1),
          "[seq_len_k, 4] vectors load with their meaning");
    famask_mask_free(m);
    m = NULL;
    int32_t w[6] = {0};
    famask_array b = {FAMASK_DTYPE_I32, 2, {2, 3}, w};
    CHECK_OK(ctx, famask_npy_save(ctx, tmp_path("w.npy"), &b));
    CHECK(famask_mask_load(ctx, tmp_path("w.npy"), 0, &m) == FAMASK_STATUS_BAD_DATA, "[2, 3] is not a mask");
}

/* FlashMask's meaning, written out from the SPEC table, for the reference. */
static int fm_masked(const int32_t *f, int n, int causal, int nq, int i, int j)
{
    if (causal) {
        if (i < j)
            return 1;
        return n == 1 ? i >= f[0] : (f[0] <= i && i < f[1]);
    }
    if (n == 2)
        return i >= f[0] || i < f[1];
    return (f[0] <= i && i < f[1]) || (f[2] <= i && i < f[3]);
}

static void test_flashmask(famask_ctx *ctx)
{
    static const int forms[4][2] = {{1, 1}, {2, 1}, {2, 0}, {4, 0}};
    for (int rep = 0; rep < 120; rep++) {
        int form = rep % 4, n = forms[form][0], causal = forms[form][1];
        int nb = tl_rand_int(1, 2), nh = tl_rand_int(1, 2), nq = tl_rand_int(1, 40), nk = tl_rand_int(1, 40);
        int64_t cols = (int64_t)nb * nh * nk;
        int32_t *f = malloc((size_t)cols * n * sizeof *f);
        for (int64_t c = 0; c < cols; c++) {
            int32_t t[4];
            random_column(t, nq);
            if (n == 2 && !causal) { /* LTS, UTE */
                t[1] = t[3];
            }
            memcpy(f + c * n, t, (size_t)n * sizeof *f);
        }
        famask_array a = {FAMASK_DTYPE_I32, 4, {nb, nh, nk, n}, f};
        const char *p = tmp_path("fm.npy");
        CHECK_OK(ctx, famask_npy_save(ctx, p, &a));
        famask_mask *m = NULL, *r = NULL;
        CHECK_OK(ctx, famask_mask_load_flashmask(ctx, p, causal, nq, &m));
        if (!m) {
            free(f);
            continue;
        }
        int64_t wrong = 0;
        for (int b = 0; b < nb; b++)
            for (int h = 0; h < nh; h++)
                for (int j = 0; j < nk; j++)
                    for (int i = 0; i < nq; i++)
                        wrong += (!famask_mask_visible(m, b, h, i, j)) !=
                                 fm_masked(f + (((int64_t)b * nh + h) * nk + j) * n, n, causal, nq, i, j);
        CHECK(wrong == 0, "FlashMask %d vectors causal %d: %lld cells differ from the meaning", n, causal,
              (long long)wrong);
        int n2 = 0, c2 = -1;
        CHECK_OK(ctx, famask_mask_save_flashmask(ctx, m, tmp_path("fm2.npy"), &n2, &c2));
        CHECK(n2 <= n, "save chose %d vectors for a mask made with %d", n2, n);
        CHECK_OK(ctx, famask_mask_load_flashmask(ctx, tmp_path("fm2.npy"), c2, nq, &r));
        CHECK(r && famask_mask_equal(m, r), "FlashMask round trip (%d vectors causal %d)", n2, c2);
        famask_mask_free(r);
        r = NULL;
        CHECK_OK(ctx, famask_mask_load_flashmask(ctx, tmp_path("fm2.npy"), -1, 0, &r));
        CHECK(r && famask_mask_equal(m, r), "FlashMask round trip with the flag from the side file");
        famask_mask_free(r);
        famask_mask_free(m);
        free(f);
    }
    /* causal masks take one vector */
    int32_t v[6 * 4];
    for (int j = 0; j < 6; j++) {
        v[4 * j] = v[4 * j + 1] = 6;
        v[4 * j + 2] = 0;
        v[4 * j + 3] = j;
    }
    famask_mask *m = NULL;
    CHECK_OK(ctx, famask_mask_from_vectors(ctx, 1, 1, 6, 6, v, &m));
    int n = 0, c = 0;
    if (m)
        CHECK_OK(ctx, famask_mask_save_flashmask(ctx, m, tmp_path("causal.npy"), &n, &c));
    CHECK(n == 1 && c == 1, "causal takes 1 vector with the causal flag (got %d, %d)", n, c);
    famask_mask_free(m);
}

static void test_text(famask_ctx *ctx)
{
    famask_mask *m = random_mask(ctx, 1, 2, 5, 7);
    if (!m)
        return;
    CHECK_OK(ctx, famask_mask_save(ctx, m, tmp_path("m.txt"), FAMASK_FORMAT_AUTO));
    size_t n = 0;
    unsigned char *t = read_all(tmp_path("m.txt"), &n);
    int lines = 0;
    for (size_t k = 0; t && k < n; k++)
        lines += t[k] == '\n';
    CHECK(lines == 1 + 2 * 7, "text listing has a header and one line per column (%d lines)", lines);
    const int32_t *v = famask_mask_bounds(m) + 4 * (7 + 3);
    char want[96];
    snprintf(want, sizeof want, "\n0 1 3: LT [%d, %d) UT [%d, %d)\n", v[0], v[1], v[2], v[3]);
    CHECK(t && strstr((char *)t, "seq_len_q 5, seq_len_k 7") && strstr((char *)t, want), "text content");
    free(t);
    famask_mask_free(m);
}

static void test_writer_failures(famask_ctx *ctx)
{
    famask_mask *m = random_mask(ctx, 1, 1, 8, 8), *r = NULL;
    if (!m)
        return;
    CHECK(famask_mask_save(ctx, m, tmp_path("no/such/dir.fmask"), FAMASK_FORMAT_AUTO) ==
              FAMASK_STATUS_CANNOT_CREATE,
          "missing directory: %s", famask_ctx_errmsg(ctx));
    mkdir(tmp_path("isdir.fmask"), 0755);
    CHECK(famask_mask_save(ctx, m, tmp_path("isdir.fmask"), FAMASK_FORMAT_AUTO) == FAMASK_STATUS_IO,
          "rename onto a directory fails: %s", famask_ctx_errmsg(ctx));
    CHECK(count_tmp_files() == 0, "no temporary file is left behind");
    CHECK(famask_mask_save(ctx, m, tmp_path("x.bin"), FAMASK_FORMAT_AUTO) == FAMASK_STATUS_INVALID_ARGUMENT,
          "unknown extension");
    /* a failed save keeps the previous file intact */
    CHECK_OK(ctx, famask_mask_save(ctx, m, tmp_path("keep.fmask"), FAMASK_FORMAT_AUTO));
    CHECK(famask_mask_load(ctx, tmp_path("c.fmask"), 0, &r) == FAMASK_STATUS_OK, "earlier file readable");
    famask_mask_free(r);
    famask_mask_free(m);
}

/* Every example in specs/ survives .fmask, .npy and the FlashMask layout exactly. */
static void spec_round_trips(famask_ctx *ctx, const char *name, famask_mask *m, void *user)
{
    famask_mask *r = NULL;
    int nq = famask_mask_seq_len_q(m);
    CHECK_OK(ctx, famask_mask_save(ctx, m, tmp_path("spec.fmask"), FAMASK_FORMAT_AUTO));
    CHECK_OK(ctx, famask_mask_load(ctx, tmp_path("spec.fmask"), 0, &r));
    CHECK(r && famask_mask_equal(m, r), "%s: .fmask round trip", name);
    struct stat sb;
    stat(tmp_path("spec.fmask"), &sb);
    printf("  %-28s [%d, %d, %d, %d]: .fmask %lld bytes\n", name, famask_mask_batch(m), famask_mask_heads(m), nq,
           famask_mask_seq_len_k(m), (long long)sb.st_size);
    famask_mask_free(r);
    r = NULL;
    CHECK_OK(ctx, famask_mask_save(ctx, m, tmp_path("spec.npy"), FAMASK_FORMAT_AUTO));
    CHECK_OK(ctx, famask_mask_load(ctx, tmp_path("spec.npy"), nq, &r));
    CHECK(r && famask_mask_equal(m, r), "%s: .npy round trip", name);
    famask_mask_free(r);
    r = NULL;
    int nv = 0, causal = 0;
    CHECK_OK(ctx, famask_mask_save_flashmask(ctx, m, tmp_path("spec-fm.npy"), &nv, &causal));
    CHECK_OK(ctx, famask_mask_load_flashmask(ctx, tmp_path("spec-fm.npy"), causal, nq, &r));
    CHECK(r && famask_mask_equal(m, r), "%s: FlashMask round trip (%d vectors, causal %d)", name, nv, causal);
    famask_mask_free(r);
}

static void test_specs(famask_ctx *ctx)
{
    int n = tl_each_spec(ctx, spec_round_trips, NULL);
    CHECK(n >= 10, "only %d specs found", n);
}

int main(void)
{
    tl_seed("test-io");
    if (tl_tmpdir("test-io", dir, sizeof dir))
        return 1;
    famask_ctx *ctx = NULL;
    famask_ctx_create(&ctx);
    test_dtypes();
    test_npy_round_trip(ctx);
    test_npy_orders(ctx);
    test_fmask_round_trip(ctx);
    test_fmask_corruption(ctx);
    test_fmask_long_document(ctx);
    test_npy_vectors(ctx);
    test_flashmask(ctx);
    test_text(ctx);
    test_writer_failures(ctx);
    test_specs(ctx);
    famask_ctx_free(ctx);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return tl_finish();
}
