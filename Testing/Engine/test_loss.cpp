// test_loss.cpp - the losses: PyTorch golden values, finite differences, the meaning of beta,
// argument checks, determinism and hard Dice.
#include <gtest/gtest.h>

#include "comboseg/comboseg.h"

#include "../Reference/cs_golden.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

// Present when the engine links OpenMP; a weak reference keeps the test linkable without it.
extern "C" void omp_set_num_threads(int) __attribute__((weak));

namespace
{

const char *kGoldenPath = COMBOSEG_SOURCE_DIR "/Testing/Data/loss_golden.bin";

const GoldenFile &Golden()
{
  static GoldenFile file;
  static bool loaded = false;
  if (!loaded)
  {
    std::string error;
    if (!file.Load(kGoldenPath, &error))
      throw std::runtime_error(error);
    loaded = true;
  }
  return file;
}

std::string Sci(double x)
{
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.3g", x);
  return buffer;
}

double MaxAbs(const std::vector<float> &v)
{
  double m = 0.0;
  for (float x : v)
    m = std::max(m, std::fabs(static_cast<double>(x)));
  return m;
}

// Random logits (B, K, N) and labels (B, N) with a big background and small classes.
struct Case
{
  int64_t batch, n;
  int32_t k;
  std::vector<float> logits;
  std::vector<int32_t> labels;
};

Case MakeCase(int64_t batch, int64_t n, int32_t k, uint64_t seed, float scale = 1.5f)
{
  Case c{batch, n, k, {}, {}};
  cs_rng rng;
  cs_rng_seed(&rng, seed);
  c.logits.resize(static_cast<size_t>(batch * k * n));
  c.labels.resize(static_cast<size_t>(batch * n));
  for (auto &z : c.logits)
    z = scale * cs_rng_normal(&rng);
  for (auto &y : c.labels)
  {
    float u = cs_rng_uniform(&rng);
    y = u < 0.6f ? 0 : static_cast<int32_t>(1 + cs_rng_below(&rng, k - 1));
  }
  return c;
}

cs_status RunLoss(const cs_loss_options &o, const Case &c, float *loss, std::vector<float> *grad)
{
  if (grad)
    grad->assign(c.logits.size(), 0.0f);
  return cs_loss(&o, c.logits.data(), c.labels.data(), c.batch, c.n, c.k, loss, grad ? grad->data() : nullptr);
}

// Central differences of the float implementation, with the step actually taken in float.
void ExpectGradientMatchesFiniteDifferences(const cs_loss_options &o, Case c, const char *what)
{
  float loss = 0.0f;
  std::vector<float> grad;
  ASSERT_EQ(RunLoss(o, c, &loss, &grad), CS_OK) << what;
  ASSERT_TRUE(std::isfinite(loss)) << what;
  const double gmax = MaxAbs(grad);
  ASSERT_GT(gmax, 0.0) << what;
  double worst = 0.0;
  for (size_t j = 0; j < c.logits.size(); j++)
  {
    const float z = c.logits[j];
    const float zp = z + 1e-2f, zm = z - 1e-2f;
    float lp = 0.0f, lm = 0.0f;
    c.logits[j] = zp;
    ASSERT_EQ(RunLoss(o, c, &lp, nullptr), CS_OK);
    c.logits[j] = zm;
    ASSERT_EQ(RunLoss(o, c, &lm, nullptr), CS_OK);
    c.logits[j] = z;
    const double fd = (static_cast<double>(lp) - lm) / (static_cast<double>(zp) - zm);
    const double err = std::fabs(fd - grad[j]);
    worst = std::max(worst, err / gmax);
    EXPECT_LE(err, 2e-3 * gmax + 1e-2 * std::fabs(fd))
        << what << " element " << j << " fd " << fd << " grad " << grad[j];
  }
  ::testing::Test::RecordProperty(std::string("fd_worst_") + what, Sci(worst));
}

} // namespace

