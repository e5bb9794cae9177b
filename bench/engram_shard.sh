#!/usr/bin/env bash
# What sharding the Engram tables costs: `memoe train` on R MPI ranks of one
# thread each, the same global batch with whole tables on every rank and with
# --engram-shard, the two run in turn REPEATS times (so drift on a shared
# machine falls on both). Per run, over the steps after the first two
# (metrics.jsonl): the median step time; then the median over the runs of
# each, the ratio sharded / whole, rank 0's wait for its rows
# (engram_fetch_wait_s) as a share of the step and the bytes it sent a step.
#   MEMOE=build/memoe CONFIG=configs/small.json DATA=runs/demo/data STEPS=10 SEQ=256
#   BATCH=8 RANKS=4 REPEATS=3 EXTRA="" OUT=runs/bench-engram-shard
set -euo pipefail
source "$(dirname "$0")/run_metrics.sh"
BATCH=${BATCH:-8}
RANKS=${RANKS:-4}
REPEATS=${REPEATS:-3}
EXTRA=${EXTRA:-}
OUT=${OUT:-runs/bench-engram-shard}
rm -rf "$OUT"
mkdir -p "$OUT"

run() {  # dir, extra flags
  mpirun --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 -n "$RANKS" \
    "$MEMOE" train --config "$CONFIG" --data "$DATA" --out "$1" --steps "$STEPS" --seq "$SEQ" --batch "$BATCH" \
    --dp "$RANKS" --precision fp32 --eval-every 0 --eval-windows "$RANKS" --checkpoint-every 100000 \
    --log-every 100000 $EXTRA $2 >"$1.log" 2>&1
  metric "$1/metrics.jsonl" step_s | median
}
whole=() sharded=() wait=() sent=()
for i in $(seq "$REPEATS"); do
  whole+=("$(run "$OUT/whole$i" "")")
  sharded+=("$(run "$OUT/shard$i" --engram-shard)")
  wait+=("$(metric "$OUT/shard$i/metrics.jsonl" engram_fetch_wait_s | median)")
  sent+=("$(metric "$OUT/shard$i/metrics.jsonl" engram_sent_bytes | median)")
  echo "run $i: whole ${whole[-1]} s, sharded ${sharded[-1]} s a step"
done
w=$(printf '%s\n' "${whole[@]}" | median)
s=$(printf '%s\n' "${sharded[@]}" | median)
f=$(printf '%s\n' "${wait[@]}" | median)
b=$(printf '%s\n' "${sent[@]}" | median)
echo "| ranks | whole tables, step s | --engram-shard, step s | sharded / whole | row wait (rank 0) | sent a step (rank 0) |" | tee "$OUT/results.md"
echo "|---|---|---|---|---|---|" | tee -a "$OUT/results.md"
awk -v r="$RANKS" -v w="$w" -v s="$s" -v f="$f" -v b="$b" 'BEGIN {
  printf "| %d | %.4f | %.4f | %.4f | %.2f %% | %.2f MB |\n", r, w, s, s / w, 100 * f / s, b / 1e6 }' | tee -a "$OUT/results.md"
