// test_optim.cpp - training defaults, learning-rate and alpha schedules, Adam and AdamW against
// torch.optim, gradient norm, clipping and the finite check.
#include <gtest/gtest.h>

#include "comboseg/comboseg.h"
#include "optim.h"

#include "../Reference/cs_golden.h"

#include <cmath>
#include <string>
#include <vector>

namespace
{

const char *kGoldenPath = COMBOSEG_SOURCE_DIR "/Testing/Data/optim_golden.bin";
const double kPi = 3.14159265358979323846;

std::vector<float> RandomVector(int64_t n, uint64_t seed, float scale)
{
  cs_rng rng;
  cs_rng_seed(&rng, seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto &x : v)
    x = scale * cs_rng_normal(&rng);
  return v;
}

double NormInDouble(const std::vector<float> &v)
{
  long double s = 0.0L;
  for (float x : v)
    s += static_cast<long double>(x) * x;
  return static_cast<double>(std::sqrt(s));
}

} // namespace

TEST(TrainConfig, Defaults)
{
  const cs_train_config c = cs_train_config_default();
  EXPECT_EQ(c.batch_size, 2);
  EXPECT_EQ(c.patch_size[0], 0);
  EXPECT_EQ(c.patch_size[1], 0);
  EXPECT_EQ(c.patch_size[2], 0);
  EXPECT_EQ(c.optimizer, CS_OPTIMIZER_ADAM);
  EXPECT_FLOAT_EQ(c.learning_rate, 1e-3f);
  EXPECT_FLOAT_EQ(c.adam_beta1, 0.9f);
  EXPECT_FLOAT_EQ(c.adam_beta2, 0.999f);
  EXPECT_FLOAT_EQ(c.adam_epsilon, 1e-8f);
  EXPECT_EQ(c.weight_decay, 0.0f);
  EXPECT_EQ(c.warmup_steps, 0);
  EXPECT_EQ(c.total_steps, 1000);
  EXPECT_FLOAT_EQ(c.poly_power, 0.9f);
  EXPECT_EQ(c.min_learning_rate, 0.0f);
  EXPECT_FLOAT_EQ(c.grad_clip_norm, 12.0f);
  EXPECT_EQ(c.loss.kind, CS_LOSS_COMBO_TVERSKY);
  EXPECT_FLOAT_EQ(c.loss.alpha, 0.5f);
  EXPECT_FLOAT_EQ(c.loss.beta, 0.5f);
  EXPECT_EQ(c.curriculum, 0);
  EXPECT_FLOAT_EQ(c.curriculum_alpha_start, 0.1f);
  EXPECT_EQ(c.curriculum_steps, 0);
}

TEST(LearningRate, WarmupIsLinearFromZero)
{
  cs_train_config c = cs_train_config_default();
  c.schedule = CS_LR_CONSTANT;
  c.learning_rate = 0.02f;
  c.warmup_steps = 10;
  EXPECT_EQ(cs_train_learning_rate_at(&c, 0), 0.0f);
  EXPECT_FLOAT_EQ(cs_train_learning_rate_at(&c, 5), 0.01f);
  EXPECT_FLOAT_EQ(cs_train_learning_rate_at(&c, 9), 0.018f);
  EXPECT_FLOAT_EQ(cs_train_learning_rate_at(&c, 10), 0.02f);
  EXPECT_FLOAT_EQ(cs_train_learning_rate_at(&c, 5000), 0.02f);
  EXPECT_EQ(cs_train_learning_rate_at(&c, -3), 0.0f);
  for (int64_t s = 1; s <= 10; s++)
    EXPECT_GT(cs_train_learning_rate_at(&c, s), cs_train_learning_rate_at(&c, s - 1));
  c.warmup_steps = 0;
  EXPECT_FLOAT_EQ(cs_train_learning_rate_at(&c, 0), 0.02f);
}

