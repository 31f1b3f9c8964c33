// Reference kernels of the U-Net layers: forward results against direct formulas and hand-computed
// cases, backward passes against central finite differences of the forward pass.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "comboseg/comboseg.h"
#include "kernels.h"

namespace
{

using Vec = std::vector<float>;

Vec RandomVec(size_t n, uint64_t seed, float scale = 1.0f)
{
  cs_rng rng;
  cs_rng_seed(&rng, seed);
  Vec v(n);
  for (auto &x : v)
    x = scale * cs_rng_normal(&rng);
  return v;
}

double WeightedSum(const Vec &out, const Vec &r)
{
  double s = 0.0;
  for (size_t i = 0; i < out.size(); i++)
    s += (double)out[i] * r[i];
  return s;
}

// Compares the analytic gradient `analytic` of loss() with respect to the entries of x with
// central differences (step h), |analytic - numeric| <= tol * (1 + |numeric|). Checks every
// entry when there are at most max_checks, else an evenly spread subset.
void ExpectGradient(Vec &x, const Vec &analytic, const std::function<double()> &loss, float h, double tol,
                    const char *what, size_t max_checks = 200)
{
  ASSERT_EQ(x.size(), analytic.size());
  const size_t stride = x.size() <= max_checks ? 1 : x.size() / max_checks;
  for (size_t i = 0; i < x.size(); i += stride)
  {
    const float orig = x[i];
    x[i] = orig + h;
    const float up = x[i];
    const double lp = loss();
    x[i] = orig - h;
    const float down = x[i];
    const double lm = loss();
    x[i] = orig;
    const double numeric = (lp - lm) / ((double)up - (double)down);
    EXPECT_NEAR(analytic[i], numeric, tol * (1.0 + std::fabs(numeric))) << what << " index " << i;
  }
}

// Direct convolution from the definition: zero padding k/2, cross-correlation as in PyTorch.
Vec DirectConv(const Vec &in, const Vec &weight, const Vec &bias, const cs_conv_shape &s)
{
  Vec out((size_t)s.batch * s.out_channels * s.d * s.h * s.w);
  for (int b = 0; b < s.batch; b++)
    for (int co = 0; co < s.out_channels; co++)
      for (int z = 0; z < s.d; z++)
        for (int y = 0; y < s.h; y++)
          for (int x = 0; x < s.w; x++)
          {
            double acc = bias[co];
            for (int ci = 0; ci < s.in_channels; ci++)
              for (int kz = 0; kz < s.kd; kz++)
                for (int ky = 0; ky < s.kh; ky++)
                  for (int kx = 0; kx < s.kw; kx++)
                  {
                    const int iz = z + kz - s.kd / 2, iy = y + ky - s.kh / 2, ix = x + kx - s.kw / 2;
                    if (iz < 0 || iz >= s.d || iy < 0 || iy >= s.h || ix < 0 || ix >= s.w)
                      continue;
                    acc +=
                        (double)weight[(((size_t)co * s.in_channels + ci) * s.kd + kz) * s.kh * s.kw + ky * s.kw + kx] *
                        in[((((size_t)b * s.in_channels + ci) * s.d + iz) * s.h + iy) * s.w + ix];
                  }
            out[((((size_t)b * s.out_channels + co) * s.d + z) * s.h + y) * s.w + x] = (float)acc;
          }
  return out;
}

size_t InSize(const cs_conv_shape &s)
{
  return (size_t)s.batch * s.in_channels * s.d * s.h * s.w;
}
size_t OutSize(const cs_conv_shape &s)
{
  return (size_t)s.batch * s.out_channels * s.d * s.h * s.w;
}
size_t WeightSize(const cs_conv_shape &s)
{
  return (size_t)s.out_channels * s.in_channels * s.kd * s.kh * s.kw;
}

// Forward against the direct formula, then every gradient against finite differences.
void CheckConv(const cs_conv_shape &s)
{
  Vec in = RandomVec(InSize(s), 1), weight = RandomVec(WeightSize(s), 2, 0.3f);
  Vec bias = RandomVec(s.out_channels, 3), r = RandomVec(OutSize(s), 4);
  Vec out(OutSize(s));
  cs_conv_forward_ref(out.data(), in.data(), weight.data(), bias.data(), &s, 2);
  const Vec direct = DirectConv(in, weight, bias, s);
  for (size_t i = 0; i < out.size(); i++)
    ASSERT_NEAR(out[i], direct[i], 1e-4) << "output " << i;

  // The data gradient is written (its start of 1 must vanish); the parameter gradients add:
  // start them at 1 and subtract it afterwards.
  Vec grad_in(in.size(), 1.0f), grad_w(weight.size(), 1.0f), grad_b(bias.size(), 1.0f);
  cs_conv_backward_data_ref(grad_in.data(), r.data(), weight.data(), &s, 2);
  cs_conv_backward_weights_ref(grad_w.data(), grad_b.data(), r.data(), in.data(), &s, 2);
  for (auto *g : {&grad_w, &grad_b})
    for (auto &v : *g)
      v -= 1.0f;

  auto loss = [&]() {
    cs_conv_forward_ref(out.data(), in.data(), weight.data(), bias.data(), &s, 1);
    return WeightedSum(out, r);
  };
  ExpectGradient(in, grad_in, loss, 1e-2f, 2e-3, "input");
  ExpectGradient(weight, grad_w, loss, 1e-2f, 2e-3, "weight");
  ExpectGradient(bias, grad_b, loss, 1e-2f, 2e-3, "bias");
}

} // namespace

