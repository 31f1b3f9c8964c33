#!/usr/bin/env bash
# Builds and runs every test: the full Release build with OpenMP, then the engine alone without
# OpenMP, then the engine under AddressSanitizer and UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs"

cmake -S . -B build-noomp -DCMAKE_BUILD_TYPE=Release -DCOMBOSEG_USE_OPENMP=OFF \
  -DCOMBOSEG_BUILD_ITK=OFF -DCOMBOSEG_BUILD_BENCHMARK=OFF
cmake --build build-noomp -j"$jobs"
ctest --test-dir build-noomp --output-on-failure -j"$jobs"

cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOMBOSEG_SANITIZE=address,undefined \
  -DCOMBOSEG_BUILD_ITK=OFF -DCOMBOSEG_BUILD_BENCHMARK=OFF
cmake --build build-asan -j"$jobs"
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
  ctest --test-dir build-asan --output-on-failure -j"$jobs"
