#!/usr/bin/env python3
"""peers.py: famask against its peers, in one process, on the same torch tensors.

Rows: for each size (seq_len N, batch B, heads H), head dim D and mask family, the forward and backward time of
  famask       the fused kernels (FAMASK_DEVICE_CUDA), through libfamask.so and ctypes
  Flex         torch.compile'd flex_attention with a prebuilt BlockMask whose mask_mod states the same mask
  FA2, cuDNN   SDPA's flash and cuDNN backends, where they apply (full, causal)
  unfused      famask's standard-attention row (FAMASK_DEVICE_CUDA_UNFUSED: cuBLAS S, masked softmax, cuBLAS PV)
Shapes: q, k, v, dO are torch [B, H, N, D] bf16 (famask reads them through strides); no GQA here.

The famask mask of each family comes from famask's C builder when the library has a working one, else from
int32 vectors built here (famask_mask_from_vectors); the Flex mask_mod is written separately from the family's
definition, so a wrong builder, wrong vectors or a wrong mask_mod all show as an output mismatch (err columns).
FLOPs count the visible (i, j) pairs exactly (famask_mask_count_visible): forward 4 * B * H * D * pairs, backward
2.5 x that. Times: CUDA events after warm-up, median of --reps runs. JSON lines go to $OUT/peers.jsonl (or --out),
a markdown table to stdout. See bench/README.md.

`python3 peers.py --selftest --lib build/libfamask.so` needs no GPU and no torch: it checks every family's
vectors (and C builder, if present) against its mask_mod predicate, pair by pair, at small lengths.
"""
import argparse
import ctypes
import json
import math
import os
import random
import sys
import time
from ctypes import POINTER, byref, c_char_p, c_double, c_float, c_int, c_int64, c_void_p

# ---------------------------------------------------------------------------------------------------------------
# famask through ctypes (mirrors of include/famask.h)
# ---------------------------------------------------------------------------------------------------------------

DTYPE_BF16 = 7
DEVICE_CUDA, DEVICE_CUDA_UNFUSED = 1, 2
STATUS_OK = 0


class Tensor(ctypes.Structure):
    _fields_ = [("data", c_void_p), ("stride_batch", c_int64), ("stride_seq", c_int64), ("stride_head", c_int64)]


class AttnArgs(ctypes.Structure):
    _fields_ = [("batch", c_int), ("n_head", c_int), ("n_head_kv", c_int), ("seq_len_q", c_int),
                ("seq_len_k", c_int), ("head_dim", c_int), ("dtype", c_int),
                ("q", Tensor), ("k", Tensor), ("v", Tensor), ("o", Tensor), ("lse", c_void_p),
                ("d_o", Tensor), ("dq", Tensor), ("dk", Tensor), ("dv", Tensor),
                ("softmax_scale", c_float), ("deterministic", c_int), ("device", c_int), ("stream", c_void_p)]


class QASample(ctypes.Structure):
    _fields_ = [("question", c_int), ("answers", POINTER(c_int)), ("n_answers", c_int)]


def tensor_of(t):
    """A torch [B, H, N, D] tensor as famask's [batch, seq, head, head_dim] strides (None: an empty Tensor)"""
    if t is None:
        return Tensor()
    s = t.stride()
    return Tensor(t.data_ptr(), s[0], s[2], s[1])


def int_array(values):
    return (c_int * max(1, len(values)))(*values)


