#!/usr/bin/env bash
# llama.cpp against memoe: trains small MoE-only models (one per config
# below, a few seconds each on a synthetic corpus they learn to continue
# without doubt, so greedy decoding meets no near-ties), exports
# each to GGUF in every dtype, and runs check_llama_cpp.mjs on each file.
# Configs cover MLA with and without q-LoRA, YaRN, group-limited routing,
# softmax and sigmoid routing, tied and untied embeddings. Tolerances on
# the log-probabilities of memoe's likely tokens (and the near-tie width of
# the greedy check), per dtype, against what was seen here (2026-12-04):
#   f32   1e-4  (seen 1.3e-5: the same products in another order)
#   f16   0.02  (seen 4.6e-3: weights rounded to 11 bits)
#   bf16  0.35  against memoe's own bf16 products (seen 0.02-0.03, and 0.29
#               at one position of the softmax-routed model, where llama.cpp's
#               rounding picks another expert: routing is discrete)
#   q8_0  0.35  against memoe in fp32 (seen 0.05-0.08, and the same 0.28;
#               llama.cpp also rounds the activations to 8 bits)
#   bash tests/gguf/run_checks.sh MEMOE_BIN [WORK_DIR]
set -euo pipefail
MEMOE=$(realpath "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${2:-$(mktemp -d)}
rm -rf "$WORK" && mkdir -p "$WORK"  # every run trains and exports afresh
[ -d "$HERE/node_modules/node-llama-cpp" ] || { echo "node-llama-cpp is not installed: bash scripts/install-npm-packages.sh" >&2; exit 1; }

source "$HERE/../synthetic_corpus.sh"
write_corpus "$WORK/corpus.txt"
"$MEMOE" tokenizer train --input "$WORK/corpus.txt" --vocab 320 --out "$WORK/tok" >/dev/null
"$MEMOE" prepare --input "$WORK/corpus.txt" --tokenizer "$WORK/tok" --out "$WORK/data" >/dev/null

base='"vocab_size": 320, "hidden_size": 64, "num_hidden_layers": 3, "intermediate_size": 128,
  "first_k_dense_replace": 1, "moe_intermediate_size": 32, "n_routed_experts": 8, "num_experts_per_tok": 2,
  "n_shared_experts": 1, "attention": "mla", "num_attention_heads": 2, "kv_lora_rank": 32,
  "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 32, "rope_theta": 10000.0,
  "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "hc_mult": 1, "engram": null, "routed_scaling_factor": 2.5'
yarn='{"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128, "beta_fast": 32, "beta_slow": 1,
  "mscale_all_dim": 1.0}'
declare -A configs=(
  [qlora-sigmoid-groups]="{$base, \"q_lora_rank\": 32, \"scoring_func\": \"sigmoid\", \"norm_topk_prob\": true,
    \"n_group\": 4, \"topk_group\": 2, \"tie_word_embeddings\": false, \"rope_scaling\": null}"
  [direct-q-softmax-tied-yarn]="{$base, \"q_lora_rank\": 0, \"scoring_func\": \"softmax\", \"norm_topk_prob\": false,
    \"n_group\": 1, \"topk_group\": 1, \"tie_word_embeddings\": true, \"rope_scaling\": $yarn}"
  [qlora-sigmoid-tied-yarn-groups]="{$base, \"q_lora_rank\": 32, \"scoring_func\": \"sigmoid\", \"norm_topk_prob\": true,
    \"n_group\": 2, \"topk_group\": 1, \"tie_word_embeddings\": true, \"rope_scaling\": $yarn}"
)
declare -A tolerance=([f32]=1e-4 [f16]=0.02 [bf16]=0.35 [q8_0]=0.35)
# memoe's precision to compare with: bf16 products round weights and
# activations to bf16 as llama.cpp's bf16 products do.
declare -A precision=([f32]=fp32 [bf16]=bf16 [f16]=fp32 [q8_0]=fp32)
# And, at the loose tolerances, the other precision too: at a near-tie of a
# router the two memoe precisions may route differently, llama.cpp with
# either (check_llama_cpp.mjs --also-precision).
declare -A also=([f32]="" [f16]="" [bf16]="--also-precision fp32" [q8_0]="--also-precision bf16")
prompt=$("$MEMOE" tokenizer encode --tokenizer "$WORK/tok" --text "$(sed -n 2p "$WORK/corpus.txt")
")
status=0
for name in "${!configs[@]}"; do
  echo "${configs[$name]}" >"$WORK/$name.json"
  run="$WORK/run-$name"
  "$MEMOE" train --config "$WORK/$name.json" --data "$WORK/data" --tokenizer "$WORK/tok" --out "$run" \
    --steps 150 --batch 8 --seq 64 --lr 1e-2 --warmup 10 --eval-every 0 --eval-windows 4 --precision fp32 \
    --log-every 1000 >"$run.log" 2>&1 || { cat "$run.log"; exit 1; }
  for dtype in f32 f16 bf16 q8_0; do
    gguf="$WORK/$name-$dtype.gguf"
    "$MEMOE" export gguf --model "$run/checkpoints/latest" --out "$gguf" --dtype "$dtype" >/dev/null
    node "$HERE/check_llama_cpp.mjs" --memoe "$MEMOE" --model "$run/checkpoints/latest" --gguf "$gguf" \
      --prompt "$prompt" --steps 32 --tol "${tolerance[$dtype]}" --precision "${precision[$dtype]}" ${also[$dtype]} \
      --text "the cat slowly sees the dog." --text "every bird never carries a stone" \
      --text "Unseen: zebra 42, ÷ ünïcödé!" --text "two  spaces and a
newline" || status=1
  done
done
exit $status
