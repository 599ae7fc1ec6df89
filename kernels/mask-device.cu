/*
 * mask-device.cu: the device copy of a mask and its per-key-block summaries.
 *
 * The vectors int32 [batch_m, heads_m, seq_len_k, 4] are copied once to the device; the summaries
 * fm_block_summary [batch_m, heads_m, ceil(seq_len_k / block_k)] (min/max of each interval's start and end over a
 * key block, the input of fm_tile_classify) are computed there by a small kernel, one warp per key block. Both
 * are cached in mask->dev (freed through mask->dev_free with the mask) for up to FM_SUMMARY_SLOTS block sizes,
 * so the forward and the backward, which may use different key blocks, each find theirs. The first use makes
 * the vectors and the summaries of the forward's block sizes with one allocation, one copy and one launch
 * (allocations cost about as much as the copy of a 131,072-column mask); a refresh (famask_mask_upload on a mask
 * already uploaded) allocates nothing.
 *
 * The copy comes from page-locked memory: on first upload the mask's host vectors (malloc'd by the host library)
 * are registered with cudaHostRegister, in place, and stay registered until the device copy is dropped, so every
 * copy, the first and each refresh, is a DMA at full bus speed straight from them and truly asynchronous on the
 * caller's stream (a copy from pageable memory goes through a driver staging buffer at about half the speed:
 * 0.131 ms for the 2 MiB of a 131,072-column mask, H200). That is safe because a mask's vectors never change
 * once it is handed out; the event `copied` marks the end of the last copy, and mask_dev_free waits for it
 * before it unregisters (famask_mask_free frees the host vectors only after that). Small masks (under
 * FM_PIN_MIN_BYTES) and vectors whose pages are already registered elsewhere (cudaHostRegister refuses an
 * overlap, e.g. with a neighbouring mask's vectors on a shared page) keep the pageable copy.
 *
 * The Hopper kernels that walk key blocks per query tile (the forward, the backward's dQ pass) also take, per
 * query tile, the first and last live key block (fm_cuda_mask_ranges), so that they neither scan the masked
 * blocks before a tile's first live one nor those after its last: at 128K a sliding window's tile has 9 live
 * blocks among 1024. These tables are computed from the summaries on first request and cached the same way
 * (FM_RANGE_SLOTS pairs of block sizes), and recomputed with them by a refresh. Inside that range a masked run
 * can still be long (a global token's block, then a sliding window 1000 blocks on): the same kernels jump such
 * runs with the summaries of 32 blocks (FM_SM90_COARSE_K keys), made at upload with the forward's.
 *
 * A mask may be shared between threads once built, but its device cache is filled on first use: callers that
 * share a mask across threads should call famask_mask_upload first.
 */
#include "common.cuh"
#include "cuda-check.cuh"
#include "fwd.cuh"
#include "kernels.h"

#include <stdlib.h>
#include <string.h>

#define FM_SUMMARY_SLOTS 4
#define FM_RANGE_SLOTS 2
/* Below this many bytes of vectors the pageable copy is as fast and registration is not worth its cost. */
#define FM_PIN_MIN_BYTES ((size_t)64 << 10)

/* The block sizes the forward kernels use, summarised ahead of time by famask_mask_upload, and the coarse blocks
 * of the Hopper kernels' search for live blocks (fwd.cuh's next_live). */
static const int upload_block_sizes[] = {64, FM_SM90_BLOCK_K, FM_SM90_COARSE_K};

struct mask_dev {
    int device;        /* the CUDA device that holds the copy */
    void *block;       /* one allocation: the vectors, then the summaries made at upload */
    int32_t *bounds;   /* [batch_m, heads_m, seq_len_k, 4], inside block */
    int64_t n_columns; /* batch_m * heads_m * seq_len_k */
    struct {
        int block_k; /* 0: slot unused */
        int owned;   /* summaries is its own allocation (else it lies inside block) */
        fm_block_summary *summaries;
    } slot[FM_SUMMARY_SLOTS];
    int next_evict;
    struct {
        int block_q, block_k; /* 0: slot unused */
        int32_t *ranges;      /* its own allocation */
    } rslot[FM_RANGE_SLOTS];
    int next_rng_evict;
    void *pinned;       /* the host vectors, registered with cudaHostRegister by us (NULL: pageable copies) */
    cudaEvent_t copied; /* recorded after each copy from pinned; made with the registration */
    int order_made;     /* order (made with order_mode) is current */
    int order_mode;
    fm_key_order order; /* the key order (src/key-order.c): the sorted mask, with its own device copy */
    int32_t *perm;      /* the device copy of order.perm */
};

