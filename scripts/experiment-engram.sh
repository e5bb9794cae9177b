#!/usr/bin/env bash
# The Engram experiments of docs/experiments/engram-vs-moe.md, resumable:
#   main:  MoE-only (configs/experiments/moe-e32.json) against Engram + MoE
#          (engram-e20.json) at the same total and active parameters, seeds 0 1 2
#   sweep: the share of the sparse parameters given to Engram tables instead
#          of routed experts: 0 (moe-e32), 19, 38, 56 and 75 % (engram-e26,
#          e20, e14, e8), seed 0
#   routing: memoe analyze routing and per-domain losses (memoe eval
#          --labelled) of the main runs on the Brown corpus's 15 genres
#          (docs/experiments/routing.md), into docs/experiments/results/routing;
#          a main run whose checkpoints are gone is trained again (the same
#          command, seed and steps give the same model)
# Each run trains on the Brown corpus with 10 % retrieval documents
# (memoe prepare --retrieval-mix 0.1) for a fixed number of steps (the same
# tokens and schedule for every run, whatever the machine), then records
# its held-out loss and its needle-in-a-haystack scores (memoe niah) in
# docs/experiments/results/NAME.json. A run whose results file exists is
# skipped, so the experiment can be stopped and started again across
# sessions; commit the results as they land.
#   bash scripts/experiment-engram.sh [--scale S] [main|sweep|routing|all]
# --scale S multiplies the training steps (128 at 1: about 5 minutes a run on
# 2 cores in fp32) and the NIAH samples, for a machine that can afford more.
# Checkpoints every quarter of the run are kept for memoe analyze routing.
set -euo pipefail
cd "$(dirname "$0")/.."
scale=1
which=all
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) scale=$2; shift 2 ;;
    main|sweep|routing|all) which=$1; shift ;;
    *) echo "experiment-engram: unknown argument '$1' (expected --scale S, main, sweep, routing or all)" >&2; exit 2 ;;
  esac
done
case "$scale" in ''|*[!0-9]*) echo "experiment-engram: --scale must be a whole number, got '$scale'" >&2; exit 2 ;; esac

bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"${JOBS:-2}" --target memoe
bash scripts/brown-data.sh
work=runs/experiments
results=docs/experiments/results
mkdir -p "$work" "$results"
data=$work/data-retrieval
if [ ! -f "$data/meta.json" ]; then
  ./build/memoe prepare --input data/brown.jsonl --tokenizer runs/demo/tokenizer --out "$data" --val-fraction 0.02 \
    --retrieval-mix 0.1 --retrieval-length 512
fi
steps=$((128 * scale))
samples=$((2 * scale))

train_run() {  # name config seed: trains once; a finished training (its marker holds the seconds it took) is kept
  local name=$1 config=$2 seed=$3 dir="$work/$1"
  if [ -f "$dir/trained" ]; then return; fi
  rm -rf "$dir"
  local t0=$SECONDS
  ./build/memoe train --config "$config" --data "$data" --tokenizer runs/demo/tokenizer --out "$dir/run" \
    --steps "$steps" --batch 8 --seq 512 --lr 3e-3 --warmup 20 --eval-every 0 --eval-windows 32 \
    --checkpoint-every $((steps / 4)) --keep-last 4 --seed "$seed" --precision fp32 >"$dir.train.log" 2>&1
  tail -n 3 "$dir.train.log"
  echo $((SECONDS - t0)) >"$dir/trained"
}