TEST(LearningRate, Poly)
{
  cs_train_config c = cs_train_config_default();
  c.schedule = CS_LR_POLY;
  c.learning_rate = 0.01f;
  c.total_steps = 200;
  c.poly_power = 0.9f;
  EXPECT_FLOAT_EQ(cs_train_learning_rate_at(&c, 0), 0.01f);
  EXPECT_FLOAT_EQ(cs_train_learning_rate_at(&c, 100), static_cast<float>(0.01 * std::pow(0.5, 0.9)));
  EXPECT_FLOAT_EQ(cs_train_learning_rate_at(&c, 150), static_cast<float>(0.01 * std::pow(0.25, 0.9)));
  EXPECT_EQ(cs_train_learning_rate_at(&c, 200), 0.0f);
  EXPECT_EQ(cs_train_learning_rate_at(&c, 300), 0.0f);
  // after a warm-up the decay spans the remaining steps
  c.warmup_steps = 20;
  c.total_steps = 220;
  EXPECT_FLOAT_EQ(cs_train_learning_rate_at(&c, 10), 0.005f);
  EXPECT_FLOAT_EQ(cs_train_learning_rate_at(&c, 20), 0.01f);
  EXPECT_FLOAT_EQ(cs_train_learning_rate_at(&c, 120), static_cast<float>(0.01 * std::pow(0.5, 0.9)));
  EXPECT_EQ(cs_train_learning_rate_at(&c, 220), 0.0f);
  for (int64_t s = 21; s <= 220; s++)
    EXPECT_LE(cs_train_learning_rate_at(&c, s), cs_train_learning_rate_at(&c, s - 1));
}

TEST(LearningRate, Cosine)
{
  cs_train_config c = cs_train_config_default();
  c.schedule = CS_LR_COSINE;
  c.learning_rate = 0.01f;
  c.min_learning_rate = 0.001f;
  c.total_steps = 100;
  EXPECT_FLOAT_EQ(cs_train_learning_rate_at(&c, 0), 0.01f);
  EXPECT_FLOAT_EQ(cs_train_learning_rate_at(&c, 50), 0.0055f);
  EXPECT_FLOAT_EQ(cs_train_learning_rate_at(&c, 25), static_cast<float>(0.001 + 0.009 * 0.5 * (1 + std::cos(kPi / 4))));
  EXPECT_FLOAT_EQ(cs_train_learning_rate_at(&c, 100), 0.001f);
  EXPECT_FLOAT_EQ(cs_train_learning_rate_at(&c, 1000), 0.001f);
  c.warmup_steps = 10;
  c.total_steps = 110;
  EXPECT_FLOAT_EQ(cs_train_learning_rate_at(&c, 5), 0.005f);
  EXPECT_FLOAT_EQ(cs_train_learning_rate_at(&c, 10), 0.01f);
  EXPECT_FLOAT_EQ(cs_train_learning_rate_at(&c, 60), 0.0055f);
  EXPECT_FLOAT_EQ(cs_train_learning_rate_at(&c, 110), 0.001f);
  for (int64_t s = 11; s <= 110; s++)
    EXPECT_LE(cs_train_learning_rate_at(&c, s), cs_train_learning_rate_at(&c, s - 1));
}

