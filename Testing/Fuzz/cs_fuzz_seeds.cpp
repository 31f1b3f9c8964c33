/* cs_fuzz_seeds <folder> - writes the model-loader seed corpus: real files made by the engine
 * (small 2D and 3D models in F32 and F16, a trainer checkpoint), so that fuzzing starts from
 * every part of a valid file rather than from nothing. Run at build time; nothing binary is
 * committed. */
#include <cstdio>
#include <string>
#include <vector>

#include "comboseg/comboseg.h"

namespace
{
int
Fail(cs_context_t ctx, const char * what)
{
  std::fprintf(stderr, "cs_fuzz_seeds: %s: %s\n", what, cs_context_last_error(ctx));
  return 1;
}

// A small model: seeds stay a few kilobytes so that each fuzz execution is fast.
cs_status
MakeModel(cs_context_t ctx, int dims, int channels, int classes, cs_model_t * out)
{
  cs_unet_config arch = cs_unet_config_default();
  arch.spatial_dims = dims;
  arch.in_channels = channels;
  arch.num_classes = classes;
  arch.base_filters = 2;
  arch.levels = 2;
  cs_model_info info;
  cs_status     st = cs_model_info_init(&info, &arch);
  if (st != CS_OK)
    return st;
  info.patch_size[0] = info.patch_size[1] = 8;
  info.patch_size[2] = dims == 3 ? 8 : 1;
  std::snprintf(info.name, sizeof info.name, "fuzz-seed-%dd", dims);
  std::snprintf(info.description, sizeof info.description, "seed for fuzzing the model loader");
  return cs_model_create(ctx, &info, 7, out);
}
} // namespace

int
main(int argc, char ** argv)
{
  if (argc != 2)
  {
    std::fprintf(stderr, "usage: cs_fuzz_seeds <folder>\n");
    return 2;
  }
  const std::string folder = argv[1];
  cs_context_t      ctx;
  if (cs_context_init(&ctx) != CS_OK)
    return 1;
  cs_model_t m2 = nullptr, m3 = nullptr;
  if (MakeModel(ctx, 2, 1, 3, &m2) != CS_OK || MakeModel(ctx, 3, 2, 2, &m3) != CS_OK)
    return Fail(ctx, "create");
  if (cs_model_save(ctx, m2, (folder + "/model_2d.safetensors").c_str()) != CS_OK ||
      cs_model_save_f16(ctx, m2, (folder + "/model_2d_f16.safetensors").c_str()) != CS_OK ||
      cs_model_save(ctx, m3, (folder + "/model_3d.safetensors").c_str()) != CS_OK)
    return Fail(ctx, "save");

  cs_train_config config = cs_train_config_default();
  config.batch_size = 1;
  cs_trainer_t trainer = nullptr;
  if (cs_trainer_init(ctx, m2, &config, &trainer) != CS_OK)
    return Fail(ctx, "trainer");
  std::vector<float>   image(8 * 8, 0.5f);
  std::vector<int32_t> labels(8 * 8, 0);
  for (size_t i = 0; i < labels.size(); i += 3)
    labels[i] = static_cast<int32_t>(i % 3);
  cs_step_result r;
  if (cs_trainer_step(trainer, image.data(), labels.data(), &r) != CS_OK ||
      cs_trainer_save_checkpoint(trainer, (folder + "/checkpoint_2d.safetensors").c_str()) != CS_OK)
    return Fail(ctx, "checkpoint");
  cs_trainer_free(trainer);
  cs_model_free(m2);
  cs_model_free(m3);
  cs_context_free(ctx);
  return 0;
}
