#!/usr/bin/env bash
# Builds and runs every test: the full Release build with OpenMP, then the engine alone without
# OpenMP, then the engine under AddressSanitizer and UndefinedBehaviorSanitizer, over MPI,
# under ThreadSanitizer (the concurrency suite), and the fuzzers briefly.
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

# Data-parallel training over MPI: the engine with ComboSegMPI; ctest runs the 2-rank tests under
# mpirun --oversubscribe on loopback.
cmake -S . -B build-mpi -DCMAKE_BUILD_TYPE=Release -DCOMBOSEG_USE_MPI=ON \
  -DCOMBOSEG_BUILD_ITK=OFF -DCOMBOSEG_BUILD_BENCHMARK=OFF
cmake --build build-mpi -j"$jobs"
OMP_NUM_THREADS=1 ctest --test-dir build-mpi --output-on-failure -j"$jobs"

# ThreadSanitizer over the threaded tests. GCC's libgomp is not TSan-instrumented (its barriers
# show as false races), so this build uses clang with LLVM's libomp and Archer, the OpenMP tool
# that tells TSan about OpenMP's synchronisation (libomp-dev ships /usr/lib/llvm-14/lib/libarcher.so);
# libomp itself is not TSan-built, so races inside it are suppressed (Testing/Hardening/tsan.supp).
archer=$(ls /usr/lib/llvm-*/lib/libarcher.so 2>/dev/null | head -n 1 || true)
CC=clang CXX=clang++ cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCOMBOSEG_SANITIZE=thread -DCOMBOSEG_BUILD_ITK=OFF -DCOMBOSEG_BUILD_MODULES=OFF \
  -DCOMBOSEG_BUILD_BENCHMARK=OFF
cmake --build build-tsan -j"$jobs" --target test_concurrency
for t in Hardening/test_concurrency; do
  OMP_TOOL_LIBRARIES="$archer" \
    TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/Testing/Hardening/tsan.supp \
    "build-tsan/Testing/$t"
done

# Fuzzing, briefly: each libFuzzer target for COMBOSEG_FUZZ_SECONDS (clang, ASan and UBSan).
# Longer runs by hand: Testing/Fuzz/run_fuzz.sh build-fuzz <seconds>.
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOMBOSEG_FUZZ=ON \
  -DCOMBOSEG_SANITIZE=address,undefined -DCOMBOSEG_BUILD_MODULES=OFF -DCOMBOSEG_BUILD_BENCHMARK=OFF \
  -DCOMBOSEG_FUZZ_SECONDS="${COMBOSEG_FUZZ_SECONDS:-30}"
cmake --build build-fuzz -j"$jobs" --target cs_fuzz_all
ctest --test-dir build-fuzz --output-on-failure -L fuzz -j"$jobs"