static void mask_dev_free(void *p)
{
    struct mask_dev *d = (struct mask_dev *)p;
    int current = -1;
    if (!d)
        return;
    /* Errors are ignored: this runs from famask_mask_free, which cannot report them. The copy's event, the
     * registration and the allocations belong to d->device. */
    if (cudaGetDevice(&current) == cudaSuccess && current != d->device)
        (void)cudaSetDevice(d->device);
    else
        current = -1;
    if (d->pinned) {
        /* The last copy must be done reading the host vectors before they are unpinned (and then freed). */
        (void)cudaEventSynchronize(d->copied);
        (void)cudaHostUnregister(d->pinned);
        (void)cudaEventDestroy(d->copied);
    }
    /* cudaFree waits for the device, so no kernel still reading these is cut short. */
    cudaFree(d->block);
    for (int i = 0; i < FM_SUMMARY_SLOTS; i++)
        if (d->slot[i].owned)
            cudaFree(d->slot[i].summaries);
    for (int i = 0; i < FM_RANGE_SLOTS; i++)
        cudaFree(d->rslot[i].ranges);
    cudaFree(d->perm);
    if (current >= 0)
        (void)cudaSetDevice(current);
    (void)cudaGetLastError();
    fm_key_order_free(&d->order); /* the sorted mask frees its own device copy */
    free(d);
}

/* Registers the mask's host vectors for DMA (see the file's comment); on any failure the copies stay pageable,
 * which is slower but right, so nothing is reported. */
static void pin_vectors(const famask_mask *mask, struct mask_dev *d)
{
    const size_t bytes = (size_t)d->n_columns * 4 * sizeof(int32_t);
    if (bytes < FM_PIN_MIN_BYTES)
        return;
    if (cudaEventCreateWithFlags(&d->copied, cudaEventDisableTiming) != cudaSuccess) {
        (void)cudaGetLastError();
        return;
    }
    /* Portable: pinned for every device's context, so a later copy to another device is a DMA too. */
    if (cudaHostRegister(mask->bounds, bytes, cudaHostRegisterPortable) != cudaSuccess) {
        (void)cudaGetLastError(); /* not sticky: clear it for the caller */
        (void)cudaEventDestroy(d->copied);
        return;
    }
    d->pinned = mask->bounds;
}

/* The block sizes one summarise_kernel launch handles: blockIdx.z picks one. */
struct summary_jobs {
    int n;
    int block_k[FM_SUMMARY_SLOTS];
    fm_block_summary *out[FM_SUMMARY_SLOTS];
};

/* Grid (batch_m * heads_m * per_bh, 1, jobs.n), 128 threads, per_bh = ceil(most blocks of any job / 4): warp w of
 * CTA x summarises key block 4 (x % per_bh) + w of (b, h) number x / per_bh, for block size
 * jobs.block_k[blockIdx.z]. (The (b, h) index rides on x, whose limit is 2^31 - 1, not on y's 65535.) */