TEST(Curriculum, AlphaRamp)
{
  cs_train_config c = cs_train_config_default();
  c.loss.alpha = 0.7f;
  c.total_steps = 400;
  // off: always loss.alpha
  EXPECT_FLOAT_EQ(cs_train_alpha_at(&c, 0), 0.7f);
  EXPECT_FLOAT_EQ(cs_train_alpha_at(&c, 399), 0.7f);
  // on, default length: half of total_steps
  c.curriculum = 1;
  c.curriculum_alpha_start = 0.1f;
  EXPECT_FLOAT_EQ(cs_train_alpha_at(&c, 0), 0.1f);
  EXPECT_FLOAT_EQ(cs_train_alpha_at(&c, 100), 0.4f);
  EXPECT_FLOAT_EQ(cs_train_alpha_at(&c, 200), 0.7f);
  EXPECT_FLOAT_EQ(cs_train_alpha_at(&c, 350), 0.7f);
  // explicit length
  c.curriculum_steps = 50;
  EXPECT_FLOAT_EQ(cs_train_alpha_at(&c, 25), 0.4f);
  EXPECT_FLOAT_EQ(cs_train_alpha_at(&c, 50), 0.7f);
  for (int64_t s = 1; s <= 50; s++)
    EXPECT_GT(cs_train_alpha_at(&c, s), cs_train_alpha_at(&c, s - 1));
  // a start above the target ramps down
  c.curriculum_alpha_start = 0.9f;
  EXPECT_FLOAT_EQ(cs_train_alpha_at(&c, 25), 0.8f);
}

// Five steps of each configuration against torch.optim.Adam / AdamW (float32).
TEST(Adam, MatchesTorchOptim)
{
  GoldenFile g;
  std::string error;
  ASSERT_TRUE(g.Load(kGoldenPath, &error)) << error;
  const std::vector<double> shape = g.Get("adam/shape");
  const int64_t n = static_cast<int64_t>(shape[0]);
  const int steps = static_cast<int>(shape[1]), configs = static_cast<int>(shape[2]);
  const std::vector<float> init = g.GetFloat("adam/init");
  const std::vector<float> grads = g.GetFloat("adam/grads");
  ASSERT_EQ(grads.size(), static_cast<size_t>(steps * n));
  for (int j = 0; j < configs; j++)
  {
    const std::string name = "adam/" + std::to_string(j);
    const std::vector<double> cfg = g.Get(name + "/config");
    const std::vector<float> want = g.GetFloat(name + "/params");
    cs_train_config c = cs_train_config_default();
    c.optimizer = cfg[0] != 0.0 ? CS_OPTIMIZER_ADAMW : CS_OPTIMIZER_ADAM;
    const float lr = static_cast<float>(cfg[1]);
    c.adam_beta1 = static_cast<float>(cfg[2]);
    c.adam_beta2 = static_cast<float>(cfg[3]);
    c.adam_epsilon = static_cast<float>(cfg[4]);
    c.weight_decay = static_cast<float>(cfg[5]);
    std::vector<float> p(init), m(n, 0.0f), v(n, 0.0f);
    for (int s = 0; s < steps; s++)
    {
      const std::vector<float> before(grads.begin() + s * n, grads.begin() + (s + 1) * n);
      cs_adam_update(p.data(), m.data(), v.data(), grads.data() + s * n, n, s + 1, lr, &c, 2);
      EXPECT_TRUE(std::equal(before.begin(), before.end(), grads.begin() + s * n));
      double moved = 0.0;
      for (int64_t i = 0; i < n; i++)
      {
        ASSERT_NEAR(p[i], want[s * n + i], 2e-6 * std::fabs(want[s * n + i]) + 1e-7)
            << name << " step " << s + 1 << " element " << i;
        moved += std::fabs(p[i] - init[i]);
      }
      EXPECT_GT(moved, 0.0);
    }
  }
}

