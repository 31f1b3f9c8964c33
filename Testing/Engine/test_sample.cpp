// Patch sampling: sizes, foreground bias, padding, flips, zoom and rotation, gamma, channel dropout, intensity
// augmentation, determinism.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "comboseg/comboseg.h"

namespace
{

// A volume whose first channel encodes each voxel's coordinates (x + 1000 y + 1e6 z), so any
// patch voxel tells where it came from; other channels add 0.5 * channel.
struct Volume
{
  int64_t size[3];
  int32_t channels;
  std::vector<float> image;
  std::vector<int32_t> labels;

  Volume(int64_t nx, int64_t ny, int64_t nz, int32_t c) : size{nx, ny, nz}, channels(c)
  {
    const int64_t n = nx * ny * nz;
    image.resize(static_cast<size_t>(c * n));
    labels.assign(static_cast<size_t>(n), 0);
    for (int32_t ch = 0; ch < c; ++ch)
      for (int64_t z = 0; z < nz; ++z)
        for (int64_t y = 0; y < ny; ++y)
          for (int64_t x = 0; x < nx; ++x)
            image[ch * n + (z * ny + y) * nx + x] = static_cast<float>(x + 1000 * y + 1000000 * z) +
                                                    0.5f * static_cast<float>(ch);
  }
  int64_t Voxels() const { return size[0] * size[1] * size[2]; }
  int32_t &Label(int64_t x, int64_t y, int64_t z) { return labels[(z * size[1] + y) * size[0] + x]; }
};

cs_sampling_options Plain()
{
  cs_sampling_options o = cs_sampling_options_default();
  o.foreground_fraction = 0.0f;
  o.flip_axes = 0;
  o.intensity_scale = 0.0f;
  o.intensity_shift = 0.0f;
  o.noise_std = 0.0f;
  return o;
}

class Sample : public ::testing::Test
{
protected:
  void SetUp() override
  {
    ASSERT_EQ(cs_context_init(&ctx_), CS_OK);
    cs_rng_seed(&rng_, 1234);
  }
  void TearDown() override { cs_context_free(ctx_); }

  cs_status Cut(Volume &v, int32_t k, const int32_t patch[3], const cs_sampling_options &o, std::vector<float> &img,
                std::vector<int32_t> &lab)
  {
    const size_t pn = static_cast<size_t>(patch[0]) * patch[1] * patch[2];
    img.assign(pn * v.channels, -12345.0f);
    lab.assign(pn, -1);
    return cs_sample_patch(ctx_, &rng_, v.image.data(), v.labels.data(), v.channels, v.size, k, patch, &o, img.data(),
                           lab.data());
  }

