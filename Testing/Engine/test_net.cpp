// The U-Net (net.c): parameter layout, He initialisation, workspaces, forward and backward passes.
// Models are built here from cs_net_layout and cs_net_init_weights directly, so that the suite
// tests net.c alone.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "comboseg/comboseg.h"
#include "internal.h"

namespace
{

using Vec = std::vector<float>;

cs_unet_config Config(int dims, int in_channels, int classes, int base, int levels)
{
  cs_unet_config c;
  std::memset(&c, 0, sizeof c);
  c.spatial_dims = dims;
  c.in_channels = in_channels;
  c.num_classes = classes;
  c.base_filters = base;
  c.levels = levels;
  c.leaky_slope = 0.01f;
  c.norm_epsilon = 1e-5f;
  return c;
}

// A model with its tensor table and He-initialised weights.
class Net
{
public:
  explicit Net(const cs_unet_config &config, uint64_t seed = 1)
  {
    cs_context_init(&ctx_);
    model_ = static_cast<cs_model *>(cs_alloc(ctx_, sizeof(cs_model), "test model"));
    model_->info.arch = config;
    status_ = cs_net_layout(ctx_, model_);
    if (status_ != CS_OK)
      return;
    model_->params =
        static_cast<float *>(cs_alloc(ctx_, (size_t)model_->num_params * sizeof(float), "test parameters"));
    cs_net_init_weights(model_, seed);
  }
  ~Net()
  {
    cs_free(model_->params);
    cs_free(model_);
    cs_context_free(ctx_);
  }
  Net(const Net &) = delete;
  Net &operator=(const Net &) = delete;

  cs_model *model() { return model_; }
  cs_status status() const { return status_; }
  const char *error() const { return cs_context_last_error(ctx_); }
  const cs_param_tensor *Find(const std::string &name) const
  {
    for (int i = 0; i < model_->num_tensors; i++)
      if (name == model_->tensors[i].name)
        return &model_->tensors[i];
    return nullptr;
  }

private:
  cs_context_t ctx_ = nullptr;
  cs_model *model_ = nullptr;
  cs_status status_ = CS_OK;
};

Vec RandomVec(size_t n, uint64_t seed)
{
  cs_rng rng;
  cs_rng_seed(&rng, seed);
  Vec v(n);
  for (auto &x : v)
    x = cs_rng_normal(&rng);
  return v;
}

// Runs forward (and optionally backward with grad_logits, the first frozen_levels encoder levels
// frozen, accumulating into start_grads or zeros) on a fresh workspace.
struct Pass
{
  Vec logits, grads;
};

Pass RunNet(cs_model *model, int threads, int32_t batch, const int64_t size[3], const Vec &input,
            const Vec *grad_logits, int32_t frozen_levels = 0, const Vec &start_grads = {})
{
  cs_context_t ctx = nullptr;
  cs_context_init(&ctx);
  cs_context_set_threads(ctx, threads);
  cs_workspace *ws = nullptr;
  Pass pass;
  EXPECT_EQ(cs_workspace_create(ctx, model, batch, size, grad_logits != nullptr, &ws), CS_OK)
      << cs_context_last_error(ctx);
  if (ws)
  {
    const float *logits = nullptr;
    EXPECT_EQ(cs_net_forward(ctx, model, ws, input.data(), &logits), CS_OK);
    const size_t count = (size_t)batch * model->info.arch.num_classes * size[0] * size[1] * size[2];
    pass.logits.assign(logits, logits + count);
    if (grad_logits)
    {
      pass.grads = start_grads.empty() ? Vec((size_t)model->num_params, 0.0f) : start_grads;
      EXPECT_EQ(cs_net_backward(ctx, model, ws, grad_logits->data(), pass.grads.data(), frozen_levels), CS_OK);
    }
    cs_workspace_free(ws);
  }
  cs_context_free(ctx);
  return pass;
}

int64_t ExpectedParameterCount(int in_channels, int classes, int base, int levels, int kvol, int upvol)
{
  // Conv block: weights co * ci * kvol, conv bias co, norm scale and shift 2 co.
  auto block = [kvol](int64_t ci, int64_t co) { return co * ci * kvol + 3 * co; };
  int64_t total = 0;
  for (int l = 0; l < levels; l++)
  {
    const int64_t f = (int64_t)base << l, ci = l == 0 ? in_channels : f / 2;
    total += block(ci, f) + block(f, f);
  }
  for (int l = levels - 2; l >= 0; l--)
  {
    const int64_t f = (int64_t)base << l;
    total += 2 * f * f * upvol + f + block(2 * f, f) + block(f, f);
  }
  return total + (int64_t)classes * base + classes;
}

} // namespace