class Famask:
    """The few calls the benchmark needs. Functions missing from the library are None."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        L = self.lib
        L.famask_ctx_create.argtypes = [POINTER(c_void_p)]
        L.famask_ctx_errmsg.argtypes = [c_void_p]
        L.famask_ctx_errmsg.restype = c_char_p
        L.famask_status_str.restype = c_char_p
        L.famask_mask_from_vectors.argtypes = [c_void_p, c_int, c_int, c_int, c_int, POINTER(ctypes.c_int32),
                                               POINTER(c_void_p)]
        L.famask_mask_free.argtypes = [c_void_p]
        L.famask_mask_free.restype = None
        L.famask_mask_count_visible.argtypes = [c_void_p, c_int, c_int]
        L.famask_mask_count_visible.restype = c_int64
        L.famask_mask_visible.argtypes = [c_void_p, c_int, c_int, c_int, c_int]
        L.famask_mask_equal.argtypes = [c_void_p, c_void_p]
        self.ctx = c_void_p()
        if L.famask_ctx_create(byref(self.ctx)) != STATUS_OK:
            raise RuntimeError("famask_ctx_create failed")
        self.attn = {}
        for name in ("famask_attn_fwd", "famask_attn_bwd", "fm_cuda_fwd", "fm_cuda_bwd", "fm_cuda_unfused_fwd"):
            fn = getattr(L, name, None) if hasattr(L, name) else None
            if fn is not None:
                fn.argtypes = [c_void_p, c_void_p, POINTER(AttnArgs)]
            self.attn[name] = fn

    def errmsg(self):
        return self.lib.famask_ctx_errmsg(self.ctx).decode()

    def status_text(self, st):
        return "%s: %s" % (self.lib.famask_status_str(st).decode(), self.errmsg())

    def from_vectors(self, nq, nk, vec):
        arr = (ctypes.c_int32 * len(vec))(*vec)
        m = c_void_p()
        st = self.lib.famask_mask_from_vectors(self.ctx, 1, 1, nq, nk, arr, byref(m))
        if st != STATUS_OK:
            raise RuntimeError("famask_mask_from_vectors: " + self.status_text(st))
        return m

    def builder(self, name, args):
        """Calls famask_mask_<name>(ctx, *args, &out); (mask, None) or (None, why)."""
        if not hasattr(self.lib, "famask_mask_" + name):
            return None, "no builder in this library"
        m = c_void_p()
        st = getattr(self.lib, "famask_mask_" + name)(self.ctx, *args, byref(m))
        if st != STATUS_OK:
            return None, self.status_text(st)
        return m, None

    def free(self, m):
        if m:
            self.lib.famask_mask_free(m)

    def count_visible(self, m):
        return self.lib.famask_mask_count_visible(m, 0, 0)

    def visible(self, m, i, j):
        return self.lib.famask_mask_visible(m, 0, 0, i, j)

    def equal(self, a, b):
        return bool(self.lib.famask_mask_equal(a, b))


# ---------------------------------------------------------------------------------------------------------------
# Mask families: the famask vectors, the C builder call and an independent mask_mod, for seq_len N
#
# mask_mod(b, h, q, k) uses only comparisons, &, | and indexing, so the same function runs on torch tensors
# (FlexAttention) and on Python ints (--selftest).
# ---------------------------------------------------------------------------------------------------------------

FAMILIES = ["full", "causal", "sliding_window", "causal_document", "document", "prefix_lm_causal",
            "shared_question", "global_sliding_window", "causal_blockwise", "qk_sparse", "random_eviction"]
WINDOW_LEFT, GLOBAL_G, N_DOCS = 1023, 64, 8


def random_lengths(n, parts, seed):
    """parts positive lengths summing to n, with uneven cuts drawn reproducibly from seed."""
    parts = min(parts, n)
    cuts = sorted(random.Random(seed).sample(range(1, n), parts - 1))
    edges = [0] + cuts + [n]
    return [edges[x + 1] - edges[x] for x in range(parts)]


def window_left(n):
    """1023 at benchmark sizes; a window that differs from causal at the self-test's small lengths"""
    return WINDOW_LEFT if n >= 4 * WINDOW_LEFT else max(1, n // 8)


def ids_of(lengths):
    ids = []
    for x, n in enumerate(lengths):
        ids += [x] * n
    return ids


class Family:
    """name; vec (4 * N ints: LTS, LTE, UTS, UTE per column); data (name -> list of N ints, for the mask_mod);
    mod(d) -> mask_mod using d's entries (lists or tensors); builder (C name, ctypes args); sdpa: None, or
    is_causal for the SDPA peers; params (for the record)."""

    def __init__(self, name, n):
        self.name, self.n = name, n
        self.data, self.sdpa, self.params = {}, None, {}
        N = n
        cols = []  # per column: (lts, lte, uts, ute)
        empty_lt = (N, N)
        if name == "full":
            cols = [empty_lt + (0, 0)] * N
            self.mod = lambda d: None
            self.builder = ("full", (N, N))
            self.sdpa = False
        elif name == "causal":
            cols = [empty_lt + (0, j) for j in range(N)]
            self.mod = lambda d: (lambda b, h, q, k: q >= k)
            self.builder = ("causal", (N, N))
            self.sdpa = True
        elif name == "sliding_window":
            L = window_left(N)
            cols = [(min(j + L + 1, N), N, 0, j) for j in range(N)]
            self.mod = lambda d: (lambda b, h, q, k: (q >= k) & (q - k <= L))
            self.builder = ("sliding_window", (N, N, L, 0))
            self.params = {"left": L}
        elif name in ("causal_document", "document"):
            lens = random_lengths(N, N_DOCS, N)
            self.data["doc"] = ids_of(lens)
            start = 0
            for ln in lens:
                end = start + ln
                for j in range(start, end):
                    cols.append((end, N, 0, j if name == "causal_document" else start))
                start = end
            if name == "causal_document":
                self.mod = lambda d: (lambda b, h, q, k: (q >= k) & (d["doc"][q] == d["doc"][k]))
            else:
                self.mod = lambda d: (lambda b, h, q, k: d["doc"][q] == d["doc"][k])
            self.builder = (name, (int_array(lens), len(lens)))
            self.params = {"documents": lens}
        elif name == "prefix_lm_causal":
            P = N // 2
            cols = [empty_lt + ((0, 0) if j < P else (0, j)) for j in range(N)]
            self.mod = lambda d: (lambda b, h, q, k: (k < P) | (q >= k))
            self.builder = ("prefix_lm_causal", (N, N, P))
            self.params = {"prefix": P}
        elif name == "shared_question":
            # 4 samples [question | answer 1 | answer 2 | answer 3]; answers see the question and themselves
            samples, sample_id, role, end_of = [], [], [], []
            per = N // 4
            for s in range(4):
                ln = per if s < 3 else N - 3 * per
                qn = ln // 4
                a = (ln - qn) // 3
                answers = [a, a, ln - qn - 2 * a]
                samples.append((qn, answers))
                sample_id += [s] * ln
                role += [0] * qn
                for x, an in enumerate(answers):
                    role += [x + 1] * an
            start = 0
            for qn, answers in samples:
                s_end = start + qn + sum(answers)
                for j in range(start, start + qn):  # question keys: rows of the sample from j on
                    cols.append((s_end, N, 0, j))
                a0 = start + qn
                for an in answers:  # answer keys: rows of the same answer from j on
                    for j in range(a0, a0 + an):
                        cols.append((a0 + an, N, 0, j))
                    a0 += an
                start = s_end
            self.data["sample"], self.data["role"] = sample_id, role
            self.mod = lambda d: (lambda b, h, q, k: (q >= k) & (d["sample"][q] == d["sample"][k]) &
                                  ((d["role"][k] == 0) | (d["role"][q] == d["role"][k])))
            self._answers = [int_array(a) for _, a in samples]  # kept alive for the C call
            qa = (QASample * 4)(*[QASample(qn, self._answers[x], len(a)) for x, (qn, a) in enumerate(samples)])
            self.builder = ("shared_question", (qa, 4))
            self.params = {"samples": [{"question": qn, "answers": a} for qn, a in samples]}
        elif name == "global_sliding_window":
            G, L = GLOBAL_G if N >= 8 * GLOBAL_G else max(1, N // 8), window_left(N)
            cols = [(N, N, 0, j) if j < G else (min(j + L + 1, N), N, 0, j) for j in range(N)]
            self.mod = lambda d: (lambda b, h, q, k: (q >= k) & ((q - k <= L) | (k < G) | (q < G)))
            self.builder = ("global_sliding_window", (N, N, G, L, 0, 1))
            self.params = {"global": G, "left": L, "causal": True}
        elif name == "causal_blockwise":
            lens = random_lengths(N, N_DOCS, N + 1)
            self.data["blk"] = ids_of(lens)
            last = len(lens) - 1
            last_start = N - lens[-1]
            start = 0
            for x, ln in enumerate(lens):
                end = start + ln
                for j in range(start, end):  # visible rows: [j, end) and the last block
                    cols.append((end, last_start, 0, j) if x < last else empty_lt + (0, j))
                start = end
            self.mod = lambda d: (lambda b, h, q, k: (q >= k) & ((d["blk"][q] == d["blk"][k]) |
                                                                  (d["blk"][q] == last)))
            self.builder = ("causal_blockwise", (int_array(lens), len(lens)))
            self.params = {"blocks": lens}
        elif name == "qk_sparse":
            # 8 spans of N/32 keys; a key of span [s, e) is hidden from rows j..e-1, so it is visible from e on
            ln = max(1, N // 32)
            spans = []
            for x in range(8):
                s = x * N // 8 + N // 16
                if s + ln <= N and (not spans or s >= spans[-1][1]):
                    spans.append((s, s + ln))
            span_end = [0] * N
            for s, e in spans:
                for j in range(s, e):
                    span_end[j] = e
            cols = [empty_lt + (0, max(j, span_end[j])) for j in range(N)]
            self.data["span_end"] = span_end
            self.mod = lambda d: (lambda b, h, q, k: (q >= k) & (q >= d["span_end"][k]))
            flat = [v for se in spans for v in se]
            self.builder = ("qk_sparse", (N, N, int_array(flat), len(spans)))
            self.params = {"spans": spans}
        elif name == "random_eviction":
            # half the keys are evicted, each at a row drawn in (key, key + N/16]
            rng = random.Random(N + 2)
            evict_row = [N] * N
            pairs = []
            for j in range(N - 1):
                if rng.random() < 0.5:
                    r = min(N, j + 1 + rng.randrange(max(1, N // 16)))
                    evict_row[j] = r
                    pairs += [j, r]
            cols = [(evict_row[j], N, 0, j) for j in range(N)]
            self.data["evict_row"] = evict_row
            self.mod = lambda d: (lambda b, h, q, k: (q >= k) & (q < d["evict_row"][k]))
            self.builder = ("random_eviction", (N, N, int_array(pairs), len(pairs) // 2))
            self.params = {"evicted": len(pairs) // 2, "rate": 0.5, "seed": N + 2}
        else:
            raise ValueError("unknown mask family '%s'" % name)
        self.vec = [v for c in cols for v in c]

    def famask_mask(self, fm):
        """The famask mask: from the C builder if it works (checked against the vectors), else the vectors.
        Returns (mask, source, note)."""
        from_vec = fm.from_vectors(self.n, self.n, self.vec)
        m, why = fm.builder(*self.builder)
        if m is None:
            return from_vec, "vectors", why
        if not fm.equal(m, from_vec):
            fm.free(from_vec)
            return m, "builder", "builder differs from the benchmark's vectors"
        fm.free(from_vec)
        return m, "builder", None


def save_masks(fm, opt):
    """Each family's famask mask at each size, saved as DIR/<family>-<N>.fmask."""
    fm.lib.famask_mask_save.argtypes = [c_void_p, c_void_p, c_char_p, c_int]
    try:
        os.makedirs(opt.save_masks, exist_ok=True)
    except OSError as e:
        print("--save-masks %s: %s" % (opt.save_masks, e.strerror), file=sys.stderr)
        return 1
    for n, _, _ in opt.sizes:
        for name in opt.masks:
            m, _, _ = Family(name, n).famask_mask(fm)
            path = os.path.join(opt.save_masks, "%s-%d.fmask" % (name, n))
            st = fm.lib.famask_mask_save(fm.ctx, m, path.encode(), 1)
            fm.free(m)
            if st != STATUS_OK:
                print("save %s: %s" % (path, fm.status_text(st)), file=sys.stderr)
                return 1
            print(path)
    return 0


def selftest(fm, lengths):
    """Every family's famask mask against its mask_mod, pair by pair, and the visible count."""
    bad = 0
    for n in lengths:
        for name in FAMILIES:
            fam = Family(name, n)
            m, src, note = fam.famask_mask(fm)
            mod = fam.mod(fam.data) or (lambda b, h, q, k: True)
            count, wrong = 0, 0
            for i in range(n):
                for j in range(n):
                    want = bool(mod(0, 0, i, j))
                    count += want
                    wrong += want != bool(fm.visible(m, i, j))
            ok = wrong == 0 and count == fm.count_visible(m) and (note is None or "no builder" in note)
            bad += not ok
            print("selftest N %4d %-22s mask from %-8s wrong pairs %6d visible %8d %s%s" %
                  (n, name, src, wrong, count, "ok" if ok else "FAIL", " (%s)" % note if note else ""))
            fm.free(m)
    print("selftest: %d failed" % bad)
    return 1 if bad else 0


# ---------------------------------------------------------------------------------------------------------------
# The GPU benchmark
# ---------------------------------------------------------------------------------------------------------------

def run_gpu(fm, opt):
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = 1024
    torch._dynamo.config.recompile_limit = 1024
    flex = torch.compile(flex_attention, dynamic=False)
    dev = "cuda"
    torch.manual_seed(opt.seed)
    out_dir = opt.out or os.environ.get("OUT", ".")
    jsonl = open(os.path.join(out_dir, "peers.jsonl"), "a")
    stream = lambda: c_void_p(torch.cuda.current_stream().cuda_stream)

    def bench(fn, reps=opt.reps, warm=opt.warmup):
        for _ in range(warm):
            fn()
        torch.cuda.synchronize()
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for a, b in ev:
            a.record()
            fn()
            b.record()
        torch.cuda.synchronize()
        ts = sorted(a.elapsed_time(b) for a, b in ev)
        return ts[len(ts) // 2]

    def rel_err(x, ref):
        """max |x - ref| / max |ref| (nan if x has NaN/Inf)"""
        x, ref = x.float(), ref.float()
        if not torch.isfinite(x).all():
            return float("nan")
        return ((x - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()

    # Which entry points: the public API when it works, else the internal ones (until src/attn.c lands).
    def pick(public, internal, device):
        fn = fm.attn.get(public)
        if opt.api in ("auto", "public") and fn is not None:
            return fn, device, public
        fn = fm.attn.get(internal)
        return fn, device, internal

    def famask_args(q, k, v, o, lse, do=None, dq=None, dk=None, dv=None, device=DEVICE_CUDA):
        B, H, N, D = q.shape
        return AttnArgs(B, H, k.shape[1], N, k.shape[2], D, DTYPE_BF16, tensor_of(q), tensor_of(k), tensor_of(v),
                        tensor_of(o), c_void_p(lse.data_ptr()), tensor_of(do), tensor_of(dq), tensor_of(dk),
                        tensor_of(dv), 0.0, 0, device, stream())

    def probe_public():
        """True when famask_attn_fwd runs (a tiny unfused call): the dispatch has landed."""
        fn = fm.attn.get("famask_attn_fwd")
        if fn is None:
            return False
        m = fm.from_vectors(16, 16, Family("causal", 16).vec)
        t = torch.randn(1, 1, 16, 64, device=dev, dtype=torch.bfloat16)
        o = torch.empty_like(t)
        lse = torch.empty(1, 1, 16, device=dev, dtype=torch.float32)
        args = famask_args(t, t, t, o, lse, device=DEVICE_CUDA_UNFUSED)
        st = fn(fm.ctx, m, byref(args))
        torch.cuda.synchronize()
        fm.free(m)
        return st == STATUS_OK

    if opt.api == "auto":
        opt.api = "public" if probe_public() else "internal"
    if opt.api == "public":
        fwd_fn, bwd_fn, unf_fn = fm.attn["famask_attn_fwd"], fm.attn["famask_attn_bwd"], fm.attn["famask_attn_fwd"]
        names = ("famask_attn_fwd", "famask_attn_bwd", "famask_attn_fwd(unfused)")
    else:
        fwd_fn, bwd_fn, unf_fn = fm.attn["fm_cuda_fwd"], fm.attn["fm_cuda_bwd"], fm.attn["fm_cuda_unfused_fwd"]
        names = ("fm_cuda_fwd", "fm_cuda_bwd", "fm_cuda_unfused_fwd")
    print("# %s, torch %s, %s; famask entry points: %s" % (time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
          torch.__version__, torch.cuda.get_device_name(), ", ".join(
              n if f is not None else n + " (absent)" for n, f in zip(names, (fwd_fn, bwd_fn, unf_fn)))),
          flush=True)

    def call(fn, mask, args):
        """Runs a famask entry point; raises with the library's message on failure."""
        if fn is None:
            raise RuntimeError("entry point absent from the library")
        st = fn(fm.ctx, mask, byref(args))
        if st != STATUS_OK:
            raise RuntimeError(fm.status_text(st))

    results = []
    for (N, B, H) in opt.sizes:
        fams = []
        for name in opt.masks:
            t0 = time.time()
            fam = Family(name, N)
            m, src, note = fam.famask_mask(fm)
            fams.append((fam, m, src, note, time.time() - t0))
        for D in opt.dims:
            q = torch.randn(B, H, N, D, device=dev, dtype=torch.bfloat16)
            k = torch.randn_like(q)
            v = torch.randn_like(q)
            do = torch.randn_like(q)
            for fam, m, src, note, build_s in fams:
                pairs = fm.count_visible(m)
                fl = 4.0 * B * H * D * pairs
                rec = {"N": N, "B": B, "H": H, "D": D, "mask": fam.name, "params": fam.params,
                       "density": round(pairs / (N * N), 4), "visible_pairs": pairs, "mask_source": src,
                       "mask_build_s": round(build_s, 3), "device": torch.cuda.get_device_name(),
                       "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "label": opt.label,
                       "api": opt.api}
                if note:
                    rec["mask_note"] = note
                ms = lambda t: round(t, 4)
                tf = lambda t, mult=1.0: round(mult * fl / t / 1e9, 1)

                def record(tag, t_fwd, t_bwd):
                    if t_fwd is not None:
                        rec[tag + "_fwd_ms"], rec[tag + "_fwd_tflops"] = ms(t_fwd), tf(t_fwd)
                    if t_bwd is not None:
                        rec[tag + "_bwd_ms"], rec[tag + "_bwd_tflops"] = ms(t_bwd), tf(t_bwd, 2.5)

                def peer_bwd(f_out, leaves):
                    """backward alone: time out.backward on a retained graph"""
                    out = f_out()

                    def fb():
                        for x in leaves:
                            x.grad = None
                        out.backward(do, retain_graph=True)
                    t = bench(fb)
                    fb()
                    torch.cuda.synchronize()
                    return t, [x.grad.clone() for x in leaves]

                ref_out, ref_grads, ref_tag = None, None, None
                # ---- FlexAttention
                if "flex" in opt.peers:
                    try:
                        mm = fam.mod({key: torch.tensor(val, device=dev, dtype=torch.int32)
                                      for key, val in fam.data.items()})
                        t0 = time.time()
                        bm = None if mm is None else create_block_mask(mm, None, None, N, N, device=dev,
                                                                       _compile=N > 32768)
                        torch.cuda.synchronize()
                        rec["flex_blockmask_ms"] = round((time.time() - t0) * 1e3, 1)
                        t_f = bench(lambda: flex(q, k, v, block_mask=bm))
                        ref_out, ref_tag = flex(q, k, v, block_mask=bm), "flex"
                        t_b = None
                        if opt.bwd:
                            ql, kl, vl = (x.detach().requires_grad_() for x in (q, k, v))
                            t_b, ref_grads = peer_bwd(lambda: flex(ql, kl, vl, block_mask=bm), (ql, kl, vl))
                            del ql, kl, vl
                        record("flex", t_f, t_b)
                        del bm
                    except Exception as e:  # one peer failing must not stop the sweep
                        rec["flex_error"] = repr(e)[:400]
                # ---- SDPA flash (FA2) and cuDNN where they apply
                if fam.sdpa is not None:
                    for be, tag in ((SDPBackend.FLASH_ATTENTION, "fa2"), (SDPBackend.CUDNN_ATTENTION, "cudnn")):
                        if tag not in opt.peers:
                            continue
                        try:
                            with sdpa_kernel(be):
                                f = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=fam.sdpa)
                                t_f = bench(f)
                                out = f()
                                t_b = None
                                if opt.bwd:
                                    ql, kl, vl = (x.detach().requires_grad_() for x in (q, k, v))
                                    t_b, grads = peer_bwd(
                                        lambda: F.scaled_dot_product_attention(ql, kl, vl, is_causal=fam.sdpa),
                                        (ql, kl, vl))
                                    del ql, kl, vl
                            record(tag, t_f, t_b)
                            if ref_out is None:
                                ref_out, ref_tag = out, tag
                                ref_grads = grads if opt.bwd else None
                            else:
                                rec["err_%s_vs_%s" % (tag, ref_tag)] = rel_err(out, ref_out)
                        except Exception as e:
                            rec[tag + "_error"] = repr(e)[:400]
                if ref_tag:
                    rec["ref"] = ref_tag
                def famask_fwd(fn, device, tag, err_key, error_key):
                    """One famask forward on the poisoned output: error against the reference, then the time."""
                    try:
                        args = famask_args(q, k, v, o, lse, device=device)
                        o.fill_(float("nan"))
                        call(fn, m, args)
                        torch.cuda.synchronize()
                        if ref_out is not None:
                            rec[err_key] = rel_err(o, ref_out)
                        record(tag, bench(lambda: call(fn, m, args)), None)
                    except Exception as e:
                        rec[error_key] = str(e)[:400]

                # ---- famask fused
                o = torch.empty_like(q)
                lse = torch.empty(B, H, N, device=dev, dtype=torch.float32)
                if not opt.no_famask:
                    famask_fwd(fwd_fn, DEVICE_CUDA, "famask", "err_famask_fwd", "famask_fwd_error")
                    if opt.bwd and "famask_fwd_ms" in rec:
                        try:
                            dq, dk, dv = (torch.full_like(q, float("nan")) for _ in range(3))
                            args = famask_args(q, k, v, o, lse, do, dq, dk, dv, device=DEVICE_CUDA)
                            call(bwd_fn, m, args)
                            torch.cuda.synchronize()
                            if ref_grads is not None:
                                rec["err_famask_bwd"] = max(rel_err(x, r) for x, r in zip((dq, dk, dv), ref_grads))
                            t_b = bench(lambda: call(bwd_fn, m, args))
                            record("famask", None, t_b)
                            del dq, dk, dv
                        except Exception as e:
                            rec["famask_bwd_error"] = str(e)[:400]
                # ---- famask unfused (standard attention)
                if "unfused" in opt.peers and N <= opt.unfused_max_n:
                    famask_fwd(unf_fn, DEVICE_CUDA_UNFUSED, "unfused", "err_unfused_fwd", "unfused_error")
                del o, lse, ref_out, ref_grads
                jsonl.write(json.dumps(rec) + "\n")
                jsonl.flush()
                print(json.dumps(rec), file=sys.stderr, flush=True)
                results.append(rec)
            del q, k, v, do
            torch.cuda.empty_cache()
        for fam, m, src, note, build_s in fams:
            fm.free(m)
    jsonl.close()
    print_table(results)
    return 0


def print_table(results):
    cols = [("famask", "famask"), ("flex", "Flex"), ("fa2", "SDPA FA2"), ("cudnn", "SDPA cuDNN"),
            ("unfused", "unfused")]

    def cell(r, tag):
        f = r.get(tag + "_fwd_tflops")
        b = r.get(tag + "_bwd_tflops")
        if f is None and b is None:
            return "n/a" if (tag + "_error" in r or tag + "_fwd_error" in r) else "-"
        return "%s / %s" % ("%.0f" % f if f is not None else "n/a", "%.0f" % b if b is not None else "-")

    def ratio(r, tag):
        out = []
        for d in ("fwd", "bwd"):
            a, p = r.get("famask_%s_ms" % d), r.get("%s_%s_ms" % (tag, d))
            out.append("%.2f" % (p / a) if a and p else "-")
        return " / ".join(out)

    def err(r):
        vals = ["%.1e" % r[k] if r.get(k) is not None else "-"
                for k in ("err_famask_fwd", "err_famask_bwd", "err_unfused_fwd")]
        return " / ".join(vals)

    print()
    print("famask time in ms, then TFLOP/s (visible pairs only) of each column, each as fwd / bwd; speed ratio "
          "famask : peer (peer time / famask time); max relative error against the reference peer "
          "(famask fwd / famask bwd / unfused fwd).")
    print()
    def famask_ms(r):
        return " / ".join("%.3f" % r[k] if k in r else "-" for k in ("famask_fwd_ms", "famask_bwd_ms"))

    print("| N | B x H | D | mask | density | famask ms | " + " | ".join(c[1] for c in cols) +
          " | x Flex | x FA2 | x cuDNN | err |")
    print("|" + "---|" * (6 + len(cols) + 4))
    for r in results:
        print("| %d | %d x %d | %d | %s | %.3f | %s | %s | %s | %s | %s | %s |" % (
            r["N"], r["B"], r["H"], r["D"], r["mask"], r["density"], famask_ms(r),
            " | ".join(cell(r, c[0]) for c in cols), ratio(r, "flex"), ratio(r, "fa2"), ratio(r, "cudnn"), err(r)))
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------------------------

SIZE_PRESETS = {"8k": (8192, 4, 16), "32k": (32768, 1, 16), "128k": (131072, 1, 4)}


def parse_size(s):
    if s.lower() in SIZE_PRESETS:
        return SIZE_PRESETS[s.lower()]
    parts = [int(x) for x in s.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("size '%s': give N,B,H or one of %s" % (s, ", ".join(SIZE_PRESETS)))
    return tuple(parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "libfamask.so"),
                    help="path of libfamask.so (default: beside this script)")
    ap.add_argument("--sizes", nargs="+", type=parse_size, default=[SIZE_PRESETS["8k"]],
                    help="N,B,H triples or presets 8k (8192,4,16), 32k (32768,1,16), 128k (131072,1,4)")
    ap.add_argument("--masks", default="all", help="comma-separated families, or 'all': " + ", ".join(FAMILIES))
    ap.add_argument("--dims", default="128,64", help="head dims, comma-separated")
    ap.add_argument("--peers", default="flex,fa2,cudnn,unfused", help="which peer columns to run")
    ap.add_argument("--no-bwd", dest="bwd", action="store_false", help="forward only")
    ap.add_argument("--no-famask", action="store_true", help="skip the fused famask columns")
    ap.add_argument("--dry", action="store_true", help="same as --no-famask: peers and the unfused row only")
    ap.add_argument("--api", choices=("auto", "public", "internal"), default="auto",
                    help="famask_attn_fwd/bwd, or the internal fm_cuda_* entry points (auto: public if it runs)")
    ap.add_argument("--unfused-max-n", type=int, default=131072, help="run the unfused row up to this N")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="folder of peers.jsonl (default $OUT, else .)")
    ap.add_argument("--label", default="", help="stored in every JSON line (e.g. the famask commit)")
    ap.add_argument("--table", nargs="+", metavar="JSONL", help="print the markdown table of earlier runs and exit")
    ap.add_argument("--selftest", action="store_true", help="check the mask families on the CPU and exit")
    ap.add_argument("--save-masks", metavar="DIR",
                    help="write each family's mask at each size to DIR/<family>-<N>.fmask (for bench-bwd) and exit")
    opt = ap.parse_args()
    if opt.table:
        rows = []
        for path in opt.table:
            with open(path) as f:
                rows += [json.loads(line) for line in f if line.strip()]
        print_table(rows)
        return 0
    opt.masks = FAMILIES if opt.masks == "all" else opt.masks.split(",")
    for name in opt.masks:
        if name not in FAMILIES:
            ap.error("unknown mask '%s' (known: %s)" % (name, ", ".join(FAMILIES)))
    opt.dims = [int(x) for x in opt.dims.split(",")]
    opt.peers = opt.peers.split(",")
    opt.no_famask = opt.no_famask or opt.dry
    if opt.reps < 10:
        print("note: fewer than 10 timed runs (--reps %d)" % opt.reps, file=sys.stderr)
    if not opt.selftest and not opt.save_masks:
        import torch  # noqa: F401  (loads libcublas.so.13, which libfamask.so needs, before the CDLL)
    fm = Famask(opt.lib)
    if opt.selftest:
        return selftest(fm, [16, 37, 130, 300])
    if opt.save_masks:
        return save_masks(fm, opt)
    return run_gpu(fm, opt)


if __name__ == "__main__":
    sys.exit(main())
