// itkComboSegTestUtilities.h - synthetic scans and tiny models shared by the ITK suites.
#pragma once

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>

#include "comboseg/comboseg.h"
#include "itkComboSegModel.h"
#include "itkImage.h"
#include "itkImageRegionIteratorWithIndex.h"

namespace cstest
{

using FloatImage3 = itk::Image<float, 3>;

// Two synthetic organs in physical (LPS, mm) space: a ball of radius 11 mm (class 1, 100 HU)
// and a smaller ball of radius 8 mm (class 2, 220 HU) in -100 HU background: the CT recipe's
// lower clip, which is also what the filter pads beyond the scan (air), as in real CT.
struct Organ
{
  std::array<double, 3> centre;
  double                radius;
  float                 intensity;
};
inline const std::array<Organ, 2> &
Organs()
{
  static const std::array<Organ, 2> organs{ { { { { -11.0, 2.0, 0.0 } }, 11.0, 100.0f },
                                              { { { 13.0, -3.0, 2.0 } }, 8.0, 220.0f } } };
  return organs;
}

// Signed distance (mm) from the surface of an organ, negative inside.
inline double
OrganDistance(const Organ & organ, const double p[3])
{
  const double dx = p[0] - organ.centre[0], dy = p[1] - organ.centre[1], dz = p[2] - organ.centre[2];
  return std::sqrt(dx * dx + dy * dy + dz * dz) - organ.radius;
}

// Class of a physical point: 0 background, 1 or 2 an organ.
inline int
OrganClass(const double p[3])
{
  for (int k = 1; k >= 0; --k)
    if (OrganDistance(Organs()[k], p) <= 0.0)
      return k + 1;
  return 0;
}

inline float
OrganIntensity(const double p[3])
{
  const int k = OrganClass(p);
  return k == 0 ? -100.0f : Organs()[k - 1].intensity;
}

// A 3x3 rotation about z then x (row-major), for oblique grids.
inline itk::Matrix<double, 3, 3>
Rotation(double aboutZDegrees, double aboutXDegrees)
{
  const double              a = aboutZDegrees * M_PI / 180.0, b = aboutXDegrees * M_PI / 180.0;
  itk::Matrix<double, 3, 3> rz, rx;
  rz.SetIdentity();
  rx.SetIdentity();
  rz(0, 0) = std::cos(a);
  rz(0, 1) = -std::sin(a);
  rz(1, 0) = std::sin(a);
  rz(1, 1) = std::cos(a);
  rx(1, 1) = std::cos(b);
  rx(1, 2) = -std::sin(b);
  rx(2, 1) = std::sin(b);
  rx(2, 2) = std::cos(b);
  return rz * rx;
}

// A float image on a grid centred on the physical origin, holding the synthetic organs.
template <typename TImage = FloatImage3>
typename TImage::Pointer
MakeOrganImage(const std::array<unsigned long, 3> & size, const std::array<double, 3> & spacing,
               const itk::Matrix<double, 3, 3> & direction)
{
  auto                         image = TImage::New();
  typename TImage::RegionType  region;
  typename TImage::SizeType    s;
  typename TImage::SpacingType sp;
  for (int d = 0; d < 3; ++d)
  {
    s[d] = size[d];
    sp[d] = spacing[d];
  }
  region.SetSize(s);
  image->SetRegions(region);
  image->SetSpacing(sp);
  image->SetDirection(direction);
  // Centre the grid: origin = -D S (size - 1) / 2.
  typename TImage::PointType origin;
  for (int i = 0; i < 3; ++i)
  {
    origin[i] = 0.0;
    for (int j = 0; j < 3; ++j)
      origin[i] -= direction(i, j) * spacing[j] * (static_cast<double>(size[j]) - 1.0) / 2.0;
  }
  image->SetOrigin(origin);
  image->Allocate();
  itk::ImageRegionIteratorWithIndex<TImage> it(image, region);
  for (it.GoToBegin(); !it.IsAtEnd(); ++it)
  {
    typename TImage::PointType p;
    image->TransformIndexToPhysicalPoint(it.GetIndex(), p);
    const double q[3] = { p[0], p[1], p[2] };
    it.Set(static_cast<typename TImage::PixelType>(OrganIntensity(q)));
  }
  return image;
}

// Model metadata for the synthetic organs: CT recipe, RAS axes, 2 mm voxels, 16^3 windows.
inline cs_model_info
OrganModelInfo(int32_t channels = 1, int32_t levels = 2)
{
  cs_unet_config arch = cs_unet_config_default();
  arch.spatial_dims = 3;
  arch.in_channels = channels;
  arch.num_classes = 3;
  arch.base_filters = 4;
  arch.levels = levels;
  cs_model_info info;
  EXPECT_EQ(cs_model_info_init(&info, &arch), CS_OK);
  std::snprintf(info.name, sizeof(info.name), "synthetic-organs");
  const char * channelNames[] = { "CT", "FLAIR", "T2", "PD" };
  for (int32_t c = 0; c < channels; ++c)
  {
    std::snprintf(info.channels[c].name, sizeof(info.channels[c].name), "%s", channelNames[c % 4]);
    info.channels[c].modality = CS_MODALITY_CT;
    info.channels[c].norm = CS_NORM_CLIP_SCALE;
    info.channels[c].clip_low = -100.0f;
    info.channels[c].clip_high = 300.0f;
    info.channels[c].mean = 100.0f;
    info.channels[c].std = 100.0f;
  }
  const char * classNames[] = { "background", "organ one", "organ two" };
  const int    values[] = { 0, 3, 7 };
  for (int k = 0; k < 3; ++k)
  {
    std::snprintf(info.classes[k].name, sizeof(info.classes[k].name), "%s", classNames[k]);
    info.classes[k].value = values[k];
  }
  for (int d = 0; d < 3; ++d)
  {
    info.spacing[d] = 2.0;
    info.patch_size[d] = 16;
  }
  std::snprintf(info.orientation, sizeof(info.orientation), "RAS");
  return info;
}

// An untrained model (He-initialised) wrapped for the filters.
inline itk::ComboSegModel::Pointer
MakeModel(const cs_model_info & info, uint64_t seed = 7)
{
  itk::ComboSegContext context;
  cs_model_t           model = nullptr;
  const cs_status      status = cs_model_create(context.Get(), &info, seed, &model);
  EXPECT_EQ(status, CS_OK) << cs_context_last_error(context.Get());
  auto wrapped = itk::ComboSegModel::New();
  wrapped->SetModel(model);
  return wrapped;
}

// A model trained on the organs drawn on its own grid (RAS, 2 mm, 32^3). Intensity tells the
// classes apart, which a tiny U-Net learns in about a hundred steps (a few seconds on an idle
// machine); the step count, not a time budget, keeps the result independent of the load.
inline itk::ComboSegModel::Pointer
TrainOrganModel(int32_t steps = 150, double maxSeconds = 900.0)
{
  const cs_model_info  info = OrganModelInfo();
  auto                 model = MakeModel(info, 11);
  const int64_t        n = 32;
  const int64_t        size[3] = { n, n, n };
  std::vector<float>   image(static_cast<size_t>(n * n * n));
  std::vector<int32_t> labels(image.size());
  for (int64_t z = 0; z < n; ++z)
    for (int64_t y = 0; y < n; ++y)
      for (int64_t x = 0; x < n; ++x)
      {
        // RAS axes: x grows to the right (-x in LPS), y to the front (-y in LPS).
        const double p[3] = { -(x - (n - 1) / 2.0) * 2.0, -(y - (n - 1) / 2.0) * 2.0, (z - (n - 1) / 2.0) * 2.0 };
        const size_t o = static_cast<size_t>(x + n * (y + n * z));
        labels[o] = OrganClass(p);
        // The recipe of OrganModelInfo: clip to [-100, 300], then (x - 100) / 100.
        image[o] = (std::min(std::max(OrganIntensity(p), -100.0f), 300.0f) - 100.0f) / 100.0f;
      }
  itk::ComboSegContext context;
  cs_train_config      config = cs_train_config_default();
  config.batch_size = 2;
  config.learning_rate = 1e-2f;
  config.total_steps = steps;
  config.seed = 3;
  cs_trainer_t trainer = nullptr;
  EXPECT_EQ(cs_trainer_init(context.Get(), model->GetModel(), &config, &trainer), CS_OK)
    << cs_context_last_error(context.Get());
  if (!trainer)
    return model;
  cs_sampling_options sampling = cs_sampling_options_default();
  sampling.foreground_fraction = 0.5f;
  sampling.intensity_scale = 0.0f;
  sampling.intensity_shift = 0.0f;
  const int32_t        patch[3] = { 16, 16, 16 };
  const size_t         patchVoxels = 16 * 16 * 16;
  std::vector<float>   batchImages(2 * patchVoxels);
  std::vector<int32_t> batchLabels(2 * patchVoxels);
  cs_rng               rng;
  cs_rng_seed(&rng, 5);
  const auto start = std::chrono::steady_clock::now();
  for (int32_t step = 0; step < steps; ++step)
  {
    for (int b = 0; b < 2; ++b)
    {
      EXPECT_EQ(cs_sample_patch(context.Get(), &rng, image.data(), labels.data(), 1, size, 3, patch, &sampling,
                                batchImages.data() + b * patchVoxels, batchLabels.data() + b * patchVoxels),
                CS_OK);
    }
    cs_step_result  result;
    const cs_status status = cs_trainer_step(trainer, batchImages.data(), batchLabels.data(), &result);
    EXPECT_TRUE(status == CS_OK || status == CS_ERR_NUMERIC) << cs_context_last_error(context.Get());
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > maxSeconds)
    {
      ADD_FAILURE() << "training stopped after " << step + 1 << " steps: the machine is too slow";
      break;
    }
  }
  cs_trainer_free(trainer);
  return model;
}

// A fresh temporary folder, removed with its contents at the end of the scope.
struct TempDir
{
  std::string path;
  TempDir()
  {
    char         pattern[] = "/tmp/comboseg-itk-XXXXXX";
    const char * made = mkdtemp(pattern);
    path = made ? made : "/tmp";
  }
  ~TempDir()
  {
    std::error_code ignored; // a leftover temporary folder is harmless
    if (path != "/tmp")
      std::filesystem::remove_all(path, ignored);
  }
};

inline bool
FileExists(const std::string & path)
{
  return access(path.c_str(), F_OK) == 0;
}

} // namespace cstest
