#!/usr/bin/env bash
# Data-parallel scaling on this machine: `memoe train` on 1, 2 and 4 MPI
# ranks of one thread each, with the gradient buckets sent during the
# backward pass (overlap on) and after it (off).
#   weak scaling:   PER_RANK sequences per rank, so the global batch grows with R
#   strong scaling: GLOBAL sequences in all, split over the ranks
# For each run: the median step time and rank 0's median wait on gradient
# communication over the steps after the first two (metrics.jsonl's step_s
# and comm_wait_s), tokens/s, and the scaling efficiency against 1 rank.
# Ranks beyond the cores share them (--oversubscribe): read those rows as
# what oversubscription costs, not as scaling.
#   MEMOE=build/memoe CONFIG=configs/small.json DATA=runs/demo/data STEPS=10 SEQ=256
#   PER_RANK=4 GLOBAL=8 RANKS="1 2 4" OUT=runs/bench-dp
set -euo pipefail
source "$(dirname "$0")/run_metrics.sh"
PER_RANK=${PER_RANK:-4}
GLOBAL=${GLOBAL:-8}
RANKS=${RANKS:-1 2 4}
OUT=${OUT:-runs/bench-dp}
rm -rf "$OUT"
mkdir -p "$OUT"


run() {  # scaling ranks batch overlap
  local scaling=$1 ranks=$2 batch=$3 overlap=$4 dir="$OUT/$1-r$2-$4"
  local args=(train --config "$CONFIG" --data "$DATA" --out "$dir" --steps "$STEPS" --seq "$SEQ" --batch "$batch"
              --dp "$ranks" --precision fp32 --overlap "$overlap" --eval-every 0 --eval-windows 2
              --checkpoint-every 100000 --log-every 100000)
  if [ "$ranks" = 1 ]; then
    OMP_NUM_THREADS=1 "$MEMOE" "${args[@]}" >"$dir.log" 2>&1
  else
    mpirun --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 -n "$ranks" \
      "$MEMOE" "${args[@]}" >"$dir.log" 2>&1
  fi
  local step wait
  step=$(metric "$dir/metrics.jsonl" step_s | median)
  wait=$(metric "$dir/metrics.jsonl" comm_wait_s | median)
  [ "$ranks" = 1 ] && wait=0
  echo "$scaling $ranks $batch $overlap $step $wait"
}

{
  for scaling in weak strong; do
    for r in $RANKS; do
      if [ "$scaling" = weak ]; then batch=$((PER_RANK * r)); else batch=$GLOBAL; fi
      if [ "$r" = 1 ]; then
        run "$scaling" 1 "$batch" true
      else
        run "$scaling" "$r" "$batch" true
        run "$scaling" "$r" "$batch" false
      fi
    done
  done
} >"$OUT/raw.txt"

# Efficiency: weak, tokens/s per rank against 1 rank's; strong, the speed-up
# over 1 rank divided by R.
awk -v seq="$SEQ" '
  { tps = $3 * seq / $5
    if ($2 == 1) base[$1] = tps
    rows[NR] = $0; t[NR] = tps }
  END {
    print "| scaling | ranks | global batch | overlap | step s | waiting on gradients | tokens/s | efficiency |"
    print "|---|---|---|---|---|---|---|---|"
    for (i = 1; i <= NR; ++i) {
      split(rows[i], f, " ")
      eff = f[1] == "weak" ? t[i] / f[2] / base[f[1]] : t[i] / base[f[1]] / f[2]
      printf "| %s | %d | %d | %s | %.3f | %.0f %% | %.0f | %.1f %% |\n", f[1], f[2], f[3], f[2] == 1 ? "-" : f[4], f[5], 100 * f[6] / f[5], t[i], 100 * eff
    }
  }' "$OUT/raw.txt" | tee "$OUT/results.md"
