// test_kernels_fast_layers.cpp - the fast element-wise layer kernels (LeakyReLU, instance norm,
// the fused instance norm + LeakyReLU) equal their references on every instruction-set path
// this CPU can run (forced explicitly), on sizes that are and are not multiples of the vector
// width and of the parallel pieces, with 1 and 2 threads; in place where the contract allows;
// and give bit-identical results for 1 and 2 threads.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <limits>
#include <vector>

#include "comboseg/comboseg.h"
#include "kernels.h"
#include "kernels_isa.h"

namespace
{

std::vector<float> Random(size_t n, uint64_t seed, float offset = 0.0f, float spread = 1.0f)
{
  cs_rng rng;
  cs_rng_seed(&rng, seed);
  std::vector<float> v(n);
  for (float &x : v)
    x = offset + spread * (cs_rng_uniform(&rng) * 2.0f - 1.0f);
  return v;
}

// Compares with a tolerance relative to the largest magnitude of want (float rounding of sums
// and of statistics computed in different orders).
void ExpectClose(const std::vector<float> &got, const std::vector<float> &want, const std::string &what,
                 float rel = 2e-5f)
{
  ASSERT_EQ(got.size(), want.size()) << what;
  float scale = 1.0f;
  for (float v : want)
    scale = std::max(scale, std::fabs(v));
  const float tol = rel * scale;
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); i++)
  {
    if (!(std::fabs(got[i] - want[i]) <= tol))
    {
      if (bad < 5)
        ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " want " << want[i] << " (tolerance " << tol
                      << ")";
      bad++;
    }
  }
  EXPECT_EQ(bad, 0u) << what;
}

class LayerFastTest : public ::testing::TestWithParam<cs_isa>
{
protected:
  void SetUp() override
  {
    if (!cs_isa_available(GetParam()))
      GTEST_SKIP() << cs_isa_name(GetParam()) << " not available on this CPU/build";
    ASSERT_EQ(cs_isa_force(GetParam()), 0);
  }
  void TearDown() override { cs_isa_force(CS_ISA_AUTO); }
};

// 1, below a vector, a vector, a tail, several parallel pieces of 16384 plus a tail.
const int64_t kFlatSizes[] = {1, 7, 8, 17, 16, 33, 1000, 16384 * 2 + 5};

TEST_P(LayerFastTest, LeakyReluMatchesReference)
{
  for (int64_t n : kFlatSizes)
    for (float slope : {0.01f, 0.0f, 0.5f})
    {
      const std::string what = "n " + std::to_string(n) + " slope " + std::to_string(slope);
      const std::vector<float> in = Random((size_t)n, 1), gout = Random((size_t)n, 2);
      const std::vector<float> start = Random((size_t)n, 3);
      std::vector<float> want_out(n), want_gin = start;
      cs_leaky_relu_forward_ref(want_out.data(), in.data(), n, slope, 1);
      cs_leaky_relu_backward_ref(want_gin.data(), gout.data(), in.data(), n, slope, 1);
      for (int threads : {1, 2})
      {
        std::vector<float> out(n, 9.0f), gin = start;
        cs_leaky_relu_forward(out.data(), in.data(), n, slope, threads);
        cs_leaky_relu_backward(gin.data(), gout.data(), in.data(), n, slope, threads);
        ExpectClose(out, want_out, what + " forward", 1e-7f);
        ExpectClose(gin, want_gin, what + " backward adds", 1e-7f);
        std::vector<float> inplace = in; // out may equal in
        cs_leaky_relu_forward(inplace.data(), inplace.data(), n, slope, threads);
        ExpectClose(inplace, want_out, what + " in place", 1e-7f);
        // the backward may take the sign from the forward output
        std::vector<float> gin2 = start;
        cs_leaky_relu_backward(gin2.data(), gout.data(), want_out.data(), n, slope, threads);
        ExpectClose(gin2, want_gin, what + " backward from the output", 1e-7f);
      }
    }
}

struct NormCase
{
  int batch, channels;
  int64_t n;
  float offset; // added to the input: the statistics must not lose the variance to it
};

const NormCase kNormCases[] = {
    {1, 1, 1, 0.0f},           // one voxel: variance 0
    {2, 3, 7, 0.0f},           // shorter than a vector
    {1, 5, 16, 3.0f},          // exactly vectors
    {2, 17, 315, 0.0f},        // 5x7x9, odd channels
    {1, 2, 4096 + 13, 100.0f}, // long planes with a large mean
    {2, 4, 1000, -20.0f},
    {2, 3, 2 * 16384 + 1000, 5.0f}, // planes of several pieces (the forward's split), a partial last
};

