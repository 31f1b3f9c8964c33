#!/usr/bin/env bash
# Trains the bundled brain-structures-t1 model on both labelled brains: Colin27 (ch2, from
# Debian's mricron-data, with its skull) and ICBM152 2009a (skull-stripped), each with the same 26
# subcortical structures. No validation case is left (there is no third brain): the schedule is
# fixed and the last step's model is kept. The recipe is the one that won the leave-one-brain-out
# cross-validation (scripts/crossvalidate.py; the card's expected accuracy), whose fold models
# trained 2000 steps on their one brain: with two brains, 4000 steps keep 2000 per brain.
# Usage: train_brain_structures_t1.sh <ComboSegTrain> <output.safetensors> [extra ComboSegTrain args]
set -euo pipefail
train=$1; out=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
data=${COMBOSEG_DATA_DIR:-$here/../../../shared/data}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
printf '%s\t%s\n' "$data/brain-structures/colin27/colin27_labels_on_ch2.nii.gz" \
  /usr/share/mricron/templates/ch2.nii.gz \
  "$data/brain-structures/icbm152/mni_icbm152_t1_tal_nlin_sym_09a_labels.nii.gz" \
  "$data/brain-structures/icbm152/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz" > "$work/train.tsv"
"$train" --caseList "$work/train.tsv" --validationShare 0 \
  --labelNames "$data/brain-structures/colin27/label-names.csv" \
  --baseModel new --spatialDims 3 --levels 4 --baseFilters 8 --inputChannels 1 --channelNames T1 \
  --modality MR --normalization upper_peak --targetSpacing 1,1,1 --patchSize 64,64,64 \
  --batchSize 2 --epochs 40 --stepsPerEpoch 100 --learningRate 0.001 \
  --foregroundFraction 0.7 --loss combo_all_classes --batchDice --mirrorAugmentation x --seed 42 \
  --modelName brain-structures-t1 \
  --modelDescription "T1-weighted MR to 26 subcortical structures (striatum, pallidum, thalamus, amygdala, hippocampal subfields, fornix, fimbria, mammillary bodies), left and right" \
  --trainingData "Colin27 ch2 (Debian mricron-data) with CoBrALab Colin27 subcortical labels and MNI ICBM152 2009a sym with MAGeTbrain labels" \
  --licence "Weights derived from CC BY-NC-SA 4.0 labels (CoBrALab atlases): non-commercial use only" \
  --outputModel "$out" --historyTable "${out%.safetensors}-history.tsv" --plotImage "${out%.safetensors}-history.png" "$@"
