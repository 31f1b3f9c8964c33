// ComboSegInputs.h - the scans a module segments, read and checked against the model before any
// work: each file named against the model's channel it feeds, the modality checked, every channel
// brought onto the first one's grid and refused when it does not overlap it in space.
#pragma once

#include <string>
#include <vector>

#include "ComboSegCLI.h"
#include "ComboSegOutput.h"

#include "comboseg/comboseg.h"

// Reads files[c] as the model's channel c (files.size() == the model's channels), printing
// "channel 1 FLAIR: file" for each as a progress comment. Throws (naming the file) for a 2D
// image given to a 3D model, a scan that clearly is of another modality than its channel's (unless
// ignoreModalityMismatch; the message names --ignoreModalityMismatch), and a channel that covers
// less than half of the first in physical space (a warning below 95 %). Channels after the first
// come back on the first one's grid (linear interpolation, 0 outside). The checks run on at most
// numberOfThreads threads (0: ITK's default).
std::vector<ComboSegScalarImage::Pointer> ComboSegReadChannels(const std::vector<std::string> &files,
                                                               const cs_model_info &info, bool ignoreModalityMismatch,
                                                               ComboSegProgress &progress, int numberOfThreads);

// The --threads a tool was given (0: all cores) as ITK's default thread count, for the ITK filters
// a run does not give a count of its own (the written label map's extents, the clean-up's
// connected components, ...): with --threads 1, a run works on one thread throughout.
void ComboSegLimitITKThreads(int threads);

// A warning the user must not miss: a progress comment (Slicer's status) and a line on stderr
// (Slicer then reports the run as completed with errors, and shows the text).
void ComboSegWarn(ComboSegProgress &progress, const std::string &text);

// Reads a label map (any scalar file), warning (naming the file) when it looks like an intensity
// image: values that are not integers, or more than 255 distinct values.
itk::Image<int, 3>::Pointer ComboSegReadLabelMap(const std::string &path, ComboSegProgress &progress);
