// cs_mpi_test_util.h - the small network and the synthetic batches the distributed tests and
// the failure program train on. Item i of step s is the same on every rank and in every run.
#ifndef CS_MPI_TEST_UTIL_H
#define CS_MPI_TEST_UTIL_H

#include <cstdint>
#include <vector>

#include "comboseg/comboseg.h"

namespace cs_mpi_test
{

constexpr int kPatch = 16; // x = y = z
constexpr int kClasses = 3;
constexpr int64_t kVoxels = (int64_t)kPatch * kPatch * kPatch;

// A 3-level 3D U-Net with 4 base filters: big enough to have every layer kind, small enough
// to train 20 steps in seconds.
inline cs_model_info SmallModelInfo()
{
    cs_unet_config arch = cs_unet_config_default();
    arch.in_channels = 1;
    arch.num_classes = kClasses;
    arch.base_filters = 4;
    arch.levels = 3;
    cs_model_info info;
    cs_model_info_init(&info, &arch);
    for (int a = 0; a < 3; a++) info.patch_size[a] = kPatch;
    return info;
}

// Combo loss with per-item Dice (batch_dice off): the batch loss is the mean of the items'.
inline cs_train_config SmallTrainConfig(int batch)
{
    cs_train_config c = cs_train_config_default();
    c.batch_size = batch;
    c.learning_rate = 1e-2f;
    c.total_steps = 40;
    c.schedule = CS_LR_POLY;
    c.curriculum = 1;        // alpha depends on the step: all ranks must agree on it
    c.grad_clip_norm = 1.0f; // small enough to clip in early steps
    c.seed = 7;
    return c;
}

// Item `item` of step `step`: a ball of class 1 (bright) and a box of class 2 (dark) at
// positions drawn from the seed, in noise. image (1, z, y, x), labels (z, y, x).
inline void MakeItem(int64_t step, int64_t item, float *image, int32_t *labels)
{
    cs_rng rng;
    cs_rng_seed(&rng, 1000003ull * (uint64_t)step + 7919ull * (uint64_t)item + 11ull);
    const float cx = 4.0f + 8.0f * cs_rng_uniform(&rng), cy = 4.0f + 8.0f * cs_rng_uniform(&rng);
    const float cz = 4.0f + 8.0f * cs_rng_uniform(&rng), r = 2.5f + 2.0f * cs_rng_uniform(&rng);
    const int bx = (int)cs_rng_below(&rng, kPatch - 6), by = (int)cs_rng_below(&rng, kPatch - 6);
    const int bz = (int)cs_rng_below(&rng, kPatch - 6);
    for (int z = 0; z < kPatch; z++)
        for (int y = 0; y < kPatch; y++)
            for (int x = 0; x < kPatch; x++) {
                const int64_t v = ((int64_t)z * kPatch + y) * kPatch + x;
                const float d2 = (x - cx) * (x - cx) + (y - cy) * (y - cy) + (z - cz) * (z - cz);
                int32_t label = 0;
                float value = 0.0f;
                if (x >= bx && x < bx + 5 && y >= by && y < by + 5 && z >= bz && z < bz + 5) {
                    label = 2;
                    value = -1.0f;
                } else if (d2 <= r * r) {
                    label = 1;
                    value = 1.0f;
                }
                image[v] = value + 0.3f * cs_rng_normal(&rng);
                labels[v] = label;
            }
}

// Items [first, first + count) of step `step`.
struct Batch {
    std::vector<float> images;
    std::vector<int32_t> labels;
};

inline Batch MakeBatch(int64_t step, int64_t first, int64_t count)
{
    Batch b;
    b.images.resize((size_t)(count * kVoxels));
    b.labels.resize((size_t)(count * kVoxels));
    for (int64_t i = 0; i < count; i++)
        MakeItem(step, first + i, b.images.data() + i * kVoxels, b.labels.data() + i * kVoxels);
    return b;
}

} // namespace cs_mpi_test

#endif
