// test_infer.cpp - cs_model_forward and sliding-window inference over whole volumes.
#ifdef _OPENMP
#include <omp.h>
#endif
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <set>
#include <vector>

#include "comboseg/comboseg.h"
#include "internal.h"

namespace
{

class InferTest : public ::testing::Test
{
protected:
  void SetUp() override
  {
    ASSERT_EQ(cs_context_init(&ctx_), CS_OK);
    cs_context_set_threads(ctx_, 2);
  }
  void TearDown() override
  {
    for (cs_model_t m : models_)
      cs_model_free(m);
    cs_context_free(ctx_);
  }

  // A small random model; window (patch) of 16 per axis (1 in z for 2D).
  cs_model_t MakeModel(int dims, int channels, int classes, int base, int levels, uint64_t seed = 7, int patch = 16)
  {
    cs_unet_config arch = cs_unet_config_default();
    arch.spatial_dims = dims;
    arch.in_channels = channels;
    arch.num_classes = classes;
    arch.base_filters = base;
    arch.levels = levels;
    cs_model_info info;
    EXPECT_EQ(cs_model_info_init(&info, &arch), CS_OK);
    info.patch_size[0] = info.patch_size[1] = patch;
    info.patch_size[2] = dims == 3 ? patch : 1;
    cs_model_t m = nullptr;
    EXPECT_EQ(cs_model_create(ctx_, &info, seed, &m), CS_OK) << cs_context_last_error(ctx_);
    if (m)
      models_.push_back(m);
    return m;
  }

  static std::vector<float> RandomImage(int channels, const int64_t size[3], uint64_t seed)
  {
    cs_rng rng;
    cs_rng_seed(&rng, seed);
    std::vector<float> v((size_t)(channels * size[0] * size[1] * size[2]));
    for (float &x : v)
      x = cs_rng_normal(&rng);
    return v;
  }

  // Softmax over channels of logits (K, n).
  static std::vector<float> Softmax(const std::vector<float> &logits, int k, int64_t n)
  {
    std::vector<float> p(logits.size());
    for (int64_t i = 0; i < n; i++)
    {
      double m = -INFINITY, s = 0;
      for (int c = 0; c < k; c++)
        m = std::max(m, (double)logits[c * n + i]);
      for (int c = 0; c < k; c++)
        s += std::exp(logits[c * n + i] - m);
      for (int c = 0; c < k; c++)
        p[c * n + i] = (float)(std::exp(logits[c * n + i] - m) / s);
    }
    return p;
  }

  // Every voxel's probabilities sum to 1 and its label is their first argmax.
  static void ExpectConsistent(const std::vector<float> &prob, const std::vector<int32_t> &labels, int k, int64_t n)
  {
    int64_t bad_sum = 0, bad_label = 0;
    for (int64_t i = 0; i < n; i++)
    {
      double s = 0;
      int best = 0;
      for (int c = 0; c < k; c++)
      {
        s += prob[c * n + i];
        if (prob[c * n + i] > prob[best * n + i])
          best = c;
      }
      if (std::fabs(s - 1.0) > 1e-5)
        bad_sum++;
      if (labels[i] != best)
        bad_label++;
    }
    EXPECT_EQ(bad_sum, 0) << "voxels whose probabilities do not sum to 1";
    EXPECT_EQ(bad_label, 0) << "voxels whose label is not the argmax";
  }

  // The head's bias (K): the only parameter tensor of one dimension and K values named bias
  // that comes last in the layout.
  static float *HeadBias(cs_model_t m)
  {
    const int k = m->info.arch.num_classes;
    for (int i = m->num_tensors - 1; i >= 0; i--)
    {
      const cs_param_tensor &t = m->tensors[i];
      if (t.ndim == 1 && t.count == k && std::strstr(t.name, "bias"))
        return m->params + t.offset;
    }
    return nullptr;
  }

