/*
 * famask.h: exact attention under rich masks, with the mask held in O(N) memory.
 *
 * A famask mask stores, for every key column j, two half-open intervals of masked query rows:
 *
 *     masked(i, j)  <=>  LTS[j] <= i < LTE[j]   or   UTS[j] <= i < UTE[j]
 *
 * laid out as int32 [batch_m, heads_m, seq_len_k, 4] in the order LTS, LTE, UTS, UTE. batch_m is 1 or the
 * batch size and heads_m is 1, the number of key/value heads or the number of query heads; 1 broadcasts.
 *
 * Canonical form (every mask this library hands out is canonical): per column, the masked rows are merged
 * into maximal runs (touching and overlapping intervals join). No run: LT = [seq_len_q, seq_len_q) and
 * UT = [0, 0). Two runs: the earlier one (smaller rows) goes to UT, the later one to LT. One run [s, e):
 * it goes to UT when it starts above the diagonal (s < j), else to LT. Causal, for example, stores
 * UT = [0, j) and an empty LT in every column.
 *
 * Conventions:
 * - Every fallible call returns famask_status; outputs come last and are set to NULL on failure.
 *   The detail of the last failure is kept in the context: famask_ctx_errmsg().
 * - The library never prints, exits or aborts on user, I/O or CUDA errors.
 * - A famask_ctx is used by one thread at a time; masks are read-only once built and may be shared.
 * - Every *_free(NULL) is a no-op.
 */
#ifndef FAMASK_H
#define FAMASK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FAMASK_VERSION_MAJOR 0
#define FAMASK_VERSION_MINOR 1
#define FAMASK_VERSION_PATCH 0
#define FAMASK_VERSION_STRING "0.1.0"

/* ------------------------------------------------------------------------------------------------------------
 * Status and context
 * ------------------------------------------------------------------------------------------------------------ */

/* X(name, value, description): the one list behind famask_status and famask_status_str. Append only. */
#define FAMASK_STATUS_LIST(X)                                                              \
    X(OK, 0, "ok")                                                                         \
    X(INVALID_ARGUMENT, 1, "invalid argument")                                             \
    X(BAD_SPEC, 2, "bad mask spec")                                                        \
    X(BAD_MASK, 3, "invalid mask vectors")                                                 \
    X(NOT_REPRESENTABLE, 4, "mask needs more than two masked intervals in a column")       \
    X(BAD_DATA, 5, "malformed input data")                                                 \
    X(CANNOT_OPEN, 6, "cannot open input")                                                 \
    X(CANNOT_CREATE, 7, "cannot create output")                                            \
    X(IO, 8, "i/o error")                                                                  \
    X(NO_MEMORY, 9, "out of memory")                                                       \
    X(UNSUPPORTED, 10, "unsupported combination")                                          \
    X(NO_DEVICE, 11, "no cuda device")                                                     \
    X(CUDA, 12, "cuda error")                                                              \
    X(INTERNAL, 13, "internal error")

typedef enum famask_status {
#define FAMASK_X_(name, value, desc) FAMASK_STATUS_##name = value,
    FAMASK_STATUS_LIST(FAMASK_X_)
#undef FAMASK_X_
} famask_status;

/* A fixed English description of a status code ("unknown status" for values not in the list). */
const char *famask_status_str(famask_status status);

/* The library's version, FAMASK_VERSION_STRING of the build. */
const char *famask_version(void);

typedef struct famask_ctx famask_ctx;

/* Creates a context. Fails only for lack of memory. */
famask_status famask_ctx_create(famask_ctx **out);
/* Frees the context and the device scratch it keeps (the cuda_unfused device's cuBLAS handle and workspace, made
 * on first use), after the work queued on it has finished. */
void famask_ctx_free(famask_ctx *ctx);

/* The message of the last failure on this context ("" when none). Valid until the next call that fails. */
const char *famask_ctx_errmsg(const famask_ctx *ctx);

/* ------------------------------------------------------------------------------------------------------------
 * The mask object
 * ------------------------------------------------------------------------------------------------------------ */

