// cs_test_model.h - a tiny ComboSeg model made in the test: 1 channel, background + two blobs
// ("left blob" value 5, "right blob" value 9), trained for a few steps on a synthetic volume so
// that it segments bright blobs roughly. Small enough to run in a second on one core.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "comboseg/comboseg.h"

namespace cstest
{

// Synthetic volume (nz, ny, nx), x fastest: two bright balls on a noisy dark background.
// Labels: 1 in the ball at x < nx/2, 2 in the other (class indices).
inline void MakeBlobs(long nx, long ny, long nz, std::vector<float> &image, std::vector<int32_t> &labels,
                      uint64_t seed = 7)
{
  cs_rng rng;
  cs_rng_seed(&rng, seed);
  image.assign(size_t(nx * ny * nz), 0.0f);
  labels.assign(image.size(), 0);
  const double r = std::min({nx, ny, nz}) * 0.22;
  const double cx[2] = {nx * 0.28, nx * 0.72}, cy = ny * 0.5, cz = nz * 0.5;
  for (long k = 0, i = 0; k < nz; ++k)
    for (long j = 0; j < ny; ++j)
      for (long x = 0; x < nx; ++x, ++i)
      {
        image[size_t(i)] = 0.1f * cs_rng_normal(&rng);
        for (int b = 0; b < 2; ++b)
        {
          const double d = std::sqrt((x - cx[b]) * (x - cx[b]) + (j - cy) * (j - cy) + (k - cz) * (k - cz));
          if (d < r)
          {
            image[size_t(i)] += b == 0 ? 1.0f : 2.0f;
            labels[size_t(i)] = b + 1;
          }
        }
      }
}

// Creates the model and trains it `steps` steps on a 16^3 blob volume; saves it to path with the
// clean-up it recommends.
inline void MakeTestModel(const std::string &path, int steps = 15, cs_postprocessing recommended = {0, 0})
{
  cs_context_t ctx = nullptr;
  ASSERT_EQ(cs_context_init(&ctx), CS_OK);
  cs_unet_config arch = cs_unet_config_default();
  arch.in_channels = 1;
  arch.num_classes = 3;
  arch.base_filters = 4;
  arch.levels = 2;
  cs_model_info info;
  ASSERT_EQ(cs_model_info_init(&info, &arch), CS_OK);
  std::snprintf(info.name, sizeof info.name, "test-blobs");
  std::snprintf(info.channels[0].name, sizeof info.channels[0].name, "T1");
  info.channels[0].norm = CS_NORM_NONE;
  info.classes[1].value = 5;
  std::snprintf(info.classes[1].name, CS_NAME_MAX, "left blob");
  info.classes[2].value = 9;
  std::snprintf(info.classes[2].name, CS_NAME_MAX, "right blob");
  const uint8_t c1[3] = {230, 40, 40}, c2[3] = {40, 90, 230};
  std::memcpy(info.classes[1].rgb, c1, 3);
  std::memcpy(info.classes[2].rgb, c2, 3);
  info.patch_size[0] = info.patch_size[1] = info.patch_size[2] = 16;
  info.spacing[0] = info.spacing[1] = info.spacing[2] = 1.0;
  info.postprocessing = recommended;
  cs_model_t model = nullptr;
  ASSERT_EQ(cs_model_create(ctx, &info, 3, &model), CS_OK) << cs_context_last_error(ctx);

  cs_train_config config = cs_train_config_default();
  config.batch_size = 1;
  config.patch_size[0] = config.patch_size[1] = config.patch_size[2] = 16;
  config.learning_rate = 1e-2f;
  cs_trainer_t trainer = nullptr;
  ASSERT_EQ(cs_trainer_init(ctx, model, &config, &trainer), CS_OK) << cs_context_last_error(ctx);
  std::vector<float> image;
  std::vector<int32_t> labels;
  MakeBlobs(16, 16, 16, image, labels);
  for (int s = 0; s < steps; ++s)
  {
    cs_step_result result;
    ASSERT_EQ(cs_trainer_step(trainer, image.data(), labels.data(), &result), CS_OK) << cs_context_last_error(ctx);
  }
  cs_trainer_free(trainer);
  ASSERT_EQ(cs_model_save(ctx, model, path.c_str()), CS_OK) << cs_context_last_error(ctx);
  cs_model_free(model);
  cs_context_free(ctx);
}

} // namespace cstest