  cs_context_t ctx_ = nullptr;
  std::vector<cs_model_t> models_;
};

TEST_F(InferTest, DefaultOptions)
{
  cs_infer_options o = cs_infer_options_default();
  EXPECT_FLOAT_EQ(o.overlap, 0.5f);
  EXPECT_EQ(o.gaussian_weighting, 1);
  EXPECT_FLOAT_EQ(o.gaussian_sigma, 0.125f);
  EXPECT_EQ(o.window[0], 0);
  EXPECT_EQ(o.progress, nullptr);
  EXPECT_EQ(o.accumulate, 0);
}

TEST_F(InferTest, ModelForwardRejectsBadSizes)
{
  cs_model_t m = MakeModel(3, 1, 3, 4, 3);
  ASSERT_NE(m, nullptr);
  std::vector<float> img(12 * 16 * 16), out(3 * 12 * 16 * 16);
  int64_t size[3] = {16, 16, 12}; // multiples of 4 = 2^(levels-1)
  EXPECT_EQ(cs_model_forward(ctx_, m, img.data(), 1, size, out.data()), CS_OK) << cs_context_last_error(ctx_);
  int64_t bad[3] = {16, 10, 12};
  EXPECT_EQ(cs_model_forward(ctx_, m, img.data(), 1, bad, out.data()), CS_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(cs_context_last_error(ctx_)).find("multiple of 4"), std::string::npos)
      << cs_context_last_error(ctx_);
  EXPECT_EQ(cs_model_forward(ctx_, m, img.data(), 0, size, out.data()), CS_ERR_INVALID_ARGUMENT);
}

// Finite inputs near FLT_MAX overflow inside the network: the logits are refused, never copied
// out silently as NaN (the check runs in the threaded copy of the logits).
TEST_F(InferTest, ModelForwardRefusesLogitsThatOverflowed)
{
  cs_model_t m = MakeModel(3, 1, 3, 4, 3);
  ASSERT_NE(m, nullptr);
  const int64_t size[3] = {16, 16, 12}, n = 16 * 16 * 12;
  std::vector<float> img = RandomImage(1, size, 2), out(3 * n);
  for (int64_t i = 0; i < n; i += 7)
    img[i] = 3.0e38f;
  for (int threads : {1, 2})
  {
    cs_context_set_threads(ctx_, threads);
    EXPECT_EQ(cs_model_forward(ctx_, m, img.data(), 1, size, out.data()), CS_ERR_NUMERIC) << threads;
    EXPECT_NE(std::string(cs_context_last_error(ctx_)).find("non-finite value"), std::string::npos)
        << cs_context_last_error(ctx_);
  }
}

// The same overflow in sliding-window inference, whose head runs piece by piece: the call fails
// naming the window, and no labels are claimed.
TEST_F(InferTest, PredictVolumeRefusesLogitsThatOverflowed)
{
  cs_model_t m = MakeModel(3, 1, 3, 4, 3);
  ASSERT_NE(m, nullptr);
  const int64_t size[3] = {24, 16, 16}, n = 24 * 16 * 16;
  std::vector<float> img = RandomImage(1, size, 2);
  for (int64_t i = 0; i < n; i += 7)
    img[i] = 3.0e38f;
  for (int threads : {1, 2})
  {
    cs_context_set_threads(ctx_, threads);
    std::vector<int32_t> labels(n, -1);
    EXPECT_EQ(cs_predict_volume(ctx_, m, img.data(), size, nullptr, nullptr, labels.data()), CS_ERR_NUMERIC) << threads;
    const std::string error = cs_context_last_error(ctx_);
    EXPECT_NE(error.find("non-finite value"), std::string::npos) << error;
    EXPECT_NE(error.find("in the window at x 0, y 0, z 0"), std::string::npos) << error;
  }
}

TEST_F(InferTest, WindowEqualToVolumeIsSoftmaxOfForward)
{
  cs_model_t m = MakeModel(3, 2, 4, 4, 3);
  ASSERT_NE(m, nullptr);
  const int64_t size[3] = {16, 16, 16}, n = 16 * 16 * 16;
  std::vector<float> img = RandomImage(2, size, 1);
  std::vector<float> logits(4 * n);
  ASSERT_EQ(cs_model_forward(ctx_, m, img.data(), 1, size, logits.data()), CS_OK) << cs_context_last_error(ctx_);
  std::vector<float> expected = Softmax(logits, 4, n);

  for (int gaussian = 0; gaussian < 2; gaussian++)
  {
    cs_infer_options o = cs_infer_options_default();
    o.gaussian_weighting = gaussian;
    std::vector<float> prob(4 * n);
    std::vector<int32_t> labels(n, -1);
    ASSERT_EQ(cs_predict_volume(ctx_, m, img.data(), size, &o, prob.data(), labels.data()), CS_OK)
        << cs_context_last_error(ctx_);
    double worst = 0;
    for (int64_t i = 0; i < 4 * n; i++)
      worst = std::max(worst, (double)std::fabs(prob[i] - expected[i]));
    EXPECT_LT(worst, 1e-6) << "gaussian " << gaussian;
    ExpectConsistent(prob, labels, 4, n);
  }
}

// The window's head runs piece by piece (8 softmax tiles, 4096 voxels) inside the blend: with a
// window of 3.3 pieces (a partial last one) and 9 classes (two groups of 8 output channels, the
// second partial), in float32 and bfloat16, the probabilities are the softmax of the whole
// forward pass's logits, which cs_model_forward computes in one piece.
TEST_F(InferTest, PieceByPieceHeadGivesTheWholeWindowsSoftmax)
{
  cs_model_t m = MakeModel(3, 1, 9, 8, 3);
  ASSERT_NE(m, nullptr);
  const int64_t size[3] = {24, 20, 28}, n = 24 * 20 * 28;
  const std::vector<float> img = RandomImage(1, size, 3);
  cs_infer_options o = cs_infer_options_default();
  o.gaussian_weighting = 0;
  for (int k = 0; k < 3; k++)
    o.window[k] = (int32_t)size[k];
  for (cs_precision precision : {CS_PRECISION_FLOAT32, CS_PRECISION_BFLOAT16})
  {
    cs_context_set_inference_precision(ctx_, precision);
    std::vector<float> logits(9 * n), prob(9 * n);
    ASSERT_EQ(cs_model_forward(ctx_, m, img.data(), 1, size, logits.data()), CS_OK) << cs_context_last_error(ctx_);
    ASSERT_EQ(cs_predict_volume(ctx_, m, img.data(), size, &o, prob.data(), nullptr), CS_OK)
        << cs_context_last_error(ctx_);
    const std::vector<float> expected = Softmax(logits, 9, n);
    double worst = 0;
    for (int64_t i = 0; i < 9 * n; i++)
      worst = std::max(worst, (double)std::fabs(prob[i] - expected[i]));
    EXPECT_LT(worst, 1e-6) << (precision == CS_PRECISION_BFLOAT16 ? "bfloat16" : "float32");
  }
  cs_context_set_inference_precision(ctx_, CS_PRECISION_FLOAT32);
}

// bfloat16 inference: the probabilities stay within a few bfloat16 roundings of float32's and
// the context keeps the setting; where the CPU lacks AVX512_BF16 they are float32's exactly.
// Training does not see it: the same step from the same weights gives the same loss.
TEST_F(InferTest, BFloat16InferenceStaysCloseToFloat32AndLeavesTrainingAlone)
{
  cs_model_t m = MakeModel(3, 2, 4, 16, 3, 7, 32);
  ASSERT_NE(m, nullptr);
  const int64_t size[3] = {40, 36, 33}, n = 40 * 36 * 33;
  const std::vector<float> img = RandomImage(2, size, 5);
  const cs_infer_options o = cs_infer_options_default();
  std::vector<float> p32(4 * n), p16(4 * n);
  EXPECT_EQ(cs_context_get_inference_precision(ctx_), CS_PRECISION_FLOAT32);
  ASSERT_EQ(cs_predict_volume(ctx_, m, img.data(), size, &o, p32.data(), nullptr), CS_OK);
  cs_context_set_inference_precision(ctx_, CS_PRECISION_BFLOAT16);
  EXPECT_EQ(cs_context_get_inference_precision(ctx_), CS_PRECISION_BFLOAT16);
  std::vector<int32_t> labels(n);
  ASSERT_EQ(cs_predict_volume(ctx_, m, img.data(), size, &o, p16.data(), labels.data()), CS_OK);
  ExpectConsistent(p16, labels, 4, n);
  double worst = 0.0;
  for (int64_t i = 0; i < 4 * n; ++i)
    worst = std::max(worst, (double)std::fabs(p16[i] - p32[i]));
  if (cs_bfloat16_available())
  {
    EXPECT_GT(worst, 1e-6) << "bfloat16 was asked for and the CPU has it, but nothing was rounded";
    EXPECT_LT(worst, 0.05) << "further from float32 than a few bfloat16 roundings";
  }
  else
  {
    EXPECT_EQ(worst, 0.0) << "without AVX512_BF16 inference stays float32";
  }

  cs_train_config config = cs_train_config_default();
  config.batch_size = 1; // the model's patch, 32^3
  const int64_t patch[3] = {32, 32, 32}, pn = 32 * 32 * 32;
  const std::vector<float> batch = RandomImage(2, patch, 6);
  std::vector<int32_t> truth(pn);
  for (int64_t i = 0; i < pn; ++i)
    truth[i] = (int32_t)(i % 4);
  cs_step_result result[2];
  for (int k = 0; k < 2; ++k)
  {
    cs_context_set_inference_precision(ctx_, k ? CS_PRECISION_BFLOAT16 : CS_PRECISION_FLOAT32);
    cs_model_t copy = MakeModel(3, 2, 4, 16, 3, 7, 32); // the same seed: the same weights
    ASSERT_NE(copy, nullptr);
    cs_trainer_t trainer = nullptr;
    ASSERT_EQ(cs_trainer_init(ctx_, copy, &config, &trainer), CS_OK) << cs_context_last_error(ctx_);
    ASSERT_EQ(cs_trainer_step(trainer, batch.data(), truth.data(), &result[k]), CS_OK) << cs_context_last_error(ctx_);
    cs_trainer_free(trainer);
  }
  EXPECT_EQ(result[0].loss, result[1].loss) << "the training step saw the inference precision";
  EXPECT_EQ(result[0].grad_norm, result[1].grad_norm);
}

TEST_F(InferTest, OddSizesWithOverlapAreConsistent)
{
  cs_model_t m = MakeModel(3, 1, 3, 4, 3);
  ASSERT_NE(m, nullptr);
  const int64_t size[3] = {37, 29, 23}, n = 37 * 29 * 23;
  std::vector<float> img = RandomImage(1, size, 2);
  for (float overlap : {0.0f, 0.5f})
  {
    for (int gaussian = 0; gaussian < 2; gaussian++)
    {
      cs_infer_options o = cs_infer_options_default();
      o.overlap = overlap;
      o.gaussian_weighting = gaussian;
      std::vector<float> prob(3 * n, -1.0f);
      std::vector<int32_t> labels(n, -1), labels_only(n, -1);
      ASSERT_EQ(cs_predict_volume(ctx_, m, img.data(), size, &o, prob.data(), labels.data()), CS_OK)
          << cs_context_last_error(ctx_);
      ExpectConsistent(prob, labels, 3, n);
      ASSERT_EQ(cs_predict_volume(ctx_, m, img.data(), size, &o, nullptr, labels_only.data()), CS_OK);
      EXPECT_EQ(labels, labels_only) << "labels-only output differs";
      std::vector<float> prob_only(3 * n);
      ASSERT_EQ(cs_predict_volume(ctx_, m, img.data(), size, &o, prob_only.data(), nullptr), CS_OK);
      EXPECT_EQ(prob, prob_only);
    }
  }
}

// The blend of overlapping windows, computed here from its definition without the engine's slab:
// windows spread evenly from 0 to (padded size - window) with a step of at most
// floor(window * (1 - overlap)), each padded with its channel's minimum, run through
// cs_model_forward and weighted per voxel by the product of per-axis Gaussians (sigma 0.125 of
// the window, peak 1, floor 1e-6) or uniformly; each voxel is the weighted mean of the softmax
// of the windows covering it. The sizes keep every window start an integer (no rounding rule).
class BlendReference
{
public:
  BlendReference(cs_context_t ctx, cs_model_t model, const std::vector<float> &image, const int64_t size[3],
                 float overlap, bool gaussian)
      : ctx_(ctx), model_(model), image_(image), gaussian_(gaussian)
  {
    channels_ = model->info.arch.in_channels;
    classes_ = model->info.arch.num_classes;
    for (int a = 0; a < 3; a++)
    {
      size_[a] = size[a];
      win_[a] = model->info.patch_size[a];
      const int64_t padded = std::max(size[a], win_[a]);
      const int64_t step = std::max<int64_t>(1, (int64_t)std::floor(win_[a] * (1.0 - overlap)));
      const int64_t count = (padded - win_[a] + step - 1) / step + 1;
      for (int64_t i = 0; i < count; i++)
      {
        const int64_t span = (padded - win_[a]) * i;
        EXPECT_EQ(count == 1 ? 0 : span % (count - 1), 0) << "pick sizes with integer starts";
        starts_[a].push_back(count == 1 ? 0 : span / (count - 1));
      }
      weight_[a] = AxisWeights(win_[a]);
    }
  }