typedef struct famask_mask famask_mask;

/* Index of each bound inside a column's 4-vector. */
enum { FAMASK_LTS = 0, FAMASK_LTE = 1, FAMASK_UTS = 2, FAMASK_UTE = 3 };

/* Largest accepted seq_len_q / seq_len_k (bounds are int32). */
#define FAMASK_MAX_SEQ_LEN (1 << 30)

/* A mask of the given shape in which every (i, j) is visible. */
famask_status famask_mask_create(famask_ctx *ctx, int batch_m, int heads_m, int seq_len_q, int seq_len_k,
                                 famask_mask **out);

/* A mask from caller-owned vectors int32 [batch_m, heads_m, seq_len_k, 4] (copied). Every interval must satisfy
 * 0 <= start <= end <= seq_len_q, else FAMASK_STATUS_BAD_MASK naming batch, head and column. The copy is
 * canonicalised (see the top of this file). */
famask_status famask_mask_from_vectors(famask_ctx *ctx, int batch_m, int heads_m, int seq_len_q, int seq_len_k,
                                       const int32_t *bounds, famask_mask **out);

/* A deep copy (the device copy, if any, is not shared). */
famask_status famask_mask_clone(famask_ctx *ctx, const famask_mask *mask, famask_mask **out);

/* Frees the host vectors and any device copy made by famask_mask_upload. */
void famask_mask_free(famask_mask *mask);

int famask_mask_batch(const famask_mask *mask);
int famask_mask_heads(const famask_mask *mask);
int famask_mask_seq_len_q(const famask_mask *mask);
int famask_mask_seq_len_k(const famask_mask *mask);

/* The canonical vectors, int32 [batch_m, heads_m, seq_len_k, 4], owned by the mask. */
const int32_t *famask_mask_bounds(const famask_mask *mask);

/* 1 if query row i may attend key j under the mask of batch row b and head h (indices of the mask's own
 * shape, not broadcast), else 0. No range checks: for tests and small tools. */
int famask_mask_visible(const famask_mask *mask, int b, int h, int i, int j);

/* Number of visible (i, j) pairs of one (b, h) of the mask: the count behind sparsity-aware FLOPs. */
int64_t famask_mask_count_visible(const famask_mask *mask, int b, int h);

/* 1 if the two masks have the same shape and the same canonical vectors. */
int famask_mask_equal(const famask_mask *a, const famask_mask *b);

/* Writes the dense form of one (b, h): out[i * seq_len_k + j] = 1 if visible, else 0 (seq_len_q * seq_len_k
 * bytes, caller-owned). */
famask_status famask_mask_to_dense(famask_ctx *ctx, const famask_mask *mask, int b, int h, uint8_t *out);

/* Masks that are identical across batch rows or heads collapse to batch_m = 1 or heads_m = 1. */
famask_status famask_mask_collapse(famask_ctx *ctx, const famask_mask *mask, famask_mask **out);

/* ------------------------------------------------------------------------------------------------------------
 * Tile classification (the rule the kernels use; see the design notes)
 *
 * For a query tile [r0, r1) and key block [c0, c1), with the block's min/max of each bound:
 *   skipped:  for LT or for UT, r0 >= max(start) and r1 <= min(end)
 *   unmasked: for both LT and UT, r1 <= min(start) or r0 >= max(end)
 *   partial:  otherwise
 * The rule is conservative (some tiles with no masked element count as partial) and never wrong.
 * ------------------------------------------------------------------------------------------------------------ */

typedef enum famask_tile_class {
    FAMASK_TILE_SKIPPED = 0,
    FAMASK_TILE_PARTIAL = 1,
    FAMASK_TILE_UNMASKED = 2,
} famask_tile_class;

typedef struct famask_tile_counts {
    int64_t skipped, partial, unmasked;
} famask_tile_counts;

/* Classifies every tile of one (b, h) of the mask for query tiles of block_q rows and key blocks of block_k
 * columns. classes (may be NULL) receives ceil(seq_len_q / block_q) * ceil(seq_len_k / block_k) bytes,
 * row-major by query tile, each a famask_tile_class; counts (may be NULL) receives the totals. */