TEST(ConvRef, KnownKernel2DCountsNeighbours)
{
  // A 3x3 kernel of ones over an image of ones counts the in-image neighbours: 4 at corners,
  // 6 along edges, 9 inside; plus the bias.
  const cs_conv_shape s = {1, 1, 1, 1, 4, 5, 1, 3, 3};
  Vec in(20, 1.0f), weight(9, 1.0f), bias(1, 0.5f), out(20);
  cs_conv_forward_ref(out.data(), in.data(), weight.data(), bias.data(), &s, 1);
  EXPECT_FLOAT_EQ(out[0], 4.5f);
  EXPECT_FLOAT_EQ(out[4], 4.5f);
  EXPECT_FLOAT_EQ(out[2], 6.5f);
  EXPECT_FLOAT_EQ(out[5], 6.5f);
  EXPECT_FLOAT_EQ(out[6], 9.5f);
  EXPECT_FLOAT_EQ(out[19], 4.5f);
}

TEST(ConvRef, KnownKernel3DShiftsByOne)
{
  // A kernel whose only non-zero tap is (kz, ky, kx) = (2, 1, 1) reads the next slice:
  // out[z] = 2 * in[z + 1], 0 on the last slice.
  const cs_conv_shape s = {1, 1, 1, 3, 2, 2, 3, 3, 3};
  Vec in(12), weight(27, 0.0f), out(12);
  for (int i = 0; i < 12; i++)
    in[i] = (float)(i + 1);
  weight[(2 * 3 + 1) * 3 + 1] = 2.0f;
  cs_conv_forward_ref(out.data(), in.data(), weight.data(), nullptr, &s, 1);
  for (int i = 0; i < 8; i++)
    EXPECT_FLOAT_EQ(out[i], 2.0f * in[i + 4]);
  for (int i = 8; i < 12; i++)
    EXPECT_FLOAT_EQ(out[i], 0.0f);
}

TEST(ConvRef, Gradients3x3x3OddSizes)
{
  CheckConv({2, 3, 2, 3, 4, 5, 3, 3, 3});
}
TEST(ConvRef, Gradients3x3x3ThinVolume)
{
  CheckConv({1, 2, 3, 2, 1, 3, 3, 3, 3});
}
TEST(ConvRef, Gradients1x1x1)
{
  CheckConv({2, 4, 3, 2, 3, 3, 1, 1, 1});
}
TEST(ConvRef, Gradients3x3In2D)
{
  CheckConv({2, 3, 2, 1, 5, 7, 1, 3, 3});
}
TEST(ConvRef, Gradients1x1In2D)
{
  CheckConv({1, 3, 5, 1, 4, 3, 1, 1, 1});
}