  // Probabilities (K, nz, ny, nx) as doubles.
  std::vector<double> Blend()
  {
    const int64_t n = size_[0] * size_[1] * size_[2];
    std::vector<double> sum((size_t)(classes_ * n), 0.0), weights((size_t)n, 0.0);
    for (int64_t z0 : starts_[2])
      for (int64_t y0 : starts_[1])
        for (int64_t x0 : starts_[0])
          AddWindow(x0, y0, z0, sum, weights);
    for (int64_t c = 0; c < classes_; c++)
      for (int64_t i = 0; i < n; i++)
        sum[c * n + i] /= weights[i];
    return sum;
  }

  size_t Windows() const { return starts_[0].size() * starts_[1].size() * starts_[2].size(); }

private:
  std::vector<double> AxisWeights(int64_t w) const
  {
    std::vector<double> g((size_t)w, 1.0);
    if (!gaussian_)
      return g;
    const double sigma = 0.125 * (double)w, centre = 0.5 * (double)(w - 1);
    double peak = 0.0;
    for (int64_t i = 0; i < w; i++)
    {
      g[i] = std::exp(-0.5 * std::pow((i - centre) / sigma, 2.0));
      peak = std::max(peak, g[i]);
    }
    for (double &v : g)
      v = std::max(v / peak, 1e-6);
    return g;
  }

