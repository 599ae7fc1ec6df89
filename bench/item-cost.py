#!/usr/bin/env python3
"""item-cost.py: what short work items cost the Hopper backward, from a kernel-split.py run, on the CPU.

kernel-split.py's blocks:L masks (documents of L keys; every tile unmasked or skipped) time each kernel on work
items of L/64 query tiles (main kernel) or L/128 key blocks (dQ pass). Taken per item (kernel time x SMs /
items) and against full's time per tile, the rest is what an item of that length costs beyond its tiles. This
script reads a kernel-split.py output holding full and some blocks:L masks, prints that cost per item, and for
each family of peers.py estimates what its items cost beyond their tiles: each item's length (live tiles by the
rule of tile-ceiling.py) priced by the measured costs, linear between the lengths measured (full's items cost
none by definition; items shorter than the shortest measured cost what those do).
    tile us    both kernels' time if every live tile cost what a tile of full costs
    item us    the estimated cost of the items beyond their tiles
Usage: python3 bench/item-cost.py SPLIT_OUTPUT [--dim 64] [--sms 132] [--size N,B,H|8k] [--masks family,family]
Where the output holds several runs of a mask (rounds), their times are averaged. The size comes from
kernel-split.py's header line, else from --size. Needs no GPU.
"""
import argparse
import importlib.util
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from peers import FAMILIES, Family, parse_size  # noqa: E402

_spec = importlib.util.spec_from_file_location("tile_ceiling", os.path.join(HERE, "tile-ceiling.py"))
tc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tc)

KERNELS = {"bwd_sm90_kernel": "main", "bwd_dq_sm90_kernel": "dq"}


def read_split(path, dim, size=None):
    """(N, B, H) and {mask: {"main": us, "dq": us}} of the head dim, averaged over repeated runs"""
    times = {}
    mask = None
    with open(path) as f:
        for line in f:
            m = re.search(r"N (\d+) B (\d+) H (\d+)", line)
            if line.startswith("#") and m:
                size = tuple(int(x) for x in m.groups())
                continue
            m = re.match(r"(\S+) D (\d+): \d+ calls", line)
            if m:
                mask = m.group(1) if int(m.group(2)) == dim else None
                continue
            m = re.match(r"\s+(\w+)<[^>]*>\s+([\d.]+) us", line)
            if m and mask and m.group(1) in KERNELS:
                times.setdefault(mask, {}).setdefault(KERNELS[m.group(1)], []).append(float(m.group(2)))
    if size is None:
        sys.exit("%s: no kernel-split.py header line (# ... N n B b H h); give --size" % path)
    return size, {k: {x: sum(v) / len(v) for x, v in t.items()} for k, t in times.items()}


def item_costs(size, times, sms):
    """per kernel: (time per tile of full, sorted [(tiles per item, cost beyond its tiles)]) in us"""
    n, b, h = size
    items = (n + 127) // 128 * b * h  # both kernels: key blocks, or query tiles, of 128
    if "full" not in times:
        sys.exit("the split output has no full mask at this head dim")
    out = {}
    for k, per_full in (("main", n // 64), ("dq", n // 128)):
        per_tile = times["full"][k] * sms / items / per_full
        pts = [(per_full, 0.0)]
        for mask, t in times.items():
            m = re.fullmatch(r"blocks:(\d+)", mask)
            if m:
                tiles = int(m.group(1)) // (64 if k == "main" else 128)
                pts.append((tiles, t[k] * sms / items - tiles * per_tile))
        out[k] = (per_tile, sorted(pts))
    return out


def beyond(pts, t):
    """the cost beyond its tiles of an item of t tiles, linear between the measured lengths"""
    if t <= pts[0][0]:
        return pts[0][1]
    for (a, x), (z, y) in zip(pts, pts[1:]):
        if t <= z:
            return x + (y - x) * (t - a) / (z - a)
    return pts[-1][1]


def family_items(name, n):
    """live tiles per item of the main kernel (per key block) and of the dQ pass (per query tile)"""
    vec = Family(name, n).vec
    sums = [tc.summary(vec, c0, min(n, c0 + 128)) for c0 in range(0, n, 128)]
    main = [sum(tc.classify(s, r0, min(n, r0 + 64)) != 0 for r0 in range(0, n, 64)) for s in sums]
    dq = [sum(tc.classify(s, r0, min(n, r0 + 128)) != 0 for s in sums) for r0 in range(0, n, 128)]
    return {"main": main, "dq": dq}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("split", help="a kernel-split.py output with full and blocks:L masks")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--sms", type=int, default=132, help="multiprocessors (CTAs) of the device")
    ap.add_argument("--size", type=parse_size, help="N,B,H (or a preset: 8k) of the run, where its output "
                    "lacks the header line")
    ap.add_argument("--masks", default="causal_document,shared_question,sliding_window,document,"
                    "global_sliding_window,causal_blockwise")
    opt = ap.parse_args()
    names = opt.masks.split(",")
    for name in names:
        if name not in FAMILIES:
            ap.error("unknown mask '%s' (known: %s)" % (name, ", ".join(FAMILIES)))
    try:
        size, times = read_split(opt.split, opt.dim, opt.size)
    except OSError as e:
        sys.exit("%s: %s" % (opt.split, e.strerror))
    n, b, h = size
    costs = item_costs(size, times, opt.sms)
    print("N %d B %d H %d, head dim %d, %d SMs: cost of an item beyond its tiles, us (tiles per item: us)"
          % (n, b, h, opt.dim, opt.sms))
    for k in ("main", "dq"):
        per_tile, pts = costs[k]
        print("  %-4s  %.2f us per tile of full;  %s" % (k, per_tile, "  ".join("%d: %.2f" % p for p in pts)))
    print("%-22s | %9s %9s | %9s %9s" % ("family", "main tile", "item us", "dq tile", "item us"))
    for name in names:
        its = family_items(name, n)
        cells = []
        for k in ("main", "dq"):
            per_tile, pts = costs[k]
            live = [t for t in its[k] if t > 0]
            cells += [sum(live) * per_tile * b * h / opt.sms, sum(beyond(pts, t) for t in live) * b * h / opt.sms]
        print("%-22s | %9.0f %9.0f | %9.0f %9.0f" % ((name,) + tuple(cells)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
