// cs_synthetic_case.h - small labelled cases written to disk for training tests: a ball (label 1)
// and a box (label 2) in noise, placed from a seed so that cases differ.
#pragma once

#include "itkImage.h"
#include "itkImageFileWriter.h"
#include "itkNrrdImageIO.h"

#include "comboseg/comboseg.h"

#include <string>
#include <vector>

namespace cstest
{

using SyntheticImage = itk::Image<float, 3>;
using SyntheticLabels = itk::Image<unsigned char, 3>;

template <typename TImage>
void WriteNrrd(const TImage *image, const std::string &path)
{
  auto writer = itk::ImageFileWriter<TImage>::New();
  writer->SetImageIO(itk::NrrdImageIO::New()); // no IO factory needed
  writer->SetFileName(path);
  writer->SetInput(image);
  writer->Update();
}

struct SyntheticCaseFiles
{
  std::string image;
  std::string labels;
};

// Writes <dir>/<id>_image.nrrd (float, 1 mm voxels, 32x32x24) and <dir>/<id>_labels.nrrd.
// Background is 0, the ball 100, the box -100 (+- 20 of noise): one brighter, one darker than
// the background, so that a patch holding only one of them still tells which it is.
inline SyntheticCaseFiles WriteSyntheticCase(const std::string &dir, const std::string &id, uint64_t seed)
{
  cs_rng rng;
  cs_rng_seed(&rng, seed);
  const int nx = 32, ny = 32, nz = 24;
  auto image = SyntheticImage::New();
  auto labels = SyntheticLabels::New();
  SyntheticImage::RegionType region;
  region.SetSize({{nx, ny, nz}});
  image->SetRegions(region);
  image->Allocate();
  labels->SetRegions(region);
  labels->Allocate();
  const double cx = 9 + cs_rng_below(&rng, 6), cy = 9 + cs_rng_below(&rng, 14), cz = 8 + cs_rng_below(&rng, 8);
  const int bx = 18 + static_cast<int>(cs_rng_below(&rng, 5));
  const int by = 4 + static_cast<int>(cs_rng_below(&rng, 14));
  const int bz = 4 + static_cast<int>(cs_rng_below(&rng, 10));
  for (int z = 0; z < nz; ++z)
    for (int y = 0; y < ny; ++y)
      for (int x = 0; x < nx; ++x)
      {
        const SyntheticImage::IndexType idx = {{x, y, z}};
        unsigned char l = 0;
        if ((x - cx) * (x - cx) + (y - cy) * (y - cy) + (z - cz) * (z - cz) <= 36.0)
          l = 1;
        if (x >= bx && x < bx + 8 && y >= by && y < by + 9 && z >= bz && z < bz + 7)
          l = 2;
        labels->SetPixel(idx, l);
        image->SetPixel(idx, (l == 1 ? 100.0f : l == 2 ? -100.0f : 0.0f) + 20.0f * cs_rng_normal(&rng));
      }
  SyntheticCaseFiles files{dir + "/" + id + "_image.nrrd", dir + "/" + id + "_labels.nrrd"};
  WriteNrrd(image.GetPointer(), files.image);
  WriteNrrd(labels.GetPointer(), files.labels);
  return files;
}

} // namespace cstest
