#!/usr/bin/env python3
"""Where the Hopper backward's time goes at work-item boundaries, from an event trace.

usage: trace-items.py TRACE [--label TEXT] [--ghz 1.98]

TRACE is what a traced build writes (cmake -DFAMASK_TRACE=ON; FAMASK_TRACE_OUT=path on any backward call, for example
bench-bwd's; kernels/trace.cuh has the events and the format). For each kernel (main: dK, dV; dq: the dQ pass) it
prints, from the first thread of each consumer warpgroup:
- the steady tile: the time from one tile's end to the next inside an item, its products, and the wait before it;
- the boundary: from an item's last tile end to the next item's first, and its parts (the outputs, the wait for
  the item and for its first tile, the first tile's products);
- the producer's lead: how long before the consumers needed them the next item's loads were issued;
- each tile's phases (its S and dP products, the element-wise work between, the second products), for unmasked and
  partial tiles apart (leaving out each item's first tile, which the boundary slows), and what a partial tile adds;
- the tensor cores' view, per CTA: the share of time in which either warpgroup has products in flight, and the time
  with none in flight near item boundaries (from a warpgroup's last tile end to its next item's first S and dP)
  per boundary, against the rest per tile (both warpgroups take every item and tile, so a CTA's boundaries and tiles
  are half of theirs).
Times are SM clock cycles (and microseconds at --ghz); compare them within one CTA only. No GPU needed.
"""
import argparse
import array
import statistics
import struct
import sys

MAGIC = 0x46545231


