/*
 * itkComboSegDataSet.h - training data sets: Medical Segmentation Decathlon / nnU-Net folders,
 * plain case lists, and the preparation of one case for the engine (streamed: one case in
 * memory at a time).
 */
#ifndef itkComboSegDataSet_h
#define itkComboSegDataSet_h

#include <cstdint>
#include <string>
#include <vector>

#include "itkComboSegIO.h"
#include "itkComboSegProcessing.h"
#include "comboseg/comboseg.h"

namespace itk
{

/** The files of one case: one image per model channel and an optional label map. */
struct ComboSegCaseFiles
{
  std::string              id;
  std::vector<std::string> channels;
  std::string              labels; // "" when the case has no label map
};

struct ComboSegDataSetDescription
{
  std::vector<std::string>       channelNames; // may be empty
  std::vector<LabelName>         labelNames;   // may be empty: labels map by value
  std::vector<ComboSegCaseFiles> cases;
};

/** Reads a folder in the MSD / nnU-Net layout: dataset.json (channel names from "channel_names"
 * or "modality", labels from "labels" as {"1": "liver"} or {"liver": 1}), images
 * imagesTr/<case>_0000<ending> per channel (or imagesTr/<case><ending> for one channel) and
 * labels labelsTr/<case><ending>. Cases come from "training", else from labelsTr. Missing
 * files are errors naming them. */
ComboSegDataSetDescription
ReadMSDDataSet(const std::string & folder);

/** Reads a list of cases: one line per case, `label<TAB>channel1[<TAB>channel2...]` (an empty
 * label field for a case without labels); '#' starts a comment; relative paths are relative to
 * the list's folder. */
ComboSegDataSetDescription
ReadCaseList(const std::string & listFile);

/** One case ready for the engine, on the model's grid. */
struct ComboSegPreparedCase
{
  std::string          id;
  int64_t              size[3];     // x y z on the model grid
  ComboSegVolume       image;       // (C, nz, ny, nx) normalised by the model's recipe
  std::vector<int32_t> labels;      // (nz, ny, nx) class indices of the model (empty if no label file)
  std::vector<uint8_t> outsideBody; // (nz, ny, nx) 1 where the scan holds no data for the model
                                    // (ComboSegOutsideBody, and off the scan); empty when no
                                    // channel's recipe has a body
};

/** Reads one case, reorients and resamples it to the model's grid (linear for images, nearest
 * for labels), normalises it by the model's per-channel recipe and maps label values to the
 * model's classes: by name when names exist (the label file's own Segment keys first, else
 * labelNames), else by value. A label map may lie on any grid that holds its structures on the
 * scan (e.g. cropped to them): it is resampled by nearest neighbour in physical space. Unknown
 * label values or names, a label map without any structure (all 0), labelled voxels outside the
 * scan and overlapping segments (a layered .seg.nrrd) are exceptions naming them. */
ComboSegPreparedCase
PrepareCase(const ComboSegCaseFiles & files, const cs_model_info & info, const std::vector<LabelName> & labelNames);

/** The form in which structure names are compared: case, '_', '-' and repeated blanks aside
 * ("Left_Kidney" matches "left kidney"). */
std::string
ComboSegStructureNameKey(const std::string & name);

/** The model class index of every label value, by name when names are given, else by value;
 * `source` names the label map in messages. Throws on unknown names. Model classes the names
 * lack are allowed: a site may label some structures only (partial labels). */
std::vector<std::pair<int32_t, int32_t>>
ComboSegMapLabelValues(const std::vector<LabelName> & names, const cs_model_info & info, const std::string & source);

} // end namespace itk

#endif