TEST(ConvRef, ThreadCountDoesNotChangeBits)
{
  const cs_conv_shape s = {2, 3, 4, 4, 5, 6, 3, 3, 3};
  Vec in = RandomVec(InSize(s), 5), weight = RandomVec(WeightSize(s), 6), bias = RandomVec(4, 7);
  Vec r = RandomVec(OutSize(s), 8);
  Vec out1(OutSize(s)), out2(OutSize(s)), gw1(weight.size()), gw2(weight.size());
  cs_conv_forward_ref(out1.data(), in.data(), weight.data(), bias.data(), &s, 1);
  cs_conv_forward_ref(out2.data(), in.data(), weight.data(), bias.data(), &s, 2);
  EXPECT_EQ(0, std::memcmp(out1.data(), out2.data(), out1.size() * sizeof(float)));
  cs_conv_backward_weights_ref(gw1.data(), nullptr, r.data(), in.data(), &s, 1);
  cs_conv_backward_weights_ref(gw2.data(), nullptr, r.data(), in.data(), &s, 2);
  EXPECT_EQ(0, std::memcmp(gw1.data(), gw2.data(), gw1.size() * sizeof(float)));
}

namespace
{

void CheckUpconv(const cs_conv_shape &s)
{
  const size_t on = (size_t)s.d * s.kd * 2 * s.h * 2 * s.w;
  const int kvol = s.kd * 4;
  Vec in = RandomVec(InSize(s), 11), weight = RandomVec((size_t)s.in_channels * s.out_channels * kvol, 12);
  Vec bias = RandomVec(s.out_channels, 13), r = RandomVec(s.batch * s.out_channels * on, 14);
  Vec out(r.size());
  cs_upconv_forward_ref(out.data(), in.data(), weight.data(), bias.data(), &s, 2);
  // Direct formula: each input voxel paints its own kd x 2 x 2 output block.
  const int oh = 2 * s.h, ow = 2 * s.w;
  for (int b = 0; b < s.batch; b++)
    for (int co = 0; co < s.out_channels; co++)
      for (int oz = 0; oz < s.d * s.kd; oz++)
        for (int oy = 0; oy < oh; oy++)
          for (int ox = 0; ox < ow; ox++)
          {
            double acc = bias[co];
            const int z = oz / s.kd, y = oy / 2, x = ox / 2;
            const int k = ((oz % s.kd) * 2 + oy % 2) * 2 + ox % 2;
            for (int ci = 0; ci < s.in_channels; ci++)
              acc += (double)in[(((size_t)b * s.in_channels + ci) * s.d + z) * s.h * s.w + y * s.w + x] *
                     weight[((size_t)ci * s.out_channels + co) * kvol + k];
            const size_t o = (((size_t)b * s.out_channels + co) * s.d * s.kd + oz) * oh * ow + oy * ow + ox;
            ASSERT_NEAR(out[o], acc, 1e-4);
          }

  Vec grad_in(in.size(), 1.0f), grad_w(weight.size(), 1.0f), grad_b(bias.size(), 1.0f);
  cs_upconv_backward_data_ref(grad_in.data(), r.data(), weight.data(), &s, 2);
  cs_upconv_backward_weights_ref(grad_w.data(), grad_b.data(), r.data(), in.data(), &s, 2);
  for (auto *g : {&grad_in, &grad_w, &grad_b})
    for (auto &v : *g)
      v -= 1.0f;
  auto loss = [&]() {
    cs_upconv_forward_ref(out.data(), in.data(), weight.data(), bias.data(), &s, 1);
    return WeightedSum(out, r);
  };
  ExpectGradient(in, grad_in, loss, 1e-2f, 2e-3, "input");
  ExpectGradient(weight, grad_w, loss, 1e-2f, 2e-3, "weight");
  ExpectGradient(bias, grad_b, loss, 1e-2f, 2e-3, "bias");
}

} // namespace

