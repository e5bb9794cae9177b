#!/usr/bin/env bash
# Pipeline parallelism on this machine: `memoe train --pp P` on P MPI ranks
# of one thread each (dp 1), micro-batches of MICRO sequences, for several
# micro-batch counts m (--grad-accum). For each run, over the steps after
# the first two (metrics.jsonl): the median step time, tokens/s, each
# stage's idle share of the pipeline's span (pipeline_idle: 1 - its busy
# time / the longest stage's schedule) and their mean, against the 1F1B
# bubble (p - 1) / (m + p - 1) of equal stages; the schedule's share of the
# step (the rest: norm, optimizer, weight sync); rank 0's bytes sent a step
# against `memoe plan --json`'s pipeline volume for the layout (the planner
# counts bf16 activations, training here is fp32: the planned figure is
# doubled). A data-parallel run over as many ranks with the same global
# batch is the comparison for tokens/s. More ranks than cores share them
# (--oversubscribe): a waiting rank then takes a core from a busy one, so
# read P above the core count as what the layout costs here.
#   MEMOE=build/memoe CONFIG=configs/small.json DATA=runs/demo/data STEPS=10 SEQ=256
#   MICRO=2 STAGES="2" COUNTS="1 2 4 8" BALANCE=measured OUT=runs/bench-pp
set -euo pipefail
source "$(dirname "$0")/run_metrics.sh"
MICRO=${MICRO:-2}
STAGES=${STAGES:-2}
COUNTS=${COUNTS:-1 2 4 8}
BALANCE=${BALANCE:-measured}
OUT=${OUT:-runs/bench-pp}
rm -rf "$OUT"
mkdir -p "$OUT"

train() {  # train DIR RANKS ARGS...
  local dir=$1 ranks=$2
  shift 2
  mpirun --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 -n "$ranks" \
    "$MEMOE" train --config "$CONFIG" --data "$DATA" --out "$dir" --steps "$STEPS" --seq "$SEQ" --precision fp32 \
    --eval-every 0 --eval-windows "$ranks" --checkpoint-every 100000 --log-every 100000 "$@" >"$dir.log" 2>&1
}

# The median over steps of element I of a JSON array metric.
array_metric() { { grep -o "\"$2\":\[[^]]*\]" "$1" || true; } | sed 's/.*\[//; s/\]//' | cut -d, -f$(($3 + 1)) | tail -n +3; }

echo "| stages | m | split | step s | tokens/s | data parallel tokens/s | idle per stage | mean idle | (p-1)/(m+p-1) | schedule / step | sent a step (rank 0) | planned (fp32) |" | tee "$OUT/results.md"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|" | tee -a "$OUT/results.md"
for p in $STAGES; do
  for m in $COUNTS; do
    dir="$OUT/pp$p-m$m"
    train "$dir" "$p" --pp "$p" --pp-balance "$BALANCE" --batch "$MICRO" --grad-accum "$m"
    # The same global batch, data parallel: each rank MICRO / p sequences a micro-batch when that divides,
    # else one micro-batch of all the step's sequences split over the ranks.
    if (( MICRO % p == 0 )); then dpargs=(--batch "$MICRO" --grad-accum "$m"); else dpargs=(--batch $((MICRO * m)) --grad-accum 1); fi
    if (( (MICRO * m) % p == 0 )); then
      train "$dir-dp" "$p" --dp "$p" "${dpargs[@]}"
      dp_step=$(metric "$dir-dp/metrics.jsonl" step_s | median)
    else
      dp_step=0
    fi
    mfile="$dir/metrics.jsonl"
    step=$(metric "$mfile" step_s | median)
    span=$(metric "$mfile" pipeline_span_s | median)
    sent=$(metric "$mfile" pipeline_sent_bytes | median)
    idle=""
    for ((s = 0; s < p; s++)); do idle+="$(array_metric "$mfile" pipeline_idle "$s" | median) "; done
    split=$(grep -o "stages of layers [^(]*" "$dir.log" | sed 's/stages of layers //; s/ *$//')
    planned=$("$MEMOE" plan "$CONFIG" --devices "$p" --layout "dp1,pp$p,ep1" --global-batch $((MICRO * m)) \
              --micro-batch "$MICRO" --seq "$SEQ" --json | grep -o '"pipeline":[0-9.e+-]*' | cut -d: -f2)
    awk -v p="$p" -v m="$m" -v cuts="$split" -v step="$step" -v dps="$dp_step" -v idle="$idle" -v span="$span" \
        -v sent="$sent" -v planned="$planned" -v tokens=$((MICRO * m * SEQ)) 'BEGIN {
      n = split(idle, x, " ")
      sum = 0
      list = ""
      for (i = 1; i <= n; i++) { sum += x[i]; list = list sprintf("%s%.1f %%", i > 1 ? ", " : "", 100 * x[i]) }
      dp = dps > 0 ? sprintf("%.0f", tokens / dps) : "-"
      printf "| %d | %d | %s | %.3f | %.0f | %s | %s | %.1f %% | %.1f %% | %.1f %% | %.2f MB | %.2f MB |\n", p, m, cuts,
             step, tokens / step, dp, list, 100 * sum / n, 100 * (p - 1) / (m + p - 1), 100 * span / step, sent / 1e6,
             2 * planned / 1e6 }' | tee -a "$OUT/results.md"
  done
done
