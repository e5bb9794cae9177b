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
# Both compute in SCHED_RR (memoe under chrt -r 1; decode_speed.mjs moves its
# threads but node's main thread there; LLAMA_SCHED=normal keeps it out): on
# these 2-vCPU VMs the ordinary class often starts ggml's per-graph helper
# thread on its creator's vCPU, and llama.cpp's two-thread decode collapsed
# (10-50x slower than on one thread; see decode_speed.mjs). A row where either
# side is more than 10 % slower on more threads than on the first count in
# THREADS prints no ratio (the harness is broken there, not a result) and the
# script exits 1 at the end.
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
# memoe in the same scheduling class as llama.cpp (nothing where chrt -r is not allowed).
SCHED=(chrt -r 1)
"${SCHED[@]}" true 2>/dev/null || { SCHED=(); echo "warning: chrt -r 1 not allowed; two-thread rows may be broken" >&2; }
first_threads=${THREADS%% *}
declare -A base
broken=0
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
      OMP_NUM_THREADS=$threads "${SCHED[@]}" "$MEMOE" generate --model "$OUT/$name" --ids "$ids" --greedy --max-tokens "$TOKENS" \
        --precision "$precision" --json 2>/dev/null >>"$OUT/$name-$precision.memoe"
      node tests/gguf/decode_speed.mjs --gguf "$OUT/$name-$dtype.gguf" --prompt "$ids" --tokens "$TOKENS" \
        --threads "$threads" --sched "${LLAMA_SCHED:-rr}" >>"$OUT/$name-$precision.llama"
    done
    mp=$(field prefill_tokens_per_s <"$OUT/$name-$precision.memoe" | median)
    md=$(field decode_tokens_per_s <"$OUT/$name-$precision.memoe" | median)
    lp=$(field prefill_tokens_per_s <"$OUT/$name-$precision.llama" | median)
    ld=$(field decode_tokens_per_s <"$OUT/$name-$precision.llama" | median)
    # A side slower on more threads than on first_threads (10 % for noise) is broken in this run.
    [ "$threads" = "$first_threads" ] && base[$name-$precision]="$md $ld"
    read -r md0 ld0 <<<"${base[$name-$precision]}"
    bad=$(awk -v md="$md" -v ld="$ld" -v md0="$md0" -v ld0="$ld0" 'BEGIN {
      if (md < 0.9 * md0) printf "memoe"; if (ld < 0.9 * ld0) printf "%sllama.cpp", (md < 0.9 * md0) ? ", " : "" }')
    [ -z "$bad" ] || { broken=1; echo "broken: $name $precision: $bad decodes slower on $threads threads than on $first_threads" >&2; }
    awk -v n="$name" -v w="$weights" -v t="$threads" -v p="$precision" -v mp="$mp" -v lp="$lp" -v md="$md" -v ld="$ld" -v bad="$bad" 'BEGIN {
      r = bad == "" ? sprintf("%.2f", md / ld) : "— (" bad " slower than on fewer threads)"
      printf "| %s | %s | %d | %s | %.0f | %.0f | %.2f | %.0f | %.0f | %s |\n", n, w, t, p, mp, lp, mp / lp, md, ld, r }' \
      | tee -a "$OUT/results.md"
  done
  done
done
exit $broken