struct NormData
{
  std::vector<float> in, gamma, beta, gout;
};

NormData MakeNorm(const NormCase &c, uint64_t seed)
{
  const size_t total = (size_t)c.batch * c.channels * c.n;
  NormData d;
  d.in = Random(total, seed, c.offset);
  d.gamma = Random((size_t)c.channels, seed + 1, 1.0f, 0.5f);
  d.beta = Random((size_t)c.channels, seed + 2);
  d.gout = Random(total, seed + 3);
  return d;
}

std::string NormName(const NormCase &c)
{
  return "b" + std::to_string(c.batch) + " c" + std::to_string(c.channels) + " n" + std::to_string(c.n) + " offset " +
         std::to_string(c.offset);
}

TEST_P(LayerFastTest, InstanceNormForwardMatchesReference)
{
  const float eps = 1e-5f, slope = 0.01f;
  for (const NormCase &c : kNormCases)
  {
    const NormData d = MakeNorm(c, 11);
    const size_t planes = (size_t)c.batch * c.channels;
    std::vector<float> want(d.in.size()), want_m(planes), want_r(planes);
    std::vector<float> want_act(d.in.size()), want_am(planes), want_ar(planes);
    cs_instnorm_forward_ref(want.data(), want_m.data(), want_r.data(), d.in.data(), d.gamma.data(), d.beta.data(),
                            c.batch, c.channels, c.n, eps, 1);
    cs_instnorm_leaky_forward_ref(want_act.data(), want_am.data(), want_ar.data(), d.in.data(), d.gamma.data(),
                                  d.beta.data(), c.batch, c.channels, c.n, eps, slope, 1);
    for (int threads : {1, 2})
    {
      const std::string what = NormName(c) + " threads " + std::to_string(threads);
      std::vector<float> out(d.in.size(), 7.0f), m(planes), r(planes);
      cs_instnorm_forward(out.data(), m.data(), r.data(), d.in.data(), d.gamma.data(), d.beta.data(), c.batch,
                          c.channels, c.n, eps, threads);
      ExpectClose(out, want, what + " norm");
      ExpectClose(m, want_m, what + " mean");
      ExpectClose(r, want_r, what + " rstd", 1e-5f);
      // fused with the LeakyReLU, in place (as inference runs it)
      std::vector<float> act = d.in, am(planes), ar(planes);
      cs_instnorm_leaky_forward(act.data(), am.data(), ar.data(), act.data(), d.gamma.data(), d.beta.data(), c.batch,
                                c.channels, c.n, eps, slope, threads);
      ExpectClose(act, want_act, what + " norm + LeakyReLU in place");
      ExpectClose(am, want_am, what + " fused mean");
      ExpectClose(ar, want_ar, what + " fused rstd", 1e-5f);
    }
  }
}

TEST_P(LayerFastTest, InstanceNormOfAConstantPlaneIsBeta)
{
  // variance 0: xhat = 0 (not NaN), so out = beta, also for a large constant
  const int64_t n = 77;
  std::vector<float> in(2 * n, 1234.5f), gamma = {2.0f, 3.0f}, beta = {0.25f, -0.5f};
  std::vector<float> out(in.size()), m(2), r(2);
  cs_instnorm_forward(out.data(), m.data(), r.data(), in.data(), gamma.data(), beta.data(), 1, 2, n, 1e-5f, 2);
  for (int64_t i = 0; i < 2 * n; i++)
    ASSERT_NEAR(out[i], beta[i / n], 1e-6f) << i;
  EXPECT_NEAR(m[0], 1234.5f, 1e-3f);
  EXPECT_NEAR(r[0], 1.0f / std::sqrt(1e-5f), 1.0f);
}

