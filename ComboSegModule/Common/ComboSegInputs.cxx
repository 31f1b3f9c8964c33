// ComboSegInputs.cxx - reading and checking the scans a module segments.
#include "ComboSegInputs.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <stdexcept>

#include "itkComboSegIO.h"
#include "itkComboSegInputChecks.h"
#include "itkComboSegProcessing.h"
#include "itkMultiThreaderBase.h"

namespace
{

using ImageType = ComboSegScalarImage;

// Extra channels are brought onto the first channel's grid (linear, 0 outside), as Slicer volumes
// may differ: the library's resampler, so that every channel has one edge rule.
ImageType::Pointer OnGridOf(ImageType *image, const ImageType *reference)
{
  const itk::ComboSegGrid grid = itk::ComboSegGridOf(image), referenceGrid = itk::ComboSegGridOf(reference);
  if (itk::ComboSegSameGrid(grid, referenceGrid))
    return image;
  auto onReference = ImageType::New();
  onReference->CopyInformation(reference);
  onReference->SetRegions(reference->GetLargestPossibleRegion());
  onReference->Allocate();
  itk::ComboSegResampleLinear(onReference->GetBufferPointer(), referenceGrid, image->GetBufferPointer(), grid, 0.0f);
  return onReference;
}

// "channel 2 (T1c) file.nii.gz" for messages.
std::string ChannelSource(const cs_model_info &info, int c, const std::string &file)
{
  return "channel " + std::to_string(c + 1) + " (" + info.channels[c].name + ") " + file;
}

// A channel lying elsewhere in space than the first would be resampled to zeros where it is
// missing: a channel covering less than half of the first is refused (the segmentation would be
// meaningless over most of the scan), one covering less than 95 % gets a warning.
void CheckOverlap(const ImageType *first, const ImageType *image, const std::string &source,
                  const std::string &firstFile, ComboSegProgress &progress)
{
  const double overlap = itk::ComboSegPhysicalOverlap(itk::ComboSegGridOf(first), itk::ComboSegGridOf(image));
  if (overlap >= 0.95)
    return;
  std::ostringstream s;
  s << source << " covers " << std::lround(100.0 * overlap) << "% of channel 1 (" << firstFile << ") in space";
  if (overlap < 0.5)
    throw std::runtime_error(s.str() + ": the channels must be scans of the same region of one patient, in the same "
                                       "coordinates (check the file and the order of the channels)");
  ComboSegWarn(progress, s.str() + "; the rest of channel 1 is given 0 for it");
}

} // namespace

std::vector<ComboSegScalarImage::Pointer> ComboSegReadChannels(const std::vector<std::string> &files,
                                                               const cs_model_info &info, bool ignoreModalityMismatch,
                                                               ComboSegProgress &progress, int numberOfThreads)
{
  std::vector<ImageType::Pointer> images;
  for (size_t c = 0; c < files.size(); ++c)
  {
    const int channel = int(c);
    const std::string source = ChannelSource(info, channel, files[c]);
    progress.Comment("channel " + std::to_string(c + 1) + " " + info.channels[c].name + ": " + files[c]);
    ImageType::Pointer image = itk::ReadScan<ImageType>(files[c], numberOfThreads);
    itk::ComboSegCheckDimensions(itk::ComboSegGridOf(image.GetPointer()), info, source);
    if (c > 0) // a scan of another region is the wrong file, whatever its modality
      CheckOverlap(images[0], image, source, files[0], progress);
    if (!ignoreModalityMismatch)
      itk::ComboSegCheckModality(image->GetBufferPointer(), int64_t(image->GetPixelContainer()->Size()),
                                 image->GetMetaDataDictionary(), info, channel, source,
                                 "add --ignoreModalityMismatch to go ahead anyway", numberOfThreads);
    if (c > 0)
      image = OnGridOf(image, images[0]);
    images.push_back(image);
  }
  return images;
}

void ComboSegLimitITKThreads(int threads)
{
  if (threads > 0)
    itk::MultiThreaderBase::SetGlobalDefaultNumberOfThreads(static_cast<itk::ThreadIdType>(threads));
}

void ComboSegWarn(ComboSegProgress &progress, const std::string &text)
{
  progress.Comment("warning: " + text);
  std::fprintf(stderr, "warning: %s\n", text.c_str());
  std::fflush(stderr);
}

itk::Image<int, 3>::Pointer ComboSegReadLabelMap(const std::string &path, ComboSegProgress &progress)
{
  using FloatImage = itk::Image<float, 3>;
  const FloatImage::Pointer image = itk::ReadScan<FloatImage>(path);
  const float *values = image->GetBufferPointer();
  const size_t n = image->GetPixelContainer()->Size();
  const std::string signs = itk::ComboSegIntensityImageSigns(values, int64_t(n));
  if (!signs.empty())
    ComboSegWarn(progress, path + " looks like an intensity image (a scan), not a label map: " + signs);
  auto labels = itk::Image<int, 3>::New();
  labels->CopyInformation(image);
  labels->SetRegions(image->GetLargestPossibleRegion());
  labels->Allocate();
  std::transform(values, values + n, labels->GetBufferPointer(), [](float v) { return int(std::lround(v)); });
  return labels;
}
