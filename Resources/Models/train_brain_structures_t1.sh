#!/usr/bin/env bash
# Trains the bundled brain-structures-t1 model: Colin27 (ch2, from Debian's mricron-data) with its
# 26 subcortical structures for training, ICBM152 2009a for validation. It reproduces the shipped
# weights (trained with the all-classes Combo, the default then; the default is now combo_tversky).
# Usage: train_brain_structures_t1.sh <ComboSegTrain> <output.safetensors> [minutes] [extra ComboSegTrain args]
set -euo pipefail
train=$1; out=$2; minutes=${3:-29}; shift $(( $# < 3 ? $# : 3 ))
here=$(cd "$(dirname "$0")" && pwd)
data=${COMBOSEG_DATA_DIR:-$here/../../../shared/data}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
printf '%s\t%s\n' "$data/brain-structures/colin27/colin27_labels_on_ch2.nii.gz" \
  /usr/share/mricron/templates/ch2.nii.gz > "$work/train.tsv"
printf '%s\t%s\n' "$data/brain-structures/icbm152/mni_icbm152_t1_tal_nlin_sym_09a_labels.nii.gz" \
  "$data/brain-structures/icbm152/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz" > "$work/val.tsv"
"$train" --caseList "$work/train.tsv" --validationCaseList "$work/val.tsv" \
  --labelNames "$data/brain-structures/colin27/label-names.csv" \
  --baseModel new --spatialDims 3 --levels 4 --baseFilters 8 --inputChannels 1 --channelNames T1 \
  --modality MR --normalization zscore-nonzero --targetSpacing 1,1,1 --patchSize 64,64,64 \
  --batchSize 2 --epochs 10 --stepsPerEpoch 100 --timeBudget "$minutes" --learningRate 0.002 \
  --foregroundFraction 0.7 --loss combo_all_classes --seed 42 \
  --modelName brain-structures-t1 \
  --modelDescription "T1-weighted MR to 26 subcortical structures (striatum, pallidum, thalamus, amygdala, hippocampal subfields, fornix, fimbria, mammillary bodies), left and right" \
  --trainingData "Colin27 ch2 (Debian mricron-data) with CoBrALab Colin27 subcortical labels; validated on MNI ICBM152 2009a sym with MAGeTbrain labels" \
  --licence "Weights derived from CC BY-NC-SA 4.0 labels (CoBrALab atlases): non-commercial use only" \
  --outputModel "$out" --historyTable "${out%.safetensors}-history.tsv" --plotImage "${out%.safetensors}-history.png" "$@"
