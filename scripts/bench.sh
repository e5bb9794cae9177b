#!/usr/bin/env bash
# The training-step benchmark: the engine against the PyTorch reference on
# the same batch, 2 threads each (see bench/train_step_bench.cc).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --reference
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"${JOBS:-2}" --target memoe_bench
./build/memoe_bench --config configs/small.json --batch 16 --seq 256 --steps 3 --threads 2 --rounds 3 "$@"