famask_status famask_mask_tiles(famask_ctx *ctx, const famask_mask *mask, int b, int h, int block_q, int block_k,
                                uint8_t *classes, famask_tile_counts *counts);

/* Key order. Attention does not depend on the order of the keys: with k and v permuted along seq_len_k and the
 * mask's columns permuted the same way, o and lse are unchanged (dk, dv come out permuted). Tile skipping does
 * depend on it: under KV eviction every key block holds keys that stay, so in the original order every causal
 * tile is live. famask_mask_sort_keys sorts each (b, h) slice's columns by one past their last visible row, then
 * their first visible row, then index (fully masked columns first). *out receives the sorted mask, whose
 * column j of slice (b, h) is column perm[(b * heads_m + h) * seq_len_k + j] of mask; perm (may be NULL) holds
 * batch_m * heads_m * seq_len_k ints; info (may be NULL) receives the live-tile counts before and after.
 * The CUDA attention applies this order by itself where it pays (copying k and v for each call; see the
 * attention section): a caller that keeps k and v in the sorted order (a KV cache is free to) passes the sorted
 * mask instead and saves those copies. */
typedef struct famask_key_order_info {
    int64_t live_tiles, live_tiles_sorted; /* tiles of 64 query rows x 128 keys not skipped, over every slice */
    int cuda_sorts; /* 1 if the CUDA attention sorts this mask's keys by itself (FAMASK_KEY_ORDER unset) */
} famask_key_order_info;
famask_status famask_mask_sort_keys(famask_ctx *ctx, const famask_mask *mask, int32_t *perm,
                                    famask_key_order_info *info, famask_mask **out);

/* ------------------------------------------------------------------------------------------------------------
 * Builders: one per mask family (the C side of the spec language; see the spec document for the meaning).
 * Each returns a mask of shape [1, 1, seq_len_k, 4]. Lengths are token counts; families whose parameters are
 * a list of lengths summing to the sequence need seq_len_q == seq_len_k == that sum.
 * ------------------------------------------------------------------------------------------------------------ */

famask_status famask_mask_full(famask_ctx *ctx, int seq_len_q, int seq_len_k, famask_mask **out);
famask_status famask_mask_causal(famask_ctx *ctx, int seq_len_q, int seq_len_k, famask_mask **out);
/* visible: i - left <= j <= i + right */
famask_status famask_mask_sliding_window(famask_ctx *ctx, int seq_len_q, int seq_len_k, int left, int right,
                                         famask_mask **out);
famask_status famask_mask_causal_document(famask_ctx *ctx, const int *lengths, int n_docs, famask_mask **out);
famask_status famask_mask_document(famask_ctx *ctx, const int *lengths, int n_docs, famask_mask **out);

typedef struct famask_qa_sample {
    int question;       /* question length */
    const int *answers; /* answer lengths */
    int n_answers;
} famask_qa_sample;
famask_status famask_mask_shared_question(famask_ctx *ctx, const famask_qa_sample *samples, int n_samples,
                                          famask_mask **out);

/* visible: j < global or i < global or i - left <= j <= i + right; causal != 0 adds j <= i */
famask_status famask_mask_global_sliding_window(famask_ctx *ctx, int seq_len_q, int seq_len_k, int global,
                                                int left, int right, int causal, famask_mask **out);
famask_status famask_mask_causal_blockwise(famask_ctx *ctx, const int *lengths, int n_blocks, famask_mask **out);
famask_status famask_mask_prefix_lm_causal(famask_ctx *ctx, int seq_len_q, int seq_len_k, int prefix,
                                           famask_mask **out);

typedef struct famask_prefix_doc {
    int length, prefix;
} famask_prefix_doc;
famask_status famask_mask_prefix_lm_document(famask_ctx *ctx, const famask_prefix_doc *docs, int n_docs,
                                             famask_mask **out);

