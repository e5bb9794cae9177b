#!/usr/bin/env bash
# Expert parallelism on this machine: `memoe train` on R MPI ranks of one
# thread each, the routed experts split over EP groups of E ranks (E = 1 is
# plain data parallel), the same global batch on every layout. For each run,
# over the steps after the first two (metrics.jsonl): the median step time,
# tokens/s, rank 0's share of the step spent in the token all-to-alls
# (expert_exchange_s, waits for peers included), in the expert-gradient
# chain (expert_chain_s) and waiting on the other gradients (comm_wait_s);
# and rank 0's bytes sent to other ranks in the all-to-alls a step against
# `memoe plan --json`'s expert-parallel volume for the same layout (the
# planner counts bf16 activations, training here is fp32: the planned
# figure is doubled). Ranks beyond the cores share them (--oversubscribe):
# read times as what the layout costs here, not as scaling.
#   MEMOE=build/memoe CONFIG=configs/small.json DATA=runs/demo/data STEPS=10 SEQ=256
#   BATCH=8 LAYOUTS="4:1 4:2 4:4 2:1 2:2" OUT=runs/bench-ep
set -euo pipefail
source "$(dirname "$0")/run_metrics.sh"
BATCH=${BATCH:-8}
LAYOUTS=${LAYOUTS:-4:1 4:2 4:4 2:1 2:2}
OUT=${OUT:-runs/bench-ep}
rm -rf "$OUT"
mkdir -p "$OUT"


echo "| ranks | --ep | step s | tokens/s | all-to-all | expert-gradient chain | other gradients | sent in all-to-alls a step (rank 0) | planned (fp32) | measured / planned |" | tee "$OUT/results.md"
echo "|---|---|---|---|---|---|---|---|---|---|" | tee -a "$OUT/results.md"
for layout in $LAYOUTS; do
  ranks=${layout%%:*} ep=${layout##*:} dir="$OUT/r$ranks-ep$ep"
  mpirun --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 -n "$ranks" \
    "$MEMOE" train --config "$CONFIG" --data "$DATA" --out "$dir" --steps "$STEPS" --seq "$SEQ" --batch "$BATCH" \
    --dp "$ranks" --ep "$ep" --precision fp32 --eval-every 0 --eval-windows "$ranks" --checkpoint-every 100000 \
    --log-every 100000 >"$dir.log" 2>&1
  m="$dir/metrics.jsonl"
  step=$(metric "$m" step_s | median)
  a2a=$(metric "$m" expert_exchange_s | median)
  chain=$(metric "$m" expert_chain_s | median)
  wait=$(metric "$m" comm_wait_s | median)
  sent=$(metric "$m" expert_sent_bytes | median)
  planned=$("$MEMOE" plan "$CONFIG" --devices "$ranks" --layout "dp$ranks,pp1,ep$ep" --global-batch "$BATCH" \
            --micro-batch $((BATCH / ranks)) --seq "$SEQ" --json | grep -o '"expert_parallel":[0-9.e+-]*' | cut -d: -f2)
  awk -v r="$ranks" -v e="$ep" -v step="$step" -v a="$a2a" -v c="$chain" -v w="$wait" -v sent="$sent" \
      -v planned="$planned" -v tokens=$((BATCH * SEQ)) 'BEGIN {
    p = 2 * planned
    ratio = "-"
    if (p > 0) ratio = sprintf("%.3f", sent / p)
    printf "| %d | %d | %.3f | %.0f | %.1f %% | %.1f %% | %.1f %% | %.2f MB | %.2f MB | %s |\n", r, e, step, tokens / step,
           100 * a / step, 100 * c / step, 100 * w / step, sent / 1e6, p / 1e6, ratio }' \
    | tee -a "$OUT/results.md"
done
