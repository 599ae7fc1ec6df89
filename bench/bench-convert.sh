#!/usr/bin/env bash
# bench-convert.sh: throughput and peak memory of `famask convert` on large dense masks.
#   bench/bench-convert.sh [FAMASK] [N] [BIG_N]
# FAMASK: the famask binary (default build-rel/famask: configure with -DCMAKE_BUILD_TYPE=Release);
# N: side of the file benchmarks (default 16384: 256 MiB as u8/bool, 1 GiB as f32);
# BIG_N: side of the memory check piped through standard input and read from a file (default 65536, 4 GiB;
# 0 skips it). Files go to $BENCH_DIR (default /tmp/famask-bench), removed at the end.
# Each line: case, input bytes, wall seconds (best of 3, from bash's EPOCHREALTIME, process start included) and
# GB/s of dense input, user+system CPU seconds (best of 3, /usr/bin/time: less disturbed by other load on a
# shared machine; 10 ms resolution) and GB/s, peak resident memory. Inputs come from the page cache (just
# written).
set -euo pipefail
cd "$(dirname "$0")/.."
famask=${1:-build-rel/famask}
n=${2:-16384}
big=${3:-65536}
dir=${BENCH_DIR:-/tmp/famask-bench}
mkdir -p "$dir"
trap 'rm -rf "$dir"' EXIT
cc -O2 -o "$dir/gen" bench/bench-convert.c -lm

measure() { # name bytes command...
  local name=$1 bytes=$2 best=999999 cpu_best=999999 rss=0
  shift 2
  for _ in 1 2 3; do
    local t0=$EPOCHREALTIME
    /usr/bin/time -f "%M %U %S" -o "$dir/t" "$@" >/dev/null
    local t1=$EPOCHREALTIME
    read -r rss u s <"$dir/t"
    best=$(awk -v a="$t0" -v b="$t1" -v c="$best" 'BEGIN{s=b-a; print (s<c)?s:c}')
    cpu_best=$(awk -v a="$u" -v b="$s" -v c="$cpu_best" 'BEGIN{s=a+b; print (s<c)?s:c}')
  done
  awk -v n="$name" -v b="$bytes" -v s="$best" -v c="$cpu_best" -v r="$rss" \
    'BEGIN{printf "%-34s %11d B  wall %6.3f s %6.2f GB/s  cpu %6.2f s %6.2f GB/s  %6.1f MiB peak\n", n, b, s,
           (s>0)?b/s/1e9:0, c, (c>0)?b/c/1e9:0, r/1024}'
}

for kind in causal_document sliding; do
  for dt in u8 bool f32 u8f; do
    f="$dir/$kind-$dt.npy"
    "$dir/gen" "$kind" "$n" "$dt" "$f"
    measure "$kind $n^2 $dt .npy" "$(stat -c %s "$f")" "$famask" convert "$f" -o "$dir/out.fmask"
    rm -f "$f"
  done
done
f="$dir/causal_document-u8.npy"
"$dir/gen" causal_document "$n" u8 "$f"
gzip -1 -c "$f" >"$f.gz"
measure "causal_document $n^2 u8 .npy.gz" "$(stat -c %s "$f")" "$famask" convert "$f.gz" -o "$dir/out.fmask"
echo "(the .npy.gz line counts the uncompressed bytes; the compressed file is $(stat -c %s "$f.gz") bytes)"
rm -f "$f" "$f.gz"

if [ "$big" -gt 0 ]; then
  bytes=$((big * big))
  /usr/bin/time -f "%e %M" -o "$dir/t" bash -c "'$dir/gen' causal_document $big u8 - | '$famask' convert - -o '$dir/out.fmask'"
  read -r s kb <"$dir/t"
  echo "pipe: causal_document ${big}^2 u8 from standard input: $s s, famask + generator peak $((kb / 1024)) MiB (the larger of the two processes)"
  "$dir/gen" causal_document "$big" u8 "$dir/big.npy"
  /usr/bin/time -f "%e %M" -o "$dir/t" "$famask" convert "$dir/big.npy" -o "$dir/out.fmask"
  read -r s kb <"$dir/t"
  awk -v b="$bytes" -v s="$s" -v r="$kb" -v n="$big" \
    'BEGIN{printf "file: causal_document %d^2 u8 .npy: %.2f s (%.2f GB/s), peak %.1f MiB\n", n, s, b/s/1e9, r/1024}'
fi
