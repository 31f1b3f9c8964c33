#include "itkComboSegInputChecks.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_set>
#include <utility>
#include <sstream>

#include "itkComboSegProcessing.h"
#include "itkMacro.h"
#include "itkMetaDataObject.h"

namespace itk
{

namespace
{

const char *
ModalityName(cs_modality modality)
{
  switch (modality)
  {
    case CS_MODALITY_CT: return "CT";
    case CS_MODALITY_MR: return "MR";
    case CS_MODALITY_PET: return "PET";
    case CS_MODALITY_US: return "ultrasound";
    default: return "other";
  }
}

// DICOM's Modality code (PS3.3 C.7.3.1.1.1) as the model's modality; other codes say nothing.
cs_modality
ModalityOfDicomCode(std::string code)
{
  code.erase(std::remove_if(code.begin(), code.end(), [](unsigned char c) { return std::isspace(c); }), code.end());
  if (code == "CT")
    return CS_MODALITY_CT;
  if (code == "MR")
    return CS_MODALITY_MR;
  if (code == "PT")
    return CS_MODALITY_PET;
  if (code == "US")
    return CS_MODALITY_US;
  return CS_MODALITY_OTHER;
}

// Index-to-physical matrix (row-major): direction * diag(spacing).
std::array<double, 9>
IndexToPhysical(const ComboSegGrid & g)
{
  std::array<double, 9> m = g.direction;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      m[3 * i + j] *= g.spacing[j];
  return m;
}

bool
Invert(const std::array<double, 9> & m, std::array<double, 9> & inverse)
{
  const double det = m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) +
                     m[2] * (m[3] * m[7] - m[4] * m[6]);
  if (std::fabs(det) < 1e-12)
    return false;
  const double k = 1.0 / det;
  inverse = { { (m[4] * m[8] - m[5] * m[7]) * k, (m[2] * m[7] - m[1] * m[8]) * k, (m[1] * m[5] - m[2] * m[4]) * k,
                (m[5] * m[6] - m[3] * m[8]) * k, (m[0] * m[8] - m[2] * m[6]) * k, (m[2] * m[3] - m[0] * m[5]) * k,
                (m[3] * m[7] - m[4] * m[6]) * k, (m[1] * m[6] - m[0] * m[7]) * k, (m[0] * m[4] - m[1] * m[3]) * k } };
  return true;
}

} // namespace

bool
ComboSegLooksLikeCT(const float * values, int64_t n, std::string * evidence, int numberOfThreads)
{
  if (n <= 0)
    return false;
  using Part = std::pair<float, int64_t>; // a chunk's minimum and its voxels at -900 or below
  const std::function<Part(int64_t, int64_t)> chunkBody = [&](int64_t begin, int64_t end) {
    Part part{ std::numeric_limits<float>::infinity(), 0 };
    for (int64_t i = begin; i < end; ++i)
    {
      part.first = std::min(part.first, values[i]);
      part.second += values[i] <= -900.0f;
    }
    return part;
  };
  float   minimum = std::numeric_limits<float>::infinity();
  int64_t air = 0;
  for (const Part & part : ComboSegPerChunk(n, numberOfThreads, chunkBody))
  {
    minimum = std::min(minimum, part.first);
    air += part.second;
  }
  const double share = static_cast<double>(air) / static_cast<double>(n);
  if (!(minimum <= -500.0f && share >= 0.05))
    return false;
  if (evidence)
  {
    std::ostringstream s;
    s << "Hounsfield units: " << std::lround(100.0 * share) << "% of the voxels at -900 or below, minimum " << minimum;
    *evidence = s.str();
  }
  return true;
}

ComboSegModalityEvidence
ComboSegScanModality(const float * values, int64_t n, const MetaDataDictionary & dictionary, int numberOfThreads)
{
  ComboSegModalityEvidence result;
  std::string              code;
  if (ExposeMetaData<std::string>(dictionary, "0008|0060", code))
  {
    result.modality = ModalityOfDicomCode(code);
    if (result.modality != CS_MODALITY_OTHER)
    {
      result.evidence = "its DICOM Modality tag says " + std::string(ModalityName(result.modality));
      return result;
    }
  }
  if (ComboSegLooksLikeCT(values, n, &result.evidence, numberOfThreads))
    result.modality = CS_MODALITY_CT;
  return result;
}