  void AddWindow(int64_t x0, int64_t y0, int64_t z0, std::vector<double> &sum, std::vector<double> &weights)
  {
    const int64_t wx = win_[0], wy = win_[1], wz = win_[2], wn = wx * wy * wz;
    const int64_t nx = size_[0], ny = size_[1], nz = size_[2], n = nx * ny * nz;
    std::vector<float> window((size_t)(channels_ * wn)), logits((size_t)(classes_ * wn));
    for (int64_t c = 0; c < channels_; c++)
    {
      const float low = *std::min_element(image_.begin() + c * n, image_.begin() + (c + 1) * n);
      for (int64_t z = 0; z < wz; z++)
        for (int64_t y = 0; y < wy; y++)
          for (int64_t x = 0; x < wx; x++)
          {
            const bool inside = x0 + x < nx && y0 + y < ny && z0 + z < nz;
            window[((c * wz + z) * wy + y) * wx + x] = inside ? image_[((c * nz + z0 + z) * ny + y0 + y) * nx + x0 + x]
                                                              : low;
          }
    }
    ASSERT_EQ(cs_model_forward(ctx_, model_, window.data(), 1, win_, logits.data()), CS_OK)
        << cs_context_last_error(ctx_);
    for (int64_t z = 0; z < wz && z0 + z < nz; z++)
      for (int64_t y = 0; y < wy && y0 + y < ny; y++)
        for (int64_t x = 0; x < wx && x0 + x < nx; x++)
        {
          const int64_t v = (z * wy + y) * wx + x, i = ((z0 + z) * ny + y0 + y) * nx + x0 + x;
          double top = -INFINITY, total = 0.0;
          for (int64_t c = 0; c < classes_; c++)
            top = std::max(top, (double)logits[c * wn + v]);
          for (int64_t c = 0; c < classes_; c++)
            total += std::exp(logits[c * wn + v] - top);
          const double w = weight_[0][x] * weight_[1][y] * weight_[2][z];
          weights[i] += w;
          for (int64_t c = 0; c < classes_; c++)
            sum[c * n + i] += w * std::exp(logits[c * wn + v] - top) / total;
        }
  }

