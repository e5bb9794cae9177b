#!/usr/bin/env bash
# Installs the Debian 12 packages memoe needs to build, test and run the
# demo. With --reference it adds PyTorch and numpy for the reference model
# and the benchmark (the engine itself never needs Python); with --fuzz,
# clang 14 and libFuzzer for scripts/fuzz.sh.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
packages=(build-essential cmake pkg-config
  libopenblas-openmp-dev libomp-dev libdnnl-dev
  nlohmann-json3-dev libcli11-dev
  libsentencepiece-dev libutf8proc-dev libpng-dev libcpp-httplib-dev
  libplplot-dev plplot-driver-cairo fonts-dejavu-core
  libgtest-dev libbenchmark-dev
  libopenmpi-dev openmpi-bin
  chromium)  # headless, for the chat page's test
# Node.js + npm deliver the demo corpus; keep a Node.js that is already there.
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
fuzz_packages=(clang-14 libclang-rt-14-dev libfuzzer-14-dev)
list=0
for arg in "$@"; do
  case "$arg" in
    --reference) packages+=(python3-torch python3-numpy python3-matplotlib) ;;
    --fuzz) packages+=("${fuzz_packages[@]}") ;;
    --list) list=1 ;;
    *) echo "usage: $0 [--reference] [--fuzz] [--list]" >&2; exit 2 ;;
  esac
done
# --list prints the packages for CI, which installs them itself first; CI
# also runs the fuzz smoke test, so the list always has the fuzz packages.
if [ "$list" = 1 ]; then echo "${packages[@]}" "${fuzz_packages[@]}"; exit 0; fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
# The npm packages the GGUF and server tests run against (npm registry).
bash "$(dirname "$0")/install-npm-packages.sh"
echo "dependencies installed"