__global__ void __launch_bounds__(128)
    summarise_kernel(const int32_t *__restrict__ bounds, int seq_len_k, int per_bh, const summary_jobs jobs)
{
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int block_k = jobs.block_k[blockIdx.z];
    fm_block_summary *out = jobs.out[blockIdx.z];
    const int n_blocks = (seq_len_k + block_k - 1) / block_k;
    const int64_t bh = blockIdx.x / per_bh;
    const int kb = (blockIdx.x % per_bh) * 4 + warp;
    if (kb >= n_blocks)
        return;
    const int4 *col = reinterpret_cast<const int4 *>(bounds) + bh * seq_len_k;
    const int c0 = kb * block_k;
    const int c1 = min(c0 + block_k, seq_len_k);
    int smin0 = INT32_MAX, smax0 = INT32_MIN, emin0 = INT32_MAX, emax0 = INT32_MIN;
    int smin1 = INT32_MAX, smax1 = INT32_MIN, emin1 = INT32_MAX, emax1 = INT32_MIN;
    for (int c = c0 + lane; c < c1; c += 32) {
        int4 v = __ldg(col + c);
        smin0 = min(smin0, v.x);
        smax0 = max(smax0, v.x);
        emin0 = min(emin0, v.y);
        emax0 = max(emax0, v.y);
        smin1 = min(smin1, v.z);
        smax1 = max(smax1, v.z);
        emin1 = min(emin1, v.w);
        emax1 = max(emax1, v.w);
    }
    for (int o = 16; o > 0; o >>= 1) {
        smin0 = min(smin0, __shfl_xor_sync(0xffffffffu, smin0, o));
        smax0 = max(smax0, __shfl_xor_sync(0xffffffffu, smax0, o));
        emin0 = min(emin0, __shfl_xor_sync(0xffffffffu, emin0, o));
        emax0 = max(emax0, __shfl_xor_sync(0xffffffffu, emax0, o));
        smin1 = min(smin1, __shfl_xor_sync(0xffffffffu, smin1, o));
        smax1 = max(smax1, __shfl_xor_sync(0xffffffffu, smax1, o));
        emin1 = min(emin1, __shfl_xor_sync(0xffffffffu, emin1, o));
        emax1 = max(emax1, __shfl_xor_sync(0xffffffffu, emax1, o));
    }
    if (lane == 0) {
        fm_block_summary s;
        s.smin[0] = smin0;
        s.smax[0] = smax0;
        s.emin[0] = emin0;
        s.emax[0] = emax0;
        s.smin[1] = smin1;
        s.smax[1] = smax1;
        s.emin[1] = emin1;
        s.emax[1] = emax1;
        out[bh * n_blocks + kb] = s;
    }
}

/* Computes the summaries of jobs (one launch for all of them). */
static famask_status summarise(famask_ctx *ctx, const famask_mask *mask, const struct mask_dev *d,
                               const summary_jobs &jobs, cudaStream_t stream)
{
    famask_status st = FAMASK_STATUS_OK;
    int smallest = INT32_MAX;
    for (int i = 0; i < jobs.n; i++)
        smallest = jobs.block_k[i] < smallest ? jobs.block_k[i] : smallest;
    if (jobs.n == 0)
        return FAMASK_STATUS_OK;
    int most_blocks = (mask->seq_len_k + smallest - 1) / smallest;
    int per_bh = (most_blocks + 3) / 4;
    dim3 grid((unsigned)((int64_t)mask->batch_m * mask->heads_m * per_bh), 1, jobs.n);
    summarise_kernel<<<grid, 128, 0, stream>>>(d->bounds, mask->seq_len_k, per_bh, jobs);
    FM_CUDA_LAUNCHED(ctx);
fail:
    return st;
}

static size_t summaries_bytes(const famask_mask *mask, int block_k)
{
    int n_blocks = (mask->seq_len_k + block_k - 1) / block_k;
    return (size_t)mask->batch_m * mask->heads_m * n_blocks * sizeof(fm_block_summary);
}

static size_t round256(size_t n)
{
    return (n + 255) & ~(size_t)255;
}

static famask_status copy_vectors(famask_ctx *ctx, const famask_mask *mask, struct mask_dev *d, cudaStream_t stream)
{
    famask_status st = FAMASK_STATUS_OK;
    FM_CUDA(ctx, cudaMemcpyAsync(d->bounds, mask->bounds, (size_t)d->n_columns * 4 * sizeof(int32_t),
                                 cudaMemcpyHostToDevice, stream));
    if (d->pinned)
        FM_CUDA(ctx, cudaEventRecord(d->copied, stream));
fail:
    return st;
}

