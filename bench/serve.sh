#!/usr/bin/env bash
# Serving on this machine: `memoe serve` on CONFIG's random weights (with
# TOKENIZER's pieces; the speed does not depend on the weights) and C
# concurrent streaming clients for SECONDS each (tests/serve/load_bench.mjs:
# greedy, TOKENS tokens a request with ignore_eos, one request after another),
# for each C in CLIENTS: aggregate decode tokens/s, time to first token and
# inter-token latency (p50 / p99); against single-stream `memoe generate`
# on the same model and prompt (decode tokens/s, median of 3).
#   CONFIG=configs/small.json TOKENIZER=runs/demo/tokenizer CLIENTS="1 4 16 64" SECONDS=15 TOKENS=64
#   THREADS=2 PRECISION=auto OUT=runs/bench-serve bash bench/serve.sh
set -euo pipefail
MEMOE=${MEMOE:-build/memoe}
CONFIG=${CONFIG:-configs/small.json}
TOKENIZER=${TOKENIZER:-runs/demo/tokenizer}
CLIENTS=${CLIENTS:-1 4 16 64}
SECONDS_EACH=${SECONDS:-15}
TOKENS=${TOKENS:-64}
THREADS=${THREADS:-2}
PRECISION=${PRECISION:-auto}
OUT=${OUT:-runs/bench-serve}
PORT=${PORT:-18777}
[ -f "$TOKENIZER/tokenizer.model" ] || { echo "no $TOKENIZER/tokenizer.model: bash scripts/brown-data.sh" >&2; exit 1; }
rm -rf "$OUT" && mkdir -p "$OUT"
"$MEMOE" init "$CONFIG" --out "$OUT/model" --seed 1 >/dev/null
cp "$TOKENIZER/tokenizer.model" "$OUT/model/"
prompt="The history of the river valley begins with"
single=$(for r in 1 2 3; do
  OMP_NUM_THREADS=$THREADS "$MEMOE" generate --model "$OUT/model" --prompt "$prompt" --greedy --max-tokens "$TOKENS" \
    --precision "$PRECISION" --json 2>/dev/null | grep -o '"decode_tokens_per_s":[0-9.e+-]*' | cut -d: -f2
done | sort -g | sed -n 2p)
OMP_NUM_THREADS=$THREADS "$MEMOE" serve --model "$OUT/model" --port "$PORT" --max-batch 64 --max-queue 64 \
  --precision "$PRECISION" 2>"$OUT/serve.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
until grep -q "listening on" "$OUT/serve.log"; do sleep 0.2; done
echo "| streams | tokens/s (all streams) | × single-stream generate ($(printf %.0f "$single") tok/s) | time to first token p50 / p99 ms | inter-token latency p50 / p99 ms | requests | 429 |" | tee "$OUT/results.md"
echo "|---|---|---|---|---|---|---|" | tee -a "$OUT/results.md"
for c in $CLIENTS; do
  node tests/serve/load_bench.mjs --base "http://127.0.0.1:$PORT" --clients "$c" --seconds "$SECONDS_EACH" \
    --tokens "$TOKENS" --prompt "$prompt" >"$OUT/c$c.json"
  node -e 'const j = JSON.parse(require("fs").readFileSync(process.argv[1])); const s = Number(process.argv[2]);
    console.log(`| ${j.clients} | ${j.tokens_per_s.toFixed(0)} | ${(j.tokens_per_s / s).toFixed(2)} | ` +
      `${j.ttft_p50_ms.toFixed(1)} / ${j.ttft_p99_ms.toFixed(1)} | ${j.itl_p50_ms.toFixed(1)} / ${j.itl_p99_ms.toFixed(1)} | ` +
      `${j.requests} | ${j.rejected} |`)' "$OUT/c$c.json" "$single" | tee -a "$OUT/results.md"
done