/* spans: n_spans pairs [start, end), half-open, disjoint */
famask_status famask_mask_qk_sparse(famask_ctx *ctx, int seq_len_q, int seq_len_k, const int *spans, int n_spans,
                                    famask_mask **out);
/* evict: n pairs (key, row) with row > key: key is visible to rows key..row-1 only */
famask_status famask_mask_random_eviction(famask_ctx *ctx, int seq_len_q, int seq_len_k, const int *evict, int n,
                                          famask_mask **out);
/* The seeded form: key j is evicted with probability rate, from a row drawn uniformly in
 * [max(start_row, j + 1), seq_len_q) (kept when that range is empty). Each key's draw depends only on (seed, j)
 * (splitmix64; the exact rule is in masks/random-eviction.c and specs/README.md), so it is reproducible. */
famask_status famask_mask_random_eviction_seeded(famask_ctx *ctx, int seq_len_q, int seq_len_k, uint64_t seed,
                                                 double rate, int start_row, famask_mask **out);

/* Compositions: all_of keeps what every mask shows (the masked sets unite), any_of what some mask shows.
 * Shapes must agree (1 broadcasts). A column that would need three intervals is FAMASK_STATUS_NOT_REPRESENTABLE,
 * naming the column and its runs. */
famask_status famask_mask_all_of(famask_ctx *ctx, const famask_mask *const *masks, int n, famask_mask **out);
famask_status famask_mask_any_of(famask_ctx *ctx, const famask_mask *const *masks, int n, famask_mask **out);

/* Stacks per-(batch row, head) masks of shape [1, 1, seq_len_k, 4] into [batch_m, heads_m, seq_len_k, 4];
 * parts is row-major [batch_m][heads_m]. */
famask_status famask_mask_stack(famask_ctx *ctx, const famask_mask *const *parts, int batch_m, int heads_m,
                                famask_mask **out);

/* ------------------------------------------------------------------------------------------------------------
 * Spec compilation (YAML; the language is described in specs/README.md)
 * ------------------------------------------------------------------------------------------------------------ */

/* Compiles a spec file. seq_len > 0 overrides the spec's seqlen (both seq_len_q and seq_len_k; the CLI's -n).
 * Errors are FAMASK_STATUS_BAD_SPEC (or CANNOT_OPEN, NOT_REPRESENTABLE) with "file:line:col: what" in the
 * context's message. */
famask_status famask_mask_compile_file(famask_ctx *ctx, const char *path, int seq_len, famask_mask **out);

/* The same from memory; name is used in messages in place of a file name. */
famask_status famask_mask_compile_string(famask_ctx *ctx, const char *yaml, size_t len, const char *name,
                                         int seq_len, famask_mask **out);

/* ------------------------------------------------------------------------------------------------------------
 * Files
 * ------------------------------------------------------------------------------------------------------------ */

typedef enum famask_format {
    FAMASK_FORMAT_AUTO = 0,      /* from the path's extension: .fmask, .npy; "-" is TEXT */
    FAMASK_FORMAT_FMASK = 1,     /* native: magic, version, shape, delta-encoded vectors, zlib, CRC32 */
    FAMASK_FORMAT_NPY = 2,       /* int32 [batch_m, heads_m, seq_len_k, 4] */
    FAMASK_FORMAT_FLASHMASK = 3, /* FlashMask startend_row_indices, the fewest vectors, see save_flashmask */
    FAMASK_FORMAT_TEXT = 4,      /* a readable listing, one column a line */
} famask_format;

/* Writes the mask. Writers write a temporary file beside path and rename it: on failure nothing is left.
 * path "-" writes TEXT to standard output. */
famask_status famask_mask_save(famask_ctx *ctx, const famask_mask *mask, const char *path, famask_format format);

/* Reads a .fmask file, or a .npy int32 [..., seq_len_k, 4] (seq_len_q is then seq_len_q if > 0, else
 * seq_len_k). Truncated, corrupt or newer-version files fail with FAMASK_STATUS_BAD_DATA. */
famask_status famask_mask_load(famask_ctx *ctx, const char *path, int seq_len_q, famask_mask **out);

