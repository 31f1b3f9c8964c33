/* fuzz_model_load - libFuzzer target for model files: the safetensors header length, the JSON
 * header and its metadata, the tensor table and the data section, through cs_model_load.
 *
 * Invariants checked beyond "no crash, no leak, no sanitiser report":
 * - a failed load leaves a message and no model;
 * - a model that loads has valid metadata, saves, and reloads with the same weights bit for bit;
 * - no single allocation is larger than a fixed multiple of the file (sizes come from the
 *   file, so an allocation far beyond it means a size was trusted before it was checked). */
#include <cstring>
#include <string>

#include "comboseg/comboseg.h"
#include "fuzz_util.h"
#include "internal.h"

namespace
{
// Loading converts F16/BF16 to float (x2) and copies into the model (x1): a few times the file
// plus the fixed-size structures; the loader lets weights of up to 64 MiB be allocated before
// the tensor check names the missing tensor (model_io.c, check_weight_count).
uint64_t
AllowedBytes(size_t fileSize)
{
  return 8 * static_cast<uint64_t>(fileSize) + (65u << 20);
}
} // namespace

extern "C" int
LLVMFuzzerTestOneInput(const uint8_t * data, size_t size)
{
  const std::string path = cs_fuzz::ScratchFolder() + "/input.safetensors";
  const std::string copy = cs_fuzz::ScratchFolder() + "/resaved.safetensors";
  cs_fuzz::WriteFile(path, data, size);

  cs_context_t ctx = nullptr;
  if (cs_context_init(&ctx) != CS_OK)
    return 0;
  ctx->fault_over_bytes = AllowedBytes(size);
  cs_model_t      model = reinterpret_cast<cs_model_t>(1);
  const cs_status st = cs_model_load(ctx, path.c_str(), &model);
  if (ctx->fault_hits)
    __builtin_trap(); // an allocation sized by the file before the file was checked
  if (st != CS_OK)
  {
    if (model != nullptr || cs_context_last_error(ctx)[0] == '\0')
      __builtin_trap(); // a failure must leave no model and say why
    cs_context_free(ctx);
    return 0;
  }
  ctx->fault_over_bytes = 0;
  char message[256];
  if (cs_model_info_validate(cs_model_get_info(model), message, sizeof message) != CS_OK)
    __builtin_trap();
  cs_model_t again = nullptr;
  if (cs_model_save(ctx, model, copy.c_str()) != CS_OK || cs_model_load(ctx, copy.c_str(), &again) != CS_OK)
    __builtin_trap(); // whatever loads must save and load again
  if (again->num_params != model->num_params ||
      std::memcmp(again->params, model->params, sizeof(float) * static_cast<size_t>(model->num_params)) != 0)
    __builtin_trap();
  cs_model_free(again);
  cs_model_free(model);
  cs_context_free(ctx);
  return 0;
}