/* The jobs that recompute every cached summary. */
static summary_jobs all_slots(const struct mask_dev *d)
{
    summary_jobs jobs;
    jobs.n = 0;
    for (int i = 0; i < FM_SUMMARY_SLOTS; i++) {
        if (d->slot[i].block_k) {
            jobs.block_k[jobs.n] = d->slot[i].block_k;
            jobs.out[jobs.n++] = d->slot[i].summaries;
        }
    }
    return jobs;
}

/* The device copy of the vectors and of the summaries for upload_block_sizes, made (or moved to the current
 * device) if needed: one allocation, one copy, one summary launch. */
static famask_status ensure_vectors(famask_ctx *ctx, famask_mask *mask, cudaStream_t stream, struct mask_dev **out)
{
    famask_status st = FAMASK_STATUS_OK;
    struct mask_dev *d = NULL;
    int device = 0, n_devices = 0;
    size_t vbytes, total;
    const int n_upload = (int)(sizeof upload_block_sizes / sizeof upload_block_sizes[0]);

    *out = NULL;
    if (cudaGetDeviceCount(&n_devices) != cudaSuccess || n_devices == 0) {
        (void)cudaGetLastError();
        return fm_error(ctx, FAMASK_STATUS_NO_DEVICE, "no cuda device is visible; use the cpu device");
    }
    FM_CUDA(ctx, cudaGetDevice(&device));
    if (mask->dev && ((struct mask_dev *)mask->dev)->device != device)
        fm_mask_drop_device(mask);
    if (mask->dev) {
        *out = (struct mask_dev *)mask->dev;
        return FAMASK_STATUS_OK;
    }
    d = (struct mask_dev *)fm_calloc(ctx, 1, sizeof *d);
    if (!d)
        return FAMASK_STATUS_NO_MEMORY;
    d->device = device;
    d->n_columns = (int64_t)mask->batch_m * mask->heads_m * mask->seq_len_k;
    vbytes = round256((size_t)d->n_columns * 4 * sizeof(int32_t));
    total = vbytes;
    for (int i = 0; i < n_upload; i++)
        total += round256(summaries_bytes(mask, upload_block_sizes[i]));
    FM_CUDA(ctx, cudaMalloc(&d->block, total));
    pin_vectors(mask, d);
    d->bounds = (int32_t *)d->block;
    total = vbytes;
    for (int i = 0; i < n_upload; i++) {
        d->slot[i].block_k = upload_block_sizes[i];
        d->slot[i].summaries = (fm_block_summary *)((char *)d->block + total);
        total += round256(summaries_bytes(mask, upload_block_sizes[i]));
    }
    if ((st = copy_vectors(ctx, mask, d, stream)) != FAMASK_STATUS_OK)
        goto fail;
    if ((st = summarise(ctx, mask, d, all_slots(d), stream)) != FAMASK_STATUS_OK)
        goto fail;
    mask->dev = d;
    mask->dev_free = mask_dev_free;
    *out = d;
    return FAMASK_STATUS_OK;
fail:
    if (d && d->pinned)
        (void)cudaStreamSynchronize(stream); /* a copy may be queued without its event */
    mask_dev_free(d);
    return st;
}

/* The summaries for block_k: made with the vectors for upload_block_sizes, else computed into a free slot (or
 * the oldest one) on first request. */
