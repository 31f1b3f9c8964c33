// test_train.cpp - the trainer: learning, determinism, numeric safety, schedules, checkpoints.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "comboseg/comboseg.h"
#include "internal.h"

namespace
{

// One batch: images (B, C, z, y, x) and labels (B, z, y, x).
struct Batch
{
  int64_t size[3];
  int batch = 0;
  std::vector<float> images;
  std::vector<int32_t> labels;
};

// 3D: four classes told apart by intensity and texture, in a noisy background.
//   1: a ball of intensity 1; 2: a box of intensity -1; 3: a ball of chequered 1.5 / 2.5.
Batch MakeShapes3D(int64_t n, int batch, uint64_t seed)
{
  Batch b;
  b.size[0] = b.size[1] = b.size[2] = n;
  b.batch = batch;
  const int64_t vox = n * n * n;
  b.images.resize((size_t)(batch * vox));
  b.labels.resize((size_t)(batch * vox));
  cs_rng rng;
  cs_rng_seed(&rng, seed);
  for (int i = 0; i < batch; i++)
  {
    // each item moves the shapes a little
    const double s = (double)n / 24.0, o = (double)i * 2.0 * s;
    for (int64_t z = 0; z < n; z++)
      for (int64_t y = 0; y < n; y++)
        for (int64_t x = 0; x < n; x++)
        {
          const int64_t v = (z * n + y) * n + x;
          int32_t label = 0;
          float value = 0.0f;
          auto d2 = [&](double cx, double cy, double cz) {
            return (x - cx) * (x - cx) + (y - cy) * (y - cy) + (z - cz) * (z - cz);
          };
          if (d2(7 * s + o, 8 * s, 8 * s) <= 25 * s * s)
          {
            label = 1;
            value = 1.0f;
          }
          else if (x >= 13 * s && x < 21 * s && y >= 3 * s + o && y < 11 * s + o && z >= 12 * s && z < 20 * s)
          {
            label = 2;
            value = -1.0f;
          }
          else if (d2(15 * s, 17 * s, 6 * s + o) <= 16 * s * s)
          {
            label = 3;
            value = ((x + y + z) % 2) ? 2.5f : 1.5f;
          }
          b.images[i * vox + v] = value + 0.1f * cs_rng_normal(&rng);
          b.labels[i * vox + v] = label;
        }
  }
  return b;
}

// 2D: a disk (class 1) and a tiny square organ (class 2, under 1% of the pixels).
Batch MakeTinyOrgan2D(int64_t n, int batch, uint64_t seed)
{
  Batch b;
  b.size[0] = b.size[1] = n;
  b.size[2] = 1;
  b.batch = batch;
  const int64_t vox = n * n;
  b.images.resize((size_t)(batch * vox));
  b.labels.resize((size_t)(batch * vox));
  cs_rng rng;
  cs_rng_seed(&rng, seed);
  for (int i = 0; i < batch; i++)
  {
    const int64_t ox = 40 + 6 * i, oy = 44 - 10 * i; // the organ's corner
    for (int64_t y = 0; y < n; y++)
      for (int64_t x = 0; x < n; x++)
      {
        const int64_t v = y * n + x;
        int32_t label = 0;
        float value = 0.0f;
        const double dx = x - 22.0 - 3 * i, dy = y - 24.0;
        if (x >= ox && x < ox + 5 && y >= oy && y < oy + 5)
        {
          label = 2;
          value = 2.0f;
        }
        else if (dx * dx + dy * dy <= 144.0)
        {
          label = 1;
          value = 1.0f;
        }
        b.images[i * vox + v] = value + 0.1f * cs_rng_normal(&rng);
        b.labels[i * vox + v] = label;
      }
  }
  return b;
}

class TrainTest : public ::testing::Test
{
protected:
  void SetUp() override
  {
    ASSERT_EQ(cs_context_init(&ctx_), CS_OK);
    cs_context_set_threads(ctx_, 2);
  }
  void TearDown() override
  {
    for (cs_trainer_t t : trainers_)
      cs_trainer_free(t);
    for (cs_model_t m : models_)
      cs_model_free(m);
    cs_context_free(ctx_);
  }

