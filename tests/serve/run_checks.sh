#!/usr/bin/env bash
# memoe serve against the official openai client (tests/serve/openai_client.mjs)
# and its chat page in headless Chromium (tests/serve/chat_page.mjs),
# on a small MoE + Engram model trained here for 150 steps (a few seconds) on
# the synthetic corpus, so that greedy decoding meets no near-ties.
#   bash tests/serve/run_checks.sh MEMOE_BIN [WORK_DIR] [PORT]
set -euo pipefail
MEMOE=$(realpath "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${2:-$(mktemp -d)}
PORT=${3:-18080}
rm -rf "$WORK" && mkdir -p "$WORK"
[ -d "$HERE/node_modules/openai" ] || { echo "the openai package is not installed: bash scripts/install-npm-packages.sh" >&2; exit 1; }
source "$HERE/../synthetic_corpus.sh"
write_corpus "$WORK/corpus.txt"
"$MEMOE" tokenizer train --input "$WORK/corpus.txt" --vocab 320 --out "$WORK/tok" >/dev/null
"$MEMOE" prepare --input "$WORK/corpus.txt" --tokenizer "$WORK/tok" --out "$WORK/data" >/dev/null
cat >"$WORK/config.json" <<'JSON'
{"vocab_size": 320, "hidden_size": 64, "num_hidden_layers": 3, "intermediate_size": 128,
 "first_k_dense_replace": 1, "moe_intermediate_size": 32, "n_routed_experts": 8, "num_experts_per_tok": 2,
 "n_shared_experts": 1, "attention": "mla", "num_attention_heads": 2, "q_lora_rank": 32, "kv_lora_rank": 32,
 "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 32, "rope_theta": 10000.0,
 "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "hc_mult": 1, "routed_scaling_factor": 2.5,
 "scoring_func": "sigmoid", "norm_topk_prob": true, "n_group": 1, "topk_group": 1, "tie_word_embeddings": false,
 "rope_scaling": null,
 "engram": {"layer_ids": [1], "max_ngram_size": 3, "table_sizes": [1009, 1013], "n_embed_per_ngram": 32,
            "n_head_per_ngram": 2, "kernel_size": 4, "seed": 0, "pad_id": 0, "table_lr_mult": 5.0}}
JSON
"$MEMOE" train --config "$WORK/config.json" --data "$WORK/data" --tokenizer "$WORK/tok" --out "$WORK/run" \
  --steps 150 --batch 8 --seq 64 --lr 1e-2 --warmup 10 --eval-every 0 --eval-windows 4 --precision fp32 \
  --log-every 1000 >"$WORK/train.log" 2>&1 || { cat "$WORK/train.log"; exit 1; }
node "$HERE/openai_client.mjs" --memoe "$MEMOE" --model "$WORK/run/checkpoints/latest" --port "$PORT"
node "$HERE/chat_page.mjs" --memoe "$MEMOE" --model "$WORK/run/checkpoints/latest" --port $((PORT + 50)) \
  --screenshot "$WORK/chat_page.png"