static famask_status ensure_summaries(famask_ctx *ctx, const famask_mask *mask, struct mask_dev *d, int block_k,
                                      cudaStream_t stream, const fm_block_summary **out)
{
    famask_status st = FAMASK_STATUS_OK;
    summary_jobs job;
    int i;

    for (i = 0; i < FM_SUMMARY_SLOTS; i++) {
        if (d->slot[i].block_k == block_k) {
            *out = d->slot[i].summaries;
            return FAMASK_STATUS_OK;
        }
    }
    for (i = 0; i < FM_SUMMARY_SLOTS && d->slot[i].block_k != 0; i++)
        ;
    if (i == FM_SUMMARY_SLOTS) {
        i = d->next_evict;
        d->next_evict = (d->next_evict + 1) % FM_SUMMARY_SLOTS;
        /* cudaFree waits for the kernels that may still read the evicted summaries. */
        if (d->slot[i].owned)
            FM_CUDA(ctx, cudaFree(d->slot[i].summaries));
        d->slot[i].summaries = NULL;
        d->slot[i].block_k = 0;
        d->slot[i].owned = 0;
    }
    FM_CUDA(ctx, cudaMalloc((void **)&d->slot[i].summaries, summaries_bytes(mask, block_k)));
    d->slot[i].owned = 1;
    job.n = 1;
    job.block_k[0] = block_k;
    job.out[0] = d->slot[i].summaries;
    if ((st = summarise(ctx, mask, d, job, stream)) != FAMASK_STATUS_OK) {
        cudaFree(d->slot[i].summaries);
        d->slot[i].summaries = NULL;
        d->slot[i].owned = 0;
        goto fail;
    }
    d->slot[i].block_k = block_k;
    *out = d->slot[i].summaries;
fail:
    return st;
}

/* Grid n_bh * n_qt, 128 threads: CTA x finds the first and last live (not skipped) key block of query tile
 * x % n_qt of (b, h) number x / n_qt, each thread classifying every 128th block, and writes {first, last + 1},
 * or {0, 0} when none is live. */
__global__ void __launch_bounds__(128) ranges_kernel(const fm_block_summary *__restrict__ sums, int n_kb, int n_qt,
                                                     int block_q, int seq_len_q, int32_t *out)
{
    __shared__ int lo_w[4], hi_w[4];
    const int64_t bh = blockIdx.x / n_qt;
    const int qt = blockIdx.x % n_qt;
    const int r0 = qt * block_q, r1 = min(r0 + block_q, seq_len_q);
    int lo = INT32_MAX, hi = -1;
    for (int kb = threadIdx.x; kb < n_kb; kb += 128) {
        fm_block_summary s = sums[bh * n_kb + kb];
        if (fm_tile_classify(&s, r0, r1) != FM_TILE_SKIPPED) {
            lo = min(lo, kb);
            hi = max(hi, kb);
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        lo = min(lo, __shfl_xor_sync(0xffffffffu, lo, o));
        hi = max(hi, __shfl_xor_sync(0xffffffffu, hi, o));
    }
    if (threadIdx.x % 32 == 0) {
        lo_w[threadIdx.x / 32] = lo;
        hi_w[threadIdx.x / 32] = hi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < 4; w++) {
            lo = min(lo, lo_w[w]);
            hi = max(hi, hi_w[w]);
        }
        out[2 * blockIdx.x] = hi < 0 ? 0 : lo;
        out[2 * blockIdx.x + 1] = hi + 1;
    }
}

static int n_tiles(int len, int block)
{
    return (len + block - 1) / block;
}

/* Computes range slot i from the summaries for its block_k (which it makes if needed). */
static famask_status compute_ranges(famask_ctx *ctx, const famask_mask *mask, struct mask_dev *d, int i,
                                    cudaStream_t stream)
{
    famask_status st = FAMASK_STATUS_OK;
    const fm_block_summary *sums = NULL;
    const int block_q = d->rslot[i].block_q, block_k = d->rslot[i].block_k;
    const int64_t ctas = (int64_t)mask->batch_m * mask->heads_m * n_tiles(mask->seq_len_q, block_q);
    if ((st = ensure_summaries(ctx, mask, d, block_k, stream, &sums)) != FAMASK_STATUS_OK)
        return st;
    if (ctas > INT32_MAX)
        return fm_error(ctx, FAMASK_STATUS_UNSUPPORTED, "mask too large for the live-range table (%lld tiles)",
                        (long long)ctas);
    ranges_kernel<<<(unsigned)ctas, 128, 0, stream>>>(sums, n_tiles(mask->seq_len_k, block_k),
                                                      n_tiles(mask->seq_len_q, block_q), block_q, mask->seq_len_q,
                                                      d->rslot[i].ranges);
    FM_CUDA_LAUNCHED(ctx);
fail:
    return st;
}