  cs_model_t MakeModel(int dims, int channels, int classes, int base, int levels, const int64_t patch[3],
                       uint64_t seed = 11)
  {
    cs_unet_config arch = cs_unet_config_default();
    arch.spatial_dims = dims;
    arch.in_channels = channels;
    arch.num_classes = classes;
    arch.base_filters = base;
    arch.levels = levels;
    cs_model_info info;
    EXPECT_EQ(cs_model_info_init(&info, &arch), CS_OK);
    for (int a = 0; a < 3; a++)
      info.patch_size[a] = (int32_t)patch[a];
    cs_model_t m = nullptr;
    EXPECT_EQ(cs_model_create(ctx_, &info, seed, &m), CS_OK) << cs_context_last_error(ctx_);
    if (m)
      models_.push_back(m);
    return m;
  }

  static cs_train_config Config(int batch, float lr = 0.01f)
  {
    cs_train_config c = cs_train_config_default();
    c.batch_size = batch;
    c.learning_rate = lr;
    c.schedule = CS_LR_CONSTANT;
    c.curriculum = 0;
    return c;
  }

  cs_trainer_t MakeTrainer(cs_model_t m, const cs_train_config &c, cs_context_t ctx = nullptr)
  {
    cs_trainer_t t = nullptr;
    cs_context_t use = ctx ? ctx : ctx_;
    EXPECT_EQ(cs_trainer_init(use, m, &c, &t), CS_OK) << cs_context_last_error(use);
    if (t)
      trainers_.push_back(t);
    return t;
  }

  // Steps until the hard Dice of every class exceeds 0.9 (returns the steps taken, or -1).
  int TrainUntilDice(cs_trainer_t t, const Batch &b, int classes, int max_steps, cs_step_result *last)
  {
    for (int s = 0; s < max_steps; s++)
    {
      cs_step_result r;
      EXPECT_EQ(cs_trainer_step(t, b.images.data(), b.labels.data(), &r), CS_OK) << cs_context_last_error(ctx_);
      *last = r;
      bool all = true;
      for (int k = 0; k < classes; k++)
        all = all && r.dice[k] > 0.9f;
      if (all)
        return s + 1;
    }
    return -1;
  }

  std::vector<float> Losses(cs_trainer_t t, const Batch &b, int steps)
  {
    std::vector<float> out;
    for (int s = 0; s < steps; s++)
    {
      cs_step_result r;
      EXPECT_EQ(cs_trainer_step(t, b.images.data(), b.labels.data(), &r), CS_OK) << cs_context_last_error(ctx_);
      out.push_back(r.loss);
    }
    return out;
  }

  std::string TempPath(const char *name)
  {
    return std::string(COMBOSEG_BINARY_DIR) + "/test_train_" + name + ".safetensors";
  }

