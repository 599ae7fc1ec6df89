/*
 * bench-bwd.c: times the cuda backward, fm_cuda_attn (CUDA events, warm-up, median of reps back to back) on random
 * normal inputs.
 * usage: bench-bwd B H Hkv N D mask[,mask...] det [reps]; mask: full causal swa doc cdoc evict part, or a saved mask's
 * path (with a '/'; peers.py --save-masks writes its families)
 * (doc, cdoc: documents of N/8 keys, doc:L and cdoc:L of L keys, the second causal within each;
 * evict: causal, and half the keys evicted at a row drawn in (key, key + N/16], as peers.py's random_eviction;
 * part: key j hidden from row 131 j mod N only, so almost every tile is partial at a density of almost 1)
 * Prints: mask, B, H, N, D, det, median ms, TFLOP/s (2.5 x 4 B H D visible pairs).
 * lse is set to log(visible keys of the row) + 0.5, what random normal scores give, so P stays in range.
 */
#include "famask.h"
#include "kernels.h"
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t st = 88172645463325252ull;
static double rnd(void)
{
    st ^= st << 13; st ^= st >> 7; st ^= st << 17;
    return (double)(st >> 11) / 9007199254740992.0;
}
static double rnorm(void) { double u = rnd() + 1e-300, v = rnd(); return sqrt(-2 * log(u)) * cos(6.283185307 * v); }
static uint16_t bf16(float f) { uint32_t u; memcpy(&u, &f, 4); u += 0x7FFF + ((u >> 16) & 1); return u >> 16; }
static int cmpf(const void *a, const void *b) { float x = *(const float *)a, y = *(const float *)b; return x < y ? -1 : x > y; }

/* Documents of mask `mk` (doc, cdoc, doc:L, cdoc:L): their length into *L, causal within each into *causal; 0 if mk
 * names no documents, -1 (with a message) if its length is not a positive divisor of N. */
static int doc_mask(const char *mk, int N, int *L, int *causal)
{
    *causal = mk[0] == 'c';
    const char *rest = mk + *causal;
    if (strncmp(rest, "doc", 3) || (rest[3] != '\0' && rest[3] != ':')) return 0;
    *L = N / 8;
    if (rest[3] == ':') {
        char *end;
        long l = strtol(rest + 4, &end, 10);
        *L = end == rest + 4 || *end || l <= 0 || l > N ? 0 : (int)l;
    }
    if (*L <= 0 || N % *L) { fprintf(stderr, "%s: a document length must be a positive divisor of %d\n", mk, N); return -1; }
    return 1;
}

/* The mask `mk`: a name above, or a saved mask (a path with a '/', as peers.py --save-masks writes). */
static famask_mask *make_mask(famask_ctx *ctx, const char *mk, int N)
{
    famask_mask *m = NULL;
    if (strchr(mk, '/')) {
        if (famask_mask_load(ctx, mk, N, &m)) { fprintf(stderr, "%s: %s\n", mk, famask_ctx_errmsg(ctx)); return NULL; }
        if (famask_mask_seq_len_k(m) != N || famask_mask_batch(m) != 1 || famask_mask_heads(m) != 1) {
            fprintf(stderr, "%s: bench-bwd takes one (batch, head) slice of %d x %d\n", mk, N, N);
            famask_mask_free(m);
            return NULL;
        }
        return m;
    }
    int L = 0, causal = 0;
    const int doc = doc_mask(mk, N, &L, &causal);
    if (doc < 0) return NULL;
    int32_t *bd = malloc(sizeof(int32_t) * 4 * (size_t)N);
    for (int j = 0; j < N; j++) {
        int32_t *v = bd + 4 * j;
        v[0] = v[1] = N; v[2] = v[3] = 0;
        if (!strcmp(mk, "causal")) v[3] = j;
        else if (!strcmp(mk, "swa")) { v[3] = j; v[0] = j + 1024 < N ? j + 1024 : N; }
        else if (doc) {
            int s = j / L * L, e = s + L;
            v[2] = 0; v[3] = causal ? j : s; v[0] = e; v[1] = N;
        } else if (!strcmp(mk, "evict")) {
            int r = j + 1 + (int)(rnd() * (N / 16));
            v[3] = j;
            if (j < N - 1 && rnd() < 0.5) v[0] = r < N ? r : N;
        } else if (!strcmp(mk, "part")) {
            int r = (int)(((int64_t)j * 131) % N);
            v[0] = r; v[1] = r + 1;
        } else if (strcmp(mk, "full")) { fprintf(stderr, "unknown mask '%s'\n", mk); free(bd); return NULL; }
    }
    if (famask_mask_from_vectors(ctx, 1, 1, N, N, bd, &m)) fprintf(stderr, "%s\n", famask_ctx_errmsg(ctx));
    free(bd);
    return m;
}

