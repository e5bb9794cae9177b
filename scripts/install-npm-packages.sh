#!/usr/bin/env bash
# Installs the npm packages the tests run against, from the npm registry:
# node-llama-cpp (llama.cpp's prebuilt CPU build for linux-x64 and its Node
# bindings) into tests/gguf, the outside implementation the GGUF exports are
# checked in; the official openai client and playwright-core (driving
# Debian's chromium) into tests/serve, which the server is checked with. Only linux-x64's llama.cpp binaries: the other
# platforms' optional packages are left out, and no install script builds
# or downloads anything else. No lock files: the one npm writes here lacks
# some platforms' optional packages, which npm ci then insists on; every
# package is pinned exactly in its package.json.
set -euo pipefail
cd "$(dirname "$0")/../tests"
install() {  # DIR PACKAGE...: npm install there unless the packages are in place
  local dir=$1
  shift
  local missing=0
  for p in "$@"; do [ -d "$dir/node_modules/$p" ] || missing=1; done
  [ "$missing" = 0 ] && return 0
  (cd "$dir" && NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --no-package-lock --no-audit --no-fund \
    --omit=optional --ignore-scripts >/dev/null)
  echo "npm packages installed in tests/$dir"
}
install gguf node-llama-cpp @node-llama-cpp/linux-x64
install serve openai playwright-core