TEST(NetLayout, ReferenceNetworkNamesShapesAndCount)
{
  // The reference network (docs/design.md, "The network"): 3D, 2 channels, K = 5, 16 base
  // filters, 4 levels.
  Net net(Config(3, 2, 5, 16, 4));
  ASSERT_EQ(net.status(), CS_OK) << net.error();
  const cs_model *m = net.model();
  EXPECT_EQ(m->num_params, ExpectedParameterCount(2, 5, 16, 4, 27, 8));
  EXPECT_EQ(m->num_params, 1402469); // the same count, stated
  EXPECT_EQ(m->num_tensors, 8 * 4 + 10 * 3 + 2);

  // Table order: encoder levels, decoder levels from the deepest, head; offsets contiguous.
  EXPECT_STREQ(m->tensors[0].name, "enc0.conv1.weight");
  EXPECT_STREQ(m->tensors[7].name, "enc0.norm2.bias");
  EXPECT_STREQ(m->tensors[32].name, "dec2.up.weight");
  EXPECT_STREQ(m->tensors[m->num_tensors - 1].name, "head.bias");
  int64_t offset = 0;
  for (int i = 0; i < m->num_tensors; i++)
  {
    EXPECT_EQ(m->tensors[i].offset, offset) << m->tensors[i].name;
    int64_t count = 1;
    for (int d = 0; d < m->tensors[i].ndim; d++)
      count *= m->tensors[i].shape[d];
    EXPECT_EQ(m->tensors[i].count, count) << m->tensors[i].name;
    offset += count;
  }
  EXPECT_EQ(offset, m->num_params);

  struct Expect
  {
    const char *name;
    std::vector<int64_t> shape;
  };
  const Expect expected[] = {
      {"enc0.conv1.weight", {16, 2, 3, 3, 3}},
      {"enc0.conv1.bias", {16}},
      {"enc0.norm1.weight", {16}},
      {"enc3.conv2.weight", {128, 128, 3, 3, 3}},
      {"dec2.up.weight", {128, 64, 2, 2, 2}},
      {"dec2.up.bias", {64}},
      {"dec2.conv1.weight", {64, 128, 3, 3, 3}},
      {"dec0.norm2.bias", {16}},
      {"dec0.conv2.weight", {16, 16, 3, 3, 3}},
      {"head.weight", {5, 16, 1, 1, 1}},
      {"head.bias", {5}},
  };
  for (const auto &e : expected)
  {
    const cs_param_tensor *t = net.Find(e.name);
    ASSERT_NE(t, nullptr) << e.name;
    EXPECT_EQ(std::vector<int64_t>(t->shape, t->shape + t->ndim), e.shape) << e.name;
  }
  EXPECT_EQ(net.Find("dec3.up.weight"), nullptr); // no decoder at the deepest level
}

TEST(NetLayout, TwoDimensionalShapesAreConv2d)
{
  Net net(Config(2, 1, 3, 8, 3));
  ASSERT_EQ(net.status(), CS_OK) << net.error();
  EXPECT_EQ(net.model()->num_params, ExpectedParameterCount(1, 3, 8, 3, 9, 4));
  const cs_param_tensor *conv = net.Find("dec1.conv1.weight");
  ASSERT_NE(conv, nullptr);
  EXPECT_EQ(std::vector<int64_t>(conv->shape, conv->shape + conv->ndim), (std::vector<int64_t>{16, 32, 3, 3}));
  const cs_param_tensor *up = net.Find("dec0.up.weight");
  ASSERT_NE(up, nullptr);
  EXPECT_EQ(std::vector<int64_t>(up->shape, up->shape + up->ndim), (std::vector<int64_t>{16, 8, 2, 2}));
  const cs_param_tensor *head = net.Find("head.weight");
  ASSERT_NE(head, nullptr);
  EXPECT_EQ(head->ndim, 4);
}