  cs_context_t ctx_;
  cs_model_t model_;
  const std::vector<float> &image_;
  bool gaussian_;
  int64_t channels_ = 0, classes_ = 0, size_[3] = {0, 0, 0}, win_[3] = {0, 0, 0};
  std::vector<int64_t> starts_[3];
  std::vector<double> weight_[3];
};

TEST_F(InferTest, OverlappingWindowsBlendAsTheirWeightedMean)
{
  cs_model_t m = MakeModel(3, 2, 3, 4, 2, 7, 8); // window 8, step 4 at overlap 0.5
  ASSERT_NE(m, nullptr);
  // 17 x 14 x 11: 4 x 3 x 2 windows, starts 0 3 6 9 / 0 3 6 / 0 3 (closer than the step);
  // 11 x 5 x 14: 2 x 1 x 3 windows, y padded up to the window.
  const int64_t sizes[2][3] = {{17, 14, 11}, {11, 5, 14}};
  for (const auto &size : sizes)
  {
    const int64_t n = size[0] * size[1] * size[2];
    const std::vector<float> img = RandomImage(2, size, 5);
    for (int gaussian = 0; gaussian < 2; gaussian++)
    {
      BlendReference reference(ctx_, m, img, size, 0.5f, gaussian != 0);
      EXPECT_GE(reference.Windows(), 6u);
      const std::vector<double> expected = reference.Blend();
      cs_infer_options o = cs_infer_options_default();
      o.gaussian_weighting = gaussian;
      std::vector<float> prob(3 * n);
      ASSERT_EQ(cs_predict_volume(ctx_, m, img.data(), size, &o, prob.data(), nullptr), CS_OK)
          << cs_context_last_error(ctx_);
      double worst = 0;
      for (int64_t i = 0; i < 3 * n; i++)
        worst = std::max(worst, std::fabs(prob[i] - expected[i]));
      EXPECT_LT(worst, 2e-6) << size[0] << "x" << size[1] << "x" << size[2] << ", gaussian " << gaussian;
    }
  }
}

// accumulate adds a pass's probabilities to the output (test-time augmentation sums passes
// over transformed images): two passes on two images give the sum of the two separate outputs.
TEST_F(InferTest, AccumulateAddsThePassToTheOutput)
{
  cs_model_t m = MakeModel(3, 1, 3, 4, 3);
  ASSERT_NE(m, nullptr);
  const int64_t size[3] = {21, 19, 17}, n = 21 * 19 * 17;
  const std::vector<float> a = RandomImage(1, size, 3), b = RandomImage(1, size, 4);
  cs_infer_options o = cs_infer_options_default();
  std::vector<float> pa(3 * n), pb(3 * n), sum(3 * n, -7.0f);
  ASSERT_EQ(cs_predict_volume(ctx_, m, a.data(), size, &o, pa.data(), nullptr), CS_OK);
  ASSERT_EQ(cs_predict_volume(ctx_, m, b.data(), size, &o, pb.data(), nullptr), CS_OK);
  ASSERT_EQ(cs_predict_volume(ctx_, m, a.data(), size, &o, sum.data(), nullptr), CS_OK);
  o.accumulate = 1;
  std::vector<int32_t> labels(n, -1);
  ASSERT_EQ(cs_predict_volume(ctx_, m, b.data(), size, &o, sum.data(), labels.data()), CS_OK);
  for (int64_t i = 0; i < 3 * n; i++)
    ASSERT_FLOAT_EQ(sum[i], pa[i] + pb[i]) << i;
  ExpectConsistent(pb, labels, 3, n); // the labels are the pass's own
}

TEST_F(InferTest, WithoutOverlapEachVoxelTakesItsLastWindow)
{
  // Overlap 0 on 32^3 with 16^3 windows: the 8 windows tile the volume, so every octant is
  // the softmax of that octant's own forward pass.
  cs_model_t m = MakeModel(3, 1, 3, 4, 3);
  ASSERT_NE(m, nullptr);
  const int64_t size[3] = {32, 32, 32}, n = 32 * 32 * 32;
  std::vector<float> img = RandomImage(1, size, 3);
  cs_infer_options o = cs_infer_options_default();
  o.overlap = 0.0f;
  std::vector<float> prob(3 * n);
  ASSERT_EQ(cs_predict_volume(ctx_, m, img.data(), size, &o, prob.data(), nullptr), CS_OK);
  const int64_t wn = 16 * 16 * 16, ws[3] = {16, 16, 16};
  double worst = 0;
  for (int oz = 0; oz < 2; oz++)
    for (int oy = 0; oy < 2; oy++)
      for (int ox = 0; ox < 2; ox++)
      {
        std::vector<float> win(wn), logits(3 * wn);
        for (int z = 0; z < 16; z++)
          for (int y = 0; y < 16; y++)
            for (int x = 0; x < 16; x++)
              win[(z * 16 + y) * 16 + x] = img[((oz * 16 + z) * 32 + oy * 16 + y) * 32 + ox * 16 + x];
        ASSERT_EQ(cs_model_forward(ctx_, m, win.data(), 1, ws, logits.data()), CS_OK);
        std::vector<float> p = Softmax(logits, 3, wn);
        for (int c = 0; c < 3; c++)
          for (int z = 0; z < 16; z++)
            for (int y = 0; y < 16; y++)
              for (int x = 0; x < 16; x++)
              {
                float got = prob[c * n + ((oz * 16 + z) * 32 + oy * 16 + y) * 32 + ox * 16 + x];
                worst = std::max(worst, (double)std::fabs(got - p[c * wn + (z * 16 + y) * 16 + x]));
              }
      }
  EXPECT_LT(worst, 1e-6);
}

TEST_F(InferTest, VolumeSmallerThanWindowIsPaddedWithChannelMinimum)
{
  cs_model_t m = MakeModel(3, 2, 3, 4, 3);
  ASSERT_NE(m, nullptr);
  const int64_t size[3] = {10, 7, 5}, n = 10 * 7 * 5;
  std::vector<float> img = RandomImage(2, size, 4);
  std::vector<float> prob(3 * n);
  std::vector<int32_t> labels(n);
  cs_infer_options o = cs_infer_options_default();
  ASSERT_EQ(cs_predict_volume(ctx_, m, img.data(), size, &o, prob.data(), labels.data()), CS_OK)
      << cs_context_last_error(ctx_);
  ExpectConsistent(prob, labels, 3, n);

  // The same by hand: pad to 16^3 with each channel's minimum, forward, softmax, crop.
  const int64_t ws[3] = {16, 16, 16}, wn = 16 * 16 * 16;
  std::vector<float> padded(2 * wn), logits(3 * wn);
  for (int c = 0; c < 2; c++)
  {
    float mn = *std::min_element(img.begin() + c * n, img.begin() + (c + 1) * n);
    for (int64_t i = 0; i < wn; i++)
      padded[c * wn + i] = mn;
    for (int z = 0; z < 5; z++)
      for (int y = 0; y < 7; y++)
        for (int x = 0; x < 10; x++)
          padded[c * wn + (z * 16 + y) * 16 + x] = img[c * n + (z * 7 + y) * 10 + x];
  }
  ASSERT_EQ(cs_model_forward(ctx_, m, padded.data(), 1, ws, logits.data()), CS_OK);
  std::vector<float> p = Softmax(logits, 3, wn);
  double worst = 0;
  for (int c = 0; c < 3; c++)
    for (int z = 0; z < 5; z++)
      for (int y = 0; y < 7; y++)
        for (int x = 0; x < 10; x++)
          worst = std::max(worst,
                           (double)std::fabs(prob[c * n + (z * 7 + y) * 10 + x] - p[c * wn + (z * 16 + y) * 16 + x]));
  EXPECT_LT(worst, 1e-6);
}

TEST_F(InferTest, DominantHeadBiasGivesItsClassEverywhere)
{
  cs_model_t m = MakeModel(3, 1, 4, 4, 3);
  ASSERT_NE(m, nullptr);
  float *bias = HeadBias(m);
  ASSERT_NE(bias, nullptr);
  bias[2] = 1000.0f;
  const int64_t size[3] = {37, 29, 23}, n = 37 * 29 * 23;
  std::vector<float> img = RandomImage(1, size, 5);
  for (float overlap : {0.0f, 0.5f})
  {
    cs_infer_options o = cs_infer_options_default();
    o.overlap = overlap;
    std::vector<float> prob(4 * n);
    std::vector<int32_t> labels(n, -1);
    ASSERT_EQ(cs_predict_volume(ctx_, m, img.data(), size, &o, prob.data(), labels.data()), CS_OK);
    EXPECT_EQ(std::count(labels.begin(), labels.end(), 2), n) << "overlap " << overlap;
    float lowest = *std::min_element(prob.begin() + 2 * n, prob.begin() + 3 * n);
    EXPECT_GT(lowest, 0.9999f);
  }
}

TEST_F(InferTest, TwoDimensionalModelRunsSliceBySlice)
{
  cs_model_t m = MakeModel(2, 1, 3, 4, 3);
  ASSERT_NE(m, nullptr);
  const int64_t size[3] = {21, 18, 3}, plane = 21 * 18, n = plane * 3;
  std::vector<float> img = RandomImage(1, size, 6);
  std::vector<float> prob(3 * n);
  cs_infer_options o = cs_infer_options_default();
  ASSERT_EQ(cs_predict_volume(ctx_, m, img.data(), size, &o, prob.data(), nullptr), CS_OK)
      << cs_context_last_error(ctx_);
  const int64_t slice_size[3] = {21, 18, 1};
  for (int z = 0; z < 3; z++)
  {
    std::vector<float> slice(img.begin() + z * plane, img.begin() + (z + 1) * plane);
    std::vector<float> p(3 * plane);
    ASSERT_EQ(cs_predict_volume(ctx_, m, slice.data(), slice_size, &o, p.data(), nullptr), CS_OK);
    double worst = 0;
    for (int c = 0; c < 3; c++)
      for (int64_t i = 0; i < plane; i++)
        worst = std::max(worst, (double)std::fabs(prob[c * n + z * plane + i] - p[c * plane + i]));
    EXPECT_LT(worst, 1e-6) << "slice " << z;
  }
}

struct ProgressLog
{
  std::vector<float> fractions;
  int cancel_after = -1;
};

int RecordProgress(void *user, float fraction)
{
  auto *log = static_cast<ProgressLog *>(user);
  log->fractions.push_back(fraction);
  return log->cancel_after >= 0 && (int)log->fractions.size() >= log->cancel_after;
}

TEST_F(InferTest, ProgressRisesToOneAndCancelStops)
{
  cs_model_t m = MakeModel(3, 1, 3, 4, 3);
  ASSERT_NE(m, nullptr);
  const int64_t size[3] = {37, 29, 23}, n = 37 * 29 * 23;
  std::vector<float> img = RandomImage(1, size, 7);
  std::vector<int32_t> labels(n);
  ProgressLog log;
  cs_infer_options o = cs_infer_options_default();
  o.progress = RecordProgress;
  o.progress_user_data = &log;
  ASSERT_EQ(cs_predict_volume(ctx_, m, img.data(), size, &o, nullptr, labels.data()), CS_OK);
  ASSERT_GE(log.fractions.size(), 2u);
  for (size_t i = 1; i < log.fractions.size(); i++)
    EXPECT_GT(log.fractions[i], log.fractions[i - 1]);
  EXPECT_GT(log.fractions.front(), 0.0f);
  EXPECT_FLOAT_EQ(log.fractions.back(), 1.0f);
  const size_t windows = log.fractions.size();

  // allocations do not depend on the number of windows
  const int64_t one_window[3] = {16, 16, 16};
  uint64_t count0 = ctx_->alloc_count;
  ASSERT_EQ(cs_predict_volume(ctx_, m, img.data(), one_window, &o, nullptr, labels.data()), CS_OK);
  const uint64_t per_call_one = ctx_->alloc_count - count0;
  count0 = ctx_->alloc_count;
  o.progress = nullptr;
  ASSERT_EQ(cs_predict_volume(ctx_, m, img.data(), size, &o, nullptr, labels.data()), CS_OK);
  EXPECT_EQ(ctx_->alloc_count - count0, per_call_one);
  o.progress = RecordProgress;

  ProgressLog cancel;
  cancel.cancel_after = 3;
  o.progress_user_data = &cancel;
  EXPECT_EQ(cs_predict_volume(ctx_, m, img.data(), size, &o, nullptr, labels.data()), CS_ERR_CANCELLED);
  EXPECT_EQ(cancel.fractions.size(), 3u) << "windows kept running after the cancel";
  EXPECT_LT(cancel.fractions.size(), windows);
  EXPECT_NE(std::string(cs_context_last_error(ctx_)).find("cancel"), std::string::npos);
}

TEST_F(InferTest, RejectsBadOptions)
{
  cs_model_t m = MakeModel(3, 1, 3, 4, 3);
  ASSERT_NE(m, nullptr);
  const int64_t size[3] = {16, 16, 16};
  std::vector<float> img(16 * 16 * 16);
  std::vector<int32_t> labels(16 * 16 * 16);
  cs_infer_options o = cs_infer_options_default();
  o.overlap = 1.0f;
  EXPECT_EQ(cs_predict_volume(ctx_, m, img.data(), size, &o, nullptr, labels.data()), CS_ERR_INVALID_ARGUMENT);
  o = cs_infer_options_default();
  o.window[0] = 18; // not a multiple of 4
  EXPECT_EQ(cs_predict_volume(ctx_, m, img.data(), size, &o, nullptr, labels.data()), CS_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(cs_context_last_error(ctx_)).find("multiple"), std::string::npos);
  o = cs_infer_options_default();
  o.gaussian_sigma = 0.0f;
  EXPECT_EQ(cs_predict_volume(ctx_, m, img.data(), size, &o, nullptr, labels.data()), CS_ERR_INVALID_ARGUMENT);
  const int64_t empty[3] = {16, 0, 16};
  EXPECT_EQ(cs_predict_volume(ctx_, m, img.data(), empty, nullptr, nullptr, labels.data()), CS_ERR_INVALID_ARGUMENT);
}

TEST_F(InferTest, MemoryEstimateIsBoundedBySlabAndLimitIsEnforced)
{
  // The reference network on a 512x512x400 CT with label output only.
  cs_model_t big = MakeModel(3, 1, 5, 16, 4, 1, 64);
  ASSERT_NE(big, nullptr);
  const int64_t ct[3] = {512, 512, 400};
  cs_infer_options o = cs_infer_options_default();
  uint64_t est = cs_predict_volume_memory(big, ct, &o);
  const uint64_t k_volume = 5ull * 512 * 512 * 400 * sizeof(float);
  EXPECT_GT(est, 0u);
  EXPECT_LT(est, k_volume / 3) << "estimate " << est << " bytes";
  // at least the slab of K x window-depth slices must be counted
  EXPECT_GE(est, 5ull * 64 * 512 * 512 * sizeof(float));
  // and it hardly grows with the depth of the volume (a few floats per slice)
  const int64_t deeper[3] = {512, 512, 1600};
  EXPECT_LT(cs_predict_volume_memory(big, deeper, &o) - est, 64u * 1024u);

  cs_context_set_memory_limit(ctx_, est - 1);
  std::vector<float> one(1);
  EXPECT_EQ(cs_predict_volume(ctx_, big, one.data(), ct, &o, nullptr, nullptr), CS_ERR_RESOURCE_LIMIT);
  std::string msg = cs_context_last_error(ctx_);
  EXPECT_NE(msg.find("MiB"), std::string::npos) << msg;
  EXPECT_NE(msg.find("smaller window"), std::string::npos) << msg;
  EXPECT_NE(msg.find("spacing"), std::string::npos) << msg;

  // A small case runs at exactly its estimate.
  cs_model_t m = MakeModel(3, 1, 3, 4, 3);
  ASSERT_NE(m, nullptr);
  const int64_t size[3] = {37, 29, 23};
  std::vector<float> img = RandomImage(1, size, 8);
  std::vector<int32_t> labels(37 * 29 * 23);
  uint64_t small = cs_predict_volume_memory(m, size, &o);
  cs_context_set_memory_limit(ctx_, small);
  const uint64_t bytes0 = ctx_->alloc_bytes;
  EXPECT_EQ(cs_predict_volume(ctx_, m, img.data(), size, &o, nullptr, labels.data()), CS_OK)
      << cs_context_last_error(ctx_);
  // the estimate is what the call allocates (everything is live at once), within 1%
  const double used = (double)(ctx_->alloc_bytes - bytes0);
  EXPECT_NEAR(used, (double)small, 0.01 * (double)small);
  cs_context_set_memory_limit(ctx_, small - 1);
  EXPECT_EQ(cs_predict_volume(ctx_, m, img.data(), size, &o, nullptr, labels.data()), CS_ERR_RESOURCE_LIMIT);
  // a smaller window needs less
  o.window[0] = o.window[1] = o.window[2] = 8;
  EXPECT_LT(cs_predict_volume_memory(m, size, &o), small);
}

// The blend and its argmax split rows between threads, each value written by one of them: the
// labels are the same with 1, 2 and 3 threads (odd sizes: rows of the slab not shared evenly).
TEST_F(InferTest, LabelsDoNotDependOnTheThreadCount)
{
  cs_model_t m = MakeModel(3, 1, 5, 4, 3);
  ASSERT_NE(m, nullptr);
  const int64_t size[3] = {37, 29, 23}, n = 37 * 29 * 23;
  std::vector<float> img = RandomImage(1, size, 4);
  std::vector<int32_t> reference;
  std::vector<float> reference_prob;
  for (int threads : {1, 2, 3})
  {
    cs_context_set_threads(ctx_, threads);
    std::vector<int32_t> labels(n, -1);
    std::vector<float> prob(5 * n, -1.0f);
    ASSERT_EQ(cs_predict_volume(ctx_, m, img.data(), size, nullptr, prob.data(), labels.data()), CS_OK)
        << cs_context_last_error(ctx_);
    if (reference.empty())
    {
      reference = labels;
      reference_prob = prob;
      ASSERT_GT(std::set<int32_t>(labels.begin(), labels.end()).size(), 1u) << "one class everywhere";
      continue;
    }
    EXPECT_EQ(labels, reference) << threads << " threads";
    EXPECT_EQ(prob, reference_prob) << threads << " threads";
    // 12 windows per z-row: each thread ran whole windows (a kept workspace per slot, one more
    // slot than threads); a build without OpenMP runs one thread
    if (cs_threads(ctx_) == threads)
      EXPECT_NE(ctx_->kept_workspace[threads], nullptr) << threads << " threads";
  }
  cs_context_set_threads(ctx_, 2);
}

// With window tasks the error names the first window in window order whose logits overflowed,
// whichever thread ran it; nothing hangs waiting for a window that failed.
TEST_F(InferTest, WindowTasksNameTheFirstWindowThatOverflowed)
{
  cs_model_t m = MakeModel(3, 1, 3, 4, 3);
  ASSERT_NE(m, nullptr);
  // windows start at x 0, 7, 14, 21 and y 0, 7, 13 (12 per z-row); x >= 30 is only in x 21's
  const int64_t size[3] = {37, 29, 16}, n = 37 * 29 * 16;
  std::vector<float> img = RandomImage(1, size, 2);
  for (int64_t i = 0; i < n; i += 7)
    if (i % 37 >= 30)
      img[i] = 3.0e38f;
  for (int threads : {1, 2, 3})
  {
    cs_context_set_threads(ctx_, threads);
    std::vector<int32_t> labels(n, -1);
    EXPECT_EQ(cs_predict_volume(ctx_, m, img.data(), size, nullptr, nullptr, labels.data()), CS_ERR_NUMERIC)
        << threads;
    const std::string error = cs_context_last_error(ctx_);
    EXPECT_NE(error.find("in the window at x 21, y 0, z 0"), std::string::npos) << threads << ": " << error;
  }
  if (cs_threads(ctx_) == 3)
    EXPECT_NE(ctx_->kept_workspace[3], nullptr) << "3 threads did not run whole windows";
  cs_context_set_threads(ctx_, 2);
}

TEST_F(InferTest, ThreadsShareOneModel)
{
  cs_model_t m = MakeModel(3, 1, 3, 4, 3);
  ASSERT_NE(m, nullptr);
  const int64_t size[3] = {24, 20, 18}, n = 24 * 20 * 18;
  std::vector<float> img = RandomImage(1, size, 9);
  std::vector<float> reference(3 * n);
  ASSERT_EQ(cs_predict_volume(ctx_, m, img.data(), size, nullptr, reference.data(), nullptr), CS_OK);
  std::vector<float> a(3 * n), b(3 * n);
  cs_status sa = CS_ERR_IO, sb = CS_ERR_IO;
  auto run = [&](std::vector<float> *out, cs_status *st) {
    cs_context_t c;
    if (cs_context_init(&c) != CS_OK)
      return;
    cs_context_set_threads(c, 1);
    *st = cs_predict_volume(c, m, img.data(), size, nullptr, out->data(), nullptr);
    cs_context_free(c);
  };
  std::thread ta(run, &a, &sa), tb(run, &b, &sb);
  ta.join();
  tb.join();
  EXPECT_EQ(sa, CS_OK);
  EXPECT_EQ(sb, CS_OK);
  EXPECT_EQ(a, b);
  // Every value is summed by one thread in a fixed order, so the one-thread contexts give exactly
  // what the two-thread one gave (as LabelsDoNotDependOnTheThreadCount holds for the blend).
  EXPECT_EQ(a, reference);
}

// A caller's own parallel region (here two threads, each with a two-thread context) makes the
// window tasks' team a team of one: that one thread still runs every window.
TEST_F(InferTest, WindowTasksInsideACallersParallelRegion)
{
#ifndef _OPENMP
  GTEST_SKIP() << "built without OpenMP";
#else
  cs_model_t m = MakeModel(3, 1, 3, 4, 3);
  ASSERT_NE(m, nullptr);
  const int64_t size[3] = {37, 29, 16}, n = 37 * 29 * 16;
  const std::vector<float> img = RandomImage(1, size, 5);
  std::vector<float> reference(3 * n);
  ASSERT_EQ(cs_predict_volume(ctx_, m, img.data(), size, nullptr, reference.data(), nullptr), CS_OK);
  std::vector<float> out[2] = {std::vector<float>(3 * n), std::vector<float>(3 * n)};
  cs_status st[2] = {CS_ERR_IO, CS_ERR_IO};
#pragma omp parallel num_threads(2)
  {
    const int t = omp_get_thread_num();
    cs_context_t c;
    if (cs_context_init(&c) == CS_OK)
    {
      cs_context_set_threads(c, 2);
      st[t] = cs_predict_volume(c, m, img.data(), size, nullptr, out[t].data(), nullptr);
      cs_context_free(c);
    }
  }
  for (int t = 0; t < 2; t++)
  {
    EXPECT_EQ(st[t], CS_OK) << t;
    EXPECT_EQ(out[t], reference) << t;
  }
#endif
}

} // namespace