// Adam folds weight decay into the gradient (and so into m and v); AdamW shrinks the weights
// directly: with a zero gradient only AdamW moves nothing but the decay.
TEST(Adam, WeightDecayKinds)
{
  cs_train_config c = cs_train_config_default();
  c.weight_decay = 0.1f;
  std::vector<float> zero(4, 0.0f);
  std::vector<float> p = {1.0f, -2.0f, 0.5f, 0.0f}, m(4, 0.0f), v(4, 0.0f);
  c.optimizer = CS_OPTIMIZER_ADAMW;
  cs_adam_update(p.data(), m.data(), v.data(), zero.data(), 4, 1, 0.01f, &c, 1);
  EXPECT_FLOAT_EQ(p[0], 1.0f * (1.0f - 0.001f));
  EXPECT_FLOAT_EQ(p[1], -2.0f * (1.0f - 0.001f));
  EXPECT_EQ(m[0], 0.0f);
  std::vector<float> q = {1.0f, -2.0f, 0.5f, 0.0f};
  std::fill(m.begin(), m.end(), 0.0f);
  std::fill(v.begin(), v.end(), 0.0f);
  c.optimizer = CS_OPTIMIZER_ADAM;
  cs_adam_update(q.data(), m.data(), v.data(), zero.data(), 4, 1, 0.01f, &c, 1);
  // first Adam step moves each weight by about lr against the sign of its (decay) gradient
  EXPECT_NEAR(q[0], 1.0f - 0.01f, 1e-6);
  EXPECT_NEAR(q[1], -2.0f + 0.01f, 1e-6);
  EXPECT_FLOAT_EQ(m[0], 0.1f * 0.1f);
  EXPECT_EQ(q[3], 0.0f);
}

TEST(GradNorm, AccurateAndThreadIndependent)
{
  const int64_t n = 1000003; // several blocks, parallel, a ragged end
  std::vector<float> g = RandomVector(n, 99, 0.01f);
  const double want = NormInDouble(g);
  const double n1 = cs_grad_norm(g.data(), n, 1);
  EXPECT_NEAR(n1, want, 1e-12 * want);
  EXPECT_EQ(cs_grad_norm(g.data(), n, 2), n1);
  EXPECT_EQ(cs_grad_norm(g.data(), n, 3), n1);
  EXPECT_EQ(cs_grad_norm(g.data(), 0, 2), 0.0);
  const float three_four[2] = {3.0f, -4.0f};
  EXPECT_EQ(cs_grad_norm(three_four, 2, 1), 5.0);
}

TEST(GradNorm, ClipAndScale)
{
  const int64_t n = 70001;
  std::vector<float> g = RandomVector(n, 5, 1.0f);
  const double norm = NormInDouble(g);
  ASSERT_GT(norm, 12.0);
  std::vector<float> clipped(g);
  const double reported = cs_grad_clip_norm(clipped.data(), n, 12.0f, 2);
  EXPECT_NEAR(reported, norm, 1e-9 * norm);
  EXPECT_NEAR(NormInDouble(clipped), 12.0, 1e-5);
  const double coef = 12.0 / (norm + 1e-6);
  for (int64_t i = 0; i < n; i += 1009)
    EXPECT_FLOAT_EQ(clipped[i], static_cast<float>(g[i] * coef));

  // below the limit, or with clipping off: untouched
  std::vector<float> same(g);
  cs_grad_clip_norm(same.data(), n, static_cast<float>(2 * norm), 2);
  EXPECT_EQ(same, g);
  EXPECT_NEAR(cs_grad_clip_norm(same.data(), n, 0.0f, 2), norm, 1e-9 * norm);
  EXPECT_EQ(same, g);

  std::vector<float> scaled(g);
  cs_grad_scale(scaled.data(), n, 0.5f, 2);
  for (int64_t i = 0; i < n; i += 777)
    EXPECT_EQ(scaled[i], g[i] * 0.5f);
}

TEST(FiniteCheck, FindsNaNAndInfinity)
{
  const int64_t n = 200000;
  std::vector<float> x = RandomVector(n, 3, 1e30f);
  EXPECT_EQ(cs_all_finite(x.data(), n, 2), 1);
  x[n - 1] = NAN;
  EXPECT_EQ(cs_all_finite(x.data(), n, 2), 0);
  EXPECT_EQ(cs_all_finite(x.data(), n - 1, 2), 1);
  x[n - 1] = 0.0f;
  x[12345] = -INFINITY;
  EXPECT_EQ(cs_all_finite(x.data(), n, 1), 0);
  EXPECT_EQ(cs_all_finite(x.data(), 0, 1), 1);
}