extern "C" famask_status fm_cuda_mask_ranges(famask_ctx *ctx, famask_mask *mask, int block_q, int block_k, void *stream,
                                             const int32_t **ranges)
{
    famask_status st = FAMASK_STATUS_OK;
    struct mask_dev *d = NULL;
    cudaStream_t s = (cudaStream_t)stream;
    int i;

    *ranges = NULL;
    if (!mask)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'mask' is NULL");
    if (block_q <= 0 || block_k <= 0)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "block sizes %d x %d are not positive", block_q, block_k);
    if ((st = ensure_vectors(ctx, mask, s, &d)) != FAMASK_STATUS_OK)
        return st;
    for (i = 0; i < FM_RANGE_SLOTS; i++) {
        if (d->rslot[i].block_q == block_q && d->rslot[i].block_k == block_k) {
            *ranges = d->rslot[i].ranges;
            return FAMASK_STATUS_OK;
        }
    }
    for (i = 0; i < FM_RANGE_SLOTS && d->rslot[i].block_q != 0; i++)
        ;
    if (i == FM_RANGE_SLOTS) {
        i = d->next_rng_evict;
        d->next_rng_evict = (d->next_rng_evict + 1) % FM_RANGE_SLOTS;
    }
    if (d->rslot[i].ranges) /* cudaFree waits for the kernels that may still read the evicted table */
        FM_CUDA(ctx, cudaFree(d->rslot[i].ranges));
    d->rslot[i].ranges = NULL;
    d->rslot[i].block_q = d->rslot[i].block_k = 0;
    FM_CUDA(ctx, cudaMalloc((void **)&d->rslot[i].ranges, (size_t)mask->batch_m * mask->heads_m *
                                                              n_tiles(mask->seq_len_q, block_q) * 2 * sizeof(int32_t)));
    d->rslot[i].block_q = block_q;
    d->rslot[i].block_k = block_k;
    if ((st = compute_ranges(ctx, mask, d, i, s)) != FAMASK_STATUS_OK) {
        cudaFree(d->rslot[i].ranges);
        d->rslot[i].ranges = NULL;
        d->rslot[i].block_q = d->rslot[i].block_k = 0;
        return st;
    }
    *ranges = d->rslot[i].ranges;
fail:
    return st;
}

extern "C" famask_status fm_cuda_mask_device(famask_ctx *ctx, famask_mask *mask, int block_k, void *stream,
                                             const int32_t **bounds, const fm_block_summary **summaries)
{
    famask_status st;
    struct mask_dev *d = NULL;
    cudaStream_t s = (cudaStream_t)stream;

    if (bounds)
        *bounds = NULL;
    if (summaries)
        *summaries = NULL;
    if (!mask)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'mask' is NULL");
    if (summaries && block_k <= 0)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "block size %d is not positive", block_k);
    if ((st = ensure_vectors(ctx, mask, s, &d)) != FAMASK_STATUS_OK)
        return st;
    if (summaries && (st = ensure_summaries(ctx, mask, d, block_k, s, summaries)) != FAMASK_STATUS_OK)
        return st;
    if (bounds)
        *bounds = d->bounds;
    return FAMASK_STATUS_OK;
}

/* FAMASK_KEY_ORDER: unset or "auto", "off", "sort" (always where it moves a column) or "reverse" (tests). */
static famask_status key_order_mode(famask_ctx *ctx, int *mode)
{
    const char *e = getenv("FAMASK_KEY_ORDER");
    static const char *names[] = {"off", "auto", "sort", "reverse"};
    *mode = FM_KEY_ORDER_AUTO;
    if (!e || !*e)
        return FAMASK_STATUS_OK;
    for (int i = 0; i < 4; i++)
        if (!strcmp(e, names[i])) {
            *mode = i;
            return FAMASK_STATUS_OK;
        }
    return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT,
                    "environment variable FAMASK_KEY_ORDER is '%s'; use auto, off, sort or reverse", e);
}