TEST_P(LayerFastTest, InstanceNormBackwardMatchesReference)
{
  const float eps = 1e-5f, slope = 0.01f;
  for (const NormCase &c : kNormCases)
  {
    const NormData d = MakeNorm(c, 21);
    const size_t planes = (size_t)c.batch * c.channels;
    // forward statistics and output from the reference, as the backward receives them
    std::vector<float> act(d.in.size()), m(planes), r(planes);
    cs_instnorm_leaky_forward_ref(act.data(), m.data(), r.data(), d.in.data(), d.gamma.data(), d.beta.data(), c.batch,
                                  c.channels, c.n, eps, slope, 1);
    const std::vector<float> start = Random(d.in.size(), 22);
    const std::vector<float> start_g = Random((size_t)c.channels, 23);
    const std::vector<float> start_b = Random((size_t)c.channels, 24);
    std::vector<float> want = start, want_g = start_g, want_b = start_b;
    cs_instnorm_backward_ref(want.data(), want_g.data(), want_b.data(), d.gout.data(), d.in.data(), m.data(), r.data(),
                             d.gamma.data(), c.batch, c.channels, c.n, 1);
    std::vector<float> want_f(d.in.size()), want_fg = start_g, want_fb = start_b;
    cs_instnorm_leaky_backward_ref(want_f.data(), want_fg.data(), want_fb.data(), d.gout.data(), act.data(),
                                   d.in.data(), m.data(), r.data(), d.gamma.data(), c.batch, c.channels, c.n, slope, 1);
    for (int threads : {1, 2})
    {
      const std::string what = NormName(c) + " threads " + std::to_string(threads);
      std::vector<float> gin = start, gg = start_g, gb = start_b;
      cs_instnorm_backward(gin.data(), gg.data(), gb.data(), d.gout.data(), d.in.data(), m.data(), r.data(),
                           d.gamma.data(), c.batch, c.channels, c.n, threads);
      ExpectClose(gin, want, what + " grad_in adds", 1e-4f);
      ExpectClose(gg, want_g, what + " grad_gamma");
      ExpectClose(gb, want_b, what + " grad_beta");
      std::vector<float> fin(d.in.size(), 1e6f), fg = start_g, fb = start_b; // overwritten
      cs_instnorm_leaky_backward(fin.data(), fg.data(), fb.data(), d.gout.data(), act.data(), d.in.data(), m.data(),
                                 r.data(), d.gamma.data(), c.batch, c.channels, c.n, slope, threads);
      ExpectClose(fin, want_f, what + " fused grad_in", 1e-4f);
      ExpectClose(fg, want_fg, what + " fused grad_gamma");
      ExpectClose(fb, want_fb, what + " fused grad_beta");
    }
  }
}

// The trainer must give the same bits for a given input whatever the thread count (resumed
// runs may use another one): every plane is reduced in fixed pieces, added in a fixed order.
TEST_P(LayerFastTest, NormResultsDoNotDependOnTheThreadCount)
{
  const NormCase c = {2, 6, 2 * 16384 + 5000, 1.0f}; // planes of several pieces
  const NormData d = MakeNorm(c, 31);
  const size_t planes = (size_t)c.batch * c.channels;
  std::vector<float> out[2], m[2], r[2], gin[2], gg[2], gb[2];
  for (int t = 0; t < 2; t++)
  {
    out[t].resize(d.in.size());
    m[t].resize(planes);
    r[t].resize(planes);
    gin[t].resize(d.in.size());
    gg[t].assign((size_t)c.channels, 0.0f);
    gb[t].assign((size_t)c.channels, 0.0f);
    cs_instnorm_leaky_forward(out[t].data(), m[t].data(), r[t].data(), d.in.data(), d.gamma.data(), d.beta.data(),
                              c.batch, c.channels, c.n, 1e-5f, 0.01f, t + 1);
    cs_instnorm_leaky_backward(gin[t].data(), gg[t].data(), gb[t].data(), d.gout.data(), out[t].data(), d.in.data(),
                               m[t].data(), r[t].data(), d.gamma.data(), c.batch, c.channels, c.n, 0.01f, t + 1);
  }
  EXPECT_EQ(out[0], out[1]);
  EXPECT_EQ(m[0], m[1]);
  EXPECT_EQ(r[0], r[1]);
  EXPECT_EQ(gin[0], gin[1]);
  EXPECT_EQ(gg[0], gg[1]);
  EXPECT_EQ(gb[0], gb[1]);
}

// Probabilities as the reference gives them: odd voxel counts (vector tails), one to 27
// channels, logits far apart (probabilities that underflow to 0 and one that is 1) and equal.
TEST_P(LayerFastTest, SoftmaxMatchesReference)
{
  for (int64_t n : {int64_t(1), int64_t(7), int64_t(17), int64_t(1000), int64_t(512 * 3 + 9)})
    for (int channels : {1, 2, 5, 27})
      for (float spread : {1.0f, 60.0f})
      {
        const int batch = 2;
        const std::string what = "n " + std::to_string(n) + " channels " + std::to_string(channels) + " spread " +
                                 std::to_string(spread);
        const size_t total = (size_t)(batch * channels * n);
        std::vector<float> in = Random(total, 5, 0.0f, spread);
        if (n > 3)
          in[3] = in[n + 3] = 0.0f; // ties within one voxel (channels 0 and 1)
        std::vector<float> want(total);
        cs_softmax_channels_ref(want.data(), in.data(), batch, channels, n, 1);
        for (int threads : {1, 2})
        {
          std::vector<float> got(total, 9.0f);
          cs_softmax_channels(got.data(), in.data(), batch, channels, n, threads);
          ExpectClose(got, want, what + " threads " + std::to_string(threads), 1e-6f);
          for (int b = 0; b < batch; b++)
            for (int64_t v = 0; v < n; v += 1 + n / 7)
            {
              double s = 0.0;
              for (int c = 0; c < channels; c++)
                s += got[(size_t)((b * channels + c) * n + v)];
              EXPECT_NEAR(s, 1.0, 2e-6) << what << " voxel " << v;
            }
        }
        std::vector<float> inplace = in; // out may equal in
        cs_softmax_channels(inplace.data(), inplace.data(), batch, channels, n, 2);
        ExpectClose(inplace, want, what + " in place", 1e-6f);
      }
}

