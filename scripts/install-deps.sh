#!/usr/bin/env bash
# Installs the Debian 12 packages memoe needs to build, test and run the
# demo. With --reference it adds PyTorch and numpy for the reference model
# and the benchmark (the engine itself never needs Python).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
packages=(build-essential cmake pkg-config
  libopenblas-openmp-dev libomp-dev
  nlohmann-json3-dev libcli11-dev
  libsentencepiece-dev libutf8proc-dev libpng-dev
  libplplot-dev plplot-driver-cairo fonts-dejavu-core
  libgtest-dev libbenchmark-dev)
# Node.js + npm deliver the demo corpus; keep a Node.js that is already there.
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
[ "${1:-}" = "--reference" ] && packages+=(python3-torch python3-numpy python3-matplotlib)
# --list prints the packages (for CI, which installs them itself first).
if [ "${1:-}" = "--list" ]; then echo "${packages[@]}"; exit 0; fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
echo "dependencies installed"