void
ComboSegCheckModality(const float * values, int64_t n, const MetaDataDictionary & dictionary,
                      const cs_model_info & info, int channel, const std::string & source,
                      const std::string & overrideHint, int numberOfThreads)
{
  const cs_modality expected = info.channels[channel].modality;
  if (expected == CS_MODALITY_OTHER)
    return;
  const ComboSegModalityEvidence found = ComboSegScanModality(values, n, dictionary, numberOfThreads);
  if (found.modality == CS_MODALITY_OTHER || found.modality == expected)
    return;
  itkGenericExceptionMacro(<< source << " looks like " << ModalityName(found.modality) << " (" << found.evidence
                           << ") but model '" << info.name << "' expects " << ModalityName(expected)
                           << " for its channel " << channel + 1 << " (" << info.channels[channel].name
                           << "): the result would be meaningless. Give the right scan, or " << overrideHint);
}

double
ComboSegPhysicalOverlap(const ComboSegGrid & a, const ComboSegGrid & b)
{
  std::array<double, 9> bInverse;
  if (a.NumberOfVoxels() <= 0 || b.NumberOfVoxels() <= 0 || !Invert(IndexToPhysical(b), bInverse))
    return 0.0;
  const std::array<double, 9> aMatrix = IndexToPhysical(a);
  int64_t                     step[3];
  for (int d = 0; d < 3; ++d)
    step[d] = std::max<int64_t>(1, a.size[d] / 64);
  int64_t inside = 0, total = 0;
  for (int64_t k = 0; k < a.size[2]; k += step[2])
    for (int64_t j = 0; j < a.size[1]; j += step[1])
      for (int64_t i = 0; i < a.size[0]; i += step[0])
      {
        const double index[3] = { double(i), double(j), double(k) };
        double       offset[3];
        for (int r = 0; r < 3; ++r)
          offset[r] = a.origin[r] - b.origin[r] + aMatrix[3 * r] * index[0] + aMatrix[3 * r + 1] * index[1] +
                      aMatrix[3 * r + 2] * index[2];
        bool in = true;
        for (int r = 0; r < 3 && in; ++r)
        {
          const double c = bInverse[3 * r] * offset[0] + bInverse[3 * r + 1] * offset[1] +
                           bInverse[3 * r + 2] * offset[2];
          in = c >= -0.5 && c <= double(b.size[r]) - 0.5;
        }
        inside += in;
        ++total;
      }
  return static_cast<double>(inside) / static_cast<double>(total);
}

void
ComboSegCheckDimensions(const ComboSegGrid & grid, const cs_model_info & info, const std::string & source)
{
  if (info.arch.spatial_dims != 3)
    return;
  for (int d = 0; d < 3; ++d)
  {
    if (grid.size[d] == 1)
    {
      itkGenericExceptionMacro(<< source << " is a 2D image (size " << grid.size[0] << "x" << grid.size[1] << "x"
                               << grid.size[2] << ", one voxel along axis " << d << ") but model '" << info.name
                               << "' is 3D: it segments volumes. Give the whole volume, or a 2D model for single "
                                  "slices");
    }
  }
}

std::string
ComboSegIntensityImageSigns(const float * values, int64_t n)
{
  std::unordered_set<float> distinct;
  int64_t                   fractional = 0;
  float                     example = 0.0f;
  for (int64_t i = 0; i < n; ++i)
  {
    if (values[i] != std::floor(values[i]))
    {
      if (fractional++ == 0)
        example = values[i];
    }
    else
      distinct.insert(values[i]);
  }
  std::ostringstream s;
  if (fractional > 0)
    s << fractional << " voxel(s) hold values that are not integers (e.g. " << example << ")";
  else if (distinct.size() > 255)
    s << "it holds " << distinct.size() << " distinct values";
  return s.str();
}

} // end namespace itk