TEST(NetLayout, BadConfigsAreErrorsWithMessages)
{
  struct Case
  {
    cs_unet_config config;
    const char *word;
  };
  std::vector<Case> cases;
  cs_unet_config c = Config(3, 1, 2, 16, 4);
  c.spatial_dims = 4;
  cases.push_back({c, "spatial_dims"});
  c = Config(3, 0, 2, 16, 4);
  cases.push_back({c, "in_channels"});
  c = Config(3, 1, 1, 16, 4);
  cases.push_back({c, "num_classes"});
  c = Config(3, 1, 2, 0, 4);
  cases.push_back({c, "base_filters"});
  c = Config(3, 1, 2, 16, 0);
  cases.push_back({c, "levels"});
  c = Config(3, 1, 2, 1024, 6); // 32768 filters at the bottom
  cases.push_back({c, "base_filters"});
  c = Config(3, 1, 2, 16, 4);
  c.leaky_slope = -0.5f;
  cases.push_back({c, "leaky_slope"});
  c = Config(3, 1, 2, 16, 4);
  c.norm_epsilon = 0.0f;
  cases.push_back({c, "norm_epsilon"});
  for (const auto &bad : cases)
  {
    Net net(bad.config);
    EXPECT_EQ(net.status(), CS_ERR_INVALID_ARGUMENT) << bad.word;
    EXPECT_NE(std::string(net.error()).find(bad.word), std::string::npos) << net.error();
  }
}

TEST(NetInit, HeNormalStatisticsAndConstants)
{
  Net net(Config(3, 2, 5, 16, 4), 42);
  ASSERT_EQ(net.status(), CS_OK);
  const float *p = net.model()->params;
  const double gain = 2.0 / (1.0 + 0.01 * 0.01);
  struct Expect
  {
    const char *name;
    double fan_in;
  };
  // Convolutions: fan_in = Ci * 27; the transposed convolution: fan_in = Ci (one tap per input).
  for (const Expect &e : {Expect{"enc1.conv2.weight", 32.0 * 27}, Expect{"dec1.conv1.weight", 64.0 * 27},
                          Expect{"dec2.up.weight", 128.0}})
  {
    const cs_param_tensor *t = net.Find(e.name);
    ASSERT_NE(t, nullptr);
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < t->count; i++)
      sum += p[t->offset + i];
    const double mean = sum / t->count;
    for (int64_t i = 0; i < t->count; i++)
      sq += (p[t->offset + i] - mean) * (p[t->offset + i] - mean);
    const double std = std::sqrt(sq / t->count), expected = std::sqrt(gain / e.fan_in);
    EXPECT_NEAR(std, expected, 0.03 * expected) << e.name;
    EXPECT_NEAR(mean, 0.0, 5.0 * expected / std::sqrt((double)t->count)) << e.name;
  }
  for (int i = 0; i < net.model()->num_tensors; i++)
  {
    const cs_param_tensor *t = &net.model()->tensors[i];
    if (t->ndim != 1)
      continue;
    const std::string name = t->name;
    const float value =
        name.find(".norm") != std::string::npos && name.compare(name.size() - 7, 7, ".weight") == 0 ? 1.0f : 0.0f;
    for (int64_t j = 0; j < t->count; j++)
      ASSERT_EQ(p[t->offset + j], value) << name;
  }
}

TEST(NetInit, SameSeedSameBitsOtherSeedOtherWeights)
{
  const cs_unet_config c = Config(3, 2, 5, 4, 3);
  Net a(c, 7), b(c, 7), other(c, 8);
  const size_t bytes = (size_t)a.model()->num_params * sizeof(float);
  EXPECT_EQ(std::memcmp(a.model()->params, b.model()->params, bytes), 0);
  EXPECT_NE(std::memcmp(a.model()->params, other.model()->params, bytes), 0);
}

TEST(NetForward, ReferenceNetworkGivesFiniteLogitsOfTheRightSize)
{
  Net net(Config(3, 2, 5, 16, 4));
  ASSERT_EQ(net.status(), CS_OK);
  const int64_t size[3] = {16, 8, 8};
  const Vec input = RandomVec(2 * 2 * 16 * 8 * 8, 3);
  const Pass pass = RunNet(net.model(), 2, 2, size, input, nullptr);
  ASSERT_EQ(pass.logits.size(), (size_t)2 * 5 * 16 * 8 * 8);
  double sq = 0;
  for (float v : pass.logits)
  {
    ASSERT_TRUE(std::isfinite(v));
    sq += (double)v * v;
  }
  EXPECT_GT(sq, 0.0); // He init gives non-trivial logits
}