TEST(LossOptions, DefaultsAndNames)
{
  cs_loss_options o = cs_loss_options_default();
  EXPECT_EQ(o.kind, CS_LOSS_COMBO_TVERSKY);
  EXPECT_FLOAT_EQ(o.alpha, 0.5f);
  EXPECT_FLOAT_EQ(o.beta, 0.5f);
  EXPECT_FLOAT_EQ(o.tversky_alpha, 0.3f);
  EXPECT_FLOAT_EQ(o.tversky_beta, 0.7f);
  EXPECT_EQ(o.dice_include_background, 0);
  EXPECT_EQ(o.batch_dice, 0);
  EXPECT_EQ(o.class_weights, nullptr);
  EXPECT_EQ(o.labelled_classes, nullptr);

  const cs_loss_kind kinds[] = {CS_LOSS_COMBO,
                                CS_LOSS_CROSS_ENTROPY,
                                CS_LOSS_WEIGHTED_CROSS_ENTROPY,
                                CS_LOSS_DICE,
                                CS_LOSS_FOCAL,
                                CS_LOSS_TVERSKY,
                                CS_LOSS_FOCAL_TVERSKY,
                                CS_LOSS_COMBO_ALL_CLASSES,
                                CS_LOSS_COMBO_LABEL_WEIGHTED,
                                CS_LOSS_COMBO_TVERSKY};
  for (cs_loss_kind k : kinds)
  {
    cs_loss_kind back = CS_LOSS_COMBO;
    ASSERT_EQ(cs_loss_kind_from_name(cs_loss_kind_name(k), &back), CS_OK) << cs_loss_kind_name(k);
    EXPECT_EQ(back, k);
  }
  EXPECT_STREQ(cs_loss_kind_name(CS_LOSS_COMBO), "combo");
  EXPECT_STREQ(cs_loss_kind_name(CS_LOSS_FOCAL_TVERSKY), "focal_tversky");
  EXPECT_STREQ(cs_loss_kind_name(CS_LOSS_COMBO_ALL_CLASSES), "combo_all_classes");
  EXPECT_STREQ(cs_loss_kind_name(CS_LOSS_COMBO_LABEL_WEIGHTED), "combo_label_weighted");
  EXPECT_STREQ(cs_loss_kind_name(CS_LOSS_COMBO_TVERSKY), "combo_tversky");
  cs_loss_kind k = CS_LOSS_COMBO;
  EXPECT_EQ(cs_loss_kind_from_name("Focal-Tversky", &k), CS_OK);
  EXPECT_EQ(k, CS_LOSS_FOCAL_TVERSKY);
  EXPECT_EQ(cs_loss_kind_from_name("diceloss", &k), CS_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(cs_loss_kind_from_name("", &k), CS_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(cs_loss_kind_from_name(nullptr, &k), CS_ERR_INVALID_ARGUMENT);
  EXPECT_STREQ(cs_loss_kind_name(static_cast<cs_loss_kind>(99)), "unknown");
}

// Both forms of the Combo loss against PyTorch (float64 autograd of the formulas of
// docs/design.md), K = 2..14: "combo" (one-vs-rest over the foreground, cs_combo_loss) and
// "combo_all" (the paper's all-classes form), "combo_lw" (label-weighted) and "combo_tv" (label-
// weighted, beta also in the overlap term).
TEST(ComboLoss, MatchesPyTorchGolden)
{
  const GoldenFile &g = Golden();
  const int64_t n = static_cast<int64_t>(g.Get("combo/n")[0]);
  const std::vector<double> ab = g.Get("combo/alphabeta");
  int checked = 0;
  double worst_loss = 0.0, worst_grad = 0.0;
  for (int32_t k = 2; k <= 14; k++)
  {
    const std::string base = "combo/K" + std::to_string(k);
    const std::vector<float> logits = g.GetFloat(base + "/logits");
    const std::vector<int32_t> labels = g.GetInt(base + "/labels");
    ASSERT_EQ(logits.size(), static_cast<size_t>(n * k));
    for (size_t j = 0; j < ab.size() / 2; j++)
      for (const cs_loss_kind kind :
           {CS_LOSS_COMBO, CS_LOSS_COMBO_ALL_CLASSES, CS_LOSS_COMBO_LABEL_WEIGHTED, CS_LOSS_COMBO_TVERSKY})
      {
        const float alpha = static_cast<float>(ab[2 * j]), beta = static_cast<float>(ab[2 * j + 1]);
        const char *form = kind == CS_LOSS_COMBO                  ? "combo"
                           : kind == CS_LOSS_COMBO_ALL_CLASSES    ? "combo_all"
                           : kind == CS_LOSS_COMBO_LABEL_WEIGHTED ? "combo_lw"
                                                                  : "combo_tv";
        const std::string name = std::string(form) + "/K" + std::to_string(k) + "/" + std::to_string(j);
        const double want = g.Get(name + "/loss")[0];
        const std::vector<float> want_grad = g.GetFloat(name + "/grad");
        cs_loss_options o = cs_loss_options_default();
        o.kind = kind;
        o.alpha = alpha;
        o.beta = beta;
        auto run = [&](float *loss, float *grad) {
          if (kind == CS_LOSS_COMBO)
            return cs_combo_loss(logits.data(), labels.data(), n, k, alpha, beta, loss, grad);
          return cs_loss(&o, logits.data(), labels.data(), 1, n, k, loss, grad);
        };
        float loss = 0.0f;
        std::vector<float> grad(logits.size());
        ASSERT_EQ(run(&loss, grad.data()), CS_OK);
        EXPECT_NEAR(loss, want, 1e-5 * std::fabs(want) + 1e-7) << name;
        const double gmax = MaxAbs(want_grad);
        for (size_t i = 0; i < grad.size(); i++)
          ASSERT_NEAR(grad[i], want_grad[i], 1e-5 * std::fabs(want_grad[i]) + 1e-6 * gmax) << name << " element " << i;
        worst_loss = std::max(worst_loss, std::fabs(loss - want) / std::fabs(want));
        for (size_t i = 0; i < grad.size(); i++)
          worst_grad = std::max(worst_grad, std::fabs(grad[i] - want_grad[i]) / gmax);
        // the loss alone (grad NULL) is the same number
        float loss_only = 0.0f;
        ASSERT_EQ(run(&loss_only, nullptr), CS_OK);
        EXPECT_EQ(loss_only, loss);
        checked++;
      }
  }
  EXPECT_EQ(checked, 13 * 5 * 4);
  RecordProperty("worst_loss_relative_error", Sci(worst_loss));
  RecordProperty("worst_grad_error_over_max", Sci(worst_grad));
}

// Through cs_loss with batch 1 and kind CS_LOSS_COMBO, Combo is exactly cs_combo_loss.
TEST(ComboLoss, GeneralEntryPointAgrees)
{
  Case c = MakeCase(1, 300, 5, 11);
  float a = 0.0f, b = 0.0f;
  std::vector<float> ga(c.logits.size()), gb(c.logits.size());
  ASSERT_EQ(cs_combo_loss(c.logits.data(), c.labels.data(), c.n, c.k, 0.5f, 0.5f, &a, ga.data()), CS_OK);
  cs_loss_options o = cs_loss_options_default();
  o.kind = CS_LOSS_COMBO;
  ASSERT_EQ(RunLoss(o, c, &b, &gb), CS_OK);
  EXPECT_EQ(a, b);
  EXPECT_EQ(ga, gb);
}

// Where the clip is active on every class of a voxel, the cross-entropy sends it no gradient.
TEST(ComboLoss, NoGradientWhereClipActive)
{
  const int64_t n = 6;
  const int32_t k = 3;
  std::vector<float> logits(k * n, 0.0f);
  std::vector<int32_t> labels = {0, 1, 2, 0, 1, 2};
  logits[1 * n + 0] = 30.0f; // voxel 0: p1 ~ 1, p0 and p2 ~ 1e-13: all clipped
  logits[0 * n + 1] = 0.5f;  // voxel 1: ordinary
  float loss = 0.0f;
  std::vector<float> grad(logits.size());
  ASSERT_EQ(cs_combo_loss(logits.data(), labels.data(), n, k, 1.0f, 0.5f, &loss, grad.data()), CS_OK);
  for (int32_t c = 0; c < k; c++)
  {
    EXPECT_EQ(grad[c * n + 0], 0.0f) << "class " << c;
    EXPECT_NE(grad[c * n + 1], 0.0f) << "class " << c;
  }
  // the loss still counts the clipped terms: -(1 - beta) ln(1e-7) / (N (K - 1)) at least (the
  // false-alarm term of class 1, clipped at 1 - 1e-7, on voxel 3 labelled 0)
  logits[1 * n + 3] = 30.0f;
  ASSERT_EQ(cs_combo_loss(logits.data(), labels.data(), n, k, 1.0f, 0.5f, &loss, nullptr), CS_OK);
  EXPECT_GT(loss, 0.5 * -std::log(1e-7) / (n * (k - 1)));
}

// Every kind and option against PyTorch on batches of two items.
TEST(Losses, MatchPyTorchGolden)
{
  const GoldenFile &g = Golden();
  const std::vector<double> shape = g.Get("other/shape");
  const int64_t batch = static_cast<int64_t>(shape[0]), n = static_cast<int64_t>(shape[1]);
  const int cases = static_cast<int>(shape[3]);
  int checked = 0;
  for (double kd : g.Get("other/ks"))
  {
    const int32_t k = static_cast<int32_t>(kd);
    const std::string base = "other/K" + std::to_string(k);
    const std::vector<float> logits = g.GetFloat(base + "/logits");
    const std::vector<int32_t> all_labels = g.GetInt(base + "/labels");
    for (int j = 0; j < cases; j++)
    {
      const std::string name = base + "/" + std::to_string(j);
      const std::vector<double> opt = g.Get(name + "/options");
      std::vector<int32_t> labels = all_labels;
      std::vector<uint8_t> labelled;
      if (opt.size() > 9 && opt[9] != 0.0)
      { // partial labels: own label map and labelled set
        labels = g.GetInt(name + "/labels");
        for (int32_t v : g.GetInt(name + "/labelled"))
          labelled.push_back(static_cast<uint8_t>(v));
        ASSERT_EQ(labelled.size(), static_cast<size_t>(k));
      }
      cs_loss_options o = cs_loss_options_default();
      if (!labelled.empty())
        o.labelled_classes = labelled.data();
      o.kind = static_cast<cs_loss_kind>(static_cast<int>(opt[0]));
      o.alpha = static_cast<float>(opt[1]);
      o.beta = static_cast<float>(opt[2]);
      o.gamma = static_cast<float>(opt[3]);
      o.tversky_alpha = static_cast<float>(opt[4]);
      o.tversky_beta = static_cast<float>(opt[5]);
      o.dice_include_background = static_cast<int32_t>(opt[6]);
      o.batch_dice = static_cast<int32_t>(opt[7]);
      std::vector<float> weights;
      if (opt[8] != 0.0)
      {
        weights = g.GetFloat(name + "/weights");
        o.class_weights = weights.data();
      }
      const double want = g.Get(name + "/loss")[0];
      const std::vector<float> want_grad = g.GetFloat(name + "/grad");
      float loss = 0.0f;
      std::vector<float> grad(logits.size());
      ASSERT_EQ(cs_loss(&o, logits.data(), labels.data(), batch, n, k, &loss, grad.data()), CS_OK) << name;
      const std::string what = name + " (" + cs_loss_kind_name(o.kind) + ")";
      EXPECT_NEAR(loss, want, 1e-5 * std::fabs(want) + 1e-7) << what;
      const double gmax = MaxAbs(want_grad);
      for (size_t i = 0; i < grad.size(); i++)
        ASSERT_NEAR(grad[i], want_grad[i], 1e-5 * std::fabs(want_grad[i]) + 1e-6 * gmax) << what << " element " << i;
      checked++;
    }
  }
  EXPECT_EQ(checked, 2 * cases);
}

// Finite differences of every kind with every Dice option, on a small batch.
struct FdParam
{
  cs_loss_kind kind;
  int include_background, batch_dice;
  float gamma;
  bool weights;
};

void PrintTo(const FdParam &p, std::ostream *os)
{
  *os << cs_loss_kind_name(p.kind) << " background " << p.include_background << " batch_dice " << p.batch_dice
      << " gamma " << p.gamma << " weights " << p.weights;
}

class LossFiniteDifferences : public ::testing::TestWithParam<FdParam>
{
};

TEST_P(LossFiniteDifferences, GradientMatches)
{
  const FdParam p = GetParam();
  cs_loss_options o = cs_loss_options_default();
  o.kind = p.kind;
  o.alpha = 0.4f;
  o.beta = 0.65f;
  o.gamma = p.gamma;
  o.tversky_alpha = 0.25f;
  o.tversky_beta = 0.8f;
  o.dice_include_background = p.include_background;
  o.batch_dice = p.batch_dice;
  const float weights[4] = {0.3f, 1.0f, 2.5f, 0.0f};
  if (p.weights)
    o.class_weights = weights;
  Case c = MakeCase(2, 20, 4, 1234 + static_cast<uint64_t>(p.kind));
  ExpectGradientMatchesFiniteDifferences(o, c, cs_loss_kind_name(p.kind));
}

INSTANTIATE_TEST_SUITE_P(
    AllKinds, LossFiniteDifferences,
    ::testing::Values(
        FdParam{CS_LOSS_COMBO, 0, 0, 0.0f, false}, FdParam{CS_LOSS_COMBO, 1, 0, 0.0f, false},
        FdParam{CS_LOSS_COMBO, 0, 1, 0.0f, false}, FdParam{CS_LOSS_COMBO, 1, 1, 0.0f, false},
        FdParam{CS_LOSS_COMBO_ALL_CLASSES, 0, 0, 0.0f, false}, FdParam{CS_LOSS_COMBO_ALL_CLASSES, 1, 1, 0.0f, false},
        FdParam{CS_LOSS_COMBO_LABEL_WEIGHTED, 0, 0, 0.0f, false},
        FdParam{CS_LOSS_COMBO_LABEL_WEIGHTED, 1, 1, 0.0f, false}, FdParam{CS_LOSS_COMBO_TVERSKY, 0, 0, 0.0f, false},
        FdParam{CS_LOSS_COMBO_TVERSKY, 1, 1, 0.0f, false}, FdParam{CS_LOSS_CROSS_ENTROPY, 0, 0, 0.0f, false},
        FdParam{CS_LOSS_WEIGHTED_CROSS_ENTROPY, 0, 0, 0.0f, false},
        FdParam{CS_LOSS_WEIGHTED_CROSS_ENTROPY, 0, 0, 0.0f, true}, FdParam{CS_LOSS_DICE, 0, 0, 0.0f, false},
        FdParam{CS_LOSS_DICE, 1, 1, 0.0f, false}, FdParam{CS_LOSS_FOCAL, 0, 0, 0.0f, false},
        FdParam{CS_LOSS_FOCAL, 0, 0, 0.5f, false}, FdParam{CS_LOSS_TVERSKY, 0, 0, 0.0f, false},
        FdParam{CS_LOSS_TVERSKY, 1, 1, 0.0f, false}, FdParam{CS_LOSS_FOCAL_TVERSKY, 0, 0, 0.0f, false},
        FdParam{CS_LOSS_FOCAL_TVERSKY, 1, 1, 1.5f, false}),
    [](const ::testing::TestParamInfo<FdParam> &info) {
      std::string name = cs_loss_kind_name(info.param.kind);
      if (info.param.include_background)
        name += "_background";
      if (info.param.batch_dice)
        name += "_batchdice";
      if (info.param.gamma != 0.0f)
        name += "_gamma" + std::to_string(int(info.param.gamma * 10));
      if (info.param.weights)
        name += "_weights";
      return name;
    });

// Known values: CE of uniform logits is ln K; Dice of a perfect hard prediction is close to 0.
TEST(Losses, KnownValues)
{
  Case c = MakeCase(2, 50, 4, 3);
  std::fill(c.logits.begin(), c.logits.end(), 0.25f);
  cs_loss_options o = cs_loss_options_default();
  o.kind = CS_LOSS_CROSS_ENTROPY;
  float loss = 0.0f;
  ASSERT_EQ(RunLoss(o, c, &loss, nullptr), CS_OK);
  EXPECT_NEAR(loss, std::log(4.0), 1e-6);
  o.kind = CS_LOSS_FOCAL; // gamma 2: (3/4)^2 ln 4
  ASSERT_EQ(RunLoss(o, c, &loss, nullptr), CS_OK);
  EXPECT_NEAR(loss, 0.5625 * std::log(4.0), 1e-6);

  // confident, correct logits
  for (int64_t b = 0; b < c.batch; b++)
    for (int64_t i = 0; i < c.n; i++)
      for (int32_t k = 0; k < c.k; k++)
        c.logits[(b * c.k + k) * c.n + i] = c.labels[b * c.n + i] == k ? 40.0f : 0.0f;
  const cs_loss_kind zero_kinds[] = {CS_LOSS_DICE, CS_LOSS_TVERSKY, CS_LOSS_FOCAL_TVERSKY, CS_LOSS_CROSS_ENTROPY,
                                     CS_LOSS_FOCAL};
  for (cs_loss_kind kind : zero_kinds)
  {
    o.kind = kind;
    std::vector<float> grad;
    ASSERT_EQ(RunLoss(o, c, &loss, &grad), CS_OK);
    EXPECT_NEAR(loss, 0.0, 1e-6) << cs_loss_kind_name(kind);
    for (float x : grad)
      ASSERT_TRUE(std::isfinite(x)) << cs_loss_kind_name(kind);
  }
  // Combo with alpha 0 is minus the mean Dice: -1 for a perfect prediction
  o = cs_loss_options_default();
  o.alpha = 0.0f;
  ASSERT_EQ(RunLoss(o, c, &loss, nullptr), CS_OK);
  EXPECT_NEAR(loss, -1.0, 1e-6);
}

// The loss's own exponentials: cross-entropy and its gradient (p - t) / N to float precision
// of a long-double reference, for logits whose spread runs from -700 to +700 (probabilities
// from 1 down to e^-700), and across the clamp at e^-708.
TEST(Losses, SoftmaxIsExactOverTheWholeRange)
{
  Case c = MakeCase(1, 2000, 3, 11);
  for (int64_t i = 0; i < c.n; i++)
  {
    const double spread = -700.0 + 1400.0 * static_cast<double>(i) / static_cast<double>(c.n - 1);
    c.logits[0 * c.n + i] = static_cast<float>(spread);
    c.logits[1 * c.n + i] = static_cast<float>(0.37 * spread);
    c.logits[2 * c.n + i] = 0.0f;
  }
  long double want = 0.0L;
  std::vector<long double> want_grad(c.logits.size());
  for (int64_t i = 0; i < c.n; i++)
  {
    long double m = 0.0L, s = 0.0L;
    for (int32_t k = 0; k < c.k; k++)
      m = std::max(m, static_cast<long double>(c.logits[k * c.n + i]));
    for (int32_t k = 0; k < c.k; k++)
      s += std::exp(static_cast<long double>(c.logits[k * c.n + i]) - m);
    want += m + std::log(s) - c.logits[c.labels[i] * c.n + i];
    for (int32_t k = 0; k < c.k; k++)
    {
      const long double p = std::exp(static_cast<long double>(c.logits[k * c.n + i]) - m) / s;
      want_grad[k * c.n + i] = (p - (c.labels[i] == k ? 1.0L : 0.0L)) / static_cast<long double>(c.n);
    }
  }
  want /= static_cast<long double>(c.n);
  cs_loss_options o = cs_loss_options_default();
  o.kind = CS_LOSS_CROSS_ENTROPY;
  float loss = 0.0f;
  std::vector<float> grad;
  ASSERT_EQ(RunLoss(o, c, &loss, &grad), CS_OK);
  EXPECT_NEAR(loss, static_cast<double>(want), 1e-6 * static_cast<double>(want));
  for (size_t i = 0; i < grad.size(); i++)
  {
    const double w = static_cast<double>(want_grad[i]);
    // relative to float, plus a few double rounding steps of p - 1 (cancellation near p = 1)
    ASSERT_NEAR(grad[i], w, 3e-7 * std::fabs(w) + 1e-15 / static_cast<double>(c.n)) << "logit " << i;
  }

  // a spread of 1000 (beyond the clamp) is as certain as a spread of 100
  Case wide = MakeCase(1, 64, 4, 12), narrow = wide;
  for (int64_t i = 0; i < wide.n; i++)
    for (int32_t k = 0; k < wide.k; k++)
    {
      const bool right = wide.labels[i] == k;
      wide.logits[k * wide.n + i] = right ? 500.0f : -500.0f;
      narrow.logits[k * wide.n + i] = right ? 50.0f : -50.0f;
    }
  for (cs_loss_kind kind : {CS_LOSS_COMBO, CS_LOSS_CROSS_ENTROPY, CS_LOSS_DICE})
  {
    o.kind = kind;
    float lw = 0.0f, ln = 0.0f;
    ASSERT_EQ(RunLoss(o, wide, &lw, nullptr), CS_OK);
    ASSERT_EQ(RunLoss(o, narrow, &ln, nullptr), CS_OK);
    EXPECT_NEAR(lw, ln, 1e-6) << cs_loss_kind_name(kind);
  }

  // a NaN logit makes the loss NaN (the trainer refuses the step on that)
  wide.logits[5] = NAN;
  o.kind = CS_LOSS_COMBO;
  ASSERT_EQ(RunLoss(o, wide, &loss, nullptr), CS_OK);
  EXPECT_TRUE(std::isnan(loss));
}

// Weighted CE with all weights equal is plain CE; inverse-frequency weights follow the
// documented formula w_k = B N / (K c_k).
TEST(Losses, WeightedCrossEntropyWeights)
{
  Case c = MakeCase(2, 64, 3, 5);
  cs_loss_options o = cs_loss_options_default();
  o.kind = CS_LOSS_CROSS_ENTROPY;
  float ce = 0.0f, wce = 0.0f, inv = 0.0f, manual = 0.0f;
  std::vector<float> g_ce, g_wce;
  ASSERT_EQ(RunLoss(o, c, &ce, &g_ce), CS_OK);
  const float ones[3] = {2.0f, 2.0f, 2.0f};
  o.kind = CS_LOSS_WEIGHTED_CROSS_ENTROPY;
  o.class_weights = ones;
  ASSERT_EQ(RunLoss(o, c, &wce, &g_wce), CS_OK);
  EXPECT_NEAR(wce, ce, 1e-6 * ce);
  for (size_t i = 0; i < g_ce.size(); i++)
    EXPECT_NEAR(g_wce[i], g_ce[i], 1e-7);

  int64_t counts[3] = {0, 0, 0};
  for (int32_t y : c.labels)
    counts[y]++;
  float w[3];
  for (int k = 0; k < 3; k++)
    w[k] = static_cast<float>(2.0 * 64 / (3.0 * counts[k]));
  o.class_weights = nullptr;
  ASSERT_EQ(RunLoss(o, c, &inv, nullptr), CS_OK);
  o.class_weights = w;
  ASSERT_EQ(RunLoss(o, c, &manual, nullptr), CS_OK);
  EXPECT_NEAR(inv, manual, 1e-6 * manual);
}

// "The meaning of beta". Fixed prediction, K = 4: background right, a small organ (class 1)
// partly missed (FN voxels: true class given little probability, the rest spread) or
// background voxels confidently called class 1 (FP voxels).
namespace
{
struct BetaScene
{
  std::vector<float> logits;
  std::vector<int32_t> labels;
  std::vector<int64_t> fn, fp;
  int64_t n = 40;
  int32_t k = 4;
};

BetaScene MakeBetaScene()
{
  BetaScene s;
  s.logits.assign(s.k * s.n, 0.0f);
  s.labels.assign(s.n, 0);
  auto set_p = [&](int64_t i, std::initializer_list<double> p) {
    int c = 0;
    for (double v : p)
      s.logits[c++ * s.n + i] = static_cast<float>(std::log(v));
  };
  for (int64_t i = 0; i < s.n; i++)
    set_p(i, {0.97, 0.01, 0.01, 0.01});
  for (int64_t i = 0; i < 8; i++)
  { // the organ: 4 found, 4 missed
    s.labels[i] = 1;
    if (i < 4)
    {
      set_p(i, {0.04, 0.9, 0.03, 0.03});
    }
    else
    {
      set_p(i, {0.55, 0.05, 0.2, 0.2});
      s.fn.push_back(i);
    }
  }
  for (int64_t i = 20; i < 24; i++)
  { // background called organ
    set_p(i, {0.05, 0.9, 0.025, 0.025});
    s.fp.push_back(i);
  }
  return s;
}

double GradNormOn(const std::vector<float> &grad, const std::vector<int64_t> &voxels, int64_t n, int32_t k)
{
  double s = 0.0;
  for (int64_t i : voxels)
    for (int32_t c = 0; c < k; c++)
      s += static_cast<double>(grad[c * n + i]) * grad[c * n + i];
  return std::sqrt(s);
}
} // namespace

// Combo's beta weighs the missed-voxel terms (t ln p) against the false-alarm terms
// ((1 - t) ln(1 - p)) of the foreground classes: above 0.5 the missed voxels pull harder, the
// false alarms less; below 0.5 the reverse. alpha 1 isolates the cross-entropy, where beta acts;
// 0.5 is the default mix with Dice.
TEST(ComboLoss, BetaSteersMissesAgainstFalseAlarms)
{
  BetaScene s = MakeBetaScene();
  for (const cs_loss_kind kind : {CS_LOSS_COMBO, CS_LOSS_COMBO_LABEL_WEIGHTED, CS_LOSS_COMBO_TVERSKY})
    for (float alpha : {1.0f, 0.5f})
    {
      cs_loss_options o = cs_loss_options_default();
      o.kind = kind;
      o.alpha = alpha;
      std::vector<float> g_hi(s.logits.size()), g_lo(s.logits.size());
      float l_hi = 0.0f, l_lo = 0.0f;
      o.beta = 0.7f;
      ASSERT_EQ(cs_loss(&o, s.logits.data(), s.labels.data(), 1, s.n, s.k, &l_hi, g_hi.data()), CS_OK);
      o.beta = 0.3f;
      ASSERT_EQ(cs_loss(&o, s.logits.data(), s.labels.data(), 1, s.n, s.k, &l_lo, g_lo.data()), CS_OK);
      const double fn_hi = GradNormOn(g_hi, s.fn, s.n, s.k), fn_lo = GradNormOn(g_lo, s.fn, s.n, s.k);
      const double fp_hi = GradNormOn(g_hi, s.fp, s.n, s.k), fp_lo = GradNormOn(g_lo, s.fp, s.n, s.k);
      const char *name = cs_loss_kind_name(kind);
      if (alpha == 1.0f)
      { // with Dice in the mix the norms also carry beta-free terms
        EXPECT_GT(fn_hi, 1.5 * fn_lo) << name;
        EXPECT_GT(fp_lo, 1.5 * fp_hi) << name;
      }
      // the push to raise the missed class's logit is stronger with beta 0.7, the push to lower
      // the falsely called class's logit stronger with beta 0.3
      for (int64_t i : s.fn)
        EXPECT_LT(g_hi[1 * s.n + i], g_lo[1 * s.n + i]) << name << alpha;
      for (int64_t i : s.fp)
        EXPECT_GT(g_lo[1 * s.n + i], g_hi[1 * s.n + i]) << name << alpha;
    }
}

// With one foreground class (K = 2) beta still steers: a missed voxel's pull grows with beta.
TEST(ComboLoss, BetaSteersWithOneForegroundClass)
{
  BetaScene s = MakeBetaScene();
  std::vector<float> z2(2 * s.n);
  for (int64_t i = 0; i < s.n; i++)
  {
    z2[i] = s.logits[i];
    z2[s.n + i] = s.logits[s.n + i];
  }
  std::vector<float> g_hi(z2.size()), g_lo(z2.size());
  float a = 0.0f, b = 0.0f;
  ASSERT_EQ(cs_combo_loss(z2.data(), s.labels.data(), s.n, 2, 1.0f, 0.7f, &a, g_hi.data()), CS_OK);
  ASSERT_EQ(cs_combo_loss(z2.data(), s.labels.data(), s.n, 2, 1.0f, 0.3f, &b, g_lo.data()), CS_OK);
  EXPECT_GT(GradNormOn(g_hi, s.fn, s.n, 2), 1.5 * GradNormOn(g_lo, s.fn, s.n, 2));
  EXPECT_GT(GradNormOn(g_lo, s.fp, s.n, 2), 1.5 * GradNormOn(g_hi, s.fp, s.n, 2));
}

// Why the paper's all-classes form is not the default: summed over every class with softmax
// outputs, a background voxel's beta term is -ln p_background, a false-alarm penalty, so raising
// beta raises the pull on false alarms as well as on misses. On a scene of mostly background
// (as every scan is) the false alarms' share of the gradient does not fall with beta.
TEST(ComboLoss, AllClassesFormBetaAlsoPunishesFalseAlarms)
{
  BetaScene s = MakeBetaScene();
  cs_loss_options o = cs_loss_options_default();
  o.kind = CS_LOSS_COMBO_ALL_CLASSES;
  o.alpha = 1.0f;
  std::vector<float> g_hi(s.logits.size()), g_lo(s.logits.size());
  float l_hi = 0.0f, l_lo = 0.0f;
  o.beta = 0.7f;
  ASSERT_EQ(cs_loss(&o, s.logits.data(), s.labels.data(), 1, s.n, s.k, &l_hi, g_hi.data()), CS_OK);
  o.beta = 0.3f;
  ASSERT_EQ(cs_loss(&o, s.logits.data(), s.labels.data(), 1, s.n, s.k, &l_lo, g_lo.data()), CS_OK);
  EXPECT_GT(GradNormOn(g_hi, s.fp, s.n, s.k), GradNormOn(g_lo, s.fp, s.n, s.k));
}

// Partial labels: on voxels labelled 0 that the network calls class 1 (they may well be class 1
// when class 1 was not drawn), an unlabelled class 1 is not pushed below the background: the
// logit gradients of classes 0 and 1 are in the ratio of their probabilities, so z1 - z0 keeps
// still, while a labelled class 1 is pushed down against the background.
TEST(ComboLoss, UnlabelledClassIsNotTaughtAbsent)
{
  BetaScene s = MakeBetaScene(); // voxels 20..23: labelled 0, called class 1 with p 0.9
  const uint8_t labelled[4] = {1, 0, 1, 1};
  std::vector<int32_t> labels(s.labels);
  for (auto &y : labels)
    y = y == 1 ? 0 : y; // class 1 not drawn: its voxels carry 0
  for (const cs_loss_kind kind :
       {CS_LOSS_COMBO, CS_LOSS_COMBO_ALL_CLASSES, CS_LOSS_COMBO_LABEL_WEIGHTED, CS_LOSS_COMBO_TVERSKY})
  {
    cs_loss_options o = cs_loss_options_default();
    o.kind = kind;
    std::vector<float> full(s.logits.size()), partial(s.logits.size());
    float lf = 0.0f, lp = 0.0f;
    ASSERT_EQ(cs_loss(&o, s.logits.data(), labels.data(), 1, s.n, s.k, &lf, full.data()), CS_OK);
    o.labelled_classes = labelled;
    ASSERT_EQ(cs_loss(&o, s.logits.data(), labels.data(), 1, s.n, s.k, &lp, partial.data()), CS_OK);
    const double p0 = 0.05, p1 = 0.9; // the scene's probabilities on these voxels
    for (int64_t i : s.fp)
    {
      const double full_push = full[1 * s.n + i] / p1 - full[0 * s.n + i] / p0;
      const double partial_push = partial[1 * s.n + i] / p1 - partial[0 * s.n + i] / p0;
      EXPECT_GT(full_push, 1e-3) << "fully labelled: class 1 is pushed below the background";
      EXPECT_LT(std::fabs(partial_push), 1e-4 * full_push) << "unlabelled: no push";
    }
    // a voxel labelled with class 1 while class 1 is marked unlabelled is an error
    o.labelled_classes = labelled;
    EXPECT_EQ(cs_loss(&o, s.logits.data(), s.labels.data(), 1, s.n, s.k, &lp, nullptr), CS_ERR_INVALID_ARGUMENT);
  }
  cs_loss_options o = cs_loss_options_default();
  const uint8_t no_background[4] = {0, 1, 1, 1};
  o.labelled_classes = no_background;
  float loss = 0.0f;
  EXPECT_EQ(cs_loss(&o, s.logits.data(), labels.data(), 1, s.n, s.k, &loss, nullptr), CS_ERR_INVALID_ARGUMENT);
  o = cs_loss_options_default();
  o.kind = CS_LOSS_FOCAL;
  o.labelled_classes = labelled;
  EXPECT_EQ(cs_loss(&o, s.logits.data(), labels.data(), 1, s.n, s.k, &loss, nullptr), CS_ERR_UNSUPPORTED);
}

// Partial labels: the gradient of every kind that takes them against finite differences.
TEST(ComboLoss, PartialLabelsGradientMatchesFiniteDifferences)
{
  const uint8_t labelled[4] = {1, 1, 0, 1};
  for (const cs_loss_kind kind : {CS_LOSS_COMBO, CS_LOSS_COMBO_ALL_CLASSES, CS_LOSS_COMBO_LABEL_WEIGHTED,
                                  CS_LOSS_COMBO_TVERSKY, CS_LOSS_DICE, CS_LOSS_TVERSKY, CS_LOSS_FOCAL_TVERSKY})
  {
    cs_loss_options o = cs_loss_options_default();
    o.kind = kind;
    o.alpha = 0.4f;
    o.beta = 0.65f;
    o.dice_include_background = kind == CS_LOSS_DICE;
    o.labelled_classes = labelled;
    Case c = MakeCase(2, 20, 4, 77 + static_cast<uint64_t>(kind));
    for (auto &y : c.labels)
      y = y == 2 ? 0 : y;
    ExpectGradientMatchesFiniteDifferences(o, c, (std::string("partial_") + cs_loss_kind_name(kind)).c_str());
  }
}

TEST(Losses, RejectsBadArguments)
{
  Case c = MakeCase(1, 10, 3, 9);
  float loss = 0.0f;
  std::vector<float> grad(c.logits.size());
  const float *z = c.logits.data();
  const int32_t *y = c.labels.data();
  EXPECT_EQ(cs_combo_loss(z, y, 10, 3, 0.5f, 0.5f, &loss, grad.data()), CS_OK);
  EXPECT_EQ(cs_combo_loss(nullptr, y, 10, 3, 0.5f, 0.5f, &loss, nullptr), CS_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(cs_combo_loss(z, nullptr, 10, 3, 0.5f, 0.5f, &loss, nullptr), CS_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(cs_combo_loss(z, y, 10, 3, 0.5f, 0.5f, nullptr, nullptr), CS_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(cs_combo_loss(z, y, 10, 1, 0.5f, 0.5f, &loss, nullptr), CS_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(cs_combo_loss(z, y, 0, 3, 0.5f, 0.5f, &loss, nullptr), CS_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(cs_combo_loss(z, y, -5, 3, 0.5f, 0.5f, &loss, nullptr), CS_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(cs_combo_loss(z, y, 10, CS_MAX_CLASSES + 1, 0.5f, 0.5f, &loss, nullptr), CS_ERR_INVALID_ARGUMENT);
  const float bad_values[] = {-0.01f, 1.01f, NAN, INFINITY};
  for (float v : bad_values)
  {
    EXPECT_EQ(cs_combo_loss(z, y, 10, 3, v, 0.5f, &loss, nullptr), CS_ERR_INVALID_ARGUMENT) << v;
    EXPECT_EQ(cs_combo_loss(z, y, 10, 3, 0.5f, v, &loss, nullptr), CS_ERR_INVALID_ARGUMENT) << v;
  }
  EXPECT_EQ(cs_combo_loss(z, y, 10, 3, 0.0f, 1.0f, &loss, nullptr), CS_OK);
  EXPECT_EQ(cs_combo_loss(z, y, 10, 3, 1.0f, 0.0f, &loss, nullptr), CS_OK);

  // labels out of [0, K)
  for (int32_t bad : {-1, 3, 1000})
  {
    std::vector<int32_t> labels(c.labels);
    labels[7] = bad;
    loss = 123.0f;
    EXPECT_EQ(cs_combo_loss(z, labels.data(), 10, 3, 0.5f, 0.5f, &loss, grad.data()), CS_ERR_INVALID_ARGUMENT) << bad;
    cs_loss_options o = cs_loss_options_default();
    o.kind = CS_LOSS_FOCAL;
    EXPECT_EQ(cs_loss(&o, z, labels.data(), 1, 10, 3, &loss, nullptr), CS_ERR_INVALID_ARGUMENT);
  }

  cs_loss_options o = cs_loss_options_default();
  EXPECT_EQ(cs_loss(nullptr, z, y, 1, 10, 3, &loss, nullptr), CS_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(cs_loss(&o, z, y, 0, 10, 3, &loss, nullptr), CS_ERR_INVALID_ARGUMENT);
  o.kind = static_cast<cs_loss_kind>(10);
  EXPECT_EQ(cs_loss(&o, z, y, 1, 10, 3, &loss, nullptr), CS_ERR_INVALID_ARGUMENT);
  o = cs_loss_options_default();
  o.tversky_alpha = 1.5f;
  EXPECT_EQ(cs_loss(&o, z, y, 1, 10, 3, &loss, nullptr), CS_ERR_INVALID_ARGUMENT);
  o = cs_loss_options_default();
  o.tversky_beta = -0.5f;
  EXPECT_EQ(cs_loss(&o, z, y, 1, 10, 3, &loss, nullptr), CS_ERR_INVALID_ARGUMENT);
  o = cs_loss_options_default();
  o.gamma = -1.0f;
  EXPECT_EQ(cs_loss(&o, z, y, 1, 10, 3, &loss, nullptr), CS_ERR_INVALID_ARGUMENT);
  o = cs_loss_options_default();
  o.kind = CS_LOSS_WEIGHTED_CROSS_ENTROPY;
  const float weights[3] = {1.0f, -2.0f, 1.0f};
  o.class_weights = weights;
  EXPECT_EQ(cs_loss(&o, z, y, 1, 10, 3, &loss, nullptr), CS_ERR_INVALID_ARGUMENT);
}

// Many voxels (several chunks, threads at work): a voxel-mean loss of a tiled item equals the
// item's, batch Dice over two copies equals Dice over their concatenation, and the thread count
// does not change a bit.
TEST(Losses, LargeInputsChunksAndThreads)
{
  const int32_t k = 5;
  const int64_t n = 1000, reps = 37; // 37000 voxels: 10 chunks, parallel
  Case small = MakeCase(1, n, k, 77);
  Case big{1, n * reps, k, std::vector<float>(k * n * reps), std::vector<int32_t>(n * reps)};
  for (int64_t r = 0; r < reps; r++)
    for (int64_t i = 0; i < n; i++)
    {
      big.labels[r * n + i] = small.labels[i];
      for (int32_t c = 0; c < k; c++)
        big.logits[c * big.n + r * n + i] = small.logits[c * n + i];
    }
  cs_loss_options o = cs_loss_options_default();
  o.kind = CS_LOSS_FOCAL;
  float ls = 0.0f, lb = 0.0f;
  std::vector<float> gs, gb;
  ASSERT_EQ(RunLoss(o, small, &ls, &gs), CS_OK);
  ASSERT_EQ(RunLoss(o, big, &lb, &gb), CS_OK);
  EXPECT_NEAR(lb, ls, 1e-6 * ls);
  for (int64_t r : {int64_t(0), int64_t(17), reps - 1})
    for (int32_t c = 0; c < k; c++)
      for (int64_t i = 0; i < n; i += 97)
        EXPECT_NEAR(gb[c * big.n + r * n + i] * reps, gs[c * n + i], 1e-6 * MaxAbs(gs));

  // two copies of `big` with batch Dice == one item of twice the length
  Case two{2, big.n, k, big.logits, big.labels};
  two.logits.insert(two.logits.end(), big.logits.begin(), big.logits.end());
  two.labels.insert(two.labels.end(), big.labels.begin(), big.labels.end());
  Case cat{1, 2 * big.n, k, std::vector<float>(k * 2 * big.n), two.labels};
  for (int32_t c = 0; c < k; c++)
    for (int64_t h = 0; h < 2; h++)
      std::copy(big.logits.begin() + c * big.n, big.logits.begin() + (c + 1) * big.n,
                cat.logits.begin() + c * cat.n + h * big.n);
  const cs_loss_kind region_kinds[] = {CS_LOSS_COMBO, CS_LOSS_DICE, CS_LOSS_TVERSKY, CS_LOSS_FOCAL_TVERSKY};
  for (cs_loss_kind kind : region_kinds)
  {
    o = cs_loss_options_default();
    o.kind = kind;
    o.batch_dice = 1;
    float l2 = 0.0f, lc = 0.0f;
    std::vector<float> g2, gc;
    ASSERT_EQ(RunLoss(o, two, &l2, &g2), CS_OK);
    o.batch_dice = 0;
    ASSERT_EQ(RunLoss(o, cat, &lc, &gc), CS_OK);
    EXPECT_NEAR(l2, lc, 1e-6 * std::fabs(lc)) << cs_loss_kind_name(kind);
    // item 1 of `two` is the second half of `cat`, with the same gradient
    const double gmax = MaxAbs(gc);
    for (int32_t c = 0; c < k; c++)
      for (int64_t i = 0; i < big.n; i += 331)
        EXPECT_NEAR(g2[(1 * k + c) * big.n + i], gc[c * cat.n + big.n + i], 1e-6 * gmax) << cs_loss_kind_name(kind);
  }

  if (omp_set_num_threads)
  {
    o = cs_loss_options_default();
    o.kind = CS_LOSS_COMBO;
    float l1 = 0.0f, l2 = 0.0f;
    std::vector<float> g1, g2;
    omp_set_num_threads(1);
    ASSERT_EQ(RunLoss(o, two, &l1, &g1), CS_OK);
    omp_set_num_threads(2);
    ASSERT_EQ(RunLoss(o, two, &l2, &g2), CS_OK);
    EXPECT_EQ(l1, l2);
    EXPECT_EQ(g1, g2);
  }
}

TEST(DicePerClass, HandComputed)
{
  // predicted and true maps over 10 voxels, K = 4
  const int32_t pred[10] = {0, 0, 1, 1, 1, 2, 2, 0, 0, 0};
  const int32_t truth[10] = {0, 0, 1, 1, 0, 0, 2, 2, 0, 0};
  float dice[4];
  cs_dice_per_class(pred, truth, 10, 4, dice);
  EXPECT_FLOAT_EQ(dice[0], 2.0f * 4 / (5 + 6)); // both 0 at 0,1,8,9
  EXPECT_FLOAT_EQ(dice[1], 2.0f * 2 / (3 + 2));
  EXPECT_FLOAT_EQ(dice[2], 2.0f * 1 / (2 + 2));
  EXPECT_TRUE(std::isnan(dice[3])); // in neither map

  // present only in the prediction: 0; identical maps: 1
  const int32_t only_pred[4] = {3, 0, 0, 0};
  const int32_t zeros[4] = {0, 0, 0, 0};
  cs_dice_per_class(only_pred, zeros, 4, 4, dice);
  EXPECT_FLOAT_EQ(dice[3], 0.0f);
  EXPECT_FLOAT_EQ(dice[0], 2.0f * 3 / 7);
  EXPECT_TRUE(std::isnan(dice[1]));
  cs_dice_per_class(only_pred, only_pred, 4, 4, dice);
  EXPECT_FLOAT_EQ(dice[0], 1.0f);
  EXPECT_FLOAT_EQ(dice[3], 1.0f);
}
