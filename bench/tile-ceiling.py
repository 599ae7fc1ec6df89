#!/usr/bin/env python3
"""tile-ceiling.py: how much of each mask family's work the Hopper backward's tiles can skip, on the CPU.

For every family of peers.py at one length, walks the tiles the two Hopper backward kernels compute (the main
kernel: key blocks of 128 against query tiles of 64; the dQ pass: query tiles of 128 against key blocks of 128),
classifying each with the rule of kernels/tile-rule.h, and prints
    tiles   live tiles per (batch, head), and the fraction of them that are partial (element-masked);
    eff     visible (query, key) pairs / pairs the live tiles compute;
    ceil    both kernels together: the most a sparsity-aware TFLOP/s can reach as a fraction of the full mask's,
            if a tile cost the same whether partial or not and nothing else differed;
    dq64    the same if the dQ pass took query tiles of 64 rows (the main kernel's tiles, transposed);
    ceil64  the same if every warpgroup also skipped its quarters (64 keys x 64 query rows) that the rule skips.
Usage: python3 bench/tile-ceiling.py [N] [family,family,...]   (N defaults to 8192; needs no GPU, no numpy)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import FAMILIES, Family  # noqa: E402

BIG = 1 << 31


def summary(vec, c0, c1):
    """min/max of each interval's start and end over columns [c0, c1), as fm_block_summarise"""
    s = [[BIG, -BIG, BIG, -BIG] for _ in range(2)]  # per interval: smin, smax, emin, emax
    for c in range(c0, c1):
        for x in range(2):
            st, en = vec[4 * c + 2 * x], vec[4 * c + 2 * x + 1]
            v = s[x]
            v[0], v[1], v[2], v[3] = min(v[0], st), max(v[1], st), min(v[2], en), max(v[3], en)
    return s


def classify(s, r0, r1):
    """0 skipped, 1 partial, 2 unmasked, as fm_tile_classify"""
    unmasked = True
    for smin, smax, emin, emax in s:
        if r0 >= smax and r1 <= emin:
            return 0
        if not (r1 <= smin or r0 >= emax):
            unmasked = False
    return 2 if unmasked else 1


def walk(vec, n, block_k, block_q):
    """(live tiles, partial tiles, pairs computed) over every key block and query tile"""
    tiles = partial = 0
    for c0 in range(0, n, block_k):
        s = summary(vec, c0, min(n, c0 + block_k))
        for r0 in range(0, n, block_q):
            c = classify(s, r0, min(n, r0 + block_q))
            tiles += c != 0
            partial += c == 1
    return tiles, partial, tiles * block_k * block_q


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 8192
    names = sys.argv[2].split(",") if len(sys.argv) > 2 else FAMILIES
    print("N %d; main kernel: key blocks of 128 x query tiles of 64; dQ pass: query tiles of 128 x key blocks of 128"
          % n)
    print("%-22s %7s | %6s %5s %5s | %6s %5s %5s | %5s %5s %6s" % ("family", "density", "main", "part", "eff", "dq",
                                                                    "part", "eff", "ceil", "dq64", "ceil64"))
    for name in names:
        f = Family(name, n)
        visible = 0
        for j in range(n):
            lts, lte, uts, ute = f.vec[4 * j:4 * j + 4]
            visible += n - max(0, min(n, lte) - lts) - max(0, min(n, ute) - uts)
        mt, mp, mc = walk(f.vec, n, 128, 64)
        qt, qp, qc = walk(f.vec, n, 128, 128)
        _, _, wc = walk(f.vec, n, 64, 64)
        print("%-22s %7.3f | %6d %5.2f %5.3f | %6d %5.2f %5.3f | %5.3f %5.3f %6.3f"
              % (name, visible / n / n, mt, mp / max(mt, 1), visible / max(mc, 1), qt, qp / max(qt, 1),
                 visible / max(qc, 1), 2 * visible / max(mc + qc, 1), visible / max(mc, 1), visible / max(wc, 1)))


if __name__ == "__main__":
    main()