/* FlashMask's startend_row_indices: int32 [batch_m, heads_m, seq_len_k, n_vectors] with n_vectors 1, 2 or 4,
 * plus a causal flag. save_flashmask chooses the fewest vectors that represent the mask and reports them
 * (n_vectors and causal may be NULL); it also writes the flag beside the array, in PATH.json
 * ({"causal": true, "n_vectors": 1, "seq_len_q": ..., ...}). load_flashmask takes causal 0 or 1, or -1 to read
 * it (and seq_len_q, when seq_len_q <= 0) from PATH.json; seq_len_q <= 0 otherwise means seq_len_k. */
famask_status famask_mask_save_flashmask(famask_ctx *ctx, const famask_mask *mask, const char *path,
                                         int *n_vectors, int *causal);
famask_status famask_mask_load_flashmask(famask_ctx *ctx, const char *path, int causal, int seq_len_q,
                                         famask_mask **out);

/* ------------------------------------------------------------------------------------------------------------
 * Arrays and .npy files (for tensors and dense masks)
 * ------------------------------------------------------------------------------------------------------------ */

typedef enum famask_dtype {
    FAMASK_DTYPE_BOOL = 0,
    FAMASK_DTYPE_U8 = 1,
    FAMASK_DTYPE_I8 = 2,
    FAMASK_DTYPE_I16 = 3,
    FAMASK_DTYPE_I32 = 4,
    FAMASK_DTYPE_I64 = 5,
    FAMASK_DTYPE_F16 = 6,
    FAMASK_DTYPE_BF16 = 7,
    FAMASK_DTYPE_F32 = 8,
    FAMASK_DTYPE_F64 = 9,
} famask_dtype;

/* Size in bytes of one element (0 for an unknown value). */
size_t famask_dtype_size(famask_dtype dtype);
const char *famask_dtype_name(famask_dtype dtype);

#define FAMASK_MAX_DIMS 8

typedef struct famask_array {
    famask_dtype dtype;
    int ndim;
    int64_t shape[FAMASK_MAX_DIMS];
    void *data; /* C order, little-endian, owned by the array */
} famask_array;

/* Reads a whole .npy file (C or Fortran order; the result is C order). */
famask_status famask_npy_load(famask_ctx *ctx, const char *path, famask_array **out);
/* Writes a .npy file (temporary file + rename). BF16 is written as '<u2' holding the bf16 bits. */
famask_status famask_npy_save(famask_ctx *ctx, const char *path, const famask_array *array);
/* A zero-filled array of the given shape. */
famask_status famask_array_create(famask_ctx *ctx, famask_dtype dtype, int ndim, const int64_t *shape,
                                  famask_array **out);
void famask_array_free(famask_array *array);

/* Converts n elements between F64, F32, F16 and BF16 (rounding to nearest even; correctly rounded from F64).
 * Other dtypes: FAMASK_STATUS_UNSUPPORTED. dst and src must not overlap unless they are the same buffer and
 * dtype size. */
famask_status famask_cast(famask_ctx *ctx, void *dst, famask_dtype dst_dtype, const void *src, famask_dtype src_dtype,
                          size_t n);

/* ------------------------------------------------------------------------------------------------------------
 * Dense masks into the column-sparse form
 * ------------------------------------------------------------------------------------------------------------ */

/* A dense mask is an array [seq_len_q, seq_len_k], [batch, seq_len_q, seq_len_k] or
 * [batch, n_head, seq_len_q, seq_len_k] (C order) of any famask_dtype. Values follow PyTorch:
 * - bool and integers: nonzero = may attend (FAMASK_DENSE_TRUE_MEANS_MASKED flips it: nonzero = masked);
 * - floats (f16, bf16, f32, f64) are additive: 0 (or -0) = visible, -inf = masked; any other value is
 *   FAMASK_STATUS_BAD_DATA naming the first such element.
 * Every column must have at most two masked runs, else FAMASK_STATUS_NOT_REPRESENTABLE naming the first such
 * column (batch, head, column and the runs found) and how many columns fail in all. Identical batch rows and
 * heads collapse to 1 unless FAMASK_DENSE_KEEP_SHAPE. */
