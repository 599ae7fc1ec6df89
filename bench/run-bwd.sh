#!/bin/bash
# One device call: the backward test, then famask backward timings (bench-bwd.c) and SDPA flash (sdpa-bwd.py).
# Expects cuda-bwd, bench-bwd and sdpa-bwd.py beside it (copy them into the carried folder).
cd "$(dirname "$0")"
OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
echo "== test"; timeout 200 ./cuda-bwd > $OUT/test.txt 2>&1; grep -E "FAIL|passed" $OUT/test.txt | tail -8
echo "== bench"
B="./bench-bwd 4 16 16 8192"
for args in "128 full 0" "128 full 1" "128 causal 0" "128 causal 1" "128 swa 0" "128 cdoc 0" "128 doc 0" "128 doc 1" "64 full 0" "64 causal 0"; do
  set -- $args; timeout 60 $B $1 $2 $3 20
done 2>&1 | tee $OUT/bench.txt
timeout 100 python3 sdpa-bwd.py 2>&1 | tee -a $OUT/bench.txt