TEST(UpconvRef, ForwardAndGradients3D)
{
  CheckUpconv({2, 3, 2, 2, 3, 1, 2, 2, 2});
}
TEST(UpconvRef, ForwardAndGradients2D)
{
  CheckUpconv({2, 2, 3, 1, 3, 2, 1, 2, 2});
}

TEST(InstanceNormRef, ForwardNormalisesEachPlane)
{
  const int B = 2, C = 3, n = 50;
  Vec in = RandomVec(B * C * n, 21, 3.0f), gamma = {1.0f, 2.0f, 0.5f}, beta = {0.0f, -1.0f, 3.0f};
  for (int i = 0; i < B * C * n; i++)
    in[i] += 10.0f; // an offset the mean must remove
  Vec out(in.size()), mean(B * C), rstd(B * C);
  const float eps = 1e-5f;
  cs_instnorm_forward_ref(out.data(), mean.data(), rstd.data(), in.data(), gamma.data(), beta.data(), B, C, n, eps, 2);
  for (int p = 0; p < B * C; p++)
  {
    const int c = p % C;
    double m = 0, v = 0, om = 0, ov = 0;
    for (int i = 0; i < n; i++)
      m += in[p * n + i];
    m /= n;
    for (int i = 0; i < n; i++)
      v += (in[p * n + i] - m) * (in[p * n + i] - m);
    v /= n; // biased
    EXPECT_NEAR(mean[p], m, 1e-4);
    EXPECT_NEAR(rstd[p], 1.0 / std::sqrt(v + eps), 1e-5);
    for (int i = 0; i < n; i++)
      om += out[p * n + i];
    om /= n;
    for (int i = 0; i < n; i++)
      ov += (out[p * n + i] - om) * (out[p * n + i] - om);
    ov /= n;
    EXPECT_NEAR(om, beta[c], 1e-4);
    EXPECT_NEAR(std::sqrt(ov), gamma[c] * std::sqrt(v / (v + eps)), 1e-4);
  }
}

TEST(InstanceNormRef, InPlaceMatchesOutOfPlace)
{
  const int B = 2, C = 2, n = 33;
  Vec in = RandomVec(B * C * n, 25), gamma = {1.5f, -0.5f}, beta = {0.25f, 2.0f};
  Vec out(in.size()), mean(B * C), rstd(B * C), m2(B * C), r2(B * C);
  cs_instnorm_forward_ref(out.data(), mean.data(), rstd.data(), in.data(), gamma.data(), beta.data(), B, C, n, 1e-5f,
                          2);
  cs_instnorm_forward_ref(in.data(), m2.data(), r2.data(), in.data(), gamma.data(), beta.data(), B, C, n, 1e-5f, 2);
  EXPECT_EQ(in, out);
  EXPECT_EQ(mean, m2);
  EXPECT_EQ(rstd, r2);
}