enum {
    FAMASK_DENSE_TRUE_MEANS_MASKED = 1,
    FAMASK_DENSE_KEEP_SHAPE = 2,
};

/* The column-sparse form of a dense mask held in memory (dense->data in C order, little endian). */
famask_status famask_mask_from_dense(famask_ctx *ctx, const famask_array *dense, unsigned flags, famask_mask **out);

/* The streaming converter behind famask_mask_from_dense and famask_mask_convert_file, for callers that
 * produce a dense mask piece by piece (from their own buffers, a socket, a generator): create it with the
 * dense shape, push whole rows of seq_len_k elements in C order (rows run through seq_len_q, then the next
 * head, then the next batch row; any number of rows a call), then finish. Memory: O(seq_len_k) besides the
 * result; the rows are not kept. A push after an error returns that error again. finish fails with
 * INVALID_ARGUMENT if rows are missing. free releases the converter (finished or not). */
typedef struct famask_converter famask_converter;
famask_status famask_converter_create(famask_ctx *ctx, famask_dtype dtype, int ndim, const int64_t *shape,
                                      unsigned flags, famask_converter **out);
famask_status famask_converter_push(famask_ctx *ctx, famask_converter *conv, const void *rows, int64_t n_rows);
famask_status famask_converter_finish(famask_ctx *ctx, famask_converter *conv, famask_mask **out);
void famask_converter_free(famask_converter *conv);

/* Options of famask_mask_convert_file (zero-initialise, then set what you need). */
typedef struct famask_convert_opts {
    unsigned flags;        /* FAMASK_DENSE_* */
    const char *array;     /* .npz: the member to read (with or without ".npy"); NULL: the only one */
    int raw;               /* nonzero: the input is raw bytes of raw_dtype in C order, shape raw_shape */
    famask_dtype raw_dtype;
    int raw_ndim;          /* 2, 3 or 4 */
    int64_t raw_shape[4];
    /* Called now and then with the bytes of dense data converted so far and in all (may be NULL). */
    void (*progress)(void *user, int64_t done, int64_t total);
    void *progress_user;
} famask_convert_opts;

/* Converts a dense mask file: .npy (bool, uint8..uint64, int8..int64, float16/32/64; C or Fortran order,
 * either endianness), .npz (stored or deflated members; opts->array picks one, else the archive must hold
 * exactly one array, and the error lists the names), gzip-compressed data (.npy.gz, or raw bytes), or raw bytes
 * (opts->raw). The format is recognised from the content, not the name. path "-" reads standard input (not for
 * .npz, which needs its directory at the end of the file). Streams in chunks: memory is O(seq_len_k) plus one
 * chunk of rows. Fortran-order files stream column by column instead (the file's own order), with memory
 * O(batch * n_head) plus one chunk. Errors: CANNOT_OPEN, BAD_DATA (malformed or truncated input, bad values),
 * NOT_REPRESENTABLE, IO; nothing is returned on failure. */
famask_status famask_mask_convert_file(famask_ctx *ctx, const char *path, const famask_convert_opts *opts,
                                       famask_mask **out);