TEST(NetForward, TwoDimensionalNetworkRuns)
{
  Net net(Config(2, 1, 3, 4, 3));
  const int64_t size[3] = {12, 8, 1}; // multiples of 4
  const Vec input = RandomVec(12 * 8, 4);
  const Pass pass = RunNet(net.model(), 1, 1, size, input, nullptr);
  ASSERT_EQ(pass.logits.size(), (size_t)3 * 12 * 8);
  for (float v : pass.logits)
    ASSERT_TRUE(std::isfinite(v));
}

namespace
{

// Full-network gradient check: loss = <logits, R>; analytic gradients of a few entries of every
// parameter tensor against central differences of the float forward pass.
// The LeakyReLU slope is 0.5 here: a finite difference whose step carries an activation across
// the kink errs by (1 - slope) of that voxel's share, and float differences need steps that large.
void CheckNetworkGradient(cs_unet_config config, int32_t batch, const int64_t size[3])
{
  config.leaky_slope = 0.5f;
  Net net(config, 6);
  ASSERT_EQ(net.status(), CS_OK) << net.error();
  cs_model *m = net.model();
  const int64_t n = size[0] * size[1] * size[2];
  const Vec input = RandomVec((size_t)batch * config.in_channels * n, 6);
  const Vec r = RandomVec((size_t)batch * config.num_classes * n, 7);
  const Pass pass = RunNet(m, 2, batch, size, input, &r);

  cs_context_t ctx = nullptr;
  cs_context_init(&ctx);
  cs_context_set_threads(ctx, 2);
  cs_workspace *ws = nullptr;
  ASSERT_EQ(cs_workspace_create(ctx, m, batch, size, 0, &ws), CS_OK);
  auto loss = [&]() {
    const float *logits = nullptr;
    cs_net_forward(ctx, m, ws, input.data(), &logits);
    double s = 0;
    for (size_t i = 0; i < r.size(); i++)
      s += (double)logits[i] * r[i];
    return s;
  };
  int checked = 0;
  for (int t = 0; t < m->num_tensors; t++)
  {
    const cs_param_tensor *tensor = &m->tensors[t];
    for (int64_t j : {(int64_t)0, tensor->count / 2, tensor->count - 1})
    {
      float *p = m->params + tensor->offset + j;
      const float orig = *p;
      // A step may carry a LeakyReLU input or a pooling maximum across its kink, which spoils
      // that difference; two step sizes rarely both do, so the better one must match.
      double best_error = INFINITY, best_numeric = 0;
      for (float h : {1e-3f, 3e-4f})
      {
        *p = orig + h;
        const double lp = loss();
        *p = orig - h;
        const double lm = loss();
        *p = orig;
        const double numeric = (lp - lm) / (2.0 * h);
        const double error = std::fabs(numeric - pass.grads[(size_t)(tensor->offset + j)]) -
                             (2e-2 * std::fabs(numeric) + 2e-2);
        if (error < best_error)
        {
          best_error = error;
          best_numeric = numeric;
        }
      }
      const double analytic = pass.grads[(size_t)(tensor->offset + j)];
      EXPECT_NEAR(analytic, best_numeric, 2e-2 * std::fabs(best_numeric) + 2e-2) << tensor->name << "[" << j << "]";
      checked++;
    }
  }
  EXPECT_EQ(checked, 3 * m->num_tensors);
  cs_workspace_free(ws);
  cs_context_free(ctx);
}

} // namespace

TEST(NetBackward, GradientMatchesFiniteDifferences3D)
{
  const int64_t size[3] = {4, 6, 4};
  CheckNetworkGradient(Config(3, 2, 3, 2, 2), 2, size);
}

TEST(NetBackward, GradientMatchesFiniteDifferences2DThreeLevels)
{
  const int64_t size[3] = {8, 12, 1};
  CheckNetworkGradient(Config(2, 2, 3, 3, 3), 2, size);
}

