// test_kernels_fast.cpp - every fast convolution equals its reference kernel, on every
// instruction-set path this CPU can run (forced explicitly), on odd sizes, borders, 1-voxel
// dimensions, 1x1 and 3x3(x3) kernels, channel counts that are and are not multiples of the
// vector width, with 1 and 2 threads; and the fast kernels are deterministic. (The forced AVX-512
// path runs the passes of 8-channel layers on AVX2: cs_isa_conv, tested at the end; the bfloat16
// forward convolution of inference is tested after it.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "comboseg/comboseg.h"
#include "kernels.h"
#include "kernels_isa.h"

namespace
{

struct ConvCase
{
  int b, ci, co, d, h, w, kd, kh, kw;
};

std::string CaseName(const ConvCase &c)
{
  char buf[128];
  snprintf(buf, sizeof buf, "b%d ci%d co%d %dx%dx%d k%d%d%d", c.b, c.ci, c.co, c.d, c.h, c.w, c.kd, c.kh, c.kw);
  return buf;
}

cs_conv_shape Shape(const ConvCase &c)
{
  cs_conv_shape s;
  s.batch = c.b;
  s.in_channels = c.ci;
  s.out_channels = c.co;
  s.d = c.d;
  s.h = c.h;
  s.w = c.w;
  s.kd = c.kd;
  s.kh = c.kh;
  s.kw = c.kw;
  return s;
}

std::vector<float> Random(size_t n, uint64_t seed)
{
  cs_rng rng;
  cs_rng_seed(&rng, seed);
  std::vector<float> v(n);
  for (float &x : v)
    x = cs_rng_uniform(&rng) * 2.0f - 1.0f;
  return v;
}

// Each value is a sum of up to ci * taps (or voxels) products of numbers in [-1, 1]: compare
// with a tolerance relative to the largest magnitude, which bounds float rounding of both sides.
void ExpectClose(const std::vector<float> &got, const std::vector<float> &want, const std::string &what)
{
  ASSERT_EQ(got.size(), want.size()) << what;
  float scale = 1.0f;
  for (float v : want)
    scale = std::max(scale, std::fabs(v));
  const float tol = 2e-5f * scale;
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

const ConvCase kCases[] = {
    {1, 1, 16, 5, 7, 9, 3, 3, 3},    // first layer, one input channel
    {2, 2, 16, 5, 7, 9, 3, 3, 3},    // first layer of the reference network
    {1, 3, 17, 4, 6, 13, 3, 3, 3},   // odd channels both sides
    {2, 16, 16, 5, 7, 9, 3, 3, 3},   // one vector block (AVX-512) / two (AVX2)
    {1, 17, 32, 3, 5, 7, 3, 3, 3},   // a partial input block
    {1, 32, 32, 1, 1, 1, 3, 3, 3},   // one voxel: only the centre tap sees data
    {1, 32, 16, 1, 6, 5, 3, 3, 3},   // one slice with a 3D kernel
    {2, 16, 32, 3, 2, 31, 3, 3, 3},  // a long row: several micro-kernel chunks
    {1, 5, 16, 3, 4, 37, 3, 3, 3},   // a partial input block over rows of two vectors and a tail
    {1, 16, 16, 1, 13, 11, 1, 3, 3}, // 2D
    {2, 3, 17, 1, 9, 8, 1, 3, 3},    // 2D, odd channels
    {2, 16, 5, 5, 7, 9, 1, 1, 1},    // 1x1x1 head to K = 5 classes
    {1, 32, 3, 1, 6, 7, 1, 1, 1},    // 2D head
    {1, 8, 8, 2, 3, 53, 3, 3, 3},    // narrow layer: a row of three 16-position vectors and a tail
    {2, 16, 7, 3, 2, 40, 3, 3, 3},   // narrow layer, odd output channels, 2.5 vectors per row
    {1, 9, 16, 3, 4, 2, 3, 3, 3},    // weight gradient by input column, shortest row it takes
    {1, 9, 8, 3, 4, 2, 3, 3, 3},     // the same with one 8-lane block (AVX2)
    {1, 9, 16, 3, 4, 1, 3, 3, 3},    // rows of one position: the by-output weight gradient
    {1, 16, 32, 18, 3, 5, 3, 3, 3},  // slabs of 4 planes (2 with 2 threads), a partial last one:
                                     // forward and weight gradient
    {1, 8, 8, 18, 3, 20, 3, 3, 3},   // the same for a narrow layer (its forward)
    {2, 8, 27, 3, 4, 37, 1, 1, 1},   // a head: 1x1x1 in groups of 8 output channels, the last of 3
};

class ConvFastTest : public ::testing::TestWithParam<cs_isa>
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

TEST_P(ConvFastTest, ForwardMatchesReference)
{
  for (const ConvCase &c : kCases)
  {
    const cs_conv_shape s = Shape(c);
    const size_t vox = (size_t)c.d * c.h * c.w, taps = (size_t)c.kd * c.kh * c.kw;
    const std::vector<float> in = Random((size_t)c.b * c.ci * vox, 1);
    const std::vector<float> wt = Random((size_t)c.co * c.ci * taps, 2);
    const std::vector<float> bias = Random((size_t)c.co, 3);
    std::vector<float> want((size_t)c.b * c.co * vox, 7.0f);
    cs_conv_forward_ref(want.data(), in.data(), wt.data(), bias.data(), &s, 1);
    for (int threads : {1, 2})
    {
      std::vector<float> got(want.size(), -3.0f); // forward overwrites
      cs_conv_forward(got.data(), in.data(), wt.data(), bias.data(), &s, threads);
      ExpectClose(got, want, CaseName(c) + " threads " + std::to_string(threads));
    }
    std::vector<float> nobias_want(want.size()), nobias_got(want.size());
    cs_conv_forward_ref(nobias_want.data(), in.data(), wt.data(), nullptr, &s, 1);
    cs_conv_forward(nobias_got.data(), in.data(), wt.data(), nullptr, &s, 2);
    ExpectClose(nobias_got, nobias_want, CaseName(c) + " without bias");
  }
}

TEST_P(ConvFastTest, BackwardDataWritesLikeReference)
{
  for (const ConvCase &c : kCases)
  {
    const cs_conv_shape s = Shape(c);
    const size_t vox = (size_t)c.d * c.h * c.w, taps = (size_t)c.kd * c.kh * c.kw;
    const std::vector<float> gout = Random((size_t)c.b * c.co * vox, 4);
    const std::vector<float> wt = Random((size_t)c.co * c.ci * taps, 5);
    const std::vector<float> start = Random((size_t)c.b * c.ci * vox, 6);
    std::vector<float> want(start.size(), 7.0f);
    cs_conv_backward_data_ref(want.data(), gout.data(), wt.data(), &s, 1);
    for (int threads : {1, 2})
    {
      std::vector<float> got = start; // overwritten: what was there must not show
      cs_conv_backward_data(got.data(), gout.data(), wt.data(), &s, threads);
      ExpectClose(got, want, CaseName(c) + " threads " + std::to_string(threads));
    }
  }
}

TEST_P(ConvFastTest, BackwardWeightsAddsLikeReference)
{
  for (const ConvCase &c : kCases)
  {
    const cs_conv_shape s = Shape(c);
    const size_t vox = (size_t)c.d * c.h * c.w, taps = (size_t)c.kd * c.kh * c.kw;
    const std::vector<float> gout = Random((size_t)c.b * c.co * vox, 7);
    const std::vector<float> in = Random((size_t)c.b * c.ci * vox, 8);
    const std::vector<float> start_w = Random((size_t)c.co * c.ci * taps, 9);
    const std::vector<float> start_b = Random((size_t)c.co, 10);
    std::vector<float> want_w = start_w, want_b = start_b;
    cs_conv_backward_weights_ref(want_w.data(), want_b.data(), gout.data(), in.data(), &s, 1);
    for (int threads : {1, 2})
    {
      std::vector<float> got_w = start_w, got_b = start_b;
      cs_conv_backward_weights(got_w.data(), got_b.data(), gout.data(), in.data(), &s, threads);
      const std::string what = CaseName(c) + " threads " + std::to_string(threads);
      ExpectClose(got_w, want_w, what + " weights");
      ExpectClose(got_b, want_b, what + " bias");
    }
    std::vector<float> got_w = start_w;
    cs_conv_backward_weights(got_w.data(), nullptr, gout.data(), in.data(), &s, 2);
    ExpectClose(got_w, want_w, CaseName(c) + " without bias gradient");
  }
}

// Winograd's F(2x2x2, 3x3x3) for float inference: within the direct kernels' tolerance of the
// reference wherever it runs, the same whatever the thread count, and the direct convolution
// itself (bit for bit) on shapes it does not take. It takes 3x3x3 kernels, at least a vector of
// channels each side, even sizes, and rows of whole vectors (16 floats on AVX-512, 8 on AVX2 and
// portable) or at least 128 tiles of 2x2x2 outputs; where it runs, rounding must make it differ
// from the direct path.
TEST_P(ConvFastTest, WinogradMatchesReferenceWhereItRuns)
{
  const int vl = cs_isa_active() == CS_ISA_AVX512 ? 16 : 8;
  const ConvCase cases[] = {
      {1, 16, 16, 4, 6, 16, 3, 3, 3}, // one group of tiles, one output block
      {2, 32, 16, 6, 4, 48, 3, 3, 3}, // two groups (16 + 8 tiles) per tile row, two items
      {1, 16, 48, 2, 2, 32, 3, 3, 3}, // three output blocks: a pair and a single
      {1, 17, 24, 4, 4, 16, 3, 3, 3}, // partial input and output blocks
      {2, 16, 16, 8, 8, 64, 3, 3, 3}, // slabs carried over by each thread
      {1, 16, 16, 5, 4, 16, 3, 3, 3}, // odd depth: direct
      {1, 16, 16, 4, 4, 24, 3, 3, 3}, // rows of 1.5 AVX-512 vectors, 48 tiles: direct there
      {1, 16, 24, 8, 8, 24, 3, 3, 3}, // the same rows, 192 tiles: a vector and a tail per row
      {1, 16, 16, 4, 6, 6, 3, 3, 3},  // rows of 6, 18 tiles: direct (6 is not a vector)
      {1, 4, 16, 4, 4, 16, 3, 3, 3},  // fewer input channels than a vector: direct
      {1, 16, 16, 4, 4, 16, 1, 3, 3}, // 2D kernel: direct
  };
  for (const ConvCase &c : cases)
  {
    const cs_conv_shape s = Shape(c);
    const size_t vox = (size_t)c.d * c.h * c.w;
    const std::vector<float> in = Random((size_t)c.b * c.ci * vox, 31);
    const std::vector<float> wt = Random((size_t)c.co * c.ci * c.kd * c.kh * c.kw, 32);
    const std::vector<float> bias = Random((size_t)c.co, 33);
    std::vector<float> want((size_t)c.b * c.co * vox), direct(want.size());
    cs_conv_forward_ref(want.data(), in.data(), wt.data(), bias.data(), &s, 1);
    cs_conv_forward(direct.data(), in.data(), wt.data(), bias.data(), &s, 2);
    std::vector<float> first;
    for (int threads : {1, 2})
    {
      std::vector<float> got(want.size(), -3.0f); // overwritten
      cs_conv_forward_winograd(got.data(), in.data(), wt.data(), bias.data(), &s, threads);
      ExpectClose(got, want, CaseName(c) + " threads " + std::to_string(threads));
      if (first.empty())
        first = got;
      else
        EXPECT_EQ(got, first) << CaseName(c) << ": differs between 1 and 2 threads";
    }
    const bool takes = c.kd == 3 && c.kh == 3 && c.kw == 3 && c.ci >= vl && c.co >= vl && c.d % 2 == 0 &&
                       c.h % 2 == 0 && c.w % 2 == 0 && (c.w % vl == 0 || c.b * c.d * c.h * c.w / 8 >= 128);
    EXPECT_EQ(cs_conv_winograd_takes(&s), takes ? 1 : 0) << CaseName(c);
    if (takes)
      EXPECT_NE(first, direct) << CaseName(c) << ": the Winograd path did not run";
    else
      EXPECT_EQ(first, direct) << CaseName(c) << ": not the direct convolution";
    std::vector<float> nobias_want(want.size()), nobias_got(want.size());
    cs_conv_forward_ref(nobias_want.data(), in.data(), wt.data(), nullptr, &s, 1);
    cs_conv_forward_winograd(nobias_got.data(), in.data(), wt.data(), nullptr, &s, 2);
    ExpectClose(nobias_got, nobias_want, CaseName(c) + " without bias");
  }
}

TEST_P(ConvFastTest, DeterministicForAThreadCount)
{
  const ConvCase c = {2, 17, 32, 5, 7, 9, 3, 3, 3};
  const cs_conv_shape s = Shape(c);
  const size_t vox = (size_t)c.d * c.h * c.w;
  const std::vector<float> gout = Random((size_t)c.b * c.co * vox, 11);
  const std::vector<float> in = Random((size_t)c.b * c.ci * vox, 12);
  const std::vector<float> wt = Random((size_t)c.co * c.ci * 27, 13);
  for (int threads : {1, 2})
  {
    std::vector<float> w1(wt.size()), w2(wt.size()), b1(c.co), b2(c.co);
    std::vector<float> d1(in.size()), d2(in.size()), f1(gout.size()), f2(gout.size());
    cs_conv_backward_weights(w1.data(), b1.data(), gout.data(), in.data(), &s, threads);
    cs_conv_backward_weights(w2.data(), b2.data(), gout.data(), in.data(), &s, threads);
    cs_conv_backward_data(d1.data(), gout.data(), wt.data(), &s, threads);
    cs_conv_backward_data(d2.data(), gout.data(), wt.data(), &s, threads);
    cs_conv_forward(f1.data(), in.data(), wt.data(), nullptr, &s, threads);
    cs_conv_forward(f2.data(), in.data(), wt.data(), nullptr, &s, threads);
    EXPECT_EQ(w1, w2) << "threads " << threads;
    EXPECT_EQ(b1, b2) << "threads " << threads;
    EXPECT_EQ(d1, d2) << "threads " << threads;
    EXPECT_EQ(f1, f2) << "threads " << threads;
  }
}

// Transposed convolutions (kernel 2, stride 2): d, h, w are the input size; kd 2 (3D) or 1 (2D).
const ConvCase kUpCases[] = {
    {2, 32, 16, 3, 5, 7, 2, 2, 2},  // odd sizes
    {1, 17, 3, 1, 1, 1, 2, 2, 2},   // one voxel, odd channels
    {2, 16, 16, 4, 4, 19, 2, 2, 2}, // a row longer than a vector plus a tail
    {2, 3, 5, 1, 6, 9, 1, 2, 2},    // 2D
    {1, 40, 13, 2, 37, 9, 2, 2, 2}, // several row blocks per slice, odd GEMM row counts
    {1, 5, 7, 1, 3, 300, 1, 2, 2},  // 2D, a row longer than a block
    {2, 64, 32, 2, 4, 4, 2, 2, 2},  // deep level: many channels, tiny slices
};

TEST_P(ConvFastTest, UpconvMatchesReference)
{
  for (const ConvCase &c : kUpCases)
  {
    const cs_conv_shape s = Shape(c);
    const size_t vin = (size_t)c.d * c.h * c.w, vout = vin * c.kd * 4;
    const size_t nw = (size_t)c.ci * c.co * c.kd * 4;
    const std::vector<float> in = Random((size_t)c.b * c.ci * vin, 21);
    const std::vector<float> gout = Random((size_t)c.b * c.co * vout, 22);
    const std::vector<float> wt = Random(nw, 23);
    const std::vector<float> bias = Random((size_t)c.co, 24);
    const std::vector<float> start_in = Random(in.size(), 25);
    const std::vector<float> start_w = Random(nw, 26), start_b = Random((size_t)c.co, 27);
    std::vector<float> want_out(gout.size()), want_in = start_in, want_w = start_w, want_b = start_b;
    cs_upconv_forward_ref(want_out.data(), in.data(), wt.data(), bias.data(), &s, 1);
    cs_upconv_backward_data_ref(want_in.data(), gout.data(), wt.data(), &s, 1);
    cs_upconv_backward_weights_ref(want_w.data(), want_b.data(), gout.data(), in.data(), &s, 1);
    for (int threads : {1, 2})
    {
      const std::string what = CaseName(c) + " threads " + std::to_string(threads);
      std::vector<float> out(gout.size(), 5.0f), gin = start_in, gw = start_w, gb = start_b;
      cs_upconv_forward(out.data(), in.data(), wt.data(), bias.data(), &s, threads);
      cs_upconv_backward_data(gin.data(), gout.data(), wt.data(), &s, threads);
      cs_upconv_backward_weights(gw.data(), gb.data(), gout.data(), in.data(), &s, threads);
      ExpectClose(out, want_out, what + " upconv forward");
      ExpectClose(gin, want_in, what + " upconv backward-data");
      ExpectClose(gw, want_w, what + " upconv weights");
      ExpectClose(gb, want_b, what + " upconv bias");
    }
  }
}

// Callers on several threads at once (each context runs its own inference) share nothing: each
// thread has its own scratch, freed when the thread ends.
TEST_P(ConvFastTest, ConcurrentCallersGetTheirOwnResults)
{
  const ConvCase cases[2] = {{1, 16, 32, 4, 6, 9, 3, 3, 3}, {2, 3, 17, 5, 5, 7, 3, 3, 3}};
  std::vector<float> in[2], wt[2], want[2], got[2];
  cs_conv_shape s[2];
  for (int k = 0; k < 2; k++)
  {
    const ConvCase &c = cases[k];
    s[k] = Shape(c);
    const size_t vox = (size_t)c.d * c.h * c.w;
    in[k] = Random((size_t)c.b * c.ci * vox, 31 + k);
    wt[k] = Random((size_t)c.co * c.ci * 27, 33 + k);
    want[k].resize((size_t)c.b * c.co * vox);
    got[k].resize(want[k].size());
    cs_conv_forward_ref(want[k].data(), in[k].data(), wt[k].data(), nullptr, &s[k], 1);
  }
  std::thread workers[2];
  for (int k = 0; k < 2; k++)
    workers[k] = std::thread([&, k] {
      for (int rep = 0; rep < 3; rep++)
        cs_conv_forward(got[k].data(), in[k].data(), wt[k].data(), nullptr, &s[k], 1);
    });
  for (std::thread &t : workers)
    t.join();
  for (int k = 0; k < 2; k++)
    ExpectClose(got[k], want[k], CaseName(cases[k]) + " on a thread");
}

INSTANTIATE_TEST_SUITE_P(Isa, ConvFastTest, ::testing::Values(CS_ISA_PORTABLE, CS_ISA_AVX2, CS_ISA_AVX512),
                         [](const ::testing::TestParamInfo<cs_isa> &info) {
                           return std::string(cs_isa_name(info.param));
                         });

// Narrow layers (the bundled 8-filter models' full-resolution level): on an AVX-512 host the
// forward and backward-data passes stay on AVX-512 at any width (at most 8 channels in the
// vector lanes take its narrow-layer kernels, positions in the lanes); the backward-weights pass
// of a layer with at most 8 output channels takes the 8-lane AVX2 kernels unless it is a first
// layer (at most 2 input channels), and where 512-bit FMAs run as two halves (Zen 4) so does
// that of 16 and of 128 or more output channels.
TEST(NarrowConv, AvxHostPicksEightLanesForNarrowWeightGradients)
{
  if (!cs_isa_available(CS_ISA_AVX512))
    GTEST_SKIP() << "needs AVX-512 (the 8-lane choice applies only to the AVX-512 path)";
  ASSERT_EQ(cs_isa_force(CS_ISA_AUTO), 0);
  const bool half = cs_isa_avx512_half_width() != 0;
  const int channels[] = {1, 2, 8, 9, 16, 32, 64, 128};
  for (int ci : channels)
    for (int co : channels)
    {
      const cs_conv_shape s = Shape({1, ci, co, 4, 4, 4, 3, 3, 3});
      const std::string what = "ci " + std::to_string(ci) + " co " + std::to_string(co) + (half ? " (half width)" : "");
      EXPECT_EQ(cs_isa_conv(&s, CS_CONV_FORWARD), CS_ISA_AVX512) << what;
      EXPECT_EQ(cs_isa_conv(&s, CS_CONV_BACKWARD_DATA), CS_ISA_AVX512) << what << " backward-data";
      const bool gradient8 = (co <= 8 && ci > 2) || (half && (co == 16 || co >= 128));
      EXPECT_EQ(cs_isa_conv(&s, CS_CONV_BACKWARD_WEIGHTS), gradient8 ? CS_ISA_AVX2 : CS_ISA_AVX512)
          << what << " weights";
    }
}

TEST(NarrowConv, OtherPathsKeepTheirWidth)
{
  for (cs_isa isa : {CS_ISA_PORTABLE, CS_ISA_AVX2})
  {
    if (!cs_isa_available(isa))
      continue;
    ASSERT_EQ(cs_isa_force(isa), 0);
    for (int c : {1, 8, 9, 16})
    {
      const cs_conv_shape s = Shape({1, c, c, 4, 4, 4, 3, 3, 3});
      for (cs_conv_pass pass : {CS_CONV_FORWARD, CS_CONV_BACKWARD_DATA, CS_CONV_BACKWARD_WEIGHTS})
        EXPECT_EQ(cs_isa_conv(&s, pass), isa) << cs_isa_name(isa) << ", " << c << " channels, pass " << pass;
    }
  }
  cs_isa_force(CS_ISA_AUTO);
}

// All three passes on the path this host runs by default, ci and co in {1, 2, 8, 9, 16}: each
// combination crosses the 8-channel boundary on one side or both.
TEST(NarrowConv, HostPathMatchesReferenceAcrossTheEightChannelBoundary)
{
  ASSERT_EQ(cs_isa_force(CS_ISA_AUTO), 0);
  const int channels[] = {1, 2, 8, 9, 16};
  for (int ci : channels)
    for (int co : channels)
      for (int k : {3, 1})
      {
        const ConvCase c = {2, ci, co, 4, 5, 13, k, k, k}; // a row of 13: two 8-lane chunks, one
                                                           // partial 16-position vector
        const cs_conv_shape s = Shape(c);
        const size_t vox = (size_t)c.d * c.h * c.w, taps = (size_t)k * k * k;
        const std::vector<float> in = Random((size_t)c.b * ci * vox, 41);
        const std::vector<float> gout = Random((size_t)c.b * co * vox, 42);
        const std::vector<float> wt = Random((size_t)co * ci * taps, 43);
        const std::vector<float> bias = Random((size_t)co, 44);
        const std::vector<float> start_in = Random(in.size(), 45);
        const std::vector<float> start_w = Random(wt.size(), 46), start_b = Random(bias.size(), 47);
        std::vector<float> want_out(gout.size()), want_in = start_in, want_w = start_w, want_b = start_b;
        cs_conv_forward_ref(want_out.data(), in.data(), wt.data(), bias.data(), &s, 1);
        cs_conv_backward_data_ref(want_in.data(), gout.data(), wt.data(), &s, 1);
        cs_conv_backward_weights_ref(want_w.data(), want_b.data(), gout.data(), in.data(), &s, 1);
        for (int threads : {1, 2})
        {
          const std::string what = CaseName(c) + " threads " + std::to_string(threads) + " on " +
                                   cs_isa_name(cs_isa_conv(&s, CS_CONV_FORWARD)) + "/" +
                                   cs_isa_name(cs_isa_conv(&s, CS_CONV_BACKWARD_DATA)) + "/" +
                                   cs_isa_name(cs_isa_conv(&s, CS_CONV_BACKWARD_WEIGHTS));
          std::vector<float> out(gout.size(), -3.0f), gin = start_in, gw = start_w, gb = start_b;
          cs_conv_forward(out.data(), in.data(), wt.data(), bias.data(), &s, threads);
          cs_conv_backward_data(gin.data(), gout.data(), wt.data(), &s, threads);
          cs_conv_backward_weights(gw.data(), gb.data(), gout.data(), in.data(), &s, threads);
          ExpectClose(out, want_out, what + " forward");
          ExpectClose(gin, want_in, what + " backward-data");
          ExpectClose(gw, want_w, what + " backward-weights");
          ExpectClose(gb, want_b, what + " bias gradient");
        }
      }
}

// The bfloat16 forward convolution (inference): where the CPU has AVX512_BF16 it rounds inputs
// and weights to 8 significant bits and sums in float. Numbers of at most 8 significant bits
// pass unrounded, and their products and sums here are exact in float: the result must equal
// the reference exactly, which holds the pair layout (channel pairs, odd channel counts, halo,
// weights) to every element. Elsewhere (and for a first layer) cs_conv_forward_bf16 is float
// inference's convolution, cs_conv_forward_winograd, bit for bit.
std::vector<float> SevenBitValues(size_t n, uint64_t seed)
{
  std::vector<float> v = Random(n, seed);
  for (float &x : v)
    x = std::round(x * 64.0f) / 64.0f; // k / 64, |k| <= 64
  return v;
}

// kCases and more layers of at most 8 output channels (the narrow-layer kernels).
std::vector<ConvCase> Bf16Cases()
{
  std::vector<ConvCase> cases(std::begin(kCases), std::end(kCases));
  cases.push_back({2, 16, 8, 5, 7, 19, 3, 3, 3}); // the bundled models' 16 -> 8 decoder layer
  cases.push_back({1, 8, 8, 3, 5, 30, 3, 3, 3});
  cases.push_back({2, 1, 8, 4, 6, 9, 3, 3, 3});
  cases.push_back({1, 7, 3, 1, 9, 11, 1, 3, 3});
  cases.push_back({1, 5, 16, 2, 3, 70, 3, 3, 3}); // rows packed in two chunks (64 and 6)
  return cases;
}

TEST(Bf16Conv, ValuesThatBfloat16HoldsGiveTheExactReference)
{
  for (const ConvCase &c : Bf16Cases())
  {
    const cs_conv_shape s = Shape(c);
    const size_t vox = (size_t)c.d * c.h * c.w, taps = (size_t)c.kd * c.kh * c.kw;
    const std::vector<float> in = SevenBitValues((size_t)c.b * c.ci * vox, 11);
    const std::vector<float> wt = SevenBitValues((size_t)c.co * c.ci * taps, 12);
    const std::vector<float> bias = SevenBitValues((size_t)c.co, 13);
    std::vector<float> want((size_t)c.b * c.co * vox);
    cs_conv_forward_ref(want.data(), in.data(), wt.data(), bias.data(), &s, 1);
    for (int threads : {1, 2})
    {
      std::vector<float> got(want.size(), -3.0f);
      cs_conv_forward_bf16(got.data(), in.data(), wt.data(), bias.data(), &s, threads);
      if (!cs_isa_bf16_available() || c.ci <= 2)
      {
        std::vector<float> float_path(want.size());
        cs_conv_forward_winograd(float_path.data(), in.data(), wt.data(), bias.data(), &s, threads);
        EXPECT_EQ(got, float_path) << CaseName(c) << " threads " << threads << ": not the float path";
        continue;
      }
      size_t bad = 0;
      for (size_t i = 0; i < got.size(); ++i)
        bad += got[i] != want[i];
      EXPECT_EQ(bad, 0u) << CaseName(c) << " threads " << threads;
    }
  }
}

// Any values: each product is off by at most about 2^-8 of |w| |x| (both rounded to nearest, 2^-9
// each), so each output is within 2^-7 of the sum of |w| |x| (the reference convolution of the
// magnitudes), plus the float tolerance. Where the path runs every case of more than 2 input
// channels must also differ from float (16 and 8 lanes both ran); the others must be float
// inference's convolution (cs_conv_forward_winograd), bit for bit.
TEST(Bf16Conv, AnyValuesStayWithinTheRoundingOfTheirProducts)
{
#if defined(__x86_64__) && defined(__GNUC__)
  // a CPU with AVX512_BF16 (and the AVX-512 path active) must get the path: the build has it
  if (cs_isa_active() == CS_ISA_AVX512 && __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vl"))
    EXPECT_TRUE(cs_isa_bf16_available()) << "this CPU has AVX512_BF16 but the build left the bfloat16 kernels out";
#endif
  for (const ConvCase &c : Bf16Cases())
  {
    const cs_conv_shape s = Shape(c);
    const size_t vox = (size_t)c.d * c.h * c.w, taps = (size_t)c.kd * c.kh * c.kw;
    const std::vector<float> in = Random((size_t)c.b * c.ci * vox, 21);
    const std::vector<float> wt = Random((size_t)c.co * c.ci * taps, 22);
    const std::vector<float> bias = Random((size_t)c.co, 23);
    std::vector<float> abs_in(in.size()), abs_wt(wt.size());
    std::transform(in.begin(), in.end(), abs_in.begin(), [](float x) { return std::fabs(x); });
    std::transform(wt.begin(), wt.end(), abs_wt.begin(), [](float x) { return std::fabs(x); });
    std::vector<float> want((size_t)c.b * c.co * vox), magnitude(want.size()), got(want.size());
    cs_conv_forward_ref(want.data(), in.data(), wt.data(), bias.data(), &s, 1);
    cs_conv_forward_ref(magnitude.data(), abs_in.data(), abs_wt.data(), nullptr, &s, 1);
    cs_conv_forward_bf16(got.data(), in.data(), wt.data(), bias.data(), &s, 2);
    size_t bad = 0;
    double largest_difference = 0.0;
    for (size_t i = 0; i < got.size(); ++i)
    {
      const double diff = std::fabs((double)got[i] - want[i]);
      largest_difference = std::max(largest_difference, diff);
      bad += !(diff <= magnitude[i] / 128.0 + 1e-5 * (1.0 + magnitude[i]));
    }
    EXPECT_EQ(bad, 0u) << CaseName(c);
    if (cs_isa_bf16_available() && c.ci > 2) // a first layer stays float
      EXPECT_GT(largest_difference, 1e-4) << CaseName(c) << ": the bfloat16 path did not round";
    else
    {
      std::vector<float> float_path(want.size());
      cs_conv_forward_winograd(float_path.data(), in.data(), wt.data(), bias.data(), &s, 2);
      EXPECT_EQ(got, float_path) << CaseName(c) << ": without AVX512_BF16 it is float inference's convolution";
    }
  }
}

TEST(IsaDispatch, AutoPicksAnAvailablePath)
{
  ASSERT_EQ(cs_isa_force(CS_ISA_AUTO), 0);
  const cs_isa active = cs_isa_active();
  EXPECT_NE(active, CS_ISA_AUTO);
  EXPECT_TRUE(cs_isa_available(active));
  EXPECT_TRUE(cs_isa_available(CS_ISA_PORTABLE));
}

TEST(IsaDispatch, ForcingAnUnavailablePathIsRefused)
{
  for (cs_isa isa : {CS_ISA_AVX2, CS_ISA_AVX512})
  {
    if (cs_isa_available(isa))
      continue;
    const cs_isa before = cs_isa_active();
    EXPECT_EQ(cs_isa_force(isa), -1);
    EXPECT_EQ(cs_isa_active(), before);
  }
}

} // namespace