// The context keeps the forward pass's activations between calls (docs/design.md, threads and
// memory): a second call maps nothing new, and every call gives what a fresh context gives, also
// after a larger call or another model left other values in the kept memory.
TEST_F(InferTest, ForwardReusesTheContextWorkspace)
{
  cs_model_t m = MakeModel(3, 2, 4, 4, 3);
  cs_model_t other = MakeModel(3, 1, 3, 8, 2, 11);
  ASSERT_NE(m, nullptr);
  ASSERT_NE(other, nullptr);
  const int64_t small[3] = {16, 16, 8}, large[3] = {16, 16, 16};
  const std::vector<float> img = RandomImage(2, small, 3), big = RandomImage(2, large, 5);
  auto fresh = [&](cs_model_t model, const std::vector<float> &in, const int64_t *size, size_t classes) {
    cs_context_t c = nullptr;
    EXPECT_EQ(cs_context_init(&c), CS_OK);
    cs_context_set_threads(c, 2);
    std::vector<float> out(classes * (size_t)(size[0] * size[1] * size[2]));
    EXPECT_EQ(cs_model_forward(c, model, in.data(), 1, size, out.data()), CS_OK) << cs_context_last_error(c);
    cs_context_free(c);
    return out;
  };
  const std::vector<float> expected = fresh(m, img, small, 4), expected_big = fresh(m, big, large, 4);
  std::vector<float> out(expected.size()), out_big(expected_big.size());

  ASSERT_EQ(cs_model_forward(ctx_, m, img.data(), 1, small, out.data()), CS_OK) << cs_context_last_error(ctx_);
  EXPECT_EQ(out, expected);
  const uint64_t allocations = ctx_->alloc_count;
  std::fill(out.begin(), out.end(), -1.0f);
  ASSERT_EQ(cs_model_forward(ctx_, m, img.data(), 1, small, out.data()), CS_OK);
  EXPECT_EQ(out, expected);
  EXPECT_EQ(ctx_->alloc_count, allocations) << "the second call allocated";

  // A larger shape replaces the kept block; a smaller one then runs in it.
  ASSERT_EQ(cs_model_forward(ctx_, m, big.data(), 1, large, out_big.data()), CS_OK);
  EXPECT_EQ(out_big, expected_big);
  const uint64_t after_large = ctx_->alloc_count;
  EXPECT_GT(after_large, allocations);
  ASSERT_EQ(cs_model_forward(ctx_, m, img.data(), 1, small, out.data()), CS_OK);
  EXPECT_EQ(out, expected);
  EXPECT_EQ(ctx_->alloc_count, after_large);

  // Another model in the same memory, then the first one again.
  const std::vector<float> one_channel(img.begin(), img.begin() + (ptrdiff_t)(img.size() / 2));
  const std::vector<float> expected_other = fresh(other, one_channel, small, 3);
  std::vector<float> out_other(expected_other.size());
  ASSERT_EQ(cs_model_forward(ctx_, other, one_channel.data(), 1, small, out_other.data()), CS_OK)
      << cs_context_last_error(ctx_);
  EXPECT_EQ(out_other, expected_other);
  ASSERT_EQ(cs_model_forward(ctx_, m, img.data(), 1, small, out.data()), CS_OK);
  EXPECT_EQ(out, expected);

  cs_context_release_memory(ctx_);
  EXPECT_EQ(ctx_->kept_workspace[0], nullptr);
  cs_context_release_memory(ctx_); // twice is harmless
  ASSERT_EQ(cs_model_forward(ctx_, m, img.data(), 1, small, out.data()), CS_OK);
  EXPECT_EQ(out, expected);
  EXPECT_GT(ctx_->alloc_count, after_large);
}

