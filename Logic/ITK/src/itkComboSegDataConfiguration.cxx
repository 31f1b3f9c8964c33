// itkComboSegDataConfiguration.cxx - a new model's configuration chosen from its training cases
// (ComboSegTrainingSession::ChooseConfiguration).
#include "itkComboSegTrainingSession.h"

#include "itkComboSegInputChecks.h"
#include "itkComboSegProcessing.h"
#include "itkComboSegTrainingParts.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

namespace itk
{
using namespace training;

namespace
{

double
Median(std::vector<double> v)
{
  if (v.empty())
    return NaN;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double
Percentile(std::vector<float> & v, double p)
{
  if (v.empty())
    return NaN;
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * (v.size() - 1) + 0.5));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(i), v.end());
  return v[i];
}

// The physical axis (0 x, 1 y, 2 z) each image axis runs along most.
std::array<int, 3>
PhysicalAxes(const ComboSegGrid & grid)
{
  std::array<int, 3> axes{ { 0, 1, 2 } };
  for (int i = 0; i < 3; ++i)
  {
    int best = 0;
    for (int r = 1; r < 3; ++r)
      if (std::fabs(grid.direction[3 * r + i]) > std::fabs(grid.direction[3 * best + i]))
        best = r;
    axes[i] = best;
  }
  return axes;
}

// What one channel's intensities over the cases say: CT's signature and the labelled voxels.
struct IntensityFingerprint
{
  int64_t            scans = 0, ctScans = 0, negative = 0;
  std::string        ctEvidence; // what the last scan found to be CT showed
  std::vector<float> labelled;   // a sample of the labelled voxels' values
};

// What the cases hold: per channel its fingerprint, per physical axis the spacings and extents.
struct CasesFingerprint
{
  std::vector<IntensityFingerprint>  channels;
  std::array<std::vector<double>, 3> spacings, extents;
};

std::string
Mm(double v)
{
  return FormatDouble(v, 3);
}

// The label map of a case on its scan's grid (the label map may lie on another).
std::vector<int32_t>
LabelsOnGrid(const std::string & path, const ComboSegGrid & grid)
{
  auto                       labelImage = ReadScan<Image<int, 3>>(path);
  const ComboSegGrid         labelGrid = ComboSegGridOf(labelImage.GetPointer());
  const std::vector<int32_t> values(labelImage->GetBufferPointer(),
                                    labelImage->GetBufferPointer() + labelGrid.NumberOfVoxels());
  std::vector<int32_t>       labels(static_cast<size_t>(grid.NumberOfVoxels()));
  ComboSegResampleNearest(labels.data(), grid, values.data(), labelGrid, 0);
  return labels;
}

// Adds one scan to its channel's fingerprint: its modality and a sample of its labelled voxels
// (of all voxels when there are no labels).
void
AddScan(IntensityFingerprint & f, const Image<float, 3> & image, const std::vector<int32_t> & labels)
{
  const float * v = image.GetBufferPointer();
  const int64_t n = static_cast<int64_t>(image.GetLargestPossibleRegion().GetNumberOfPixels());
  // The modality check's reading of a scan: its DICOM Modality tag, else CT's signature.
  const ComboSegModalityEvidence modality = ComboSegScanModality(v, n, image.GetMetaDataDictionary());
  f.scans++;
  if (modality.modality == CS_MODALITY_CT)
    f.ctScans++, f.ctEvidence = modality.evidence;
  int64_t labelled = 0;
  for (int64_t i = 0; i < n; ++i)
    labelled += !labels.empty() && labels[static_cast<size_t>(i)] != 0;
  const int64_t stride = std::max<int64_t>(1, labelled / 200000); // a sample is enough for percentiles
  int64_t       seen = 0;
  for (int64_t i = 0; i < n; ++i)
  {
    f.negative += v[i] < 0.0f;
    if ((labelled == 0 || labels[static_cast<size_t>(i)] != 0) &&
        seen++ % (labelled ? stride : std::max<int64_t>(1, n / 200000)) == 0)
      f.labelled.push_back(v[i]);
  }
}

CasesFingerprint
ReadFingerprint(const std::vector<ComboSegCaseFiles> & cases, size_t C)
{
  CasesFingerprint print;
  print.channels.resize(C);
  for (const ComboSegCaseFiles & c : cases)
  {
    std::vector<int32_t> labels;
    for (size_t ch = 0; ch < C && ch < c.channels.size(); ++ch)
    {
      auto               image = ReadScan<Image<float, 3>>(c.channels[ch]);
      const ComboSegGrid grid = ComboSegGridOf(image.GetPointer());
      if (ch == 0)
      {
        const std::array<int, 3> axes = PhysicalAxes(grid);
        for (int i = 0; i < 3; ++i)
        {
          print.spacings[axes[i]].push_back(grid.spacing[i]);
          print.extents[axes[i]].push_back(grid.spacing[i] * grid.size[i]);
        }
        if (!c.labels.empty())
          labels = LabelsOnGrid(c.labels, grid);
      }
      AddScan(print.channels[ch], *image, labels);
    }
  }
  return print;
}

