#!/usr/bin/env bash
# The measurements of docs/experiments/engram-cost.md, in one run on an idle
# machine (each comparison side by side, in turn), into
# docs/experiments/results/cost/:
#   train.txt    a training step of MoE alone (moe-e32) against Engram + MoE
#                (engram-e20) at matched parameters, fp32 and bf16, seconds
#                per part and peak RSS (memoe_bench --compare)
#   params.txt   both configs' parameter and memory accounting (memoe params)
#   decode.txt   prefill and decode tokens/s of both, in turn (memoe_decode_bench)
#   tables.txt   decode from tables resident, mapped cold, and read ahead
#                (memoe_tables_bench; writes a 2 GiB model under build/)
#   layer.txt    one Engram layer's cost by N, heads and table size
#                (memoe_engram_bench, Google Benchmark)
#   bash scripts/engram-cost.sh [--rounds R]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    *) echo "engram-cost: unknown argument '$1' (expected --rounds R)" >&2; exit 2 ;;
  esac
done
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"${JOBS:-2}" --target memoe memoe_bench memoe_decode_bench memoe_tables_bench memoe_engram_bench
out=docs/experiments/results/cost
mkdir -p "$out"
moe=configs/experiments/moe-e32.json
engram=configs/experiments/engram-e20.json
machine() { echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) cores"; }

{ machine; for c in "$moe" "$engram"; do echo "== $c"; ./build/memoe params "$c" --seq 512 --batch 8; done; } |
  tee "$out/params.txt"
{ machine; ./build/memoe_bench --config "$moe" --compare "$engram" --batch 8 --seq 512 --steps 3 \
    --rounds "$rounds" --no-reference --precision both; } | tee "$out/train.txt"
{
  machine
  for precision in fp32 bf16; do
    for r in $(seq "$rounds"); do
      for c in "$moe" "$engram"; do
        printf '%s %s round %s: ' "$(basename "$c" .json)" "$precision" "$r"
        ./build/memoe_decode_bench --config "$c" --prompt 512 --tokens 128 --rounds 1 --precision "$precision" |
          grep '^median:'
      done
    done
  done
} | tee "$out/decode.txt"
{ machine; ./build/memoe_tables_bench --rounds 3 --tokens 256; } | tee "$out/tables.txt"
{ machine; ./build/memoe_engram_bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true; } 2>&1 |
  tee "$out/layer.txt"
echo "wrote $out/{params,train,decode,tables,layer}.txt"
