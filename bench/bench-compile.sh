#!/usr/bin/env bash
# bench-compile.sh: wall time of `famask compile` for a 1,048,576-token causal_document spec with 1,000
# documents (generated here, lengths drawn reproducibly), written as .fmask (target: under 50 ms, file under
# 64 KB). Usage: bench/bench-compile.sh [BUILD_DIR] [OUT_EXT]   (defaults: build, fmask; OUT_EXT may be npy, or
# none to time compilation alone, as the summary line).
set -euo pipefail
build=${1:-build}
ext=${2:-fmask}
cli="$build/famask"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1,000 document lengths summing to 1,048,576: 999 cut points from a fixed LCG, sorted.
awk 'BEGIN {
    n = 1048576; k = 1000; x = 12345;
    for (i = 1; i < k; i++) { x = (x * 1103515245 + 12345) % 2147483648; cut[i] = x % n; }
    cut[0] = 0; cut[k] = n;
    for (i = 1; i < k; i++) for (j = i; j > 1 && cut[j-1] > cut[j]; j--) { t = cut[j]; cut[j] = cut[j-1]; cut[j-1] = t; }
    printf "seqlen: %d\nmask:\n  type: causal_document\n  documents: [", n;
    for (i = 0; i < k; i++) printf "%s%d", (i ? ", " : ""), cut[i+1] - cut[i];
    printf "]\n";
}' > "$work/docs.yaml"

if [ "$ext" = none ]; then out_args=(); else out_args=(-o "$work/out.$ext"); fi
"$cli" compile "$work/docs.yaml" "${out_args[@]}" > /dev/null   # warm-up (page cache)
best=
for rep in 1 2 3 4 5 6 7 8 9 10; do
    t0=$(date +%s%N)
    "$cli" compile "$work/docs.yaml" "${out_args[@]}" > /dev/null
    t1=$(date +%s%N)
    ms=$(( (t1 - t0) / 1000 ))
    if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
done
size="-"
if [ "$ext" != none ]; then size=$(stat -c %s "$work/out.$ext"); fi
printf 'famask compile, causal_document 1048576 tokens, 1000 documents, output %s: best of 10 %d.%03d ms wall, file %s bytes\n' \
    "$ext" $((best / 1000)) $((best % 1000)) "$size"