// A softmax tile (inference blends tile by tile) holds exactly the values cs_softmax_channels
// gives its voxels on the same path; the reference tile matches the reference likewise.
TEST_P(LayerFastTest, SoftmaxTileIsTheSoftmaxOfItsVoxels)
{
  for (int64_t n : {int64_t(7), int64_t(1000), int64_t(CS_SOFTMAX_TILE * 3 + 9)})
    for (int channels : {1, 5, 27})
    {
      const std::string what = "n " + std::to_string(n) + " channels " + std::to_string(channels);
      std::vector<float> in = Random((size_t)(channels * n), 6, 0.0f, 20.0f);
      std::vector<float> whole((size_t)(channels * n)), ref_whole(whole.size());
      cs_softmax_channels(whole.data(), in.data(), 1, channels, n, 2);
      cs_softmax_channels_ref(ref_whole.data(), in.data(), 1, channels, n, 1);
      std::vector<float> tile((size_t)channels * CS_SOFTMAX_TILE), ref_tile(tile.size());
      for (int64_t i0 = 0; i0 < n; i0 += CS_SOFTMAX_TILE)
      {
        int ref_bad = -1;
        EXPECT_EQ(cs_softmax_tile(tile.data(), in.data(), channels, n, i0), 0) << what << " tile " << i0;
        cs_softmax_tile_ref(ref_tile.data(), in.data(), channels, n, i0, &ref_bad);
        EXPECT_EQ(ref_bad, 0) << what << " tile " << i0;
        for (int c = 0; c < channels; c++)
          for (int64_t j = 0; j < CS_SOFTMAX_TILE && i0 + j < n; j++)
          {
            const size_t w = (size_t)(c * n + i0 + j), t = (size_t)(c * CS_SOFTMAX_TILE + j);
            ASSERT_EQ(tile[t], whole[w]) << what << " voxel " << i0 + j << " channel " << c;
            ASSERT_EQ(ref_tile[t], ref_whole[w]) << what << " voxel " << i0 + j << " channel " << c;
          }
      }
    }
}

// A NaN, +inf or -inf anywhere in a tile (vector part or scalar tail, any channel) is reported by
// the tile that holds it, and by no other.
TEST_P(LayerFastTest, SoftmaxTileReportsNonFiniteInputs)
{
  const int64_t n = CS_SOFTMAX_TILE * 2 + 21; // the last tile's 21 voxels: vectors and a tail
  const int channels = 5;
  std::vector<float> tile((size_t)channels * CS_SOFTMAX_TILE);
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()})
    for (int64_t at : {int64_t(0), int64_t(CS_SOFTMAX_TILE - 1), int64_t(2 * CS_SOFTMAX_TILE + 17),
                       int64_t(2 * CS_SOFTMAX_TILE + 20)})
      for (int c : {0, channels - 1})
      {
        std::vector<float> in = Random((size_t)(channels * n), 8, -30.0f, 30.0f);
        in[(size_t)(c * n + at)] = bad;
        for (int64_t i0 = 0; i0 < n; i0 += CS_SOFTMAX_TILE)
        {
          const int holds = at >= i0 && at < i0 + CS_SOFTMAX_TILE;
          int ref_bad = -1;
          cs_softmax_tile_ref(tile.data(), in.data(), channels, n, i0, &ref_bad);
          EXPECT_EQ(cs_softmax_tile(tile.data(), in.data(), channels, n, i0), holds)
              << bad << " at voxel " << at << " channel " << c << ", tile " << i0;
          EXPECT_EQ(ref_bad, holds) << bad << " at voxel " << at << " channel " << c << ", tile " << i0;
        }
      }
}

INSTANTIATE_TEST_SUITE_P(Isa, LayerFastTest, ::testing::Values(CS_ISA_PORTABLE, CS_ISA_AVX2, CS_ISA_AVX512),
                         [](const ::testing::TestParamInfo<cs_isa> &info) {
                           return std::string(cs_isa_name(info.param));
                         });

} // namespace