// Sliding-window inference runs in the same kept workspace: a second volume maps only its slab,
// and its output equals the first call's.
TEST_F(InferTest, PredictVolumeReusesTheContextWorkspace)
{
  cs_model_t m = MakeModel(3, 1, 5, 4, 3);
  ASSERT_NE(m, nullptr);
  const int64_t size[3] = {37, 29, 23}, n = 37 * 29 * 23;
  const std::vector<float> img = RandomImage(1, size, 4);
  std::vector<float> first(5 * n), second(5 * n, -1.0f);
  std::vector<int32_t> labels(n), labels2(n, -1);
  ASSERT_EQ(cs_predict_volume(ctx_, m, img.data(), size, nullptr, first.data(), labels.data()), CS_OK)
      << cs_context_last_error(ctx_);
  const uint64_t allocations = ctx_->alloc_count;
  ASSERT_EQ(cs_predict_volume(ctx_, m, img.data(), size, nullptr, second.data(), labels2.data()), CS_OK);
  EXPECT_EQ(ctx_->alloc_count, allocations + 1) << "beyond the slab";
  EXPECT_EQ(second, first);
  EXPECT_EQ(labels2, labels);
}

// Without a context a call makes and frees its own workspace.
TEST_F(InferTest, ForwardWithoutAContextStillWorks)
{
  cs_model_t m = MakeModel(3, 1, 3, 4, 3);
  ASSERT_NE(m, nullptr);
  const int64_t size[3] = {16, 16, 8};
  const std::vector<float> img = RandomImage(1, size, 6);
  std::vector<float> a(3 * 16 * 16 * 8), b(a.size());
  cs_context_set_threads(ctx_, 0);
  ASSERT_EQ(cs_model_forward(ctx_, m, img.data(), 1, size, a.data()), CS_OK);
  ASSERT_EQ(cs_model_forward(nullptr, m, img.data(), 1, size, b.data()), CS_OK);
  EXPECT_EQ(a, b);
  cs_context_set_threads(ctx_, 2);
}

// With batch 1 the decoder's concatenation is the up-convolution's and the skip's own memory
// (no copy); with batch 2 it is copied. An item gives the same logits either way.
TEST_F(InferTest, BatchOfOneSkipsTheConcatenationCopy)
{
  cs_model_t m = MakeModel(3, 2, 4, 4, 3);
  ASSERT_NE(m, nullptr);
  const int64_t size[3] = {16, 16, 8}, n = 16 * 16 * 8;
  const std::vector<float> pair = RandomImage(4, size, 12); // two items of 2 channels
  std::vector<float> both(2 * 4 * n), first(4 * n), second(4 * n);
  ASSERT_EQ(cs_model_forward(ctx_, m, pair.data(), 2, size, both.data()), CS_OK) << cs_context_last_error(ctx_);
  ASSERT_EQ(cs_model_forward(ctx_, m, pair.data(), 1, size, first.data()), CS_OK);
  ASSERT_EQ(cs_model_forward(ctx_, m, pair.data() + 2 * n, 1, size, second.data()), CS_OK);
  EXPECT_EQ(first, std::vector<float>(both.begin(), both.begin() + 4 * n));
  EXPECT_EQ(second, std::vector<float>(both.begin() + 4 * n, both.end()));
}
