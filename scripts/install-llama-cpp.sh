#!/usr/bin/env bash
# Installs node-llama-cpp (llama.cpp's prebuilt CPU build for linux-x64 and
# its Node bindings) from the npm registry into tests/gguf/node_modules,
# the outside implementation tests/gguf checks memoe's GGUF exports
# against. Only linux-x64's binaries: the other platforms' optional
# packages are left out, and no install script builds or downloads
# anything else.
set -euo pipefail
cd "$(dirname "$0")/../tests/gguf"
if [ -d node_modules/node-llama-cpp ] && [ -d node_modules/@node-llama-cpp/linux-x64 ]; then exit 0; fi
# No lock file: the one npm writes here lacks some platforms' optional packages, which
# npm ci insists on; both packages are pinned exactly in package.json.
NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --no-package-lock --no-audit --no-fund --omit=optional --ignore-scripts >/dev/null
echo "node-llama-cpp installed"
