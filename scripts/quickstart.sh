#!/usr/bin/env bash
# Sets up, builds and runs ComboSeg's main job on a fresh Debian 12 (as root): installs what is
# missing, builds ComboSegSegment in Release, and segments the Colin27 T1 brain (ch2, from
# Debian's mricron-data) with the bundled default model, brain-structures-t1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > build-configure.log
cmake --build build -j"$(nproc)" --target ComboSegSegment > build-segment.log

out=${1:-out}
mkdir -p "$out"
start=$(date +%s.%N)
build/cli-modules/ComboSegSegment --returnparameterfile "$out/ch2.params" \
  --model brain-structures-t1 --outputColorTable "$out/ch2-labels.ctbl" \
  --previewImage "$out/ch2-preview.png" \
  /usr/share/mricron/templates/ch2.nii.gz "$out/ch2-labels.nrrd" > "$out/ch2-progress.log"
end=$(date +%s.%N)
echo "Segmented /usr/share/mricron/templates/ch2.nii.gz with brain-structures-t1 in $(echo "$end - $start" | bc) s"
echo "  label map (with segment names and colours): $out/ch2-labels.nrrd"
echo "  colour table:                               $out/ch2-labels.ctbl"
echo "  preview:                                    $out/ch2-preview.png"
echo "  structure volumes and timings:              $out/ch2.params"
