#!/usr/bin/env bash
# Trains the bundled brain-tumor-flair-t1c model on all four BRATS 2013 patients (FLAIR and contrast
# T1, already z-scored inside the brain) with a fixed schedule and no validation: the recipe whose
# expected accuracy scripts/crossvalidate.py measures (see the model card).
# Usage: train_brain_tumor_flair_t1c.sh <ComboSegTrain> <output.safetensors> [minutes] [extra ComboSegTrain args]
set -euo pipefail
train=$1; out=$2; minutes=${3:-60}; shift $(( $# < 3 ? $# : 3 ))
here=$(cd "$(dirname "$0")" && pwd)
data=${COMBOSEG_DATA_DIR:-$here/../../../shared/data}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
for p in 3 4 5 6; do d="$data/brats2013/brats_2013_pat000${p}_1"
  printf '%s\t%s\t%s\n' "$d/OTMultiClass.nii.gz" "$d/Flair_subtrMeanDivStd.nii.gz" "$d/T1c_subtrMeanDivStd.nii.gz"; done > "$work/train.tsv"
"$train" --caseList "$work/train.tsv" --validationShare 0 \
  --labelNames "$here/brain-tumor-flair-t1c.labels.csv" \
  --baseModel new --spatialDims 3 --levels 4 --baseFilters 16 --inputChannels 2 --channelNames FLAIR,T1c \
  --modality MR --normalization zscore-brain --targetSpacing 2,2,2 --patchSize 48,48,48 \
  --batchSize 2 --epochs 12 --stepsPerEpoch 100 --timeBudget "$minutes" --learningRate 0.002 \
  --foregroundFraction 0.6 --mirrorAugmentation x --rotationAugmentation 10 --loss combo_tversky --seed 42 --recommendedCleanUp none \
  --modelName brain-tumor-flair-t1c \
  --modelDescription "FLAIR and contrast-enhanced T1 MR to necrosis, oedema, non-enhancing and enhancing tumour (glioma)" \
  --trainingData "BRATS 2013 patients 3, 4, 5 and 6 (as redistributed with DeepMedic's examples), inputs z-scored inside the brain; accuracy cross-validated, leaving one patient out" \
  --licence "Weights derived from CC BY-NC-SA 3.0 CH data (BRATS 2013): non-commercial use only" \
  --outputModel "$out" --historyTable "${out%.safetensors}-history.tsv" --plotImage "${out%.safetensors}-history.png" "$@"