  cs_context_t ctx_ = nullptr;
  cs_rng rng_;
};

TEST(SamplingOptions, Defaults)
{
  cs_sampling_options o = cs_sampling_options_default();
  EXPECT_FLOAT_EQ(o.foreground_fraction, 0.33f);
  EXPECT_EQ(o.flip_axes, 0);
  EXPECT_FLOAT_EQ(o.intensity_scale, 0.1f);
  EXPECT_FLOAT_EQ(o.intensity_shift, 0.1f);
  EXPECT_EQ(o.noise_std, 0.0f);
  for (float degrees : o.rotation)
    EXPECT_EQ(degrees, 0.0f);
  EXPECT_EQ(o.mirror_classes, nullptr);
}

// Without augmentation a patch is an exact block of the volume, channel by channel.
TEST_F(Sample, PatchIsAContiguousBlockOfTheVolume)
{
  Volume v(20, 17, 9, 2);
  for (int64_t z = 0; z < 9; ++z)
    for (int64_t y = 0; y < 17; ++y)
      for (int64_t x = 0; x < 20; ++x)
        v.Label(x, y, z) = static_cast<int32_t>((x + 2 * y + 3 * z) % 4);
  const int32_t patches[][3] = {{8, 8, 4}, {20, 17, 9}, {1, 1, 1}, {16, 4, 8}, {3, 17, 2}};
  std::vector<float> img;
  std::vector<int32_t> lab;
  for (const auto &p : patches)
  {
    for (int rep = 0; rep < 20; ++rep)
    {
      ASSERT_EQ(Cut(v, 4, p, Plain(), img, lab), CS_OK) << cs_context_last_error(ctx_);
      const int64_t pn = static_cast<int64_t>(p[0]) * p[1] * p[2];
      const int64_t x0 = static_cast<int64_t>(img[0]) % 1000, y0 = static_cast<int64_t>(img[0]) / 1000 % 1000,
                    z0 = static_cast<int64_t>(img[0]) / 1000000;
      ASSERT_LE(x0 + p[0], 20);
      ASSERT_LE(y0 + p[1], 17);
      ASSERT_LE(z0 + p[2], 9);
      for (int64_t z = 0; z < p[2]; ++z)
        for (int64_t y = 0; y < p[1]; ++y)
          for (int64_t x = 0; x < p[0]; ++x)
          {
            const int64_t d = (z * p[1] + y) * p[0] + x;
            const float want = static_cast<float>((x0 + x) + 1000 * (y0 + y) + 1000000 * (z0 + z));
            ASSERT_EQ(img[d], want);
            ASSERT_EQ(img[pn + d], want + 0.5f);
            ASSERT_EQ(lab[d], v.Label(x0 + x, y0 + y, z0 + z));
          }
    }
  }
}

TEST_F(Sample, UniformPositionsCoverEveryStart)
{
  Volume v(10, 6, 1, 1);
  const int32_t p[3] = {4, 4, 1};
  std::vector<float> img;
  std::vector<int32_t> lab;
  std::vector<int> seen(7 * 3, 0);
  for (int i = 0; i < 2000; ++i)
  {
    ASSERT_EQ(Cut(v, 2, p, Plain(), img, lab), CS_OK);
    const int x0 = static_cast<int>(img[0]) % 1000, y0 = static_cast<int>(img[0]) / 1000;
    ASSERT_LE(x0, 6);
    ASSERT_LE(y0, 2);
    seen[y0 * 7 + x0]++;
  }
  for (int s : seen)
    EXPECT_NEAR(s, 2000.0 / 21, 5 * std::sqrt(2000.0 / 21)); // uniform
}

TEST_F(Sample, ForegroundFractionOneAlwaysHitsForeground)
{
  Volume v(48, 40, 32, 1);
  // a tiny organ (class 2) in a corner and a larger one (class 1) elsewhere
  for (int64_t z = 0; z < 2; ++z)
    for (int64_t y = 0; y < 2; ++y)
      for (int64_t x = 0; x < 2; ++x)
        v.Label(45 + x, 1 + y, 30 + z) = 2;
  for (int64_t z = 10; z < 20; ++z)
    for (int64_t y = 10; y < 20; ++y)
      for (int64_t x = 5; x < 15; ++x)
        v.Label(x, y, z) = 1;
  cs_sampling_options o = Plain();
  o.foreground_fraction = 1.0f;
  const int32_t p[3] = {8, 8, 8};
  std::vector<float> img;
  std::vector<int32_t> lab;
  int with_small = 0;
  const int trials = 600;
  for (int i = 0; i < trials; ++i)
  {
    ASSERT_EQ(Cut(v, 3, p, o, img, lab), CS_OK);
    bool any = false, small = false;
    for (int32_t l : lab)
    {
      any |= l > 0;
      small |= l == 2;
    }
    ASSERT_TRUE(any) << "patch " << i << " has no foreground";
    with_small += small;
  }
  // each present class is picked with probability 1/2, whatever its size
  EXPECT_NEAR(with_small, trials / 2, 4 * std::sqrt(trials * 0.25));
}

// A tiny organ far from the centre appears in about f + (1 - f) * P(uniform patch hits it).
TEST_F(Sample, ForegroundFractionGivesTheExpectedShare)
{
  const int64_t n[3] = {40, 36, 28};
  Volume v(n[0], n[1], n[2], 1);
  const int64_t organ_lo[3] = {1, 30, 24}, organ_hi[3] = {3, 33, 26}; // [lo, hi)
  for (int64_t z = organ_lo[2]; z < organ_hi[2]; ++z)
    for (int64_t y = organ_lo[1]; y < organ_hi[1]; ++y)
      for (int64_t x = organ_lo[0]; x < organ_hi[0]; ++x)
        v.Label(x, y, z) = 1;
  const int32_t p[3] = {12, 8, 8};
  double p_uniform = 1.0;
  for (int a = 0; a < 3; ++a)
  {
    int hits = 0;
    for (int64_t s = 0; s <= n[a] - p[a]; ++s)
      hits += s < organ_hi[a] && s + p[a] > organ_lo[a];
    p_uniform *= static_cast<double>(hits) / static_cast<double>(n[a] - p[a] + 1);
  }
  std::vector<float> img;
  std::vector<int32_t> lab;
  for (float f : {0.0f, 0.33f, 0.8f})
  {
    cs_sampling_options o = Plain();
    o.foreground_fraction = f;
    const int trials = 1500;
    int hits = 0;
    for (int i = 0; i < trials; ++i)
    {
      ASSERT_EQ(Cut(v, 2, p, o, img, lab), CS_OK);
      bool hit = false;
      for (int32_t l : lab)
        hit |= l == 1;
      hits += hit;
    }
    const double expected = f + (1.0 - f) * p_uniform;
    const double sigma = std::sqrt(trials * expected * (1.0 - expected));
    EXPECT_NEAR(hits, trials * expected, 4 * sigma + 1) << "fraction " << f << ", p_uniform " << p_uniform;
  }
}

TEST_F(Sample, ForegroundFractionWithoutForegroundFallsBackToUniform)
{
  Volume v(16, 16, 16, 1);
  cs_sampling_options o = Plain();
  o.foreground_fraction = 1.0f;
  const int32_t p[3] = {8, 8, 8};
  std::vector<float> img;
  std::vector<int32_t> lab;
  EXPECT_EQ(Cut(v, 4, p, o, img, lab), CS_OK) << cs_context_last_error(ctx_);
  for (int32_t l : lab)
    EXPECT_EQ(l, 0);
}

TEST_F(Sample, SmallVolumesArePaddedWithTheChannelMinimumAndBackground)
{
  Volume v(5, 3, 2, 2);
  for (int64_t i = 0; i < v.Voxels(); ++i)
    v.labels[i] = 1 + static_cast<int32_t>(i % 2);
  v.image[7] = -40.0f;             // minimum of channel 0
  v.image[v.Voxels() + 3] = -7.5f; // minimum of channel 1
  const int32_t p[3] = {8, 8, 4};
  const int64_t pn = 8 * 8 * 4;
  std::vector<float> img;
  std::vector<int32_t> lab;
  for (float f : {0.0f, 1.0f})
  {
    cs_sampling_options o = Plain();
    o.foreground_fraction = f;
    for (int rep = 0; rep < 30; ++rep)
    {
      ASSERT_EQ(Cut(v, 3, p, o, img, lab), CS_OK) << cs_context_last_error(ctx_);
      int64_t inside = 0, label_sum = 0;
      for (int64_t d = 0; d < pn; ++d)
      {
        if (lab[d] == 0)
        {
          EXPECT_EQ(img[d], -40.0f);
          EXPECT_EQ(img[pn + d], -7.5f);
        }
        else
        {
          ++inside;
          label_sum += lab[d];
        }
      }
      // the whole volume lies inside the patch
      EXPECT_EQ(inside, v.Voxels());
      int64_t want = 0;
      for (int32_t l : v.labels)
        want += l;
      EXPECT_EQ(label_sum, want);
    }
  }
  // one axis smaller, the others larger than the patch
  Volume w(30, 2, 12, 1);
  std::fill(w.labels.begin(), w.labels.end(), 1);
  const int32_t q[3] = {8, 4, 8};
  for (int rep = 0; rep < 10; ++rep)
  {
    ASSERT_EQ(Cut(w, 2, q, Plain(), img, lab), CS_OK);
    int rows_inside = 0;
    for (int64_t y = 0; y < 4; ++y)
      rows_inside += lab[y * 8] == 1;
    EXPECT_EQ(rows_inside, 2);
    int64_t ones = 0;
    for (int32_t l : lab)
      ones += l;
    EXPECT_EQ(ones, 8 * 2 * 8);
  }
}

TEST_F(Sample, FlipsKeepImageAndLabelsAligned)
{
  Volume v(24, 20, 16, 2);
  for (int64_t z = 0; z < 16; ++z)
    for (int64_t y = 0; y < 20; ++y)
      for (int64_t x = 0; x < 24; ++x)
        v.Label(x, y, z) = static_cast<int32_t>((x + 3 * y + 7 * z) % 5);
  cs_sampling_options o = Plain();
  o.flip_axes = 1 | 2 | 4;
  const int32_t p[3] = {8, 6, 4};
  std::vector<float> img;
  std::vector<int32_t> lab;
  int flipped[3] = {0, 0, 0};
  const int trials = 400;
  for (int i = 0; i < trials; ++i)
  {
    ASSERT_EQ(Cut(v, 5, p, o, img, lab), CS_OK);
    const int64_t pn = 8 * 6 * 4;
    for (int64_t d = 0; d < pn; ++d)
    {
      const int64_t code = static_cast<int64_t>(img[d]);
      const int64_t x = code % 1000, y = code / 1000 % 1000, z = code / 1000000;
      ASSERT_EQ(lab[d], v.Label(x, y, z)) << "label and image disagree at " << d;
      ASSERT_EQ(img[pn + d], img[d] + 0.5f);
    }
    // neighbours along each axis: decreasing coordinates mean a flip
    flipped[0] += img[1] < img[0];
    flipped[1] += img[8] < img[0];
    flipped[2] += img[48] < img[0];
  }
  for (int a = 0; a < 3; ++a)
    EXPECT_NEAR(flipped[a], trials / 2, 4 * std::sqrt(trials * 0.25)) << "axis " << a;

  // only the axes in the mask are flipped
  o.flip_axes = 2;
  for (int i = 0; i < 50; ++i)
  {
    ASSERT_EQ(Cut(v, 5, p, o, img, lab), CS_OK);
    EXPECT_GT(img[1], img[0]);
    EXPECT_GT(img[48], img[0]);
  }
}

// A patch flipped along x swaps left and right classes (mirror_classes), so that the class of
// each voxel stays the side it lies on: 1 left of the middle, 2 right of it, 3 on both.
TEST_F(Sample, FlipsAlongXSwapLeftAndRightClasses)
{
  Volume v(24, 12, 8, 1);
  for (int64_t z = 0; z < 8; ++z)
    for (int64_t y = 0; y < 12; ++y)
      for (int64_t x = 0; x < 24; ++x)
        v.Label(x, y, z) = y < 4 ? 3 : x < 12 ? 1 : 2;
  const int32_t partners[4] = {0, 2, 1, 3};
  cs_sampling_options o = Plain();
  o.flip_axes = 1 | 4;
  o.mirror_classes = partners;
  const int32_t p[3] = {10, 12, 4};
  std::vector<float> img;
  std::vector<int32_t> lab;
  int flips = 0;
  for (int trial = 0; trial < 100; ++trial)
  {
    ASSERT_EQ(Cut(v, 4, p, o, img, lab), CS_OK);
    const bool flipped = img[1] < img[0];
    flips += flipped;
    for (int64_t d = 0; d < 10 * 12 * 4; ++d)
    {
      const int64_t code = static_cast<int64_t>(img[d]);
      const int32_t source = v.Label(code % 1000, code / 1000 % 1000, code / 1000000);
      ASSERT_EQ(lab[d], flipped ? partners[source] : source) << "trial " << trial << ", voxel " << d;
    }
  }
  EXPECT_GT(flips, 20);
  EXPECT_LT(flips, 80);
  const int32_t bad[4] = {0, 2, 4, 3};
  o.mirror_classes = bad;
  EXPECT_EQ(Cut(v, 4, p, o, img, lab), CS_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::strstr(cs_context_last_error(ctx_), "mirror_classes[2]"), nullptr);
}

TEST_F(Sample, IntensityAugmentationIsAnAffineMapPerChannelPlusNoise)
{
  Volume v(16, 16, 8, 3);
  for (float &x : v.image)
    x = std::fmod(x, 97.0f) * 0.1f; // modest, varied intensities
  const int32_t p[3] = {16, 16, 8}; // whole volume: no position change
  const int64_t pn = 16 * 16 * 8;
  cs_sampling_options o = Plain();
  o.intensity_scale = 0.2f;
  o.intensity_shift = 0.3f;
  std::vector<float> img;
  std::vector<int32_t> lab;
  bool scales_differ = false;
  for (int rep = 0; rep < 20; ++rep)
  {
    ASSERT_EQ(Cut(v, 2, p, o, img, lab), CS_OK);
    float prev_scale = 0;
    for (int c = 0; c < 3; ++c)
    {
      const float *src = v.image.data() + c * pn, *dst = img.data() + c * pn;
      // fit from two voxels of different intensity, then check every voxel
      int64_t j = 1;
      while (src[j] == src[0])
        ++j;
      const float scale = (dst[j] - dst[0]) / (src[j] - src[0]);
      const float shift = dst[0] - scale * src[0];
      EXPECT_GE(scale, 0.8f - 1e-4f);
      EXPECT_LE(scale, 1.2f + 1e-4f);
      EXPECT_GE(shift, -0.3f - 1e-3f);
      EXPECT_LE(shift, 0.3f + 1e-3f);
      for (int64_t i = 0; i < pn; ++i)
        ASSERT_NEAR(dst[i], scale * src[i] + shift, 1e-3f);
      if (c > 0 && std::fabs(scale - prev_scale) > 1e-4f)
        scales_differ = true;
      prev_scale = scale;
    }
  }
  EXPECT_TRUE(scales_differ) << "each channel draws its own scale";

  o = Plain();
  o.noise_std = 0.5f;
  ASSERT_EQ(Cut(v, 2, p, o, img, lab), CS_OK);
  double sum = 0, sum2 = 0;
  for (int64_t i = 0; i < 3 * pn; ++i)
  {
    const double e = img[i] - v.image[i];
    sum += e;
    sum2 += e * e;
  }
  const double mean = sum / (3 * pn), sd = std::sqrt(sum2 / (3 * pn) - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.02);
  EXPECT_NEAR(sd, 0.5, 0.02);
}

// Zoom: channels hold the x, y and z coordinates, so each patch voxel tells which point it was
// interpolated at: points evenly spaced by one factor in [1 - zoom, 1 + zoom] on every axis,
// around the region's centre, and the nearest voxel's label.
TEST_F(Sample, ZoomResamplesAroundTheCentreWithTheNearestLabel)
{
  const int64_t n = 48;
  Volume v(n, n, n, 3);
  for (int64_t z = 0; z < n; ++z)
    for (int64_t y = 0; y < n; ++y)
      for (int64_t x = 0; x < n; ++x)
      {
        const int64_t i = (z * n + y) * n + x;
        v.image[i] = static_cast<float>(x);
        v.image[n * n * n + i] = static_cast<float>(y);
        v.image[2 * n * n * n + i] = static_cast<float>(z);
        v.labels[i] = x >= 21 && x <= 26 && y >= 22 && y <= 25 && z >= 20 && z <= 27 ? 1 : 0;
      }
  const int32_t p[3] = {10, 12, 8};
  cs_sampling_options o = Plain();
  o.foreground_fraction = 1.0f; // centred on the block in the middle: the region stays inside
  o.zoom = 0.3f;
  std::vector<float> img;
  std::vector<int32_t> lab;
  const int64_t pn = p[0] * p[1] * p[2];
  double smallest = 2.0, largest = 0.0;
  int labelled = 0;
  for (int trial = 0; trial < 30; ++trial)
  {
    ASSERT_EQ(Cut(v, 2, p, o, img, lab), CS_OK);
    const double spacing = img[1] - img[0]; // along x
    EXPECT_GE(spacing, 0.7 - 1e-5);
    EXPECT_LE(spacing, 1.3 + 1e-5);
    smallest = std::min(smallest, spacing);
    largest = std::max(largest, spacing);
    const int64_t strides[3] = {1, p[0], p[0] * p[1]};
    for (int axis = 0; axis < 3; ++axis)
    {
      const float *ch = img.data() + axis * pn;
      // evenly spaced along this axis, constant across the others
      for (int64_t i = 0; i + strides[axis] < pn; ++i)
      {
        const int64_t pos = i / strides[axis] % p[axis];
        if (pos + 1 < p[axis])
          ASSERT_NEAR(ch[i + strides[axis]] - ch[i], spacing, 1e-4);
      }
      double mean = 0.0;
      for (int64_t i = 0; i < pn; ++i)
        mean += ch[i];
      mean /= static_cast<double>(pn);
      // the region's centre is the plain patch's centre: a half-integer for even sizes
      EXPECT_NEAR(mean - std::floor(mean), 0.5, 1e-3) << "axis " << axis;
    }
    for (int64_t i = 0; i < pn; ++i)
    {
      const double f[3] = {img[i], img[pn + i], img[2 * pn + i]};
      bool ambiguous = false;
      int64_t r[3];
      for (int a = 0; a < 3; ++a)
      {
        ambiguous |= std::fabs(f[a] - std::floor(f[a]) - 0.5) < 1e-3;
        r[a] = static_cast<int64_t>(std::floor(f[a] + 0.5));
      }
      if (ambiguous)
        continue;
      ASSERT_EQ(lab[i], v.Label(r[0], r[1], r[2])) << "patch voxel " << i;
      labelled += lab[i];
    }
  }
  EXPECT_GT(labelled, 0);
  EXPECT_LT(smallest, 0.9); // the factor varies over the range
  EXPECT_GT(largest, 1.1);
}

// A 48^3 volume whose three channels are the x, y and z coordinates, labelled with an
// off-centre ellipsoid (1) next to a box (2), and patches centred on them.
struct CoordinateVolume : Volume
{
  CoordinateVolume() : Volume(48, 48, 48, 3)
  {
    const int64_t n = 48, nn = n * n * n;
    for (int64_t z = 0; z < n; ++z)
      for (int64_t y = 0; y < n; ++y)
        for (int64_t x = 0; x < n; ++x)
        {
          const int64_t i = (z * n + y) * n + x;
          image[i] = static_cast<float>(x);
          image[nn + i] = static_cast<float>(y);
          image[2 * nn + i] = static_cast<float>(z);
          labels[i] = Region(static_cast<double>(x), static_cast<double>(y), static_cast<double>(z));
        }
  }
  static int32_t Region(double x, double y, double z)
  {
    const double ex = (x - 27) / 6.5, ey = (y - 21) / 3.5, ez = (z - 24) / 5.5;
    if (ex * ex + ey * ey + ez * ez <= 1.0)
      return 1;
    return x >= 18 && x <= 22 && y >= 24 && y <= 29 && z >= 20 && z <= 28 ? 2 : 0;
  }
};

// The source coordinates of patch voxel i (the three channels) and its nearest volume voxel;
// false when a coordinate lies half-way between two voxels (either label is right).
bool NearestSource(const std::vector<float> &img, int64_t pn, int64_t i, int64_t r[3])
{
  for (int a = 0; a < 3; ++a)
  {
    const double f = img[a * pn + i];
    if (std::fabs(f - std::floor(f) - 0.5) < 1e-3)
      return false;
    r[a] = static_cast<int64_t>(std::floor(f + 0.5));
  }
  return true;
}

// The patch's map from patch offsets to volume coordinates: column j is the step of the source
// coordinates along patch axis j (exact, as the channels are linear and trilinear keeps them).
void PatchTransform(const std::vector<float> &img, const int32_t p[3], double m[3][3])
{
  const int64_t pn = static_cast<int64_t>(p[0]) * p[1] * p[2];
  const int64_t strides[3] = {1, p[0], static_cast<int64_t>(p[0]) * p[1]};
  for (int a = 0; a < 3; ++a)
    for (int j = 0; j < 3; ++j)
      m[a][j] = img[a * pn + strides[j]] - img[a * pn];
}

// Rotated and scaled patches keep every label on its region: the label of each patch voxel is
// the region of the volume point its image values come from.
TEST_F(Sample, RotationAndZoomKeepLabelsOnTheirRegion)
{
  CoordinateVolume v;
  const int32_t p[3] = {12, 12, 12};
  const int64_t pn = 12 * 12 * 12;
  cs_sampling_options o = Plain();
  o.foreground_fraction = 1.0f; // centred on a structure: the rotated region stays inside
  o.zoom = 0.2f;
  o.rotation[0] = 30.0f;
  o.rotation[1] = 20.0f;
  o.rotation[2] = 45.0f;
  std::vector<float> img;
  std::vector<int32_t> lab;
  int64_t counted[3] = {0, 0, 0};
  for (int trial = 0; trial < 40; ++trial)
  {
    ASSERT_EQ(Cut(v, 3, p, o, img, lab), CS_OK);
    for (int64_t i = 0; i < pn; ++i)
    {
      int64_t r[3];
      if (!NearestSource(img, pn, i, r))
        continue;
      ASSERT_EQ(lab[i], v.Label(r[0], r[1], r[2])) << "trial " << trial << ", patch voxel " << i;
      counted[lab[i]]++;
    }
  }
  EXPECT_GT(counted[1], 1000);
  EXPECT_GT(counted[2], 1000);
}

// The patch's transform is zoom times a rotation whose angles about x, y and z stay within
// their bounds and use them; an axis whose bound is 0 is not rotated about.
TEST_F(Sample, RotationAnglesStayWithinTheirBounds)
{
  CoordinateVolume v;
  const int32_t p[3] = {8, 8, 8};
  const double bounds[][3] = {{30, 20, 45}, {0, 0, 90}, {10, 0, 0}};
  const double pi = 3.14159265358979323846;
  std::vector<float> img;
  std::vector<int32_t> lab;
  for (const auto &bound : bounds)
  {
    cs_sampling_options o = Plain();
    o.foreground_fraction = 1.0f;
    o.zoom = 0.1f;
    for (int a = 0; a < 3; ++a)
      o.rotation[a] = static_cast<float>(bound[a]);
    double largest[3] = {0, 0, 0};
    for (int trial = 0; trial < 200; ++trial)
    {
      ASSERT_EQ(Cut(v, 3, p, o, img, lab), CS_OK);
      double m[3][3];
      PatchTransform(img, p, m);
      const double zoom = std::sqrt(m[0][0] * m[0][0] + m[1][0] * m[1][0] + m[2][0] * m[2][0]);
      ASSERT_GE(zoom, 0.9 - 1e-4);
      ASSERT_LE(zoom, 1.1 + 1e-4);
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
        {
          const double dot = (m[0][i] * m[0][j] + m[1][i] * m[1][j] + m[2][i] * m[2][j]) / (zoom * zoom);
          ASSERT_NEAR(dot, i == j ? 1.0 : 0.0, 1e-4) << "not a scaled rotation";
        }
      // R = Rz(c) Ry(b) Rx(a)
      const double angle[3] = {std::atan2(m[2][1], m[2][2]) * 180 / pi, std::asin(-m[2][0] / zoom) * 180 / pi,
                               std::atan2(m[1][0], m[0][0]) * 180 / pi};
      for (int a = 0; a < 3; ++a)
      {
        ASSERT_LE(std::fabs(angle[a]), bound[a] + 1e-2) << "axis " << a;
        largest[a] = std::max(largest[a], std::fabs(angle[a]));
      }
    }
    for (int a = 0; a < 3; ++a)
      EXPECT_GE(largest[a], 0.9 * bound[a]) << "axis " << a << " does not use its range";
  }
}

// 2D patches turn in their plane only: rotations about x and y are ignored.
TEST_F(Sample, TwoDimensionalPatchesRotateInTheirPlane)
{
  CoordinateVolume v;
  const int32_t p[3] = {10, 10, 1};
  cs_sampling_options o = Plain();
  o.foreground_fraction = 1.0f;
  o.rotation[0] = o.rotation[1] = o.rotation[2] = 40.0f;
  std::vector<float> img;
  std::vector<int32_t> lab;
  double largest = 0.0;
  for (int trial = 0; trial < 50; ++trial)
  {
    ASSERT_EQ(Cut(v, 3, p, o, img, lab), CS_OK);
    const float z = img[2 * 100];
    for (int64_t i = 0; i < 100; ++i)
      ASSERT_EQ(img[2 * 100 + i], z) << "left its plane";
    const double dx = img[1] - img[0], dy = img[100 + 1] - img[100];
    largest = std::max(largest, std::fabs(std::atan2(dy, dx)));
  }
  EXPECT_GT(largest * 180 / 3.14159265358979323846, 30.0);
  EXPECT_LE(largest * 180 / 3.14159265358979323846, 40.0 + 1e-2);
}

// Gamma keeps each channel's range and the order of its values and is a power law in between.
TEST_F(Sample, GammaReshapesContrastWithinThePatchRange)
{
  Volume v(20, 20, 20, 2);
  uint64_t state = 99;
  for (float &x : v.image)
  {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    x = static_cast<float>(state >> 40) / static_cast<float>(1 << 24) * 4.0f - 1.0f;
  }
  const int32_t p[3] = {8, 8, 8};
  const int64_t pn = 512;
  cs_sampling_options o = Plain();
  std::vector<float> plain, img;
  std::vector<int32_t> lab;
  for (int trial = 0; trial < 10; ++trial)
  {
    cs_rng saved = rng_;
    o.gamma = 0.0f;
    ASSERT_EQ(Cut(v, 2, p, o, plain, lab), CS_OK);
    rng_ = saved;   // the same position: gamma draws after the cut
    o.gamma = 1.0f; // g in [1/2, 2]
    ASSERT_EQ(Cut(v, 2, p, o, img, lab), CS_OK);
    for (int32_t c = 0; c < 2; ++c)
    {
      const float *a = plain.data() + c * pn, *b = img.data() + c * pn;
      const float lo = *std::min_element(a, a + pn), hi = *std::max_element(a, a + pn);
      EXPECT_NEAR(*std::min_element(b, b + pn), lo, 1e-5);
      EXPECT_NEAR(*std::max_element(b, b + pn), hi, 1e-5);
      double g = 0.0;
      for (int64_t i = 0; i < pn; ++i)
      {
        const double t = (a[i] - lo) / (hi - lo), u = (b[i] - lo) / (hi - lo);
        if (t < 0.05 || t > 0.95)
          continue;
        const double gi = std::log(u) / std::log(t);
        if (g == 0.0)
          g = gi;
        ASSERT_NEAR(gi, g, 1e-3 * g) << "not one power law, voxel " << i;
        for (int64_t j = 0; j < pn; j += 37)
          if (a[j] < a[i])
            ASSERT_LE(b[j], b[i]) << "order changed";
      }
      EXPECT_GE(g, 0.5 - 1e-3);
      EXPECT_LE(g, 2.0 + 1e-3);
      EXPECT_GT(std::fabs(g - 1.0), 1e-3);
    }
  }
}

// Channel dropout blanks one whole channel of some patches and leaves the rest as they were.
TEST_F(Sample, ChannelDropoutBlanksOneChannelOfTheGivenShare)
{
  Volume v(20, 20, 20, 2);
  const int32_t p[3] = {8, 8, 8};
  const int64_t pn = 512;
  cs_sampling_options o = Plain();
  std::vector<float> plain, img;
  std::vector<int32_t> lab;
  int blanked[2] = {0, 0}, trials = 400;
  for (int trial = 0; trial < trials; ++trial)
  {
    cs_rng saved = rng_;
    o.channel_dropout = 0.0f;
    ASSERT_EQ(Cut(v, 2, p, o, plain, lab), CS_OK);
    rng_ = saved; // the same position: the dropout draws last
    o.channel_dropout = 0.5f;
    ASSERT_EQ(Cut(v, 2, p, o, img, lab), CS_OK);
    int zero_channels = 0;
    for (int32_t c = 0; c < 2; ++c)
    {
      const float *a = plain.data() + c * pn, *b = img.data() + c * pn;
      const bool zero = std::all_of(b, b + pn, [](float x) { return x == 0.0f; });
      if (zero)
        ++blanked[c];
      else
        ASSERT_EQ(std::memcmp(a, b, pn * sizeof(float)), 0) << "a kept channel changed";
      zero_channels += zero;
    }
    ASSERT_LE(zero_channels, 1);
  }
  EXPECT_NEAR(blanked[0] + blanked[1], trials / 2, trials / 8); // share 0.5
  EXPECT_GT(blanked[0], trials / 8);                            // both channels are drawn
  EXPECT_GT(blanked[1], trials / 8);

  Volume single(20, 20, 20, 1); // one channel is never blanked
  o.channel_dropout = 1.0f;
  for (int trial = 0; trial < 20; ++trial)
  {
    ASSERT_EQ(Cut(single, 2, p, o, img, lab), CS_OK);
    EXPECT_FALSE(std::all_of(img.begin(), img.end(), [](float x) { return x == 0.0f; }));
  }
}

TEST_F(Sample, SameGeneratorStateGivesTheSamePatch)
{
  Volume v(32, 24, 20, 2);
  for (int64_t z = 4; z < 9; ++z)
    for (int64_t y = 3; y < 6; ++y)
      v.Label(20, y, z) = 1 + static_cast<int32_t>(z % 2);
  cs_sampling_options o = cs_sampling_options_default();
  o.flip_axes = 7;
  o.noise_std = 0.1f;
  o.foreground_fraction = 0.5f;
  o.zoom = 0.2f;
  o.rotation[0] = o.rotation[1] = o.rotation[2] = 25.0f;
  const int32_t p[3] = {16, 16, 8};
  std::vector<float> a, b;
  std::vector<int32_t> la, lb;
  for (int i = 0; i < 10; ++i)
  {
    cs_rng_seed(&rng_, 77 + i);
    ASSERT_EQ(Cut(v, 3, p, o, a, la), CS_OK);
    cs_rng after_a = rng_;
    cs_rng_seed(&rng_, 77 + i);
    ASSERT_EQ(Cut(v, 3, p, o, b, lb), CS_OK);
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
    EXPECT_EQ(la, lb);
    EXPECT_EQ(std::memcmp(&after_a, &rng_, sizeof rng_), 0);
  }
  cs_rng_seed(&rng_, 1);
  ASSERT_EQ(Cut(v, 3, p, o, a, la), CS_OK);
  cs_rng_seed(&rng_, 2);
  ASSERT_EQ(Cut(v, 3, p, o, b, lb), CS_OK);
  EXPECT_NE(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
}

TEST_F(Sample, TwoDimensionalVolumes)
{
  Volume v(30, 25, 1, 1);
  v.Label(29, 24, 0) = 1;
  cs_sampling_options o = Plain();
  o.foreground_fraction = 1.0f;
  o.flip_axes = 7;
  const int32_t p[3] = {16, 16, 1};
  std::vector<float> img;
  std::vector<int32_t> lab;
  for (int i = 0; i < 20; ++i)
  {
    ASSERT_EQ(Cut(v, 2, p, o, img, lab), CS_OK);
    int hits = 0;
    for (int32_t l : lab)
      hits += l == 1;
    EXPECT_EQ(hits, 1);
  }
}

TEST_F(Sample, RejectsBadArguments)
{
  Volume v(8, 8, 8, 1);
  const int32_t p[3] = {4, 4, 4};
  std::vector<float> img;
  std::vector<int32_t> lab;
  v.Label(3, 3, 3) = 5;
  cs_sampling_options o = Plain();
  o.foreground_fraction = 1.0f;
  EXPECT_EQ(Cut(v, 3, p, o, img, lab), CS_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::strstr(cs_context_last_error(ctx_), "label 5"), nullptr) << cs_context_last_error(ctx_);
  o.foreground_fraction = 0.0f;
  const int32_t whole[3] = {8, 8, 8};
  EXPECT_EQ(Cut(v, 3, whole, o, img, lab), CS_ERR_INVALID_ARGUMENT);
  v.Label(3, 3, 3) = 0;

  cs_sampling_options bad = Plain();
  bad.foreground_fraction = 1.5f;
  EXPECT_EQ(Cut(v, 3, p, bad, img, lab), CS_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::strstr(cs_context_last_error(ctx_), "foreground_fraction"), nullptr);
  bad = Plain();
  bad.flip_axes = 8;
  EXPECT_EQ(Cut(v, 3, p, bad, img, lab), CS_ERR_INVALID_ARGUMENT);
  bad = Plain();
  bad.noise_std = NAN;
  EXPECT_EQ(Cut(v, 3, p, bad, img, lab), CS_ERR_INVALID_ARGUMENT);
  bad = Plain();
  bad.intensity_scale = -0.1f;
  EXPECT_EQ(Cut(v, 3, p, bad, img, lab), CS_ERR_INVALID_ARGUMENT);
  for (float degrees : {-1.0f, 181.0f, NAN})
  {
    bad = Plain();
    bad.rotation[1] = degrees;
    EXPECT_EQ(Cut(v, 3, p, bad, img, lab), CS_ERR_INVALID_ARGUMENT) << degrees;
    EXPECT_NE(std::strstr(cs_context_last_error(ctx_), "rotation[1]"), nullptr);
  }
  for (float zoom : {-0.1f, 1.0f, NAN})
  {
    bad = Plain();
    bad.zoom = zoom;
    EXPECT_EQ(Cut(v, 3, p, bad, img, lab), CS_ERR_INVALID_ARGUMENT) << zoom;
    EXPECT_NE(std::strstr(cs_context_last_error(ctx_), "zoom"), nullptr);
  }
  for (float gamma : {-1.0f, 11.0f, NAN})
  {
    bad = Plain();
    bad.gamma = gamma;
    EXPECT_EQ(Cut(v, 3, p, bad, img, lab), CS_ERR_INVALID_ARGUMENT) << gamma;
    EXPECT_NE(std::strstr(cs_context_last_error(ctx_), "gamma"), nullptr);
  }
  for (float share : {-0.1f, 1.5f, NAN})
  {
    bad = Plain();
    bad.channel_dropout = share;
    EXPECT_EQ(Cut(v, 3, p, bad, img, lab), CS_ERR_INVALID_ARGUMENT) << share;
    EXPECT_NE(std::strstr(cs_context_last_error(ctx_), "channel_dropout"), nullptr);
  }
  const int32_t zero[3] = {4, 0, 4};
  std::vector<float> out(64);
  std::vector<int32_t> lout(64);
  EXPECT_EQ(
      cs_sample_patch(ctx_, &rng_, v.image.data(), v.labels.data(), 1, v.size, 3, zero, &o, out.data(), lout.data()),
      CS_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(cs_sample_patch(ctx_, &rng_, v.image.data(), v.labels.data(), 1, v.size, 1, p, &o, out.data(), lout.data()),
            CS_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(cs_sample_patch(ctx_, &rng_, nullptr, v.labels.data(), 1, v.size, 3, p, &o, out.data(), lout.data()),
            CS_ERR_INVALID_ARGUMENT);
  const int64_t empty[3] = {8, 0, 8};
  EXPECT_EQ(cs_sample_patch(ctx_, &rng_, v.image.data(), v.labels.data(), 1, empty, 3, p, &o, out.data(), lout.data()),
            CS_ERR_INVALID_ARGUMENT);
}

} // namespace
