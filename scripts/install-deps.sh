#!/usr/bin/env bash
# Installs what ComboSeg builds and runs with, from Debian 12's packages (run as root).
set -euo pipefail
packages=(
  build-essential cmake pkg-config
  libinsighttoolkit5-dev libvtk9-dev
  libgtest-dev libbenchmark-dev libcjson-dev libpng-dev libexpat1-dev
  libcairo2-dev fonts-dejavu-core   # the training plot (cairo, and a font for its words)
  mricron-data bc
  openmpi-bin libopenmpi-dev   # data-parallel training over MPI (-DCOMBOSEG_USE_MPI=ON)
  clang libclang-rt-14-dev libomp-dev   # fuzzing (libFuzzer), ThreadSanitizer with libomp + Archer
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
