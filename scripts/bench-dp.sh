#!/usr/bin/env bash
# The data-parallel scaling benchmark (bench/data_parallel.sh) on the Brown
# corpus data of the demo: installs what is needed, builds memoe, prepares
# the data once, then times 1, 2 and 4 ranks; the table lands in
# runs/bench-dp/results.md. Variables: see bench/data_parallel.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"${JOBS:-2}" --target memoe
bash scripts/brown-data.sh
bash bench/data_parallel.sh