/* ------------------------------------------------------------------------------------------------------------
 * Attention
 *
 * Shapes (B = batch, Nq = seq_len_q, Nk = seq_len_k, H = n_head, H_kv = n_head_kv, D = head_dim):
 *   q, o, d_o, dq   [B, Nq, H, D]        k, v, dk, dv   [B, Nk, H_kv, D]        lse   [B, H, Nq] fp32, contiguous
 *   mask            [batch_m, heads_m, Nk, 4]
 *
 * Which mask slice a (batch row b, query head h) uses: batch row b if batch_m == B, else 0; head
 *   h                    if heads_m == H   (a mask per query head),
 *   h / (H / H_kv)       if heads_m == H_kv (a mask per key/value head, shared by its group of query heads),
 *   0                    if heads_m == 1   (one mask for all heads).
 * (When H == H_kv the first two agree.) Query head h reads key/value head h / (H / H_kv) (GQA/MQA).
 *
 * What is supported (anything else fails before any work, with a message naming the argument):
 * - device CPU: dtype BF16, F16 or F32; CUDA: BF16 or F16; CUDA_UNFUSED: BF16 or F16, forward only.
 *   Unsupported dtypes and head dims give FAMASK_STATUS_UNSUPPORTED; malformed arguments
 *   FAMASK_STATUS_INVALID_ARGUMENT.
 * - head_dim 32, 64, 96, 128 or 256 on every device; n_head % n_head_kv == 0; every size >= 1 and
 *   seq_len_q, seq_len_k <= FAMASK_MAX_SEQ_LEN; seq_len_q != seq_len_k is fine.
 * - The mask's batch_m 1 or batch, heads_m 1, n_head_kv or n_head, and its seq_len_q, seq_len_k equal to the
 *   arguments'.
 * - Strides in elements, >= 0; the head_dim dimension is contiguous (stride 1, implicit). Inputs may share
 *   memory (e.g. q, k, v sliced from one packed qkv tensor). Outputs must not alias: an output whose strides
 *   map two elements to one address is rejected, as are outputs at the same address as each other or as an
 *   input (attention does not run in place). Partial overlaps between different tensors are not detected:
 *   the caller must avoid them.
 * - CUDA only: every tensor's data 16-byte aligned and its strides multiples of 16 bytes (8 elements), which
 *   the kernels' 16-byte loads need (FlashAttention has the same rule); otherwise FAMASK_STATUS_UNSUPPORTED.
 * - softmax_scale finite; 0 means 1 / sqrt(head_dim). Negative scales are allowed.
 *
 * Key order (CUDA): where sorting the mask's key columns lets tile skipping skip much more (KV eviction), the call
 * runs on the sorted mask with k and v copied into that order in workspace (2 buffers of k's size; the Hopper
 * backward writes dk and dv rows to their places, the portable one takes 2 more and copies them back); results
 * are those of attention in the original order up to the order of floating-point sums, and deterministic as
 * before. FAMASK_KEY_ORDER=off in the environment turns it off.
 *
 * Numerics: a row with no visible key gets o = 0, lse = -inf and zero gradients, never NaN; logits are
 * max-subtracted, so large scales do not overflow. The CPU device accumulates in float64 and rounds each output
 * once (round to nearest even); it is the reference the kernels are tested against, and is usable as a
 * fallback (it skips fully masked tiles with the kernels' rule and runs on a few threads).
 * ------------------------------------------------------------------------------------------------------------ */

typedef enum famask_device {
    FAMASK_DEVICE_CPU = 0,          /* the reference path: float64 accumulation, skips fully masked tiles; host
                                       pointers */
    FAMASK_DEVICE_CUDA = 1,         /* the fused kernels; device pointers */
    FAMASK_DEVICE_CUDA_UNFUSED = 2, /* standard attention on cuBLAS (S = QK^T, masked softmax, O = PV), forward
                                       only: the checker for sizes the CPU cannot reach, and a benchmark row */
} famask_device;

/* A 4-D tensor [batch, seq, head, head_dim]: element (b, n, h, x) is at
 * data + b * stride_batch + n * stride_seq + h * stride_head + x (in elements of the args' dtype).
 * FlashAttention's [B, N, H, D] and PyTorch's [B, H, N, D] differ only in strides: for a contiguous [B, N, H, D]
 * tensor, stride_batch = N * H * D, stride_seq = H * D, stride_head = D; for [B, H, N, D], stride_batch = H * N * D,
 * stride_seq = D, stride_head = N * D. */
typedef struct famask_tensor {
    void *data;
    int64_t stride_batch, stride_seq, stride_head;
} famask_tensor;

/* The arguments of one attention call. Zero-initialise it and fill what the call reads; the library never keeps a
 * pointer past the call (on CUDA, past the work queued on the stream) and never writes an input. */
