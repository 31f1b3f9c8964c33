/*
 * comboseg/parameters.h - the one source of truth for parameters that several layers expose:
 * their default, their range and their names. The engine, the ITK filter, the VTK logic, the
 * training session and the modules' XML descriptions take them from here (a test compares each
 * XML default with these). A value outside its range is an error naming the parameter, never
 * clamped.
 */
#ifndef COMBOSEG_PARAMETERS_H
#define COMBOSEG_PARAMETERS_H

#include "comboseg/comboseg.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Sliding-window overlap (cs_infer_options.overlap; ComboSegSegment --overlap,
 * itk::ComboSegImageFilter::SetOverlap, vtkComboSegLogic::SetOverlap, the training session's
 * validation): the fraction of the window that neighbouring windows share. At 0.9 a 3D volume
 * already takes about 1000 times as many windows as at 0. */
#define CS_OVERLAP_DEFAULT 0.5
#define CS_OVERLAP_MIN 0.0
#define CS_OVERLAP_MAX 0.9

/* The names of the normalisation recipes (cs_norm_kind), the one spelling that model files,
 * ComboSegTrain --normalization and messages use: "none", "clip_scale", "zscore_nonzero",
 * "zscore_mask", "zscore", "upper_peak". */
CS_API const char *cs_norm_kind_name(cs_norm_kind kind); /* "unknown" outside the enum */
/* Case-insensitive, '-' and ' ' read as '_' (as cs_loss_kind_from_name); an unknown name is
 * CS_ERR_INVALID_ARGUMENT and leaves *kind unchanged. */
CS_API cs_status cs_norm_kind_from_name(const char *name, cs_norm_kind *kind);

/* The learning recipe that ComboSegTrain's automatic values (its defaults) choose: one for a
 * new model, one for fine-tuning a base model on a site's few labelled cases. Fine-tuning at a
 * new model's learning rate and length made the model forget what it knew; this gentler recipe
 * was chosen on two of the four BRATS rotations and gained on the two others
 * (docs/fine-tuning-study.md). */
typedef struct cs_training_recipe {
    float learning_rate;           /* peak learning rate */
    int32_t epochs;                /* of CS_TRAINING_STEPS_PER_EPOCH_DEFAULT steps */
    float foreground_fraction;     /* cs_sampling_options.foreground_fraction */
    float rotation;                /* degrees about every axis (cs_sampling_options.rotation) */
    int32_t flip_axes;             /* cs_sampling_options.flip_axes */
    int32_t frozen_encoder_levels; /* cs_train_config.frozen_encoder_levels */
} cs_training_recipe;

#define CS_TRAINING_STEPS_PER_EPOCH_DEFAULT 50

/* New model (fine_tuning 0): the engine's own defaults (cs_train_config_default,
 * cs_sampling_options_default) for 20 epochs. Fine-tuning: learning rate 0.0002, 3 epochs,
 * 60% of patches on structures, rotations up to 10 degrees, left-right (x) mirroring and the
 * two finest encoder levels frozen (ComboSegTrain freezes fewer in a base model of fewer than
 * three levels, never the bottom one). */
CS_API cs_training_recipe cs_training_recipe_automatic(int fine_tuning);

#ifdef __cplusplus
}
#endif

#endif
