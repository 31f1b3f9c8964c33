/*
 * itkComboSegInputChecks.h - checks that catch the wrong input before it gives a confident,
 * wrong answer: a scan of another modality than the model's, a channel that lies elsewhere in
 * space than the first, a 2D image given to a 3D model, an intensity image given as a label map.
 * Shared by itk::ComboSegImageFilter and the command-line modules (which name the files).
 */
#ifndef itkComboSegInputChecks_h
#define itkComboSegInputChecks_h

#include <cstdint>
#include <string>

#include "itkComboSegProcessing.h"
#include "itkMetaDataDictionary.h"
#include "comboseg/comboseg.h"

namespace itk
{

/** What a scan shows of its modality: from its DICOM Modality tag (0008|0060) when it has one,
 * else CT when its values have CT's Hounsfield signature (see ComboSegLooksLikeCT), else unknown
 * (CS_MODALITY_OTHER). `evidence` says what was found, for messages. */
struct ComboSegModalityEvidence
{
  cs_modality modality{ CS_MODALITY_OTHER };
  std::string evidence{};
};

/** CT's Hounsfield signature: values reaching -500 or below and at least 5 % of the voxels at
 * -900 or below (air and the padding outside the field of view). MR, PET and z-scored scans never
 * go that low. Fills `evidence` when it answers true. numberOfThreads as in
 * itkComboSegProcessing.h (the answer does not depend on it). */
bool
ComboSegLooksLikeCT(const float * values, int64_t n, std::string * evidence = nullptr, int numberOfThreads = 1);

ComboSegModalityEvidence
ComboSegScanModality(const float * values, int64_t n, const MetaDataDictionary & dictionary, int numberOfThreads = 1);

/** Throws, naming `source`, what was found and `overrideHint` (e.g. "add --flag to go ahead
 * anyway"), when the scan clearly is of another modality than the model's channel expects: a
 * DICOM Modality tag other than the channel's, or CT's signature for a channel that is not CT.
 * Channels of modality "other" accept anything. */
void
ComboSegCheckModality(const float * values, int64_t n, const MetaDataDictionary & dictionary,
                      const cs_model_info & info, int channel, const std::string & source,
                      const std::string & overrideHint, int numberOfThreads = 1);

/** The share of a's voxel centres that lie inside b's voxels, in physical space (0: the two do not
 * overlap at all). Sampled on at most about 64^3 voxels of a. */
double
ComboSegPhysicalOverlap(const ComboSegGrid & a, const ComboSegGrid & b);

/** Throws, naming `source`, when a 3D model is given an image of one slice (a 2D image). */
void
ComboSegCheckDimensions(const ComboSegGrid & grid, const cs_model_info & info, const std::string & source);

/** Why values look like an intensity image rather than a label map (more than 255 distinct values,
 * or values that are not integers), or "" when they look like labels. */
std::string
ComboSegIntensityImageSigns(const float * values, int64_t n);

} // end namespace itk

#endif