  cs_context_t ctx_ = nullptr;
  std::vector<cs_model_t> models_;
  std::vector<cs_trainer_t> trainers_;
};

TEST_F(TrainTest, OverfitsMultiClass3D)
{
  const Batch b = MakeShapes3D(16, 2, 1);
  cs_model_t m = MakeModel(3, 1, 4, 8, 3, b.size);
  ASSERT_NE(m, nullptr);
  cs_trainer_t t = MakeTrainer(m, Config(2));
  ASSERT_NE(t, nullptr);
  cs_step_result r;
  int steps = TrainUntilDice(t, b, 4, 150, &r);
  RecordProperty("steps", steps);
  EXPECT_GT(steps, 0) << "Dice after 150 steps: " << r.dice[0] << " " << r.dice[1] << " " << r.dice[2] << " "
                      << r.dice[3] << ", loss " << r.loss;
  EXPECT_EQ(cs_trainer_steps_done(t), steps > 0 ? steps : 150);

  // the trained model segments the training volume through the inference path too
  const int64_t vox = 16 * 16 * 16;
  std::vector<int32_t> labels(vox);
  cs_infer_options o = cs_infer_options_default();
  ASSERT_EQ(cs_predict_volume(ctx_, m, b.images.data(), b.size, &o, nullptr, labels.data()), CS_OK);
  float dice[4];
  cs_dice_per_class(labels.data(), b.labels.data(), vox, 4, dice);
  for (int k = 0; k < 4; k++)
    EXPECT_GT(dice[k], 0.85f) << "class " << k;
}

TEST_F(TrainTest, OverfitsTinyOrgan2D)
{
  const Batch b = MakeTinyOrgan2D(64, 2, 2);
  const int64_t organ = std::count(b.labels.begin(), b.labels.begin() + 64 * 64, 2);
  ASSERT_LT(organ, 64 * 64 / 100) << "the organ must be under 1% of the pixels";
  cs_model_t m = MakeModel(2, 1, 3, 8, 3, b.size);
  ASSERT_NE(m, nullptr);
  cs_trainer_t t = MakeTrainer(m, Config(2));
  ASSERT_NE(t, nullptr);
  cs_step_result r;
  int steps = TrainUntilDice(t, b, 3, 300, &r);
  RecordProperty("steps", steps);
  EXPECT_GT(steps, 0) << "Dice after 300 steps: " << r.dice[0] << " " << r.dice[1] << " " << r.dice[2] << ", loss "
                      << r.loss;
  EXPECT_TRUE(std::isnan(r.dice[3])) << "classes beyond K are NaN";
}

TEST_F(TrainTest, SameSeedAndThreadsGiveIdenticalLosses)
{
  const Batch b = MakeShapes3D(12, 2, 3);
  cs_model_t m1 = MakeModel(3, 1, 4, 4, 3, b.size, 5);
  cs_model_t m2 = MakeModel(3, 1, 4, 4, 3, b.size, 5);
  ASSERT_TRUE(m1 && m2);
  cs_trainer_t t1 = MakeTrainer(m1, Config(2));
  cs_trainer_t t2 = MakeTrainer(m2, Config(2));
  ASSERT_TRUE(t1 && t2);
  std::vector<float> a = Losses(t1, b, 20), c = Losses(t2, b, 20);
  EXPECT_EQ(a, c);
  EXPECT_LT(a.back(), a.front()) << "the loss should fall";
  EXPECT_EQ(0, std::memcmp(m1->params, m2->params, sizeof(float) * (size_t)m1->num_params));
}

TEST_F(TrainTest, OneAndTwoThreadsAgree)
{
  const Batch b = MakeShapes3D(12, 2, 4);
  cs_context_t one;
  ASSERT_EQ(cs_context_init(&one), CS_OK);
  cs_context_set_threads(one, 1);
  cs_model_t m1 = MakeModel(3, 1, 4, 4, 3, b.size, 6);
  cs_model_t m2 = MakeModel(3, 1, 4, 4, 3, b.size, 6);
  ASSERT_TRUE(m1 && m2);
  cs_trainer_t t1 = MakeTrainer(m1, Config(2), one);
  cs_trainer_t t2 = MakeTrainer(m2, Config(2));
  ASSERT_TRUE(t1 && t2);
  std::vector<float> a = Losses(t1, b, 10), c = Losses(t2, b, 10);
  for (size_t i = 0; i < a.size(); i++)
    EXPECT_NEAR(a[i], c[i], 1e-4 * std::max(1.0f, std::fabs(a[i]))) << "step " << i;
  for (cs_trainer_t &t : trainers_)
    if (t == t1)
    {
      cs_trainer_free(t);
      t = nullptr;
    }
  cs_context_free(one);
}

TEST_F(TrainTest, NonFiniteInputKeepsWeights)
{
  Batch b = MakeShapes3D(12, 1, 5);
  cs_model_t m = MakeModel(3, 1, 4, 4, 3, b.size);
  ASSERT_NE(m, nullptr);
  cs_trainer_t t = MakeTrainer(m, Config(1));
  ASSERT_NE(t, nullptr);
  Losses(t, b, 2); // moments are non-zero now
  std::vector<float> before(m->params, m->params + m->num_params);
  for (float bad : {NAN, INFINITY})
  {
    Batch broken = b;
    broken.images[100] = bad;
    cs_step_result r;
    EXPECT_EQ(cs_trainer_step(t, broken.images.data(), broken.labels.data(), &r), CS_ERR_NUMERIC);
    EXPECT_NE(std::string(cs_context_last_error(ctx_)).find("non-finite"), std::string::npos)
        << cs_context_last_error(ctx_);
    EXPECT_EQ(0, std::memcmp(before.data(), m->params, before.size() * sizeof(float)));
    EXPECT_EQ(cs_trainer_steps_done(t), 2);
  }
  // training goes on afterwards
  cs_step_result r;
  EXPECT_EQ(cs_trainer_step(t, b.images.data(), b.labels.data(), &r), CS_OK);
  EXPECT_TRUE(std::isfinite(r.loss));
}

TEST_F(TrainTest, RejectsLabelsOutOfRange)
{
  Batch b = MakeShapes3D(12, 1, 6);
  cs_model_t m = MakeModel(3, 1, 4, 4, 3, b.size);
  ASSERT_NE(m, nullptr);
  cs_trainer_t t = MakeTrainer(m, Config(1));
  ASSERT_NE(t, nullptr);
  std::vector<float> before(m->params, m->params + m->num_params);
  for (int32_t bad : {4, -1, 255})
  {
    Batch broken = b;
    broken.labels[1000] = bad;
    cs_step_result r;
    EXPECT_EQ(cs_trainer_step(t, broken.images.data(), broken.labels.data(), &r), CS_ERR_INVALID_ARGUMENT);
    std::string msg = cs_context_last_error(ctx_);
    EXPECT_NE(msg.find("label " + std::to_string(bad)), std::string::npos) << msg;
  }
  EXPECT_EQ(0, std::memcmp(before.data(), m->params, before.size() * sizeof(float)));
  EXPECT_EQ(cs_trainer_steps_done(t), 0);
}

TEST_F(TrainTest, RejectsBadConfigs)
{
  const int64_t patch[3] = {16, 16, 16};
  cs_model_t m = MakeModel(3, 1, 3, 4, 3, patch);
  ASSERT_NE(m, nullptr);
  cs_trainer_t t = nullptr;
  cs_train_config c = Config(0);
  EXPECT_EQ(cs_trainer_init(ctx_, m, &c, &t), CS_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(t, nullptr);
  c = Config(1);
  c.patch_size[0] = 18; // not a multiple of 4
  EXPECT_EQ(cs_trainer_init(ctx_, m, &c, &t), CS_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(cs_context_last_error(ctx_)).find("multiple of 4"), std::string::npos);
  c = Config(1, -1.0f);
  EXPECT_EQ(cs_trainer_init(ctx_, m, &c, &t), CS_ERR_INVALID_ARGUMENT);
  c = Config(1);
  c.loss.beta = 2.0f;
  EXPECT_EQ(cs_trainer_init(ctx_, m, &c, &t), CS_ERR_INVALID_ARGUMENT);

  const int64_t plane[3] = {16, 16, 1};
  cs_model_t m2 = MakeModel(2, 1, 3, 4, 3, plane);
  ASSERT_NE(m2, nullptr);
  c = Config(1);
  c.patch_size[0] = c.patch_size[1] = 16;
  c.patch_size[2] = 2;
  EXPECT_EQ(cs_trainer_init(ctx_, m2, &c, &t), CS_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(cs_context_last_error(ctx_)).find("2D"), std::string::npos);
  c.patch_size[2] = 0; // takes the model's: 1
  t = MakeTrainer(m2, c);
  EXPECT_NE(t, nullptr);
}

// Fine-tuning with frozen encoder levels: exactly the tensors of those levels keep their values
// (weight decay included), every other tensor learns, and the loss still falls.
TEST_F(TrainTest, FrozenEncoderLevelsKeepTheirWeights)
{
  Batch b = MakeShapes3D(12, 1, 8);
  for (int frozen : {1, 3})
  {
    cs_model_t m = MakeModel(3, 1, 4, 4, 3, b.size);
    ASSERT_NE(m, nullptr);
    cs_train_config c = Config(1);
    c.weight_decay = 0.01f; // would move a frozen weight if the optimiser touched it
    c.frozen_encoder_levels = frozen;
    cs_trainer_t t = MakeTrainer(m, c);
    ASSERT_NE(t, nullptr);
    std::vector<float> before(m->params, m->params + m->num_params);
    const std::vector<float> losses = Losses(t, b, 15);
    EXPECT_LT(losses.back(), losses.front()) << frozen << " frozen levels";
    int kept = 0, learnt = 0;
    for (int32_t i = 0; i < m->num_tensors; i++)
    {
      const cs_param_tensor &p = m->tensors[i];
      const bool same = std::memcmp(before.data() + p.offset, m->params + p.offset, p.count * sizeof(float)) == 0;
      const bool should_freeze = std::strncmp(p.name, "enc", 3) == 0 && std::atoi(p.name + 3) < frozen;
      EXPECT_EQ(same, should_freeze) << p.name << " with " << frozen << " frozen levels";
      (should_freeze ? kept : learnt)++;
    }
    EXPECT_GT(kept, 0);
    EXPECT_GT(learnt, 0);
  }

  cs_model_t m = MakeModel(3, 1, 4, 4, 3, b.size);
  ASSERT_NE(m, nullptr);
  cs_trainer_t t = nullptr;
  for (int bad : {-1, 4})
  {
    cs_train_config c = Config(1);
    c.frozen_encoder_levels = bad;
    EXPECT_EQ(cs_trainer_init(ctx_, m, &c, &t), CS_ERR_INVALID_ARGUMENT) << bad;
    EXPECT_NE(std::string(cs_context_last_error(ctx_)).find("frozen_encoder_levels"), std::string::npos);
    EXPECT_EQ(t, nullptr);
  }
}

TEST_F(TrainTest, FollowsCurriculumAndLearningRateSchedule)
{
  const Batch b = MakeShapes3D(12, 1, 7);
  cs_model_t m = MakeModel(3, 1, 4, 4, 3, b.size);
  ASSERT_NE(m, nullptr);
  cs_train_config c = Config(1);
  c.curriculum = 1;
  c.curriculum_alpha_start = 0.1f;
  c.loss.alpha = 0.7f;
  c.curriculum_steps = 4;
  c.schedule = CS_LR_POLY;
  c.warmup_steps = 2;
  c.total_steps = 10;
  cs_trainer_t t = MakeTrainer(m, c);
  ASSERT_NE(t, nullptr);
  const int64_t vox = 12 * 12 * 12;
  std::vector<float> logits(4 * vox);
  std::vector<float> alphas;
  for (int s = 0; s < 7; s++)
  {
    // the loss the trainer reports is the Combo loss of the current weights at this alpha
    ASSERT_EQ(cs_model_forward(ctx_, m, b.images.data(), 1, b.size, logits.data()), CS_OK);
    cs_step_result r;
    ASSERT_EQ(cs_trainer_step(t, b.images.data(), b.labels.data(), &r), CS_OK);
    EXPECT_FLOAT_EQ(r.alpha, cs_train_alpha_at(&c, s));
    EXPECT_FLOAT_EQ(r.learning_rate, cs_train_learning_rate_at(&c, s));
    cs_loss_options lo = c.loss;
    lo.alpha = r.alpha;
    float expected = 0;
    ASSERT_EQ(cs_loss(&lo, logits.data(), b.labels.data(), 1, vox, 4, &expected, nullptr), CS_OK);
    EXPECT_NEAR(r.loss, expected, 1e-4f) << "step " << s;
    alphas.push_back(r.alpha);
  }
  EXPECT_NEAR(alphas.front(), 0.1f, 1e-6f);
  EXPECT_NEAR(alphas[4], 0.7f, 1e-6f);
  EXPECT_NEAR(alphas.back(), 0.7f, 1e-6f);
  for (int s = 1; s <= 4; s++)
    EXPECT_GT(alphas[s], alphas[s - 1]);
}

TEST_F(TrainTest, CheckpointResumesExactly)
{
  const Batch b = MakeShapes3D(12, 2, 8);
  cs_model_t ma = MakeModel(3, 1, 4, 4, 3, b.size, 21);
  cs_trainer_t ta = MakeTrainer(ma, Config(2));
  ASSERT_TRUE(ma && ta);
  const std::vector<float> uninterrupted = Losses(ta, b, 6);

  const std::string path = TempPath("resume");
  std::remove(path.c_str());
  cs_model_t mb = MakeModel(3, 1, 4, 4, 3, b.size, 21);
  cs_trainer_t tb = MakeTrainer(mb, Config(2));
  ASSERT_TRUE(mb && tb);
  std::vector<float> first = Losses(tb, b, 3);
  cs_model_info named = *cs_model_get_info(mb);
  std::snprintf(named.name, sizeof named.name, "%s", "resumed-model");
  named.classes[2].rgb[0] = 7;
  ASSERT_EQ(cs_model_set_info(ctx_, mb, &named), CS_OK);
  ASSERT_EQ(cs_trainer_save_checkpoint(tb, path.c_str()), CS_OK) << cs_context_last_error(ctx_);

  // a fresh model with other weights and a fresh trainer continue from the file
  cs_model_t mc = MakeModel(3, 1, 4, 4, 3, b.size, 999);
  cs_trainer_t tc = MakeTrainer(mc, Config(2));
  ASSERT_TRUE(mc && tc);
  ASSERT_EQ(cs_trainer_load_checkpoint(tc, path.c_str()), CS_OK) << cs_context_last_error(ctx_);
  EXPECT_EQ(cs_trainer_steps_done(tc), 3);
  // the model's metadata comes back with its weights
  EXPECT_STREQ(cs_model_get_info(mc)->name, "resumed-model");
  EXPECT_EQ(cs_model_get_info(mc)->classes[2].rgb[0], 7);
  std::vector<float> rest = Losses(tc, b, 3);
  first.insert(first.end(), rest.begin(), rest.end());
  EXPECT_EQ(first, uninterrupted);
  EXPECT_EQ(0, std::memcmp(ma->params, mc->params, sizeof(float) * (size_t)ma->num_params));
  std::remove(path.c_str());
}

TEST_F(TrainTest, CheckpointLoadRejectsMismatchesAndKeepsState)
{
  const Batch b = MakeShapes3D(12, 1, 9);
  cs_model_t m = MakeModel(3, 1, 4, 4, 3, b.size);
  cs_trainer_t t = MakeTrainer(m, Config(1));
  ASSERT_TRUE(m && t);
  Losses(t, b, 1);
  const std::string path = TempPath("mismatch");
  ASSERT_EQ(cs_trainer_save_checkpoint(t, path.c_str()), CS_OK) << cs_context_last_error(ctx_);

  // another architecture (5 classes)
  cs_model_t other = MakeModel(3, 1, 5, 4, 3, b.size);
  cs_trainer_t to = MakeTrainer(other, Config(1));
  ASSERT_TRUE(other && to);
  std::vector<float> before(other->params, other->params + other->num_params);
  EXPECT_EQ(cs_trainer_load_checkpoint(to, path.c_str()), CS_ERR_INVALID_ARGUMENT);
  std::string msg = cs_context_last_error(ctx_);
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("num_classes"), std::string::npos) << msg;
  EXPECT_EQ(0, std::memcmp(before.data(), other->params, before.size() * sizeof(float)));
  EXPECT_EQ(cs_trainer_steps_done(to), 0);

  // another batch size
  cs_model_t same = MakeModel(3, 1, 4, 4, 3, b.size);
  cs_trainer_t t2 = MakeTrainer(same, Config(2));
  ASSERT_TRUE(same && t2);
  EXPECT_EQ(cs_trainer_load_checkpoint(t2, path.c_str()), CS_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(cs_context_last_error(ctx_)).find("batch_size"), std::string::npos)
      << cs_context_last_error(ctx_);

  // a truncated file
  const std::string cut = TempPath("truncated");
  {
    FILE *in = std::fopen(path.c_str(), "rb");
    ASSERT_NE(in, nullptr);
    std::vector<char> bytes(1 << 20);
    size_t n = std::fread(bytes.data(), 1, bytes.size(), in);
    std::fclose(in);
    FILE *out = std::fopen(cut.c_str(), "wb");
    ASSERT_NE(out, nullptr);
    std::fwrite(bytes.data(), 1, n / 2, out);
    std::fclose(out);
  }
  cs_model_t fresh = MakeModel(3, 1, 4, 4, 3, b.size, 77);
  cs_trainer_t tf = MakeTrainer(fresh, Config(1));
  ASSERT_TRUE(fresh && tf);
  std::vector<float> kept(fresh->params, fresh->params + fresh->num_params);
  EXPECT_EQ(cs_trainer_load_checkpoint(tf, cut.c_str()), CS_ERR_FORMAT);
  EXPECT_EQ(0, std::memcmp(kept.data(), fresh->params, kept.size() * sizeof(float)));
  EXPECT_EQ(cs_trainer_load_checkpoint(tf, (path + ".missing").c_str()), CS_ERR_IO);
  std::remove(path.c_str());
  std::remove(cut.c_str());
}

TEST_F(TrainTest, ClipsTheGlobalGradientNorm)
{
  // Adam hardly sees the gradient's scale, except through epsilon: a norm clipped far below
  // epsilon must shrink the first update a lot, while the reported norm is the unclipped one.
  const Batch b = MakeShapes3D(12, 1, 11);
  cs_model_t free_run = MakeModel(3, 1, 4, 4, 3, b.size, 3);
  cs_model_t clipped = MakeModel(3, 1, 4, 4, 3, b.size, 3);
  ASSERT_TRUE(free_run && clipped);
  const std::vector<float> start(free_run->params, free_run->params + free_run->num_params);
  cs_train_config c = Config(1);
  c.grad_clip_norm = 0.0f;
  cs_trainer_t t1 = MakeTrainer(free_run, c);
  c.grad_clip_norm = 1e-12f;
  cs_trainer_t t2 = MakeTrainer(clipped, c);
  ASSERT_TRUE(t1 && t2);
  cs_step_result r1, r2;
  ASSERT_EQ(cs_trainer_step(t1, b.images.data(), b.labels.data(), &r1), CS_OK);
  ASSERT_EQ(cs_trainer_step(t2, b.images.data(), b.labels.data(), &r2), CS_OK);
  EXPECT_GT(r1.grad_norm, 1e-6f);
  EXPECT_FLOAT_EQ(r1.grad_norm, r2.grad_norm);
  double moved1 = 0, moved2 = 0;
  for (size_t i = 0; i < start.size(); i++)
  {
    moved1 += std::fabs(free_run->params[i] - start[i]);
    moved2 += std::fabs(clipped->params[i] - start[i]);
  }
  EXPECT_GT(moved1, 0.0);
  EXPECT_LT(moved2, 0.01 * moved1);
}

TEST_F(TrainTest, NoAllocationAfterFirstStep)
{
  const Batch b = MakeShapes3D(12, 2, 10);
  cs_model_t m = MakeModel(3, 1, 4, 4, 3, b.size);
  cs_trainer_t t = MakeTrainer(m, Config(2));
  ASSERT_TRUE(m && t);
  Losses(t, b, 1);
  const uint64_t count = ctx_->alloc_count;
  Losses(t, b, 4);
  EXPECT_EQ(ctx_->alloc_count, count);
}

} // namespace