// A channel's modality and normalisation, with the reasons in words.
cs_channel_info
ChooseChannel(IntensityFingerprint & f, const std::string & which, std::ostream & modality,
              std::ostream & normalization)
{
  cs_channel_info info;
  std::memset(&info, 0, sizeof info);
  if (2 * f.ctScans <= f.scans) // most scans are not CT
  {
    info.modality = f.negative == 0 ? CS_MODALITY_MR : CS_MODALITY_OTHER;
    modality << which
             << (f.negative == 0 ? "MR (no Hounsfield signature; intensities are non-negative)"
                                 : "other (no Hounsfield signature; negative values: already normalised)");
    info.norm = CS_NORM_ZSCORE_NONZERO;
    normalization << which << "zscore-nonzero (mean 0 and standard deviation 1 over each scan's non-zero voxels)";
    return info;
  }
  info.modality = CS_MODALITY_CT;
  modality << which << "CT (" << f.ctScans << " of " << f.scans << " scan(s); " << f.ctEvidence << ")";
  const double low = Percentile(f.labelled, 0.5), high = Percentile(f.labelled, 99.5);
  double       sum = 0.0, sum2 = 0.0;
  for (float x : f.labelled)
  {
    const double y = std::min(high, std::max(low, double(x)));
    sum += y, sum2 += y * y;
  }
  const double count = double(std::max<size_t>(1, f.labelled.size()));
  const double mean = sum / count, sd = std::sqrt(std::max(0.0, sum2 / count - mean * mean));
  info.norm = CS_NORM_CLIP_SCALE;
  info.clip_low = static_cast<float>(low);
  info.clip_high = static_cast<float>(high > low ? high : low + 1.0);
  info.mean = static_cast<float>(mean);
  info.std = static_cast<float>(sd > 0.0 ? sd : 1.0);
  normalization << which << "clip to [" << FormatDouble(info.clip_low, 4) << ", " << FormatDouble(info.clip_high, 4)
                << "] (the 0.5 and 99.5 percentiles of the labelled voxels), then z-score by their mean "
                << FormatDouble(info.mean, 4) << " and standard deviation " << FormatDouble(info.std, 4);
  return info;
}

// Spacing: the cases' median; patch: the median image at that spacing, fitted to the network.
void
ChooseGrid(const CasesFingerprint & print, size_t cases, int32_t levels, int32_t spatialDims,
           ComboSegDataConfiguration & config)
{
  const int32_t      multiple = 1 << std::max(0, levels - 1);
  const int32_t      cap = spatialDims == 2 ? 256 : 64;
  std::ostringstream medianSize;
  for (int a = 0; a < 3; ++a)
  {
    config.spacing[a] = Median(print.spacings[a]);
    std::vector<double> voxels;
    for (double e : print.extents[a])
      voxels.push_back(e / config.spacing[a]);
    const double  median = Median(voxels);
    const int32_t rounded = static_cast<int32_t>(std::ceil(median / multiple - 1e-6)) * multiple;
    config.patchSize[a] = std::max(multiple, std::min(cap / multiple * multiple, rounded));
    medianSize << (a ? "x" : "") << FormatDouble(median, 4);
  }
  if (spatialDims == 2)
    config.patchSize[2] = 1;
  config.spacingReason = Mm(config.spacing[0]) + "x" + Mm(config.spacing[1]) + "x" + Mm(config.spacing[2]) +
                         " mm (the median of the " + std::to_string(cases) + " case(s)' voxel spacings)";
  config.patchReason = std::to_string(config.patchSize[0]) + "x" + std::to_string(config.patchSize[1]) + "x" +
                       std::to_string(config.patchSize[2]) + " (the median image, " + medianSize.str() +
                       " voxels at that spacing, rounded up to a multiple of " + std::to_string(multiple) +
                       " and capped at " + std::to_string(cap) + ")";
}

} // namespace

ComboSegDataConfiguration
ComboSegTrainingSession::ChooseConfiguration(const std::vector<ComboSegCaseFiles> & cases, int32_t levels,
                                             int32_t spatialDims)
{
  if (cases.empty())
    itkGenericExceptionMacro("no training cases to configure a new model from");
  const size_t              C = cases[0].channels.size();
  CasesFingerprint          print = ReadFingerprint(cases, C);
  ComboSegDataConfiguration config;
  std::ostringstream        modality, normalization;
  for (size_t ch = 0; ch < C; ++ch)
  {
    const std::string which = C > 1 ? "channel " + std::to_string(ch + 1) + ": " : "";
    config.channels.push_back(ChooseChannel(print.channels[ch], which, modality, normalization));
    if (ch + 1 < C)
      modality << "; ", normalization << "; ";
  }
  config.modalityReason = modality.str();
  config.normalizationReason = normalization.str();
  ChooseGrid(print, cases.size(), levels, spatialDims, config);
  return config;
}

} // namespace itk
