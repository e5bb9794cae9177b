#!/usr/bin/env bash
# memoe against llama.cpp (node-llama-cpp's prebuilt CPU build) on the same
# weights, side by side in one run: a model initialised from CONFIG with
# Engram off, exported with `memoe export gguf` in f32 and bf16; for each
# precision, memoe (`memoe generate --ids … --greedy --json`, fp32 or bf16
# products) and llama.cpp (tests/gguf/decode_speed.mjs, f32 or bf16
# weights) alternate ROUNDS times, each prefilling the same PROMPT ids and
# decoding TOKENS tokens on each of THREADS thread counts, both with an fp32
# KV cache. The weights column is the f32 file's size.
# Prints the medians and memoe / llama.cpp.
#   CONFIGS="configs/small.json configs/moe-medium.json" PROMPT=128 TOKENS=64 THREADS="1 2" ROUNDS=3
#   TOKENIZER=runs/demo/tokenizer OUT=runs/bench-llama-cpp bash bench/llama_cpp.sh
set -euo pipefail
MEMOE=${MEMOE:-build/memoe}
CONFIGS=${CONFIGS:-configs/small.json configs/moe-medium.json}
PROMPT=${PROMPT:-128}
TOKENS=${TOKENS:-64}
THREADS=${THREADS:-1 2}
ROUNDS=${ROUNDS:-3}
TOKENIZER=${TOKENIZER:-runs/demo/tokenizer}
OUT=${OUT:-runs/bench-llama-cpp}
[ -f "$TOKENIZER/tokenizer.model" ] || { echo "no $TOKENIZER/tokenizer.model: bash scripts/brown-data.sh" >&2; exit 1; }
rm -rf "$OUT" && mkdir -p "$OUT"
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { grep -o "\"$1\":[0-9.e+-]*" | cut -d: -f2; }
ids=$(awk -v n="$PROMPT" 'BEGIN { for (i = 0; i < n; i++) printf "%s%d", i ? "," : "", 300 + (i * 37) % 7000 }')

echo "| model | weights | threads | precision | memoe prefill tok/s | llama.cpp prefill tok/s | memoe / llama.cpp | memoe decode tok/s | llama.cpp decode tok/s | memoe / llama.cpp |" | tee "$OUT/results.md"
echo "|---|---|---|---|---|---|---|---|---|---|" | tee -a "$OUT/results.md"
for config in $CONFIGS; do
  name=$(basename "$config" .json)
  node -e 'const fs = require("fs"); const c = JSON.parse(fs.readFileSync(process.argv[1])); c.engram = null;
    fs.writeFileSync(process.argv[2], JSON.stringify(c, null, 1))' "$config" "$OUT/$name.json"
  "$MEMOE" init "$OUT/$name.json" --out "$OUT/$name" --seed 1 >/dev/null
  cp "$TOKENIZER/tokenizer.model" "$OUT/$name/"
  "$MEMOE" export gguf --model "$OUT/$name" --out "$OUT/$name-f32.gguf" --dtype f32 >/dev/null
  "$MEMOE" export gguf --model "$OUT/$name" --out "$OUT/$name-bf16.gguf" --dtype bf16 >/dev/null
  weights="$(( $(stat -c %s "$OUT/$name-f32.gguf") / 1000000 )) MB"
  for threads in $THREADS; do
  for precision in fp32 bf16; do
    dtype=$([ "$precision" = fp32 ] && echo f32 || echo bf16)
    : >"$OUT/$name-$precision.memoe"
    : >"$OUT/$name-$precision.llama"
    for ((r = 0; r < ROUNDS; r++)); do
      OMP_NUM_THREADS=$threads "$MEMOE" generate --model "$OUT/$name" --ids "$ids" --greedy --max-tokens "$TOKENS" \
        --precision "$precision" --json 2>/dev/null >>"$OUT/$name-$precision.memoe"
      node tests/gguf/decode_speed.mjs --gguf "$OUT/$name-$dtype.gguf" --prompt "$ids" --tokens "$TOKENS" \
        --threads "$threads" >>"$OUT/$name-$precision.llama"
    done
    mp=$(field prefill_tokens_per_s <"$OUT/$name-$precision.memoe" | median)
    md=$(field decode_tokens_per_s <"$OUT/$name-$precision.memoe" | median)
    lp=$(field prefill_tokens_per_s <"$OUT/$name-$precision.llama" | median)
    ld=$(field decode_tokens_per_s <"$OUT/$name-$precision.llama" | median)
    awk -v n="$name" -v w="$weights" -v t="$threads" -v p="$precision" -v mp="$mp" -v lp="$lp" -v md="$md" -v ld="$ld" 'BEGIN {
      printf "| %s | %s | %d | %s | %.0f | %.0f | %.2f | %.0f | %.0f | %.2f |\n", n, w, t, p, mp, lp, mp / lp, md, ld, md / ld }' \
      | tee -a "$OUT/results.md"
  done
  done
done
