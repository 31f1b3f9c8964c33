#!/usr/bin/env bash
# Runs the bundled models on labelled cases they were trained or chosen on (brain-structures-t1
# on ICBM152, which chose it; brain-tumor-flair-t1c on BRATS 2013 patients 3 and 4, two of its
# training patients), with the whole tumour as the "all structures" row: a check that a model
# file and the pipeline still give what the model card records, NOT an accuracy estimate (the
# cards' expected accuracy comes from scripts/crossvalidate.py). One ComboSegEvaluate table per case.
# Usage: evaluate_bundled_models.sh <build dir> <output dir> [structures model] [tumour model]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$1; out=$2
structures=${3:-$here/../Resources/Models/brain-structures-t1.safetensors}
tumour=${4:-$here/../Resources/Models/brain-tumor-flair-t1c.safetensors}
data=${COMBOSEG_DATA_DIR:-$here/../../shared/data}
bin=$build/cli-modules
mkdir -p "$out"

icbm=$data/brain-structures/icbm152
"$bin/ComboSegSegment" --modelFile "$structures" \
  "$icbm/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz" "$out/icbm152.nrrd" > "$out/icbm152.log"
"$bin/ComboSegEvaluate" --names "$structures" --outputTable "$out/icbm152.tsv" \
  "$icbm/mni_icbm152_t1_tal_nlin_sym_09a_labels.nii.gz" "$out/icbm152.nrrd" >> "$out/icbm152.log"

for p in 3 4; do
  d=$data/brats2013/brats_2013_pat000${p}_1
  "$bin/ComboSegSegment" --modelFile "$tumour" "$d/Flair_subtrMeanDivStd.nii.gz" \
    --inputVolume2 "$d/T1c_subtrMeanDivStd.nii.gz" "$out/brats-pat$p.nrrd" > "$out/brats-pat$p.log"
  "$bin/ComboSegEvaluate" --names "$tumour" --allStructures --outputTable "$out/brats-pat$p.tsv" \
    "$d/OTMultiClass.nii.gz" "$out/brats-pat$p.nrrd" >> "$out/brats-pat$p.log"
done
echo "tables in $out: icbm152.tsv, brats-pat3.tsv, brats-pat4.tsv"
