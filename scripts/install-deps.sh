#!/usr/bin/env bash
# Installs every Debian 12 package memoe needs to build, test and benchmark.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  build-essential cmake \
  libopenblas-openmp-dev libomp-dev \
  nlohmann-json3-dev libcli11-dev \
  libsentencepiece-dev libutf8proc-dev libpng-dev \
  libgtest-dev libbenchmark-dev \
  python3-torch python3-numpy >/dev/null
echo "dependencies installed"