typedef struct famask_attn_args {
    int batch, n_head, n_head_kv, seq_len_q, seq_len_k, head_dim;
    famask_dtype dtype;   /* of q, k, v, o, d_o, dq, dk, dv: BF16 or F16 (CUDA); also F32 on the CPU */
    famask_tensor q, k, v; /* inputs: q [B, Nq, H, D]; k, v [B, Nk, H_kv, D] */
    famask_tensor o;      /* forward: output, like q; backward: input (the forward's o) */
    float *lse;           /* [B, H, Nq] fp32, contiguous, natural log; forward: output, may be NULL;
                             backward: input (the forward's lse), required */
    famask_tensor d_o, dq, dk, dv; /* backward only: d_o input, dq output, like q; dk, dv outputs, like k. dk and
                                      dv are summed over the query heads of each key/value head's group */
    float softmax_scale;  /* 0 means 1 / sqrt(head_dim) */
    int deterministic;    /* backward: bitwise-reproducible gradients (always so on the CPU) */
    famask_device device;
    void *stream;         /* cudaStream_t for CUDA; NULL for the default stream; ignored on the CPU */
} famask_attn_args;

/* o = softmax(scale * q k^T + mask) v per (batch row, query head), and lse = the log-sum-exp of each row's
 * scaled, masked logits (natural log). A row with no visible key gets o = 0 and lse = -inf.
 * On CUDA the call is asynchronous on args->stream and uploads the mask on first use (famask_mask_upload), which
 * is why the mask is not const. Returns FAMASK_STATUS_OK, or INVALID_ARGUMENT / UNSUPPORTED (see above; nothing
 * written), NO_DEVICE (built without CUDA, or no GPU), CUDA, NO_MEMORY. */
famask_status famask_attn_fwd(famask_ctx *ctx, famask_mask *mask, const famask_attn_args *args);

/* dq, dk, dv from q, k, v, o, lse and d_o (the shapes and mask of the forward that made o and lse; every tensor
 * has its own strides):
 * with P = exp(scale * q k^T - lse) on visible pairs (0 elsewhere), D = rowsum(d_o * o):
 *   dv = P^T d_o,  dS = P * (d_o v^T - D),  dq = scale * dS k,  dk = scale * dS^T q,
 * dk and dv summed over the query heads of a group. Rows with lse = -inf get zero gradients. The CUDA backward
 * honours args->deterministic; the CPU backward is always deterministic. Status as for the forward; the
 * cuda_unfused device has no backward (UNSUPPORTED). */
famask_status famask_attn_bwd(famask_ctx *ctx, famask_mask *mask, const famask_attn_args *args);

/* Device memory for callers without a CUDA runtime of their own (the CLI, ctypes users). Copies are synchronous.
 * Without CUDA each returns FAMASK_STATUS_NO_DEVICE. famask_device_free(NULL) is a no-op. */
famask_status famask_device_alloc(famask_ctx *ctx, size_t bytes, void **out);
void famask_device_free(void *ptr);
famask_status famask_device_upload(famask_ctx *ctx, void *device_dst, const void *host_src, size_t bytes);
famask_status famask_device_download(famask_ctx *ctx, void *host_dst, const void *device_src, size_t bytes);
/* Waits until all work on the device has finished (for timing from the host). */
famask_status famask_device_synchronize(famask_ctx *ctx);

/* Makes (or refreshes) the device copy of the mask and its per-block summaries for the kernels, cached with the
 * mask and freed with it. famask_attn_* on CUDA upload on first use; call this to do it ahead of time. The copy is
 * asynchronous on stream. Vectors of 64 KiB and more are page-locked in place (cudaHostRegister) by the first
 * upload, so that every copy is a direct DMA, and stay so until the mask is freed (a caller's own registration of
 * memory on the same pages then fails; the mask falls back to pageable copies if its pages were registered
 * first). A refresh allocates nothing. */
famask_status famask_mask_upload(famask_ctx *ctx, famask_mask *mask, void *stream);

#ifdef __cplusplus
}
#endif

#endif /* FAMASK_H */