TEST(NetBackward, AccumulatesIntoGradients)
{
  Net net(Config(3, 1, 2, 2, 2));
  const int64_t size[3] = {4, 4, 4};
  const Vec input = RandomVec(64, 8), r = RandomVec(2 * 64, 9);
  cs_context_t ctx = nullptr;
  cs_context_init(&ctx);
  cs_workspace *ws = nullptr;
  ASSERT_EQ(cs_workspace_create(ctx, net.model(), 1, size, 1, &ws), CS_OK);
  const float *logits = nullptr;
  ASSERT_EQ(cs_net_forward(ctx, net.model(), ws, input.data(), &logits), CS_OK);
  Vec once(net.model()->num_params, 0.0f), twice(net.model()->num_params, 0.0f);
  ASSERT_EQ(cs_net_backward(ctx, net.model(), ws, r.data(), once.data(), 0), CS_OK);
  ASSERT_EQ(cs_net_backward(ctx, net.model(), ws, r.data(), twice.data(), 0), CS_OK);
  ASSERT_EQ(cs_net_backward(ctx, net.model(), ws, r.data(), twice.data(), 0), CS_OK);
  for (size_t i = 0; i < once.size(); i++)
    EXPECT_NEAR(twice[i], 2.0f * once[i], 1e-5f * (1 + std::fabs(once[i])));
  cs_workspace_free(ws);
  cs_context_free(ctx);
}

// Frozen encoder levels are not differentiated: their gradients stay as they were, and every
// other gradient is bit for bit that of the whole backward pass.
TEST(NetBackward, FrozenLevelsLeaveTheirGradientsAndChangeNoOther)
{
  Net net(Config(3, 2, 3, 2, 3));
  const int64_t size[3] = {8, 8, 8};
  const Vec input = RandomVec(2 * 512, 10), r = RandomVec(3 * 512, 11);
  cs_model *m = net.model();
  const Vec whole = RunNet(m, 1, 1, size, input, &r).grads;
  for (int32_t frozen = 1; frozen <= 3; frozen++)
  {
    auto is_frozen = [&](const cs_param_tensor &p) {
      return std::strncmp(p.name, "enc", 3) == 0 && std::atoi(p.name + 3) < frozen;
    };
    Vec part(m->num_params, 0.0f);
    for (int32_t i = 0; i < m->num_tensors; i++)
      if (is_frozen(m->tensors[i])) // a sentinel the frozen tensors must keep
        std::fill(part.begin() + m->tensors[i].offset, part.begin() + m->tensors[i].offset + m->tensors[i].count, 7.0f);
    part = RunNet(m, 1, 1, size, input, &r, frozen, part).grads;
    for (int32_t i = 0; i < m->num_tensors; i++)
    {
      const cs_param_tensor &p = m->tensors[i];
      for (int64_t j = p.offset; j < p.offset + p.count; j++)
      {
        const float want = is_frozen(p) ? 7.0f : whole[j];
        if (part[j] != want)
        {
          ADD_FAILURE() << p.name << "[" << j - p.offset << "] with " << frozen << " frozen levels: " << part[j]
                        << " instead of " << want;
          break;
        }
      }
    }
  }
}

