#!/usr/bin/env python3
"""kernel-split.py: where famask's GPU backward spends its time, kernel by kernel (torch.profiler, CUPTI).

For each mask family of peers.py and each head dim, runs the fused backward `--reps` times under the PyTorch
profiler and prints, per kernel, its mean duration in us and its share of the call's span (first kernel's start
to last kernel's end, median over the calls). Kernels may overlap (the dQ pass is a programmatic dependent launch of
the main kernel), so the shares can add up to more than 1; `gaps` is the part of the span where no kernel ran.
Usage: python3 bench/kernel-split.py --lib build-v/libfamask.so [--size 8192,4,16] [--dims 64,128]
       [--masks full,causal_document,blocks:256] [--reps 20] [--back-to-back]
By default each call runs alone (the host waits for it), so a span also holds any wait for the host's next launch;
--back-to-back queues the calls as peers.py does.
`blocks:L` is a mask of documents of L keys each (a multiple of 128), seen only from their own rows: every tile
of both kernels is either unmasked or skipped, and a work item walks L/64 query tiles (main kernel) or L/128 key
blocks (dQ pass). Against full, its time per visible pair is the cost of short work items alone, with no partial
tiles. Each mask's line gives `x full`: its span per visible pair over full's (run full first).
Needs a GPU, PyTorch and a shared libfamask.so built with CUDA.
"""
import argparse
import os
import re
import sys
from ctypes import byref

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402


def short_name(name):
    """bwd_sm90_kernel<...>(...) -> bwd_sm90_kernel<...> (template arguments kept: they say the head dim)"""
    name = name.replace("(anonymous namespace)::", "")
    m = re.match(r"(?:void\s+)?([\w:]+(?:<[^()]*>)?)", name)
    return m.group(1) if m else name[:60]


def head_dims(s):
    """--dims: comma-separated integers"""
    try:
        return [int(x) for x in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("'%s': give head dims as integers, comma-separated (64,128)" % s)


def block_len(name, n):
    """L of a mask named blocks:L (L a positive multiple of 128 that divides n), else None"""
    m = re.fullmatch(r"blocks:(\d+)", name)
    if not m:
        return None
    L = int(m.group(1))
    return L if L > 0 and L % 128 == 0 and n % L == 0 else None


def block_vectors(n, L):
    """LTS, LTE, UTS, UTE of every key column of blocks:L: rows past the column's document and rows before it"""
    vec = []
    for j in range(n):
        s = j // L * L
        vec += [s + L, n, 0, s]
    return vec


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", required=True, help="path of a shared libfamask.so built with CUDA")
    ap.add_argument("--size", default="8192,4,16", type=peers.parse_size, help="N,B,H or a preset: 8k, 32k, 128k")
    ap.add_argument("--dims", default="64,128", type=head_dims, help="head dims, comma-separated")
    ap.add_argument("--masks", default="all")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--back-to-back", action="store_true",
                    help="queue the calls without waiting for each (as peers.py times them): the host's work for a "
                         "call then overlaps the device's for the one before and leaves no gap inside a call")
    opt = ap.parse_args()
    n, b, h = opt.size
    masks = peers.FAMILIES if opt.masks == "all" else opt.masks.split(",")
    for name in masks:
        if name not in peers.FAMILIES and block_len(name, n) is None:
            ap.error("unknown mask '%s' (known: %s, blocks:L with L a multiple of 128 dividing %d)"
                     % (name, ", ".join(peers.FAMILIES), n))
    import torch
    from torch.profiler import ProfilerActivity, profile

    fm = peers.Famask(opt.lib)
    fwd, bwd = fm.attn["famask_attn_fwd"], fm.attn["famask_attn_bwd"]
    if fwd is None or bwd is None:
        print("%s: no famask_attn_fwd/bwd" % opt.lib, file=sys.stderr)
        return 1

    def call(fn, m, args):
        st = fn(fm.ctx, m, byref(args))
        if st != peers.STATUS_OK:
            raise RuntimeError(fm.status_text(st))

    print("# %s, torch %s; N %d B %d H %d, %d calls each" % (torch.cuda.get_device_name(), torch.__version__, n, b,
                                                             h, opt.reps))
    for d in opt.dims:
        q, k, v, do = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(4))
        o, dq, dk, dv = (torch.empty_like(q) for _ in range(4))
        lse = torch.empty(b, h, n, device="cuda", dtype=torch.float32)
        stream = torch.cuda.current_stream().cuda_stream
        marker = torch.zeros(1, device="cuda")
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            marker.add_(1)
            torch.cuda.synchronize()
        marker_names = {e.name for e in prof.events() if e.device_type.name == "CUDA"}
        full_per_pair = None
        for name in masks:
            L = block_len(name, n)
            m = fm.from_vectors(n, n, block_vectors(n, L)) if L else peers.Family(name, n).famask_mask(fm)[0]
            pairs = fm.count_visible(m)
            tq, tk, tv, to, tdo, tdq, tdk, tdv = (peers.tensor_of(t) for t in (q, k, v, o, do, dq, dk, dv))
            args = peers.AttnArgs(b, h, h, n, n, d, peers.DTYPE_BF16, tq, tk, tv, to, lse.data_ptr(), tdo, tdq, tdk,
                                  tdv, 0.0, 0, peers.DEVICE_CUDA, stream)
            call(fwd, m, args)
            for _ in range(3):
                call(bwd, m, args)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(opt.reps):
                    call(bwd, m, args)
                    if not opt.back_to_back:
                        torch.cuda.synchronize()
                    marker.add_(1)  # one call's kernels apart from the next's
                    if not opt.back_to_back:
                        torch.cuda.synchronize()
            torch.cuda.synchronize()
            evs = sorted((e for e in prof.events() if e.device_type.name == "CUDA"),
                         key=lambda e: e.time_range.start)
            fm.free(m)
            # group into calls: a call's kernels are those between two markers (a gap of no kernel inside a call,
            # while the host prepares the next launch, can last tens of us)
            calls = [[]]
            for e in evs:
                if e.name in marker_names:
                    calls.append([])
                else:
                    calls[-1].append(e)
            calls = [c for c in calls if c]
            per, spans, busy = {}, [], []
            for c in calls:
                t0, t1 = min(e.time_range.start for e in c), max(e.time_range.end for e in c)
                spans.append(t1 - t0)
                ivs, cov, cur = sorted((e.time_range.start, e.time_range.end) for e in c), 0, None
                for a, z in ivs:
                    if cur is None or a > cur[1]:
                        cov += 0 if cur is None else cur[1] - cur[0]
                        cur = [a, z]
                    else:
                        cur[1] = max(cur[1], z)
                cov += cur[1] - cur[0]
                busy.append(cov)
                for e in c:
                    per.setdefault(short_name(e.name), []).append(e.time_range.end - e.time_range.start)
            span = sorted(spans)[len(spans) // 2]
            gaps = span - sorted(busy)[len(busy) // 2]
            per_pair = span / pairs
            if name == "full":
                full_per_pair = per_pair
            rel = " %.3f x full" % (per_pair / full_per_pair) if full_per_pair else ""
            print("\n%s D %d: %d calls, span median %.1f us, gaps %.1f us%s" % (name, d, len(calls), span, gaps, rel))
            for kname, ts in sorted(per.items(), key=lambda kv: -sum(kv[1])):
                mean = sum(ts) / len(calls)
                print("  %-60s %8.1f us  %5.3f" % (kname[:60], mean, mean / span))
        del q, k, v, do, o, dq, dk, dv, lse
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