/* The key order of mask d for the environment's mode, made on first request (and again if the mode changed). */
static famask_status ensure_key_order(famask_ctx *ctx, famask_mask *mask, struct mask_dev *d, cudaStream_t stream)
{
    famask_status st = FAMASK_STATUS_OK;
    int mode;
    if ((st = key_order_mode(ctx, &mode)) != FAMASK_STATUS_OK)
        return st;
    if (d->order_made && d->order_mode == mode)
        return FAMASK_STATUS_OK;
    d->order_made = 0;
    fm_key_order_free(&d->order);
    cudaFree(d->perm); /* waits for kernels that may still read it */
    d->perm = NULL;
    if ((st = fm_key_order_make(ctx, mask, mode, &d->order)) != FAMASK_STATUS_OK)
        return st;
    if (d->order.sorted) {
        const size_t bytes = (size_t)mask->batch_m * mask->heads_m * mask->seq_len_k * sizeof(int32_t);
        FM_CUDA(ctx, cudaMalloc((void **)&d->perm, bytes));
        /* order.perm lives as long as d, so the copy may still be queued when this returns */
        FM_CUDA(ctx, cudaMemcpyAsync(d->perm, d->order.perm, bytes, cudaMemcpyHostToDevice, stream));
    }
    d->order_made = 1;
    d->order_mode = mode;
    return FAMASK_STATUS_OK;
fail:
    fm_key_order_free(&d->order);
    cudaFree(d->perm);
    d->perm = NULL;
    return st;
}

extern "C" famask_status fm_cuda_mask_key_order(famask_ctx *ctx, famask_mask *mask, void *stream, famask_mask **sorted,
                                                const int32_t **perm)
{
    famask_status st;
    struct mask_dev *d = NULL;
    *sorted = NULL;
    *perm = NULL;
    if ((st = ensure_vectors(ctx, mask, (cudaStream_t)stream, &d)) != FAMASK_STATUS_OK)
        return st;
    if ((st = ensure_key_order(ctx, mask, d, (cudaStream_t)stream)) != FAMASK_STATUS_OK)
        return st;
    *sorted = d->order.sorted;
    *perm = d->perm;
    return FAMASK_STATUS_OK;
}

/* famask_mask_upload; with_order: the key order's sorted mask too (not for that mask itself, which is never
 * reordered again). */
static famask_status upload(famask_ctx *ctx, famask_mask *mask, void *stream, int with_order)
{
    famask_status st = FAMASK_STATUS_OK;
    struct mask_dev *d = NULL;
    cudaStream_t s = (cudaStream_t)stream;
    int fresh;

    if (!mask)
        return fm_error(ctx, FAMASK_STATUS_INVALID_ARGUMENT, "'mask' is NULL");
    fresh = mask->dev == NULL;
    if ((st = ensure_vectors(ctx, mask, s, &d)) != FAMASK_STATUS_OK)
        return st;
    if (!fresh) {
        /* A refresh: copy the vectors again and recompute every cached summary in place. (When the copy was
         * just remade for another device, this repeats work but is still right.) */
        if ((st = copy_vectors(ctx, mask, d, s)) != FAMASK_STATUS_OK)
            return st;
        if ((st = summarise(ctx, mask, d, all_slots(d), s)) != FAMASK_STATUS_OK)
            return st;
        for (int i = 0; i < FM_RANGE_SLOTS; i++)
            if (d->rslot[i].block_q && (st = compute_ranges(ctx, mask, d, i, s)) != FAMASK_STATUS_OK)
                return st;
    }
    /* the key order and its sorted mask too, so that attention calls from several threads find them made */
    if (!with_order)
        return FAMASK_STATUS_OK;
    if ((st = ensure_key_order(ctx, mask, d, s)) != FAMASK_STATUS_OK)
        return st;
    if (d->order.sorted)
        return upload(ctx, d->order.sorted, stream, 0);
    return FAMASK_STATUS_OK;
}

extern "C" famask_status famask_mask_upload(famask_ctx *ctx, famask_mask *mask, void *stream)
{
    return upload(ctx, mask, stream, 1);
}
