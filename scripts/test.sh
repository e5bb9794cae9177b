#!/usr/bin/env bash
# Installs the dependencies, builds memoe twice (Release, and ASan+UBSan) and
# runs the whole test suite in both builds, then the fuzz smoke test (where
# clang-14 and libFuzzer are installed, as in CI, the sanitized build is the
# fuzz build). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
jobs=${JOBS:-2}

echo "== Release build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure -j"$jobs")

# The sanitized tests: where clang-14 and libFuzzer are installed (as in CI)
# they run in the fuzz build (clang, ASan + UBSan, build-fuzz), which the
# fuzz smoke test then reuses: one sanitized build instead of two. Elsewhere
# in a GCC ASan + UBSan build.
sanitized_tests() {  # build dir
  (cd "$1" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j"$jobs")
}
fuzzer_lib=$(ls /usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a 2>/dev/null | head -1 || true)
if command -v clang++-14 >/dev/null 2>&1 && [ -n "$fuzzer_lib" ]; then
  echo "== ASan + UBSan build (clang-14, shared with the fuzz targets)"
  CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Release -DMEMOE_FUZZ=ON >/dev/null
  cmake --build build-fuzz -j"$jobs" --target memoe memoe_tests
  sanitized_tests build-fuzz
  echo "== fuzz smoke test"
  JOBS=$jobs bash scripts/fuzz.sh --smoke
else
  echo "== ASan + UBSan build (GCC)"
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Release -DMEMOE_SANITIZE=ON >/dev/null
  cmake --build build-asan -j"$jobs" --target memoe memoe_tests
  sanitized_tests build-asan
  echo "== fuzz smoke test skipped: clang-14 / libFuzzer not installed (bash scripts/install-deps.sh --fuzz)"
fi