int main(int argc, char **argv)
{
    if (argc < 8) { fprintf(stderr, "usage: bench-bwd B H Hkv N D mask[,mask...] det [reps]\n"); return 2; }
    int B = atoi(argv[1]), H = atoi(argv[2]), Hkv = atoi(argv[3]), N = atoi(argv[4]), D = atoi(argv[5]);
    int det = atoi(argv[7]), reps = argc > 8 ? atoi(argv[8]) : 20;
    const int sync = getenv("BENCH_SYNC") && getenv("BENCH_SYNC")[0] == '1';
    const char *check_env = getenv("BENCH_CHECK");
    char *check_end = NULL;
    const long check = check_env ? strtol(check_env, &check_end, 10) : 0;
    if (check_env && (check_end == check_env || *check_end || check < 0 || check > 1000)) {
        fprintf(stderr, "BENCH_CHECK: '%s' is not a count of repeated calls (0 to 1000)\n", check_env);
        return 2;
    }
    famask_ctx *ctx; famask_ctx_create(&ctx);
    int64_t nq = (int64_t)B * N * H * D, nk = (int64_t)B * N * Hkv * D;
    uint16_t *h = malloc(2 * nq);
    void *d[8];
    int64_t n[8] = {nq, nk, nk, nq, nq, nq, nk, nk};
    for (int i = 0; i < 8; i++) {
        cudaMalloc(&d[i], 2 * n[i]);
        for (int64_t e = 0; e < n[i]; e++) h[e] = bf16((float)(i == 3 ? 0.3 * rnorm() : rnorm()));
        cudaMemcpy(d[i], h, 2 * n[i], cudaMemcpyHostToDevice);
    }
    float *lse = malloc(sizeof(float) * (size_t)B * H * N), *dl;
    cudaMalloc((void **)&dl, sizeof(float) * B * H * N);
    famask_attn_args a; memset(&a, 0, sizeof a);
    a.batch = B; a.n_head = H; a.n_head_kv = Hkv; a.seq_len_q = a.seq_len_k = N; a.head_dim = D;
    a.dtype = FAMASK_DTYPE_BF16; a.deterministic = det; a.lse = dl; a.device = FAMASK_DEVICE_CUDA;
    famask_tensor *ts[8] = {&a.q, &a.k, &a.v, &a.o, &a.d_o, &a.dq, &a.dk, &a.dv};
    for (int i = 0; i < 8; i++) { /* [B, H, N, D] like torch */
        int hh = (i == 1 || i == 2 || i == 6 || i == 7) ? Hkv : H;
        ts[i]->data = d[i]; ts[i]->stride_batch = (int64_t)hh * N * D; ts[i]->stride_head = (int64_t)N * D; ts[i]->stride_seq = D;
    }
    cudaEvent_t *ev = malloc(sizeof(cudaEvent_t) * 2 * reps);
    for (int r = 0; r < 2 * reps; r++) cudaEventCreate(&ev[r]);
    float *ms = malloc(sizeof(float) * reps);
    int *cnt = malloc(sizeof(int) * (N + 1));
    char *list = strdup(argv[6]), *save = NULL;
    for (char *mk = strtok_r(list, ",", &save); mk; mk = strtok_r(NULL, ",", &save)) {
        famask_mask *m = make_mask(ctx, mk, N);
        if (!m) return 1;
        int64_t vis = famask_mask_count_visible(m, 0, 0);
        /* visible keys per row, from the vectors */
        const int32_t *bv = famask_mask_bounds(m);
        memset(cnt, 0, sizeof(int) * (N + 1));
        for (int j = 0; j < N; j++) {
            const int32_t *v = bv + 4 * j;
            cnt[0]++; cnt[N]--;
            cnt[v[0]]--; cnt[v[1]]++; cnt[v[2]]--; cnt[v[3]]++;
        }
        int run = 0;
        for (int i = 0; i < N; i++) {
            run += cnt[i];
            for (int bh = 0; bh < B * H; bh++) lse[(int64_t)bh * N + i] = run > 0 ? logf((float)run) + 0.5f : -INFINITY;
        }
        cudaMemcpy(dl, lse, sizeof(float) * B * H * N, cudaMemcpyHostToDevice);
        for (int w = 0; w < 3; w++)
            if (fm_cuda_attn(ctx, m, &a, 1)) { fprintf(stderr, "bwd: %s\n", famask_ctx_errmsg(ctx)); return 1; }
        /* back to back, as peers.py times its calls: the host's work for a call overlaps the device's for the one
         * before */
        cudaDeviceSynchronize();
        for (int r = 0; r < reps; r++) {
            cudaEventRecord(ev[2 * r], 0);
            fm_cuda_attn(ctx, m, &a, 1);
            cudaEventRecord(ev[2 * r + 1], 0);
            if (sync) /* BENCH_SYNC=1: each call alone, its host work included */
                cudaEventSynchronize(ev[2 * r + 1]);
        }
        cudaError_t err = cudaDeviceSynchronize();
        for (int r = 0; r < reps; r++)
            cudaEventElapsedTime(&ms[r], ev[2 * r], ev[2 * r + 1]);
        qsort(ms, reps, sizeof(float), cmpf);
        double t = ms[reps / 2];
        double flops = 2.5 * 4.0 * B * H * (double)D * (double)vis;
        const char *base = strrchr(mk, '/') ? strrchr(mk, '/') + 1 : mk;
        printf("famask bwd mask %-6s B %d H %d Hkv %d N %d D %d det %d: %.3f ms %.1f TFLOP/s (min %.3f) %s\n", base, B,
               H, Hkv, N, D, det, t, flops / t / 1e9, ms[0], err ? cudaGetErrorString(err) : "");
        if (err) return 1;
        if (check) { /* BENCH_CHECK=n: n more calls, each output compared bit for bit with the first's */
            int64_t len[3] = {nq, nk, nk};
            uint16_t *first = malloc(2 * (nq + 2 * nk)), *again = malloc(2 * (nq + 2 * nk));
            int differ = 0;
            for (int c = 0; c <= check; c++) {
                fm_cuda_attn(ctx, m, &a, 1);
                cudaDeviceSynchronize();
                uint16_t *dst = c ? again : first;
                for (int i = 0; i < 3; i++) {
                    cudaMemcpy(dst, d[5 + i], 2 * len[i], cudaMemcpyDeviceToHost);
                    dst += len[i];
                }
                differ += c && memcmp(first, again, 2 * (nq + 2 * nk)) != 0;
            }
            printf("famask bwd mask %-6s D %d: %d of %ld repeated calls differ from the first\n", base, D, differ, check);
            free(first);
            free(again);
        }
        famask_mask_free(m);
    }
    return 0;
}