TEST(InstanceNormRef, Gradients)
{
  const int B = 2, C = 3, n = 2 * 3 * 5;
  Vec in = RandomVec(B * C * n, 31, 2.0f), gamma = RandomVec(C, 32), beta = RandomVec(C, 33);
  Vec r = RandomVec(in.size(), 34), out(in.size()), mean(B * C), rstd(B * C);
  cs_instnorm_forward_ref(out.data(), mean.data(), rstd.data(), in.data(), gamma.data(), beta.data(), B, C, n, 1e-5f,
                          2);
  Vec grad_in(in.size(), 1.0f), grad_g(C, 1.0f), grad_b(C, 1.0f);
  cs_instnorm_backward_ref(grad_in.data(), grad_g.data(), grad_b.data(), r.data(), in.data(), mean.data(), rstd.data(),
                           gamma.data(), B, C, n, 2);
  for (auto *g : {&grad_in, &grad_g, &grad_b})
    for (auto &v : *g)
      v -= 1.0f;
  auto loss = [&]() {
    Vec m(B * C), s(B * C);
    cs_instnorm_forward_ref(out.data(), m.data(), s.data(), in.data(), gamma.data(), beta.data(), B, C, n, 1e-5f, 1);
    return WeightedSum(out, r);
  };
  ExpectGradient(in, grad_in, loss, 3e-3f, 5e-3, "input");
  ExpectGradient(gamma, grad_g, loss, 3e-3f, 5e-3, "gamma");
  ExpectGradient(beta, grad_b, loss, 3e-3f, 5e-3, "beta");
}

TEST(LeakyReluRef, ForwardInPlaceAndGradient)
{
  const float slope = 0.1f;
  Vec x = RandomVec(200, 41);
  for (auto &v : x)
    v += v > 0 ? 0.2f : -0.2f; // keep away from the kink
  Vec y(x.size());
  cs_leaky_relu_forward_ref(y.data(), x.data(), (int64_t)x.size(), slope, 2);
  for (size_t i = 0; i < x.size(); i++)
    EXPECT_FLOAT_EQ(y[i], x[i] > 0 ? x[i] : slope * x[i]);
  Vec inplace = x;
  cs_leaky_relu_forward_ref(inplace.data(), inplace.data(), (int64_t)x.size(), slope, 2);
  EXPECT_EQ(inplace, y);

  Vec r = RandomVec(x.size(), 42), from_in(x.size(), 1.0f), from_out(x.size(), 1.0f);
  cs_leaky_relu_backward_ref(from_in.data(), r.data(), x.data(), (int64_t)x.size(), slope, 2);
  cs_leaky_relu_backward_ref(from_out.data(), r.data(), y.data(), (int64_t)x.size(), slope, 2);
  EXPECT_EQ(from_in, from_out); // sign of input and output agree
  for (auto &v : from_in)
    v -= 1.0f;
  auto loss = [&]() {
    cs_leaky_relu_forward_ref(y.data(), x.data(), (int64_t)x.size(), slope, 1);
    return WeightedSum(y, r);
  };
  ExpectGradient(x, from_in, loss, 1e-2f, 1e-3, "input");
}

namespace
{

void CheckMaxPool(int d, int h, int w, int pd)
{
  const int P = 3;
  const int n = d * h * w, on = (d / pd) * (h / 2) * (w / 2);
  // Distinct values 0.1 apart in a scrambled order: no ties, finite differences stay on one side.
  Vec in(P * n);
  for (int i = 0; i < P * n; i++)
    in[i] = 0.1f * (float)((i * 37) % (P * n)) - 5.0f;
  Vec out(P * on);
  cs_maxpool_forward_ref(out.data(), in.data(), P, d, h, w, pd, 2);
  for (int p = 0; p < P; p++)
    for (int z = 0; z < d / pd; z++)
      for (int y = 0; y < h / 2; y++)
        for (int x = 0; x < w / 2; x++)
        {
          float m = -1e30f;
          for (int i = 0; i < pd; i++)
            for (int j = 0; j < 2; j++)
              for (int k = 0; k < 2; k++)
                m = std::max(m, in[p * n + ((z * pd + i) * h + 2 * y + j) * w + 2 * x + k]);
          EXPECT_EQ(out[p * on + (z * (h / 2) + y) * (w / 2) + x], m);
        }
  Vec r = RandomVec(out.size(), 51), grad(in.size(), 1.0f);
  cs_maxpool_backward_ref(grad.data(), r.data(), in.data(), P, d, h, w, pd, 2);
  for (auto &v : grad)
    v -= 1.0f;
  auto loss = [&]() {
    cs_maxpool_forward_ref(out.data(), in.data(), P, d, h, w, pd, 1);
    return WeightedSum(out, r);
  };
  ExpectGradient(in, grad, loss, 1e-2f, 1e-3, "input", 100000);
}

} // namespace

