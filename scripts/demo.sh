#!/usr/bin/env bash
# The main job: installs what is needed, builds memoe, sizes every preset,
# initialises the small preset, computes logits with it, and runs the
# training-step benchmark against the PyTorch reference.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"${JOBS:-2}" --target memoe memoe_bench

for preset in small v4-lite-200b v4-1t; do
  echo "== memoe params configs/$preset.json"
  ./build/memoe params "configs/$preset.json" --seq 4096
done
mkdir -p runs
echo "== memoe init configs/small.json --out runs/small-init --seed 0"
./build/memoe init configs/small.json --out runs/small-init --seed 0
./build/memoe logits --model runs/small-init --ids '1,2,3,4;5,6,7,8' --out runs/small-init/logits.npy
echo "wrote runs/small-init/logits.npy"
echo "== training-step benchmark (engine vs PyTorch reference, 2 threads each)"
./build/memoe_bench --config configs/small.json --batch 8 --seq 256 --steps 5 --threads 2