one_run() {  # name config seed
  local name=$1 config=$2 seed=$3 dir="$work/$1"
  if [ -f "$results/$name.json" ]; then echo "== $name: done ($results/$name.json)"; return; fi
  echo "== $name: $config, seed $seed, $steps steps"
  # An interrupted evaluation does not train again.
  train_run "$name" "$config" "$seed"
  local train_s
  train_s=$(cat "$dir/trained")
  local model="$dir/run/checkpoints/latest"
  local eval
  eval=$(./build/memoe eval --model "$model" --data "$data" --seq 512 --windows 32 --precision fp32)
  eval=${eval%%$'\n'*}  # the model's line, not the unigram's
  ./build/memoe niah --model "$model" --haystack data/brown.jsonl --lengths 256,512,960 --depths 0,25,50,75,100 \
    --samples "$samples" --seed 1 --precision fp32 --out "$dir/niah" 2>"$dir.niah.log"
  tail -n 1 "$dir.niah.log"
  local last
  last=$(tail -n 1 "$dir/run/metrics.jsonl")
  local tmp="$results/.$name.json.tmp"
  {
    printf '{\n  "name": "%s", "config": "%s", "seed": %s, "scale": %s,\n' "$name" "$config" "$seed" "$scale"
    printf '  "date": "%s", "cpu": "%s",\n' "$(date -u +%Y-%m-%dT%H:%MZ)" "$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)"
    printf '  "train_seconds": %s, "last_step": %s,\n' "$train_s" "$last"
    printf '  "eval": "%s",\n' "$eval"
    printf '  "params": %s,\n' "$(./build/memoe params "$config" --json)"
    printf '  "niah": %s\n}\n' "$(cat "$dir/niah/summary.json")"
  } >"$tmp"
  mv "$tmp" "$results/$name.json"
  mkdir -p "$results/$name"
  cp "$dir"/niah/niah_*.png "$dir/run/loss.png" "$results/$name/" 2>/dev/null || true
}

routing() {
  local out=$results/routing labelled=data/brown-labelled.jsonl
  mkdir -p "$out"
  for seed in 0 1 2; do
    train_run "moe-e32-s$seed" configs/experiments/moe-e32.json "$seed"
    train_run "engram-e20-s$seed" configs/experiments/engram-e20.json "$seed"
  done
  for arm in moe-e32 engram-e20; do
    echo "== routing: $arm across seeds"
    ./build/memoe analyze routing --model "$work/$arm"-s{0,1,2}/run/checkpoints/latest --data "$labelled" \
      --precision fp32 --out "$out/$arm-seeds" | tee "$out/$arm-seeds.txt"
    echo "== routing: $arm seed 0 across its checkpoints"
    local ckpt="$work/$arm-s0/run/checkpoints"
    ./build/memoe analyze routing --model "$ckpt/step_$(printf %08d "$steps")" \
      "$ckpt"/step_$(printf %08d $((steps / 4))) "$ckpt"/step_$(printf %08d $((steps / 2))) \
      "$ckpt"/step_$(printf %08d $((3 * steps / 4))) --data "$labelled" --precision fp32 \
      --out "$out/$arm-s0-steps" | tee "$out/$arm-s0-steps.txt"
    for seed in 0 1 2; do
      echo "== per-domain loss: $arm-s$seed"
      ./build/memoe eval --model "$work/$arm-s$seed/run/checkpoints/latest" --labelled "$labelled" --seq 512 \
        --precision fp32 | tee "$out/$arm-s$seed.domains.txt"
      echo "== per-domain loss on the held-out documents: $arm-s$seed"
      ./build/memoe eval --model "$work/$arm-s$seed/run/checkpoints/latest" --labelled "$labelled" --seq 512 \
        --held-out-of "$data" --tokens-per-domain 0 --precision fp32 | tee "$out/$arm-s$seed.held-out.txt"
    done
  done
}

if [ "$which" = main ] || [ "$which" = all ]; then
  for seed in 0 1 2; do
    one_run "moe-e32-s$seed" configs/experiments/moe-e32.json "$seed"
    one_run "engram-e20-s$seed" configs/experiments/engram-e20.json "$seed"
  done
fi
if [ "$which" = sweep ] || [ "$which" = all ]; then
  # Seed 0 of the main runs are the 0 % and 38 % points.
  one_run moe-e32-s0 configs/experiments/moe-e32.json 0
  for e in 26 20 14 8; do one_run "engram-e$e-s0" "configs/experiments/engram-e$e.json" 0; done
fi
if [ "$which" = routing ] || [ "$which" = all ]; then routing; fi
echo "results in $results; docs/experiments/plot.py draws the figures"