TEST(NetDeterminism, SameSeedAndThreadsGiveIdenticalBits)
{
  const cs_unet_config c = Config(3, 2, 4, 4, 3);
  Net a(c, 11), b(c, 11);
  const int64_t size[3] = {8, 8, 8};
  const Vec input = RandomVec(2 * 2 * 512, 12), r = RandomVec(2 * 4 * 512, 13);
  const Pass pa = RunNet(a.model(), 2, 2, size, input, &r);
  const Pass pb = RunNet(b.model(), 2, 2, size, input, &r);
  ASSERT_EQ(pa.logits.size(), pb.logits.size());
  EXPECT_EQ(std::memcmp(pa.logits.data(), pb.logits.data(), pa.logits.size() * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(pa.grads.data(), pb.grads.data(), pa.grads.size() * sizeof(float)), 0);
}

TEST(NetDeterminism, OneAndTwoThreadsAgree)
{
  Net net(Config(3, 2, 4, 4, 3), 21);
  const int64_t size[3] = {8, 8, 8};
  const Vec input = RandomVec(2 * 2 * 512, 22), r = RandomVec(2 * 4 * 512, 23);
  const Pass one = RunNet(net.model(), 1, 2, size, input, &r);
  const Pass two = RunNet(net.model(), 2, 2, size, input, &r);
  ASSERT_EQ(one.logits.size(), two.logits.size());
  for (size_t i = 0; i < one.logits.size(); i++)
    ASSERT_NEAR(one.logits[i], two.logits[i], 1e-5f * (1 + std::fabs(one.logits[i])));
  for (size_t i = 0; i < one.grads.size(); i++)
    ASSERT_NEAR(one.grads[i], two.grads[i], 1e-4f * (1 + std::fabs(one.grads[i])));
}

TEST(NetWorkspace, BadSizesAndMisuseAreErrors)
{
  Net net(Config(3, 1, 2, 4, 3)); // sizes must be multiples of 4
  Net flat(Config(2, 1, 2, 4, 3));
  cs_context_t ctx = nullptr;
  cs_context_init(&ctx);
  cs_workspace *ws = nullptr;
  const int64_t odd[3] = {8, 6, 8};
  EXPECT_EQ(cs_workspace_create(ctx, net.model(), 1, odd, 1, &ws), CS_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(ws, nullptr);
  EXPECT_NE(std::string(cs_context_last_error(ctx)).find("multiple of 4"), std::string::npos)
      << cs_context_last_error(ctx);
  const int64_t deep[3] = {8, 8, 2};
  EXPECT_EQ(cs_workspace_create(ctx, flat.model(), 1, deep, 1, &ws), CS_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(cs_context_last_error(ctx)).find("nz = 1"), std::string::npos);
  const int64_t good[3] = {8, 8, 4};
  EXPECT_EQ(cs_workspace_create(ctx, net.model(), 0, good, 1, &ws), CS_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(cs_workspace_bytes(net.model(), 1, odd, 1), 0u);

  // Gradients cost memory; a limit below the estimate refuses the workspace.
  const uint64_t infer = cs_workspace_bytes(net.model(), 1, good, 0);
  const uint64_t train = cs_workspace_bytes(net.model(), 1, good, 1);
  EXPECT_GT(infer, 0u);
  EXPECT_GT(train, infer);
  cs_context_set_memory_limit(ctx, infer / 2);
  EXPECT_EQ(cs_workspace_create(ctx, net.model(), 1, good, 0, &ws), CS_ERR_RESOURCE_LIMIT);
  cs_context_set_memory_limit(ctx, 0);

  // Backward needs a forward pass and a workspace with gradients.
  ASSERT_EQ(cs_workspace_create(ctx, net.model(), 1, good, 0, &ws), CS_OK);
  Vec input(8 * 8 * 4, 0.5f), grad_logits(2 * 8 * 8 * 4, 1.0f), grads(net.model()->num_params);
  const float *logits = nullptr;
  ASSERT_EQ(cs_net_forward(ctx, net.model(), ws, input.data(), &logits), CS_OK);
  EXPECT_EQ(cs_net_backward(ctx, net.model(), ws, grad_logits.data(), grads.data(), 0), CS_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(cs_context_last_error(ctx)).find("without gradients"), std::string::npos);
  // A workspace serves only the architecture it was made for.
  Net other(Config(3, 1, 2, 8, 3));
  EXPECT_EQ(cs_net_forward(ctx, other.model(), ws, input.data(), &logits), CS_ERR_INVALID_ARGUMENT);
  cs_workspace_free(ws);

  ASSERT_EQ(cs_workspace_create(ctx, net.model(), 1, good, 1, &ws), CS_OK);
  EXPECT_EQ(cs_net_backward(ctx, net.model(), ws, grad_logits.data(), grads.data(), 0), CS_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(cs_context_last_error(ctx)).find("no forward"), std::string::npos);
  cs_workspace_free(ws);
  cs_context_free(ctx);
}

TEST(NetWorkspace, InferenceWorkspaceIsSmallerAndGivesTheSameLogits)
{
  // Without gradients the norm runs in place over the convolution output.
  Net net(Config(3, 2, 3, 4, 3), 31);
  const int64_t size[3] = {8, 4, 8};
  const Vec input = RandomVec(2 * 2 * 256, 32), r = RandomVec(2 * 3 * 256, 33);
  const Pass infer = RunNet(net.model(), 2, 2, size, input, nullptr);
  const Pass train = RunNet(net.model(), 2, 2, size, input, &r);
  ASSERT_EQ(infer.logits.size(), train.logits.size());
  EXPECT_EQ(std::memcmp(infer.logits.data(), train.logits.data(), infer.logits.size() * sizeof(float)), 0);
  EXPECT_LT(cs_workspace_bytes(net.model(), 2, size, 0), cs_workspace_bytes(net.model(), 2, size, 1) / 2);
}
