#!/usr/bin/env python3
"""numpy-fixtures.py OUTDIR: dense masks written by numpy itself, for tests/test-convert.c.

Each mask is saved in several of numpy's ways (numpy.save of bool, uint8, int64, big-endian int32, float16 and
float32 additive masks, C and Fortran order; numpy.savez with two arrays; numpy.savez_compressed; a gzip'ed
.npy; a bool mask with True meaning masked), next to a reference: the visible-as-1 uint8 bytes in C order
written with tofile. OUTDIR/manifest.txt lists one file a line:
    FILE ARRAY(or -) TRUE_MEANS B H NQ NK REFERENCE
The test converts FILE and REFERENCE (raw, that shape) and wants the same vectors. Run by .ci/test in a
venv; famask itself never needs Python.
"""
import gzip
import os
import sys

import numpy as np


def masks(rng):
    """(name, visible bool array of 2, 3 or 4 dimensions)"""
    n = 37
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    yield "causal", j <= i
    # causal_document, a different split per batch row: [2, 50, 50]
    out = []
    for docs in ([10, 25, 15], [50]):
        doc = np.repeat(np.arange(len(docs)), docs)
        q, k = np.meshgrid(np.arange(50), np.arange(50), indexing="ij")
        out.append((doc[q] == doc[k]) & (k <= q))
    yield "causal_document", np.stack(out)
    # sliding windows per head, seq_len_q != seq_len_k: [2, 3, 40, 33]
    q, k = np.meshgrid(np.arange(40), np.arange(33), indexing="ij")
    heads = [(k >= q - w) & (k <= q) for w in (0, 4, 100)]
    yield "sliding", np.stack([np.stack(heads), np.stack(heads[::-1])])
    # prefix-LM: [29, 29]
    q, k = np.meshgrid(np.arange(29), np.arange(29), indexing="ij")
    yield "prefix_lm", (k < 7) | (k <= q)
    # random representable: two random masked intervals per column, [1, 2, 31, 45]
    vis = np.ones((1, 2, 31, 45), dtype=bool)
    for h in range(2):
        for c in range(45):
            for _ in range(2):
                s = rng.integers(0, 32)
                e = rng.integers(s, 32)
                vis[0, h, s:e, c] = False
    yield "random", vis


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(7)
    lines = []
    for name, vis in masks(rng):
        shape4 = (1,) * (4 - vis.ndim) + vis.shape
        if vis.ndim == 3:
            shape4 = (vis.shape[0], 1) + vis.shape[1:]
        ref = f"{name}.ref.u8"
        vis.astype(np.uint8).tofile(os.path.join(out, ref))
        additive = np.where(vis, 0.0, -np.inf)

        def add(fname, arr=None, array="-", means="visible", saver=None):
            path = os.path.join(out, fname)
            if saver:
                saver(path)
            else:
                np.save(path, arr)
            lines.append(f"{fname} {array} {means} {' '.join(map(str, shape4))} {ref}")

        add(f"{name}.bool.npy", vis)
        add(f"{name}.bool-f.npy", np.asfortranarray(vis))
        add(f"{name}.u8.npy", vis.astype(np.uint8) * 3)
        add(f"{name}.u8-f.npy", np.asfortranarray(vis.astype(np.uint8)))
        add(f"{name}.i64.npy", vis.astype(np.int64) * -5)
        add(f"{name}.i4-be.npy", vis.astype(">i4"))
        add(f"{name}.f32.npy", additive.astype(np.float32))
        add(f"{name}.f32-f.npy", np.asfortranarray(additive.astype(np.float32)))
        add(f"{name}.f16.npy", additive.astype(np.float16))
        add(f"{name}.f64-be.npy", additive.astype(">f8"))
        add(f"{name}.masked.npy", ~vis, means="masked")
        add(f"{name}.savez.npz", array="mask",
            saver=lambda p: np.savez(p, other=np.zeros(3), mask=vis))
        add(f"{name}.compressed.npz",
            saver=lambda p: np.savez_compressed(p, vis.astype(np.uint8)))
        add(f"{name}.compressed2.npz", array="m",
            saver=lambda p: np.savez_compressed(p, m=np.asfortranarray(vis), junk=np.arange(4)))

        def gz(p):
            with gzip.open(p, "wb") as f:
                np.save(f, vis)
        add(f"{name}.npy.gz", saver=gz)
    with open(os.path.join(out, "manifest.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"numpy-fixtures: {len(lines)} files in {out} (numpy {np.__version__})")


if __name__ == "__main__":
    main()