def read_trace(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        sys.exit("%s: %s" % (path, e.strerror))
    if len(raw) < 20:
        sys.exit("%s: too short for a trace" % path)
    magic, kernels, ctas, streams, cap = struct.unpack_from("<5i", raw)
    if magic != MAGIC:
        sys.exit("%s: not a famask trace (magic %#x)" % (path, magic & 0xFFFFFFFF))
    n = array.array("i")
    n.frombytes(raw[20:20 + 4 * kernels * ctas * streams])
    data = array.array("Q")
    data.frombytes(raw[20 + 4 * kernels * ctas * streams:])
    ev, pos = {}, 0
    for k in range(kernels):
        for c in range(ctas):
            for s in range(streams):
                m = min(n[(k * ctas + c) * streams + s], cap)
                if pos + m > len(data):
                    sys.exit("%s: truncated (kernel %d, CTA %d, stream %d)" % (path, k, c, s))
                ev[k, c, s] = [(x >> 56, x & ((1 << 56) - 1)) for x in data[pos:pos + m]]
                pos += m
    return ev, kernels, ctas


def consumer_items(seq):
    """A consumer stream's items: {wait, go, tiles: [(go, s_ready, second_issue, end, partial)], out}."""
    items, cur, tile = [], None, None
    for code, t in seq:
        if code == 1:
            cur, tile = {"wait": t, "tiles": []}, None
        elif cur is None:
            continue
        elif code == 2:
            cur["go"] = t
        elif code == 3:
            tile = [t, None, None, None, False]
        elif code == 16 and tile:
            tile[4] = True
        elif code in (4, 15, 5) and tile:
            tile[{4: 1, 15: 2, 5: 3}[code]] = t
            if code == 5:
                if None not in tile:
                    cur["tiles"].append(tuple(tile))
                tile = None
        elif code == 6:
            cur["out"] = t
            if cur["tiles"] and "go" in cur:
                items.append(cur)
            cur = None
    return items


def producer_items(seq):
    """The producer's items that loaded anything: {start, first: time of code 11, loads: [times of code 12]}."""
    items, cur = [], None
    for code, t in seq:
        if code == 10:
            if cur and "first" in cur:
                items.append(cur)
            cur = {"start": t, "loads": []}
        elif cur is None:
            continue
        elif code == 11:
            cur["first"] = t
        elif code == 12:
            cur["loads"].append(t)
    if cur and "first" in cur:
        items.append(cur)
    return items


def union_length(intervals):
    total, end = 0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def med(x):
    return statistics.median(x) if x else float("nan")


def mean(x):
    return statistics.mean(x) if x else float("nan")


def analyse(ev, k, ctas, name, label, ghz):
    period, compute, sdp, before = [], [], [], []
    bound, outs, item_wait, first_wait, first_compute, first_sdp = [], [], [], [], [], []
    lead_first, lead_load = [], []
    busy, span_total, idle_bound, idle_steady, n_bound, n_tiles = 0, 0, 0, 0, 0, 0
    n_items = 0
    by_class = {False: [], True: []}
    for c in range(ctas):
        per_wg = [consumer_items(ev[k, c, s]) for s in (1, 2)]
        prod = producer_items(ev[k, c, 0])
        if not any(per_wg):
            continue
        gemm, windows = [], []
        for its in per_wg:
            n_items += len(its)
            for j, it in enumerate(its):
                T = it["tiles"]
                n_tiles += len(T)
                for i, (go, s_ready, second, end, partial) in enumerate(T):
                    gemm += [(go, s_ready), (second, end)]
                    if i > 0:
                        by_class[partial].append((s_ready - go, second - s_ready, end - second, end - go))
                for i in range(1, len(T)):
                    period.append(T[i][3] - T[i - 1][3])
                    compute.append(T[i][3] - T[i][0])
                    sdp.append(T[i][1] - T[i][0])
                    before.append(T[i][0] - T[i - 1][3])
                if j == 0:
                    continue
                pv = its[j - 1]
                bound.append(T[0][3] - pv["tiles"][-1][3])
                outs.append(pv["out"] - pv["tiles"][-1][3])
                item_wait.append(it["go"] - it["wait"])
                first_wait.append(T[0][0] - it["go"])
                first_compute.append(T[0][3] - T[0][0])
                first_sdp.append(T[0][1] - T[0][0])
                windows.append((pv["tiles"][-1][3], T[0][1]))
            n_bound += max(len(its) - 1, 0)
        if len(prod) == len(per_wg[0]):
            for j in range(1, len(prod)):
                it = per_wg[0][j]
                lead_first.append((it["wait"] if k == 0 else it["go"]) - prod[j]["first"])
                if prod[j]["loads"]:
                    lead_load.append(it["tiles"][0][0] - prod[j]["loads"][0])
        t0 = min(its[0]["wait"] for its in per_wg if its)
        t1 = max(its[-1]["out"] for its in per_wg if its)
        span_total += t1 - t0
        busy += union_length(gemm)
        # time with no products in flight, split into what lies in a boundary window and the rest
        gaps, end = [], t0
        for a, b in sorted(gemm):
            if a > end:
                gaps.append((end, a))
            end = max(end, b)
        if t1 > end:
            gaps.append((end, t1))
        win = sorted(windows)
        for a, b in gaps:
            inside = union_length([(max(a, x), min(b, y)) for x, y in win if x < b and y > a])
            idle_bound += inside
            idle_steady += (b - a) - inside
    if not period:
        print("%s %s: no items of two tiles or more in the trace" % (label, name))
        return
    P = med(period)
    us = lambda cyc: cyc / (ghz * 1e3)
    print("%s %s: %d items, %d tiles in the trace (consumer warpgroups)" % (label, name, n_items, n_tiles))
    print("  steady tile: %.0f cycles end to end (mean %.0f); products and their waits %.0f (S and dP %.0f); "
          "wait before the tile %.0f" % (P, mean(period), med(compute), med(sdp), med(before)))
    print("  boundary: %.0f cycles (mean %.0f, %.2f tiles, %.2f us beyond a tile) = outputs %.0f + wait for the item "
          "%.0f + wait for its first tile %.0f + first tile %.0f (S and dP %.0f)"
          % (med(bound), mean(bound), mean(bound) / P, us(mean(bound) - P), mean(outs), mean(item_wait),
             mean(first_wait), mean(first_compute), mean(first_sdp)))
    if lead_first:
        print("  producer lead (median, min): %s %.0f, %.0f; first tile's loads %.0f, %.0f"
              % ("K and V" if k == 0 else "Q and dO", med(lead_first), min(lead_first), med(lead_load),
                 min(lead_load) if lead_load else float("nan")))
    parts = {}
    for partial, rows in by_class.items():
        if rows:
            parts[partial] = [med([r[i] for r in rows]) for i in range(4)]
            print("  %s tiles after their item's first: %d; S and dP %.0f, between them and the second products %.0f, the second "
                  "products %.0f, in all %.0f (medians)" % (("partial" if partial else "unmasked"), len(rows),
                                                           *parts[partial]))
    if len(parts) == 2:
        print("  a partial tile: %+.0f cycles (%+.0f%%) against an unmasked one"
              % (parts[True][3] - parts[False][3], 100.0 * (parts[True][3] / parts[False][3] - 1)))
    print("  tensor cores: products in flight %.1f%% of the CTAs' time; none in flight %.0f cycles per item boundary "
          "(%.2f us), %.0f per tile elsewhere"
          % (100.0 * busy / span_total, idle_bound / max(n_bound / 2, 1), us(idle_bound / max(n_bound / 2, 1)),
             idle_steady / max(n_tiles / 2, 1)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--label", default="")
    ap.add_argument("--ghz", type=float, default=1.98, help="SM clock for the microseconds (default 1.98)")
    opt = ap.parse_args()
    ev, kernels, ctas = read_trace(opt.trace)
    for k, name in ((0, "main"), (1, "dq")):
        if k < kernels:
            analyse(ev, k, ctas, name, opt.label, opt.ghz)


if __name__ == "__main__":
    main()