TEST(MaxPoolRef, ForwardAndGradient3D)
{
  CheckMaxPool(4, 2, 6, 2);
}
TEST(MaxPoolRef, ForwardAndGradient2D)
{
  CheckMaxPool(1, 4, 6, 1);
}

TEST(MaxPoolRef, TiesGoToTheFirstMaximum)
{
  Vec in = {1, 3, 3, 0}, out(1), grad(4, 0.0f), g = {2.0f};
  cs_maxpool_forward_ref(out.data(), in.data(), 1, 1, 2, 2, 1, 1);
  EXPECT_EQ(out[0], 3.0f);
  cs_maxpool_backward_ref(grad.data(), g.data(), in.data(), 1, 1, 2, 2, 1, 1);
  EXPECT_EQ(grad, (Vec{0, 2, 0, 0}));
}

TEST(ConcatRef, ForwardPutsAFirstAndBackwardSplits)
{
  const int B = 2, ca = 2, cb = 3, n = 4;
  Vec a = RandomVec(B * ca * n, 61), b = RandomVec(B * cb * n, 62), out(B * (ca + cb) * n);
  cs_concat_forward_ref(out.data(), a.data(), b.data(), B, ca, cb, n, 2);
  for (int item = 0; item < B; item++)
    for (int c = 0; c < ca + cb; c++)
      for (int i = 0; i < n; i++)
      {
        const float expected = c < ca ? a[(item * ca + c) * n + i] : b[(item * cb + c - ca) * n + i];
        EXPECT_EQ(out[(item * (ca + cb) + c) * n + i], expected);
      }
  // The backward is the adjoint: <out, r> = <a, ga> + <b, gb>, and it adds.
  Vec r = RandomVec(out.size(), 63), ga(a.size(), 1.0f), gb(b.size(), 1.0f);
  cs_concat_backward_ref(ga.data(), gb.data(), r.data(), B, ca, cb, n, 2);
  for (auto &v : ga)
    v -= 1.0f;
  for (auto &v : gb)
    v -= 1.0f;
  EXPECT_NEAR(WeightedSum(out, r), WeightedSum(a, ga) + WeightedSum(b, gb), 1e-4);
  auto loss = [&]() {
    cs_concat_forward_ref(out.data(), a.data(), b.data(), B, ca, cb, n, 1);
    return WeightedSum(out, r);
  };
  ExpectGradient(a, ga, loss, 1e-2f, 1e-3, "a");
  ExpectGradient(b, gb, loss, 1e-2f, 1e-3, "b");
}

TEST(SoftmaxRef, ChannelsSumToOneAndMatchTheFormula)
{
  const int B = 2, C = 4, n = 7;
  Vec in = RandomVec(B * C * n, 71, 5.0f), out(in.size());
  in[3] = 500.0f; // large logits must not overflow
  cs_softmax_channels_ref(out.data(), in.data(), B, C, n, 2);
  for (int b = 0; b < B; b++)
    for (int i = 0; i < n; i++)
    {
      double sum = 0, z = 0, mx = -1e30;
      for (int c = 0; c < C; c++)
        mx = std::max(mx, (double)in[(b * C + c) * n + i]);
      for (int c = 0; c < C; c++)
        z += std::exp(in[(b * C + c) * n + i] - mx);
      for (int c = 0; c < C; c++)
      {
        const float p = out[(b * C + c) * n + i];
        EXPECT_NEAR(p, std::exp(in[(b * C + c) * n + i] - mx) / z, 1e-6);
        sum += p;
      }
      EXPECT_NEAR(sum, 1.0, 1e-5);
    }
  Vec inplace = in;
  cs_softmax_channels_ref(inplace.data(), inplace.data(), B, C, n, 1);
  EXPECT_EQ(inplace, out);
}
