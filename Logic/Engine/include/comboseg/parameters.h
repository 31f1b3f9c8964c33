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
 * "zscore_mask", "zscore". */
CS_API const char *cs_norm_kind_name(cs_norm_kind kind); /* "unknown" outside the enum */
/* Case-insensitive, '-' and ' ' read as '_' (as cs_loss_kind_from_name); an unknown name is
 * CS_ERR_INVALID_ARGUMENT and leaves *kind unchanged. */
CS_API cs_status cs_norm_kind_from_name(const char *name, cs_norm_kind *kind);

#ifdef __cplusplus
}
#endif

#endif
