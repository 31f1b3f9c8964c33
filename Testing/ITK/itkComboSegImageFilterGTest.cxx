// Tests of itk::ComboSegImageFilter and the processing around the engine: output geometry equals
// the input's on oblique, anisotropic and odd-sized grids with the organs labelled; bad input is
// an exception naming the problem with nothing written; progress arrives in order and abort
// stops the filter; test-time augmentation is symmetric under mirroring.
#include "itkComboSegIO.h"
#include "itkComboSegImageFilter.h"
#include "itkComboSegProcessing.h"
#include "itkComboSegTestUtilities.h"

#include "itkCommand.h"
#include "itkImageRegionConstIteratorWithIndex.h"
#include "itkImageFileWriter.h"
#include "itkNrrdImageIO.h"
#include "itkScalarConnectedComponentImageFilter.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <sstream>

namespace
{

using FloatImage = itk::Image<float, 3>;
using LabelImage = itk::Image<unsigned char, 3>;
using FilterType = itk::ComboSegImageFilter<FloatImage, LabelImage>;

::testing::AssertionResult
ThrowsWith(const std::function<void()> & action, const std::vector<std::string> & words)
{
  try
  {
    action();
  }
  catch (const itk::ExceptionObject & e)
  {
    const std::string message = e.GetDescription();
    for (const std::string & word : words)
      if (message.find(word) == std::string::npos)
        return ::testing::AssertionFailure() << "message lacks '" << word << "': " << message;
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "no exception";
}

itk::ComboSegGrid
Grid(std::array<int64_t, 3> size, std::array<double, 3> spacing, std::array<double, 3> origin,
     const itk::Matrix<double, 3, 3> & direction)
{
  itk::ComboSegGrid g;
  g.size = size;
  g.spacing = spacing;
  g.origin = origin;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      g.direction[3 * i + j] = direction(i, j);
  return g;
}

std::array<double, 3>
Physical(const itk::ComboSegGrid & g, int64_t x, int64_t y, int64_t z)
{
  std::array<double, 3> p;
  const double          idx[3] = { double(x), double(y), double(z) };
  for (int i = 0; i < 3; ++i)
  {
    p[i] = g.origin[i];
    for (int j = 0; j < 3; ++j)
      p[i] += g.direction[3 * i + j] * g.spacing[j] * idx[j];
  }
  return p;
}

// ------------------------------------------------------------------------------------------
// Processing without the engine

TEST(ComboSegProcessing, LinearResamplingReproducesLinearFunctions)
{
  // Trilinear interpolation is exact on linear functions, whatever the two grids' geometry.
  itk::Matrix<double, 3, 3> identity;
  identity.SetIdentity();
  const auto src = Grid({ { 40, 50, 30 } }, { { 1.5, 1.2, 2.0 } }, { { -30, -30, -30 } }, identity);
  const auto dst = Grid({ { 11, 9, 7 } }, { { 1.1, 1.7, 2.3 } }, { { -5, -6, -7 } }, cstest::Rotation(25, 15));
  auto       f = [](const std::array<double, 3> & p) {
    return 0.5 * p[0] - 0.25 * p[1] + 0.75 * p[2] + 3.0;
  };
  std::vector<float> values(static_cast<size_t>(src.NumberOfVoxels()));
  for (int64_t z = 0, o = 0; z < src.size[2]; ++z)
    for (int64_t y = 0; y < src.size[1]; ++y)
      for (int64_t x = 0; x < src.size[0]; ++x, ++o)
        values[o] = static_cast<float>(f(Physical(src, x, y, z)));
  std::vector<float> out(static_cast<size_t>(dst.NumberOfVoxels()));
  itk::ComboSegResampleLinear(out.data(), dst, values.data(), src, -1000.0f);
  int64_t inside = 0;
  for (int64_t z = 0, o = 0; z < dst.size[2]; ++z)
    for (int64_t y = 0; y < dst.size[1]; ++y)
      for (int64_t x = 0; x < dst.size[0]; ++x, ++o)
      {
        if (out[o] == -1000.0f)
          continue;
        ++inside;
        EXPECT_NEAR(out[o], f(Physical(dst, x, y, z)), 1e-3) << "voxel " << x << " " << y << " " << z;
      }
  EXPECT_EQ(inside, dst.NumberOfVoxels()) << "the target lies inside the source";
}

TEST(ComboSegProcessing, ModelGridHasModelAxesAndSpacingAndCoversInput)
{
  const cs_model_info info = cstest::OrganModelInfo();
  const auto input = Grid({ { 51, 47, 45 } }, { { 1.1, 0.9, 1.3 } }, { { -20, -25, -30 } }, cstest::Rotation(30, 20));
  const itk::ComboSegGrid model = itk::ComboSegModelGrid(input, info);
  // RAS axes in LPS space.
  const double ras[9] = { -1, 0, 0, 0, -1, 0, 0, 0, 1 };
  for (int i = 0; i < 9; ++i)
    EXPECT_DOUBLE_EQ(model.direction[i], ras[i]);
  for (int d = 0; d < 3; ++d)
    EXPECT_DOUBLE_EQ(model.spacing[d], 2.0);
  // Every input voxel centre lies within the model grid's centres.
  std::vector<float> ones(static_cast<size_t>(model.NumberOfVoxels()), 1.0f),
    back(static_cast<size_t>(input.NumberOfVoxels()));
  itk::ComboSegResampleLinear(back.data(), input, ones.data(), model, 0.0f);
  EXPECT_EQ(std::count(back.begin(), back.end(), 1.0f), input.NumberOfVoxels());
  // An input already on the model's axes and spacing keeps its grid.
  itk::Matrix<double, 3, 3> rasMatrix;
  rasMatrix.SetIdentity();
  rasMatrix(0, 0) = rasMatrix(1, 1) = -1;
  const auto aligned = Grid({ { 16, 17, 9 } }, { { 2, 2, 2 } }, { { 4, 5, -6 } }, rasMatrix);
  EXPECT_TRUE(itk::ComboSegSameGrid(itk::ComboSegModelGrid(aligned, info), aligned));
}

TEST(ComboSegProcessing, ProbabilitiesResampledBackBeforeArgmaxOnObliqueGrid)
{
  // Probability maps of a ball drawn on a coarse model grid give the ball on a fine oblique grid.
  const cs_model_info info = cstest::OrganModelInfo();
  const auto output = Grid({ { 41, 37, 29 } }, { { 0.8, 1.1, 1.4 } }, { { -14, -18, -19 } }, cstest::Rotation(35, -20));
  const itk::ComboSegGrid     model = itk::ComboSegModelGrid(output, info);
  const int64_t               m = model.NumberOfVoxels();
  std::vector<float>          probabilities(static_cast<size_t>(3 * m));
  const std::array<double, 3> centre{ { 2.0, -1.0, 1.5 } };
  auto                        distance = [&](const std::array<double, 3> & p) {
    return std::sqrt((p[0] - centre[0]) * (p[0] - centre[0]) + (p[1] - centre[1]) * (p[1] - centre[1]) +
                                            (p[2] - centre[2]) * (p[2] - centre[2])) -
           9.0;
  };
  for (int64_t z = 0, o = 0; z < model.size[2]; ++z)
    for (int64_t y = 0; y < model.size[1]; ++y)
      for (int64_t x = 0; x < model.size[0]; ++x, ++o)
      {
        // A smooth logistic edge, class 2 inside the ball.
        const double inside = 1.0 / (1.0 + std::exp(distance(Physical(model, x, y, z)) / 1.5));
        probabilities[o] = static_cast<float>(0.8 * (1.0 - inside));
        probabilities[m + o] = 0.2f * static_cast<float>(1.0 - inside);
        probabilities[2 * m + o] = static_cast<float>(inside);
      }
  std::vector<int32_t> labels(static_cast<size_t>(output.NumberOfVoxels()), -1);
  itk::ComboSegProbabilitiesToLabels(labels.data(), output, probabilities.data(), model, 3, 0.0f);
  int64_t wrong = 0, checked = 0;
  for (int64_t z = 0, o = 0; z < output.size[2]; ++z)
    for (int64_t y = 0; y < output.size[1]; ++y)
      for (int64_t x = 0; x < output.size[0]; ++x, ++o)
      {
        const double d = distance(Physical(output, x, y, z));
        ASSERT_TRUE(labels[o] == 0 || labels[o] == 2) << "class 1 never wins";
        if (std::fabs(d) < 1.0)
          continue; // the edge may fall either way within half a model voxel
        ++checked;
        wrong += (labels[o] == 2) != (d < 0.0);
      }
  EXPECT_GT(checked, output.NumberOfVoxels() / 2);
  EXPECT_EQ(wrong, 0);
  // A minimum probability above every class's gives background everywhere.
  itk::ComboSegProbabilitiesToLabels(labels.data(), output, probabilities.data(), model, 3, 0.99f);
  EXPECT_EQ(std::count(labels.begin(), labels.end(), 0),
            output.NumberOfVoxels() - std::count(labels.begin(), labels.end(), 2));
  EXPECT_LT(std::count(labels.begin(), labels.end(), 2), checked / 10);
}

TEST(ComboSegProcessing, NormalisationFollowsEachRecipe)
{
  const std::vector<float> values{ 0.0f, -500.0f, 50.0f, 150.0f, 900.0f, 0.0f };
  cs_channel_info          ct{};
  ct.norm = CS_NORM_CLIP_SCALE;
  ct.clip_low = -100.0f;
  ct.clip_high = 300.0f;
  ct.mean = 100.0f;
  ct.std = 50.0f;
  std::vector<float> v = values;
  itk::ComboSegNormalise(v.data(), 6, ct, itk::ComboSegChannelStatistics(values.data(), 6, ct, nullptr), nullptr);
  const float expectedCt[6] = { -2.0f, -4.0f, -1.0f, 1.0f, 4.0f, -2.0f };
  for (int i = 0; i < 6; ++i)
    EXPECT_NEAR(v[i], expectedCt[i], 1e-5) << i;

  cs_channel_info mr{};
  mr.norm = CS_NORM_ZSCORE_NONZERO;
  const std::vector<float> body{ 0.0f, 2.0f, 4.0f, 6.0f, 0.0f };
  const auto               stats = itk::ComboSegChannelStatistics(body.data(), 5, mr, nullptr);
  EXPECT_NEAR(stats.mean, 4.0, 1e-9);
  EXPECT_NEAR(stats.std, std::sqrt(8.0 / 3.0), 1e-9);
  v = body;
  itk::ComboSegNormalise(v.data(), 5, mr, stats, nullptr);
  EXPECT_EQ(v[0], 0.0f);
  EXPECT_EQ(v[4], 0.0f);
  EXPECT_NEAR(v[1] + v[2] + v[3], 0.0f, 1e-5);
  EXPECT_NEAR(v[3], 2.0 / std::sqrt(8.0 / 3.0), 1e-5);

  cs_channel_info masked{};
  masked.norm = CS_NORM_ZSCORE_MASK;
  const std::vector<uint8_t> mask{ 1, 1, 0, 0, 0 };
  const auto                 maskStats = itk::ComboSegChannelStatistics(body.data(), 5, masked, mask.data());
  EXPECT_NEAR(maskStats.mean, 1.0, 1e-9);
  v = body;
  itk::ComboSegNormalise(v.data(), 5, masked, maskStats, mask.data());
  EXPECT_NEAR(v[0], -1.0f, 1e-5);
  EXPECT_NEAR(v[1], 1.0f, 1e-5);
  EXPECT_EQ(v[2], 0.0f);

  // Without a mask the brain is what lies above the scan's lowest value: an already z-scored
  // scan (background -3) and its raw original (background 0) normalise to the same values.
  const std::vector<float> raw{ 0.0f, 10.0f, 20.0f, 30.0f, 0.0f };
  const std::vector<float> zscored{ -3.0f, -1.0f, 0.0f, 1.0f, -3.0f };
  std::vector<float>       fromRaw = raw, fromZscored = zscored;
  itk::ComboSegNormalise(fromRaw.data(), 5, masked, itk::ComboSegChannelStatistics(raw.data(), 5, masked, nullptr),
                         nullptr);
  itk::ComboSegNormalise(fromZscored.data(), 5, masked,
                         itk::ComboSegChannelStatistics(zscored.data(), 5, masked, nullptr), nullptr);
  for (size_t i = 0; i < 5; ++i)
    EXPECT_NEAR(fromRaw[i], fromZscored[i], 1e-5) << i;
  EXPECT_EQ(fromZscored[0], 0.0f);
  EXPECT_NEAR(fromZscored[3], 1.0 / std::sqrt(2.0 / 3.0), 1e-5);

  cs_channel_info none{};
  none.norm = CS_NORM_NONE;
  v = values;
  itk::ComboSegNormalise(v.data(), 6, none, itk::ComboSegChannelStatistics(values.data(), 6, none, nullptr), nullptr);
  EXPECT_EQ(v, values);
}

namespace
{
// A synthetic T1 brain: white matter near 110 (40%), grey matter near 80 (50%), fluid near 30;
// with a head, 1.5 times as many voxels of dark bone and muscle (20-60), a little bright fat and
// air (0).
std::vector<float>
SyntheticT1(bool withHead)
{
  std::mt19937       random(7);
  std::vector<float> v;
  auto               add = [&](int count, double mean, double sd) {
    std::normal_distribution<double> tissue(mean, sd);
    for (int i = 0; i < count; ++i)
      v.push_back(static_cast<float>(std::max(1.0, tissue(random))));
  };
  add(40000, 110.0, 4.0);
  add(50000, 80.0, 4.0); // more grey than white: the highest peak is not the one sought
  add(10000, 30.0, 5.0);
  if (withHead)
  {
    std::uniform_real_distribution<double> dark(20.0, 60.0), fat(150.0, 250.0);
    for (int i = 0; i < 150000; ++i)
      v.push_back(static_cast<float>(dark(random)));
    for (int i = 0; i < 2000; ++i)
      v.push_back(static_cast<float>(fat(random)));
    v.insert(v.end(), 150000, 0.0f);
  }
  return v;
}
} // namespace

TEST(ComboSegProcessing, UpperPeakGivesTissueTheSameValueWithOrWithoutTheHead)
{
  cs_channel_info peak{};
  peak.norm = CS_NORM_UPPER_PEAK;
  std::snprintf(peak.name, sizeof peak.name, "T1");
  std::vector<float> brain = SyntheticT1(false), head = SyntheticT1(true);
  const auto         brainStats = itk::ComboSegChannelStatistics(brain.data(), int64_t(brain.size()), peak, nullptr);
  const auto         headStats = itk::ComboSegChannelStatistics(head.data(), int64_t(head.size()), peak, nullptr);
  EXPECT_NEAR(brainStats.std, 110.0, 3.0); // the white matter peak
  EXPECT_NEAR(headStats.std, 110.0, 3.0);
  EXPECT_EQ(brainStats.mean, 0.0);
  itk::ComboSegNormalise(brain.data(), int64_t(brain.size()), peak, brainStats, nullptr);
  itk::ComboSegNormalise(head.data(), int64_t(head.size()), peak, headStats, nullptr);
  // The first 100000 voxels are the same brain in both: same values within 3%.
  for (size_t i = 0; i < 100000; i += 997)
    EXPECT_NEAR(head[i], brain[i], 0.03 * std::fabs(brain[i])) << i;
  EXPECT_EQ(head.back(), 0.0f); // air stays zero
  EXPECT_EQ(itk::ComboSegPadValue(peak, headStats), 0.0f);

  // What it replaces: a z-score over the non-zero voxels moves the white matter by more than
  // half a standard deviation when the head is in the scan.
  cs_channel_info zscore{};
  zscore.norm = CS_NORM_ZSCORE_NONZERO;
  const std::vector<float> rawBrain = SyntheticT1(false), rawHead = SyntheticT1(true);
  const auto zb = itk::ComboSegChannelStatistics(rawBrain.data(), int64_t(rawBrain.size()), zscore, nullptr);
  const auto zh = itk::ComboSegChannelStatistics(rawHead.data(), int64_t(rawHead.size()), zscore, nullptr);
  EXPECT_GT(std::fabs((110.0 - zb.mean) / zb.std - (110.0 - zh.mean) / zh.std), 0.5);

  // Scans without a positive peak are refused, naming the channel.
  const std::vector<float> zeros(10, 0.0f), negative{ -3.0f, -2.0f, -2.0f, -1.0f };
  for (const auto * scan : { &zeros, &negative })
  {
    try
    {
      itk::ComboSegChannelStatistics(scan->data(), int64_t(scan->size()), peak, nullptr);
      ADD_FAILURE() << "no error for a scan without a positive peak";
    }
    catch (const itk::ExceptionObject & e)
    {
      EXPECT_NE(std::string(e.GetDescription()).find("channel 'T1'"), std::string::npos) << e.GetDescription();
      EXPECT_NE(std::string(e.GetDescription()).find("upper_peak"), std::string::npos) << e.GetDescription();
    }
  }
}

TEST(ComboSegProcessing, OutsideBodyIsWhereNoBodyChannelHasData)
{
  cs_model_info            info = cstest::OrganModelInfo(2);
  itk::ComboSegGrid        grid = Grid({ { 5, 1, 1 } }, { { 1, 1, 1 } }, { { 0, 0, 0 } }, cstest::Rotation(0, 0));
  const std::vector<float> flair{ 0.0f, 3.0f, 0.0f, 5.0f, 0.0f };
  const std::vector<float> t2{ 0.0f, 0.0f, 2.0f, 0.0f, 0.0f };
  std::vector<itk::ComboSegChannel> channels(2);
  channels[0].values = flair.data();
  channels[1].values = t2.data();
  channels[0].grid = channels[1].grid = grid;
  // CT recipes (clip and scale) have no body: nothing is outside.
  EXPECT_TRUE(itk::ComboSegOutsideBody(channels, info, nullptr).empty());

  // A voxel is outside only when no channel has data there.
  info.channels[0].norm = info.channels[1].norm = CS_NORM_ZSCORE_NONZERO;
  EXPECT_EQ(itk::ComboSegOutsideBody(channels, info, nullptr), (std::vector<uint8_t>{ 1, 0, 0, 0, 1 }));
  // A channel without a body takes no part.
  info.channels[1].norm = CS_NORM_CLIP_SCALE;
  EXPECT_EQ(itk::ComboSegOutsideBody(channels, info, nullptr), (std::vector<uint8_t>{ 1, 0, 1, 0, 1 }));
  // Inside a mask: the mask decides; without one, the voxels above the scan's lowest value.
  info.channels[0].norm = CS_NORM_ZSCORE_MASK;
  const std::vector<uint8_t> mask{ 0, 0, 1, 1, 0 };
  EXPECT_EQ(itk::ComboSegOutsideBody(channels, info, mask.data()), (std::vector<uint8_t>{ 1, 1, 0, 0, 1 }));
  const std::vector<float> zscored{ -3.0f, 1.0f, -3.0f, 0.5f, -3.0f };
  channels[0].values = zscored.data();
  EXPECT_EQ(itk::ComboSegOutsideBody(channels, info, nullptr), (std::vector<uint8_t>{ 1, 0, 1, 0, 1 }));
}

// The passes split over ITK's threader (chunks of 64 Ki voxels) give, with 1, 2 and 3 threads,
// what one pass over the whole volume gives: a volume of several chunks and a partial last one.
TEST(ComboSegProcessing, ParallelPassesDoNotDependOnTheThreadCount)
{
  const int64_t      n = 3 * 65536 + 1234;
  std::mt19937       random(5);
  std::vector<float> scan(static_cast<size_t>(n));
  for (float & v : scan)
    v = random() % 4 == 0 ? 0.0f : static_cast<float>(random() % 1000) * 0.37f;
  cs_model_info info = cstest::OrganModelInfo(1);
  info.channels[0].norm = CS_NORM_ZSCORE_NONZERO;
  itk::ComboSegGrid grid = Grid({ { n, 1, 1 } }, { { 1, 1, 1 } }, { { 0, 0, 0 } }, cstest::Rotation(0, 0));
  std::vector<itk::ComboSegChannel> channels(1);
  channels[0].values = scan.data();
  channels[0].grid = grid;
  const auto stats = itk::ComboSegChannelStatistics(scan.data(), n, info.channels[0], nullptr);

  std::vector<uint8_t> serialOutside(static_cast<size_t>(n), 1);
  std::vector<float>   serialNormalised(scan);
  for (int64_t i = 0; i < n; ++i)
  {
    serialOutside[static_cast<size_t>(i)] = scan[static_cast<size_t>(i)] == 0.0f;
    serialNormalised[static_cast<size_t>(i)] =
      scan[static_cast<size_t>(i)] == 0.0f
        ? 0.0f
        : static_cast<float>((scan[static_cast<size_t>(i)] - stats.mean) * (1.0 / stats.std));
  }
  double  sum = 0.0; // the plain serial statistics, for a tolerance check of the chunked sums
  int64_t count = 0;
  for (float v : scan)
    if (v != 0.0f)
    {
      sum += v;
      ++count;
    }
  EXPECT_NEAR(stats.mean, sum / count, 1e-9 * std::fabs(sum / count));
  for (int threads : { 1, 2, 3 })
  {
    const auto threaded = itk::ComboSegChannelStatistics(scan.data(), n, info.channels[0], nullptr, threads);
    EXPECT_EQ(threaded.mean, stats.mean) << threads << " threads";
    EXPECT_EQ(threaded.std, stats.std) << threads << " threads";
    EXPECT_EQ(threaded.minimum, stats.minimum) << threads << " threads";
    std::vector<float> normalised(scan);
    itk::ComboSegNormalise(normalised.data(), n, info.channels[0], stats, nullptr, threads);
    EXPECT_EQ(normalised, serialNormalised) << threads << " threads";
    EXPECT_EQ(itk::ComboSegOutsideBody(channels, info, nullptr, threads), serialOutside) << threads << " threads";
    std::vector<int> visits(static_cast<size_t>(n), 0);
    itk::ComboSegParallelChunks(n, threads, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        ++visits[static_cast<size_t>(i)];
    });
    EXPECT_EQ(std::count(visits.begin(), visits.end(), 1), n) << threads << " threads: each element once";
  }
  int calls = 0;
  itk::ComboSegParallelChunks(0, 2, [&](int64_t, int64_t) { ++calls; });
  EXPECT_EQ(calls, 0);
}

// The model-grid volume is sized without a zero fill: every voxel, inside the scan and outside it
// (an oblique scan leaves corners of the model grid uncovered), is written. A volume that held
// NaNs comes out as a fresh one does.
TEST(ComboSegProcessing, PreparedChannelsWriteEveryVoxelOfTheVolume)
{
  const cs_model_info info = cstest::OrganModelInfo();
  FloatImage::Pointer scan =
    cstest::MakeOrganImage({ { 41, 35, 29 } }, { { 1.7, 2.3, 2.9 } }, cstest::Rotation(25, 15));
  std::vector<itk::ComboSegChannel> channels(1);
  channels[0].values = scan->GetBufferPointer();
  channels[0].grid = itk::ComboSegGridOf(scan.GetPointer());
  itk::ComboSegGrid   freshGrid, reusedGrid;
  itk::ComboSegVolume fresh;
  itk::ComboSegPrepareChannels(channels, info, nullptr, freshGrid, fresh, 2);
  ASSERT_EQ(static_cast<int64_t>(fresh.size()), freshGrid.NumberOfVoxels());
  itk::ComboSegVolume reused(fresh.size(), std::numeric_limits<float>::quiet_NaN());
  itk::ComboSegPrepareChannels(channels, info, nullptr, reusedGrid, reused, 2);
  EXPECT_EQ(std::count_if(reused.begin(), reused.end(), [](float v) { return std::isnan(v); }), 0);
  EXPECT_TRUE(std::equal(fresh.begin(), fresh.end(), reused.begin(), reused.end()));
}

// The upper peak's percentile is found by histograms of the values' bits over the threads (no
// copy, no sort): the same peak as the plain definition (std::nth_element over a copy of the
// non-zero values, then the 128-bin histogram), for 1, 2 and 3 threads, with negative values,
// duplicates and zeros over several chunks.
namespace
{
double
PlainUpperPeak(const std::vector<float> & scan)
{
  std::vector<float> body;
  for (float v : scan)
    if (v != 0.0f)
      body.push_back(v);
  const size_t top = static_cast<size_t>(0.995 * static_cast<double>(body.size() - 1));
  std::nth_element(body.begin(), body.begin() + static_cast<std::ptrdiff_t>(top), body.end());
  const double        high = body[top], low = *std::min_element(body.begin(), body.end());
  std::vector<double> counts(128, 0.0), smooth(128, 0.0);
  for (float v : body)
    if (v <= high)
      counts[std::min(127, static_cast<int>((v - low) / (high - low) * 128))] += 1.0;
  for (int b = 0; b < 128; ++b)
    for (int j = std::max(0, b - 2); j <= std::min(127, b + 2); ++j)
      smooth[b] += counts[j];
  const double highest = *std::max_element(smooth.begin(), smooth.end());
  int          peak = 0;
  for (int b = 0; b < 128; ++b)
    if ((b == 0 || smooth[b] >= smooth[b - 1]) && (b == 127 || smooth[b] >= smooth[b + 1]) &&
        smooth[b] >= 0.5 * highest)
      peak = b;
  return low + (peak + 0.5) * (high - low) / 128;
}
} // namespace

TEST(ComboSegProcessing, UpperPeakOverTheThreadsIsThePlainDefinition)
{
  std::mt19937       random(11);
  std::vector<float> scan(3 * 65536 + 777);
  for (float & v : scan)
    v = random() % 5 == 0 ? 0.0f : static_cast<float>(static_cast<int>(random() % 2000) - 300) * 0.25f;
  // Neighbouring floats (keys 1 apart): the percentile's bin boundaries fall between two values.
  std::vector<float> adjacent(1000, 0.0f);
  float              next = 1.0f;
  for (size_t i = 0; i < adjacent.size(); i += 2, next = std::nextafter(next, 2.0f))
    adjacent[i] = next;
  cs_channel_info channel{};
  channel.norm = CS_NORM_UPPER_PEAK;
  for (const std::vector<float> * values : { &scan, &adjacent })
    for (int threads : { 1, 2, 3 })
      EXPECT_EQ(itk::ComboSegChannelStatistics(values->data(), int64_t(values->size()), channel, nullptr, threads).std,
                PlainUpperPeak(*values))
        << values->size() << " values, " << threads << " threads";
}

TEST(ComboSegProcessing, LargestComponentAndHoleFilling)
{
  const std::array<int64_t, 3> size{ { 12, 10, 8 } };
  std::vector<int32_t>         labels(12 * 10 * 8, 0);
  auto                         at = [&](int64_t x, int64_t y, int64_t z) -> int32_t & {
    return labels[static_cast<size_t>(x + 12 * (y + 10 * z))];
  };
  // Class 1: a hollow 5^3 cube (hole at its centre) and a stray voxel; class 2: two blobs.
  for (int z = 1; z <= 5; ++z)
    for (int y = 1; y <= 5; ++y)
      for (int x = 1; x <= 5; ++x)
        at(x, y, z) = 1;
  at(3, 3, 3) = 0;
  at(10, 8, 6) = 1;
  for (int x = 7; x <= 10; ++x)
    at(x, 1, 1) = 2;
  at(8, 6, 6) = 2;
  // Class 3: two pieces of two voxels; the tie goes to the first in raster order (x fastest).
  at(10, 0, 7) = at(11, 0, 7) = 3;
  at(0, 9, 7) = at(1, 9, 7) = 3;
  itk::ComboSegKeepLargestComponents(labels.data(), size);
  EXPECT_EQ(at(10, 0, 7), 3);
  EXPECT_EQ(at(11, 0, 7), 3);
  EXPECT_EQ(at(0, 9, 7), 0);
  EXPECT_EQ(at(1, 9, 7), 0);
  EXPECT_EQ(at(10, 8, 6), 0);
  EXPECT_EQ(at(8, 6, 6), 0);
  EXPECT_EQ(at(7, 1, 1), 2);
  EXPECT_EQ(at(3, 3, 3), 0) << "holes are kept without FillHoles";
  EXPECT_EQ(std::count(labels.begin(), labels.end(), 1), 124);
  itk::ComboSegFillHoles(labels.data(), size);
  EXPECT_EQ(at(3, 3, 3), 1);
  EXPECT_EQ(at(0, 0, 0), 0);
  EXPECT_EQ(std::count(labels.begin(), labels.end(), 1), 125);
  EXPECT_EQ(std::count(labels.begin(), labels.end(), 2), 4);
}

// The clean-up's pieces are those of ITK's ScalarConnectedComponentImageFilter (6-connected,
// equal labels), each class keeping its largest and ties going to the piece ITK numbers first,
// on blocky random maps whose pieces wind across the z-slabs of 1 to 7 threads.
TEST(ComboSegProcessing, LargestComponentsAreThoseOfITKsConnectedComponents)
{
  using Labels = itk::Image<int32_t, 3>;
  using Pieces = itk::Image<uint32_t, 3>;
  const std::array<int64_t, 3> size{ { 37, 23, 19 } };
  const size_t                 n = 37 * 23 * 19;
  std::mt19937                 random(5);
  for (int map = 0; map < 4; ++map)
  {
    std::vector<int32_t> labels(n);
    for (size_t o = 0; o < n; ++o)
    {
      const size_t   x = o % 37, y = o / 37 % 23, z = o / (37 * 23);
      const uint32_t block = static_cast<uint32_t>((x / 3) * 73856093u ^ (y / 2) * 19349663u ^ (z / 3) * 83492791u);
      labels[o] = random() % 10 == 0 ? static_cast<int32_t>(random() % 4) : static_cast<int32_t>((block + map) % 4);
    }
    // the oracle: ITK's pieces, their sizes and the largest of each class
    Labels::RegionType region;
    region.SetSize({ { 37, 23, 19 } });
    auto image = Labels::New();
    image->SetRegions(region);
    image->Allocate();
    std::copy(labels.begin(), labels.end(), image->GetBufferPointer());
    auto pieces = itk::ScalarConnectedComponentImageFilter<Labels, Pieces, Labels>::New();
    pieces->SetInput(image);
    pieces->SetMaskImage(image);
    pieces->SetDistanceThreshold(0);
    pieces->FullyConnectedOff();
    pieces->Update();
    const uint32_t *                               piece = pieces->GetOutput()->GetBufferPointer();
    std::map<uint32_t, std::pair<int32_t, size_t>> sizes; // piece -> (class, voxels)
    for (size_t o = 0; o < n; ++o)
      if (piece[o] != 0)
        sizes[piece[o]] = { labels[o], sizes[piece[o]].second + 1 };
    std::map<int32_t, std::pair<size_t, uint32_t>> largest; // class -> (voxels, piece)
    for (const auto & p : sizes)
      if (largest.count(p.second.first) == 0 || p.second.second > largest[p.second.first].first)
        largest[p.second.first] = { p.second.second, p.first };
    std::vector<int32_t> expected(labels);
    for (size_t o = 0; o < n; ++o)
      if (piece[o] != 0 && largest[labels[o]].second != piece[o])
        expected[o] = 0;
    ASSERT_GT(sizes.size(), 100u) << "map " << map << ": too few pieces to test anything";
    for (int threads : { 1, 2, 3, 7 })
    {
      std::vector<int32_t> got(labels);
      itk::ComboSegKeepLargestComponents(got.data(), size, threads);
      size_t wrong = 0;
      for (size_t o = 0; o < n; ++o)
        wrong += got[o] != expected[o];
      EXPECT_EQ(wrong, 0u) << "map " << map << ", " << threads << " threads";
    }
  }
}

// ------------------------------------------------------------------------------------------
// The filter with the engine

// One test, so that the model is trained once per run (ctest runs each test in its own process).
TEST(ComboSegImageFilterTrained, OutputGeometryEqualsInputAndOrgansAreLabelled)
{
  itk::ComboSegModel::Pointer model = cstest::TrainOrganModel();
  struct Case
  {
    const char *                 name;
    std::array<unsigned long, 3> size;
    std::array<double, 3>        spacing;
    itk::Matrix<double, 3, 3>    direction;
  };
  itk::Matrix<double, 3, 3> flipped;
  flipped.SetIdentity();
  flipped(0, 0) = -1;
  flipped(2, 2) = -1;
  const std::vector<Case> cases{ { "oblique", { { 45, 43, 41 } }, { { 1.25, 1.25, 1.25 } }, cstest::Rotation(30, 20) },
                                 { "anisotropic", { { 77, 33, 17 } }, { { 0.7, 1.9, 3.1 } }, cstest::Rotation(0, 0) },
                                 { "odd sizes, flipped axes", { { 37, 29, 23 } }, { { 1.6, 1.9, 2.3 } }, flipped } };
  for (const Case & c : cases)
  {
    SCOPED_TRACE(c.name);
    FloatImage::Pointer input = cstest::MakeOrganImage(c.size, c.spacing, c.direction);
    auto                filter = FilterType::New();
    filter->SetModel(model);
    filter->SetInput(input);
    filter->SetNumberOfThreads(2);
    ASSERT_NO_THROW(filter->Update());
    LabelImage * output = filter->GetOutput();
    EXPECT_EQ(output->GetLargestPossibleRegion(), input->GetLargestPossibleRegion());
    EXPECT_EQ(output->GetBufferedRegion(), input->GetLargestPossibleRegion());
    EXPECT_EQ(output->GetSpacing(), input->GetSpacing());
    EXPECT_EQ(output->GetOrigin(), input->GetOrigin());
    EXPECT_EQ(output->GetDirection(), input->GetDirection());

    // Labels (values 0, 3, 7) where the organs are, away from their surfaces.
    const unsigned char                                value[3] = { 0, 3, 7 };
    int64_t                                            checked[3] = { 0, 0, 0 }, right[3] = { 0, 0, 0 };
    itk::ImageRegionConstIteratorWithIndex<LabelImage> it(output, output->GetLargestPossibleRegion());
    for (it.GoToBegin(); !it.IsAtEnd(); ++it)
    {
      FloatImage::PointType p;
      output->TransformIndexToPhysicalPoint(it.GetIndex(), p);
      const double q[3] = { p[0], p[1], p[2] };
      const double d1 = cstest::OrganDistance(cstest::Organs()[0], q),
                   d2 = cstest::OrganDistance(cstest::Organs()[1], q);
      int truth = -1;
      if (d1 < -3.0)
        truth = 1;
      else if (d2 < -3.0)
        truth = 2;
      else if (d1 > 3.0 && d2 > 3.0)
        truth = 0;
      if (truth < 0)
        continue;
      ++checked[truth];
      right[truth] += it.Get() == value[truth];
    }
    for (int k = 0; k < 3; ++k)
    {
      ASSERT_GT(checked[k], 20) << "class " << k;
      // A tiny model after 150 steps: 90 % of the voxels more than 3 mm from any surface.
      EXPECT_GT(double(right[k]) / checked[k], 0.90) << "class " << k << ": " << right[k] << " of " << checked[k];
    }
  }

  // The clean-up options: one component per class, no holes, class indices.
  FloatImage::Pointer input =
    cstest::MakeOrganImage({ { 40, 36, 30 } }, { { 1.5, 1.5, 1.5 } }, cstest::Rotation(10, 0));
  auto filter = FilterType::New();
  filter->SetModel(model);
  filter->SetInput(input);
  filter->LargestComponentOn();
  filter->FillHolesOn();
  filter->SetOutputLabelValues(false);
  ASSERT_NO_THROW(filter->Update());
  std::vector<int32_t>                      labels;
  itk::ImageRegionConstIterator<LabelImage> it(filter->GetOutput(), filter->GetOutput()->GetLargestPossibleRegion());
  for (it.GoToBegin(); !it.IsAtEnd(); ++it)
    labels.push_back(it.Get());
  for (int32_t v : labels)
    ASSERT_LE(v, 2) << "class indices, not label values";
  // Running the clean-up again changes nothing: one component per class, no holes.
  std::vector<int32_t> again = labels;
  const auto           size = itk::ComboSegGridOf(input.GetPointer()).size;
  itk::ComboSegKeepLargestComponents(again.data(), size);
  itk::ComboSegFillHoles(again.data(), size);
  EXPECT_EQ(again, labels);
  EXPECT_GT(std::count(labels.begin(), labels.end(), 1), 100);
  EXPECT_GT(std::count(labels.begin(), labels.end(), 2), 30);

  // bfloat16 convolutions: nearly every label as in float32 (where the CPU has AVX512_BF16; the
  // same labels elsewhere), and the raw output too (no clean-up to hide differences).
  auto labelsOf = [&](bool bfloat16) {
    auto f = FilterType::New();
    f->SetModel(model);
    f->SetInput(input);
    f->SetBFloat16(bfloat16);
    f->UseModelRecommendationsOff();
    f->Update();
    const LabelImage * out = f->GetOutput();
    return std::vector<int32_t>(out->GetBufferPointer(), out->GetBufferPointer() + out->GetPixelContainer()->Size());
  };
  const std::vector<int32_t> float32 = labelsOf(false), bfloat16 = labelsOf(true);
  size_t                     changed = 0;
  for (size_t i = 0; i < float32.size(); ++i)
    changed += float32[i] != bfloat16[i];
  if (cs_bfloat16_available())
    EXPECT_LT(double(changed), 0.005 * double(float32.size())) << changed << " of " << float32.size() << " changed";
  else
    EXPECT_EQ(changed, 0u);
}

// A model that recommends keeping the largest component gets it by default; the raw output
// (UseModelRecommendationsOff) is the network's. An untrained model scatters its labels.
TEST(ComboSegImageFilter, AppliesTheModelsRecommendedCleanUpUnlessAskedForTheRawOutput)
{
  cs_model_info info = cstest::OrganModelInfo();
  info.postprocessing.largest_component = 1;
  auto                model = cstest::MakeModel(info, 3);
  FloatImage::Pointer input =
    cstest::MakeOrganImage({ { 24, 22, 20 } }, { { 2.0, 2.0, 2.0 } }, cstest::Rotation(10, 5));
  auto run = [&](bool useModel, bool largest) {
    auto filter = FilterType::New();
    filter->SetModel(model);
    filter->SetInput(input);
    filter->SetUseModelRecommendations(useModel);
    filter->SetLargestComponent(largest);
    filter->SetOutputLabelValues(false);
    filter->Update();
    const LabelImage * out = filter->GetOutput();
    return std::vector<int32_t>(out->GetBufferPointer(), out->GetBufferPointer() + out->GetPixelContainer()->Size());
  };
  const std::vector<int32_t> raw = run(false, false), byDefault = run(true, false), asked = run(false, true);
  std::vector<int32_t>       cleaned = raw;
  itk::ComboSegKeepLargestComponents(cleaned.data(), itk::ComboSegGridOf(input.GetPointer()).size);
  ASSERT_NE(cleaned, raw) << "the raw output should have several components per class for this test";
  EXPECT_EQ(byDefault, cleaned);
  EXPECT_EQ(asked, cleaned);
}

// A scan whose voxel centres are the model grid's (its spacing; LPS axes, flipped against the
// model's RAS, or RAS) takes its labels straight from the engine's argmax: they equal the
// probability route's (forced by a minimum probability no winning class falls below), with 1
// thread and with 2. An untrained model scatters its labels, so that any difference shows.
TEST(ComboSegImageFilter, LabelsOnTheModelsCentresEqualTheProbabilityRoute)
{
  auto                      model = cstest::MakeModel(cstest::OrganModelInfo(), 3);
  itk::Matrix<double, 3, 3> ras;
  ras.SetIdentity();
  ras(0, 0) = -1;
  ras(1, 1) = -1;
  for (const auto & direction : { cstest::Rotation(0, 0), ras })
  {
    FloatImage::Pointer     input = cstest::MakeOrganImage({ { 37, 30, 26 } }, { { 2.0, 2.0, 2.0 } }, direction);
    const itk::ComboSegGrid grid = itk::ComboSegGridOf(input.GetPointer());
    const itk::ComboSegGrid modelGrid = itk::ComboSegModelGrid(grid, model->GetInfo());
    ASSERT_TRUE(itk::ComboSegCentresCoincideExactly(grid, modelGrid));
    // RAS: the model's own voxels, the engine's labels as they are; LPS: through the mapping.
    EXPECT_EQ(itk::ComboSegIndicesCoincide(grid, modelGrid), direction(0, 0) < 0);
    auto run = [&](double minimumProbability, int threads) {
      auto filter = FilterType::New();
      filter->SetModel(model);
      filter->SetInput(input);
      filter->SetUseModelRecommendations(false);
      filter->SetOutputLabelValues(false);
      filter->SetMinimumProbability(minimumProbability);
      filter->SetNumberOfThreads(threads);
      filter->Update();
      const LabelImage * out = filter->GetOutput();
      return std::vector<int32_t>(out->GetBufferPointer(), out->GetBufferPointer() + out->GetPixelContainer()->Size());
    };
    const std::vector<int32_t> direct = run(0.0, 2);
    EXPECT_GT(std::set<int32_t>(direct.begin(), direct.end()).size(), 1u);
    EXPECT_EQ(direct, run(1e-30, 2));
    EXPECT_EQ(direct, run(0.0, 1));
    EXPECT_EQ(direct, run(1e-30, 1));
  }
  // Grids whose centres do not coincide are refused by name.
  const itk::ComboSegGrid a = Grid({ { 4, 4, 4 } }, { { 1, 1, 1 } }, { { 0, 0, 0 } }, cstest::Rotation(0, 0));
  const itk::ComboSegGrid b = Grid({ { 4, 4, 4 } }, { { 1, 1, 1 } }, { { 0.5, 0, 0 } }, cstest::Rotation(0, 0));
  std::vector<int32_t>    from(64, 1), to(64, -1);
  EXPECT_FALSE(itk::ComboSegCentresCoincideExactly(b, a));
  EXPECT_FALSE(itk::ComboSegIndicesCoincide(b, a));
  EXPECT_TRUE(itk::ComboSegIndicesCoincide(a, a));
  EXPECT_THROW(itk::ComboSegLabelsAtCentres(to.data(), b, from.data(), a), itk::ExceptionObject);
}

TEST(ComboSegImageFilter, SharedModelSameResultAndPrintSelf)
{
  auto                model = cstest::MakeModel(cstest::OrganModelInfo());
  FloatImage::Pointer input =
    cstest::MakeOrganImage({ { 21, 19, 17 } }, { { 2.1, 1.7, 2.5 } }, cstest::Rotation(15, 5));
  auto a = FilterType::New();
  auto b = FilterType::New();
  for (auto & f : { a, b })
  {
    f->SetModel(model);
    f->SetInput(input);
    f->SetOverlap(0.25);
    f->SetMinimumProbability(0.1);
    ASSERT_NO_THROW(f->Update());
  }
  itk::ImageRegionConstIterator<LabelImage> ia(a->GetOutput(), a->GetOutput()->GetLargestPossibleRegion());
  itk::ImageRegionConstIterator<LabelImage> ib(b->GetOutput(), b->GetOutput()->GetLargestPossibleRegion());
  for (ia.GoToBegin(), ib.GoToBegin(); !ia.IsAtEnd(); ++ia, ++ib)
    ASSERT_EQ(ia.Get(), ib.Get());
  std::ostringstream printed;
  a->Print(printed);
  for (const char * field : { "ModelFileName", "NumberOfThreads: 0", "Overlap: 0.25", "UseModelRecommendations: On",
                              "LargestComponent: Off", "BackgroundOutsideBody: On", "FillHoles: Off",
                              "MinimumProbability: 0.1", "OutputLabelValues: On", "synthetic-organs" })
    EXPECT_NE(printed.str().find(field), std::string::npos) << field << " missing from\n" << printed.str();
}

// A skull-stripped MR: the zero voxels around the body are no data, and get background whatever
// the network says there (an untrained one labels that uniform region with some organ).
TEST(ComboSegImageFilter, VoxelsWithoutDataAreBackground)
{
  cs_model_info info = cstest::OrganModelInfo();
  info.channels[0].modality = CS_MODALITY_MR;
  info.channels[0].norm = CS_NORM_ZSCORE_NONZERO;
  FloatImage::Pointer input = cstest::MakeOrganImage({ { 24, 20, 18 } }, { { 2.0, 2.0, 2.0 } }, cstest::Rotation(0, 0));
  itk::ImageRegionIteratorWithIndex<FloatImage> it(input, input->GetLargestPossibleRegion());
  for (it.GoToBegin(); !it.IsAtEnd(); ++it)
    if (it.GetIndex()[0] < 12)
      it.Set(0.0f);
  bool labelledEmptyRegion = false;
  for (uint64_t seed = 1; seed <= 10 && !labelledEmptyRegion; ++seed)
  {
    auto model = cstest::MakeModel(info, seed);
    auto plain = FilterType::New();
    auto masked = FilterType::New();
    plain->SetModel(model);
    plain->SetInput(input);
    plain->BackgroundOutsideBodyOff();
    masked->SetModel(model);
    masked->SetInput(input);
    ASSERT_TRUE(masked->GetBackgroundOutsideBody()) << "on by default";
    ASSERT_NO_THROW(plain->Update());
    ASSERT_NO_THROW(masked->Update());
    itk::ImageRegionConstIteratorWithIndex<LabelImage> p(plain->GetOutput(),
                                                         plain->GetOutput()->GetLargestPossibleRegion());
    itk::ImageRegionConstIterator<LabelImage> m(masked->GetOutput(), masked->GetOutput()->GetLargestPossibleRegion());
    for (p.GoToBegin(), m.GoToBegin(); !p.IsAtEnd(); ++p, ++m)
    {
      const bool empty = p.GetIndex()[0] < 12;
      ASSERT_EQ(m.Get(), empty ? 0 : p.Get()) << "at " << p.GetIndex();
      labelledEmptyRegion = labelledEmptyRegion || (empty && p.Get() != 0);
    }
  }
  EXPECT_TRUE(labelledEmptyRegion) << "no seed labelled the empty region without the rule: the test shows nothing";
}

// ------------------------------------------------------------------------------------------
// Test-time augmentation

// The image mirrored along its x index, on the same grid.
FloatImage::Pointer
MirroredAlongX(const FloatImage * input)
{
  auto mirrored = FloatImage::New();
  mirrored->CopyInformation(input);
  mirrored->SetRegions(input->GetLargestPossibleRegion());
  mirrored->Allocate();
  const auto                                    nx = static_cast<long>(input->GetLargestPossibleRegion().GetSize()[0]);
  itk::ImageRegionIteratorWithIndex<FloatImage> it(mirrored, mirrored->GetLargestPossibleRegion());
  for (it.GoToBegin(); !it.IsAtEnd(); ++it)
  {
    FloatImage::IndexType source = it.GetIndex();
    source[0] = nx - 1 - source[0];
    it.Set(input->GetPixel(source));
  }
  return mirrored;
}

// The filter's output as a vector, x fastest.
std::vector<int>
Segment(itk::ComboSegModel * model, FloatImage * input, unsigned int mirrorAxes, double minimumProbability = 0.0,
        bool useModelRecommendations = true)
{
  auto filter = FilterType::New();
  filter->SetModel(model);
  filter->SetInput(input);
  filter->SetTestTimeMirrorAxes(mirrorAxes);
  filter->SetMinimumProbability(minimumProbability);
  filter->SetUseModelRecommendations(useModelRecommendations);
  filter->Update();
  std::vector<int> labels;
  for (float v : itk::ComboSegValuesOf(filter->GetOutput()))
    labels.push_back(static_cast<int>(v));
  return labels;
}

// Voxels where b is not a mirrored along x, with the label values in `swap` exchanged.
int64_t
MirrorMismatches(const std::vector<int> & a, const std::vector<int> & b, const std::array<int64_t, 3> & size,
                 std::pair<int, int> swap = { -1, -1 })
{
  int64_t mismatches = 0;
  for (int64_t z = 0; z < size[2]; ++z)
    for (int64_t y = 0; y < size[1]; ++y)
      for (int64_t x = 0; x < size[0]; ++x)
      {
        int       want = a[static_cast<size_t>((z * size[1] + y) * size[0] + size[0] - 1 - x)];
        const int got = b[static_cast<size_t>((z * size[1] + y) * size[0] + x)];
        want = want == swap.first ? swap.second : want == swap.second ? swap.first : want;
        mismatches += got != want;
      }
  return mismatches;
}

// With test-time mirroring along x (the model's RAS x is the input's x flipped), the mirrored
// input gives exactly the mirrored output: the two passes see the same two images. An untrained
// model is far from symmetric, so without it the outputs differ, and with it they change.
TEST(ComboSegImageFilterTestTime, MirroredInputGivesTheMirroredOutput)
{
  auto                         model = cstest::MakeModel(cstest::OrganModelInfo());
  const std::array<int64_t, 3> size = { 18, 16, 16 };
  FloatImage::Pointer input = cstest::MakeOrganImage({ { 18, 16, 16 } }, { { 2.0, 2.0, 2.0 } }, cstest::Rotation(0, 0));
  FloatImage::Pointer mirrored = MirroredAlongX(input);
  const std::vector<int> plain = Segment(model, input, 0), plainMirrored = Segment(model, mirrored, 0);
  const std::vector<int> tta = Segment(model, input, 1), ttaMirrored = Segment(model, mirrored, 1);
  EXPECT_EQ(MirrorMismatches(tta, ttaMirrored, size), 0);
  EXPECT_GT(MirrorMismatches(plain, plainMirrored, size), 0) << "the model is symmetric: the test shows nothing";
  EXPECT_NE(plain, tta) << "test-time augmentation changed nothing";
  for (unsigned int axes : { 7u }) // every combination of mirrors along x, y, z: symmetric too
    EXPECT_EQ(MirrorMismatches(Segment(model, input, axes), Segment(model, mirrored, axes), size), 0) << axes;
}

// Mirroring x exchanges left and right: a model with a left and a right class labels the
// mirrored input as the mirrored output with the two classes swapped.
TEST(ComboSegImageFilterTestTime, MirroringSwapsLeftAndRightClasses)
{
  cs_model_info info = cstest::OrganModelInfo();
  std::snprintf(info.classes[1].name, sizeof(info.classes[1].name), "L_organ");
  std::snprintf(info.classes[2].name, sizeof(info.classes[2].name), "R_organ");
  auto                         model = cstest::MakeModel(info);
  const std::array<int64_t, 3> size = { 18, 16, 16 };
  FloatImage::Pointer input = cstest::MakeOrganImage({ { 18, 16, 16 } }, { { 2.0, 2.0, 2.0 } }, cstest::Rotation(0, 0));
  const std::vector<int> tta = Segment(model, input, 1), ttaMirrored = Segment(model, MirroredAlongX(input), 1);
  EXPECT_EQ(MirrorMismatches(tta, ttaMirrored, size, { 3, 7 }), 0);
  EXPECT_GT(MirrorMismatches(tta, ttaMirrored, size), 0) << "no left or right class found: the test shows nothing";
}

// A model that recommends test-time mirroring (chosen by cross-validation, stored in its file) gets
// it without being asked, and the raw output (UseModelRecommendationsOff) is the single pass.
TEST(ComboSegImageFilterTestTime, ModelsRecommendedMirroringAppliesUnlessRawOutput)
{
  cs_model_info info = cstest::OrganModelInfo();
  auto          plainModel = cstest::MakeModel(info);
  info.test_time_mirror_axes = 1;
  auto                mirroringModel = cstest::MakeModel(info); // the same weights: the same seed
  FloatImage::Pointer input = cstest::MakeOrganImage({ { 18, 16, 16 } }, { { 2.0, 2.0, 2.0 } }, cstest::Rotation(0, 0));
  const std::vector<int> plain = Segment(plainModel, input, 0), mirrored = Segment(plainModel, input, 1);
  ASSERT_NE(plain, mirrored) << "test-time augmentation changed nothing: the test shows nothing";
  EXPECT_EQ(Segment(mirroringModel, input, 0), mirrored);
  EXPECT_EQ(Segment(mirroringModel, input, 0, 0.0, false), plain);
  EXPECT_EQ(Segment(mirroringModel, input, 1, 0.0, false), mirrored) << "asked for, it is applied to the raw output";
}

// The averaged probabilities are probabilities: the output holds the same label values, and a
// minimum probability of 1 leaves only background (a sum of two passes would pass it).
TEST(ComboSegImageFilterTestTime, OutputKeepsItsLabelValuesAndProbabilities)
{
  auto                model = cstest::MakeModel(cstest::OrganModelInfo());
  FloatImage::Pointer input = cstest::MakeOrganImage({ { 18, 16, 16 } }, { { 2.0, 2.0, 2.0 } }, cstest::Rotation(0, 0));
  for (unsigned int axes : { 1u, 7u })
  {
    for (int v : Segment(model, input, axes))
      ASSERT_TRUE(v == 0 || v == 3 || v == 7) << v;
    for (int v : Segment(model, input, axes, 1.0))
      ASSERT_EQ(v, 0) << axes;
  }
}

TEST(ComboSegProcessing, LeftRightPartnersAreFoundByName)
{
  cs_unet_config arch = cs_unet_config_default();
  arch.num_classes = 8;
  cs_model_info info;
  ASSERT_EQ(cs_model_info_init(&info, &arch), CS_OK);
  const char * names[] = { "background",    "L_thalamus", "Left-Putamen", "R_thalamus",
                           "Right-Putamen", "brainstem",  "left lung",    "Lung" };
  for (int k = 0; k < 8; ++k)
    std::snprintf(info.classes[k].name, sizeof(info.classes[k].name), "%s", names[k]);
  EXPECT_EQ(itk::ComboSegLeftRightPartners(info), (std::vector<int32_t>{ 0, 3, 4, 1, 2, 5, 6, 7 }));
}

TEST(ComboSegProcessing, MirrorReversesOneAxisOfEveryVolume)
{
  const std::array<int64_t, 3> size = { 4, 3, 2 };
  std::vector<float>           v(48);
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = static_cast<float>(i);
  for (int axis = 0; axis < 3; ++axis)
  {
    std::vector<float> m = v;
    itk::ComboSegMirror(m.data(), 2, size, axis);
    for (int64_t c = 0; c < 2; ++c)
      for (int64_t z = 0; z < 2; ++z)
        for (int64_t y = 0; y < 3; ++y)
          for (int64_t x = 0; x < 4; ++x)
          {
            int64_t s[3] = { x, y, z };
            s[axis] = size[static_cast<size_t>(axis)] - 1 - s[axis];
            ASSERT_EQ(m[static_cast<size_t>(((c * 2 + z) * 3 + y) * 4 + x)],
                      v[static_cast<size_t>(((c * 2 + s[2]) * 3 + s[1]) * 4 + s[0])]);
          }
  }
}

TEST(ComboSegImageFilter, TwoDimensionalModelOnTwoDimensionalImage)
{
  using Image2 = itk::Image<float, 2>;
  using Label2 = itk::Image<unsigned short, 2>;
  cs_model_info info = cstest::OrganModelInfo();
  info.arch.spatial_dims = 2;
  cs_model_info init;
  ASSERT_EQ(cs_model_info_init(&init, &info.arch), CS_OK);
  std::memcpy(init.channels, info.channels, sizeof(info.channels));
  std::memcpy(init.classes, info.classes, sizeof(info.classes));
  init.spacing[0] = init.spacing[1] = 1.5;
  init.patch_size[0] = init.patch_size[1] = 16;
  auto               model = cstest::MakeModel(init);
  auto               image = Image2::New();
  Image2::RegionType region;
  region.SetSize({ { 31, 27 } });
  image->SetRegions(region);
  Image2::SpacingType spacing;
  spacing[0] = 0.9;
  spacing[1] = 1.3;
  image->SetSpacing(spacing);
  Image2::DirectionType direction;
  direction(0, 0) = std::cos(0.3);
  direction(0, 1) = -std::sin(0.3);
  direction(1, 0) = std::sin(0.3);
  direction(1, 1) = std::cos(0.3);
  image->SetDirection(direction);
  image->Allocate();
  image->FillBuffer(50.0f);
  auto filter = itk::ComboSegImageFilter<Image2, Label2>::New();
  filter->SetModel(model);
  filter->SetInput(image);
  ASSERT_NO_THROW(filter->Update());
  EXPECT_EQ(filter->GetOutput()->GetLargestPossibleRegion(), region);
  EXPECT_EQ(filter->GetOutput()->GetDirection(), direction);
  EXPECT_EQ(filter->GetOutput()->GetSpacing(), spacing);
}

// ------------------------------------------------------------------------------------------
// Bad input: exceptions naming the problem, nothing written

TEST(ComboSegImageFilterBadInput, TwoChannelModelGivenOne)
{
  auto                model = cstest::MakeModel(cstest::OrganModelInfo(2));
  FloatImage::Pointer input = cstest::MakeOrganImage({ { 9, 9, 9 } }, { { 2, 2, 2 } }, cstest::Rotation(0, 0));
  auto                filter = FilterType::New();
  filter->SetModel(model);
  filter->SetInput(input);
  EXPECT_TRUE(ThrowsWith([&] { filter->Update(); }, { "expects 2 channel", "missing", "FLAIR" }));
}

TEST(ComboSegImageFilterBadInput, ExtraChannel)
{
  auto                model = cstest::MakeModel(cstest::OrganModelInfo(1));
  FloatImage::Pointer input = cstest::MakeOrganImage({ { 9, 9, 9 } }, { { 2, 2, 2 } }, cstest::Rotation(0, 0));
  auto                filter = FilterType::New();
  filter->SetModel(model);
  filter->SetInput(0, input);
  filter->SetInput(1, input);
  EXPECT_TRUE(ThrowsWith([&] { filter->Update(); }, { "expects 1 channel", "extra", "input 1" }));
}

TEST(ComboSegImageFilterBadInput, NaNVoxels)
{
  auto                model = cstest::MakeModel(cstest::OrganModelInfo());
  FloatImage::Pointer input = cstest::MakeOrganImage({ { 9, 9, 9 } }, { { 2, 2, 2 } }, cstest::Rotation(0, 0));
  input->SetPixel({ { 4, 5, 6 } }, std::numeric_limits<float>::quiet_NaN());
  auto filter = FilterType::New();
  filter->SetModel(model);
  filter->SetInput(input);
  EXPECT_TRUE(ThrowsWith([&] { filter->Update(); }, { "input 0 (CT)", "1 NaN", "[4, 5, 6]" }));
}

TEST(ComboSegImageFilterBadInput, EmptyImage)
{
  auto                   model = cstest::MakeModel(cstest::OrganModelInfo());
  auto                   input = FloatImage::New();
  FloatImage::RegionType region;
  region.SetSize({ { 0, 0, 0 } });
  input->SetRegions(region);
  input->Allocate();
  auto filter = FilterType::New();
  filter->SetModel(model);
  filter->SetInput(input);
  EXPECT_TRUE(ThrowsWith([&] { filter->Update(); }, { "empty" }));
}

TEST(ComboSegImageFilterBadInput, ChannelsOnDifferentGrids)
{
  auto                model = cstest::MakeModel(cstest::OrganModelInfo(2));
  FloatImage::Pointer a = cstest::MakeOrganImage({ { 9, 9, 9 } }, { { 2, 2, 2 } }, cstest::Rotation(0, 0));
  FloatImage::Pointer b = cstest::MakeOrganImage({ { 9, 9, 8 } }, { { 2, 2, 2 } }, cstest::Rotation(0, 0));
  auto                filter = FilterType::New();
  filter->SetModel(model);
  filter->SetInput(0, a);
  filter->SetInput(1, b);
  EXPECT_TRUE(ThrowsWith([&] { filter->Update(); }, { "input 1 (FLAIR)", "different grid" }));
}

TEST(ComboSegImageFilterBadInput, UnreadableModelFileAndNothingWritten)
{
  cstest::TempDir   dir;
  const std::string bogus = dir.path + "/not-a-model.safetensors";
  {
    std::ofstream out(bogus);
    out << "this is not a model";
  }
  itk::ComboSegRegisterImageIO(); // the writer's NRRD support
  FloatImage::Pointer input = cstest::MakeOrganImage({ { 9, 9, 9 } }, { { 2, 2, 2 } }, cstest::Rotation(0, 0));
  auto                filter = FilterType::New();
  filter->SetModelFileName(bogus);
  filter->SetInput(input);
  const std::string output = dir.path + "/labels.nrrd";
  auto              writer = itk::ImageFileWriter<LabelImage>::New();
  writer->SetInput(filter->GetOutput());
  writer->SetFileName(output);
  EXPECT_TRUE(ThrowsWith([&] { writer->Update(); }, { "cannot load model file", bogus }));
  EXPECT_FALSE(cstest::FileExists(output));

  filter->SetModelFileName(dir.path + "/missing.safetensors");
  EXPECT_TRUE(ThrowsWith([&] { writer->Update(); }, { "missing.safetensors" }));
  EXPECT_FALSE(cstest::FileExists(output));

  // A NaN voxel also stops the pipeline before the writer.
  auto model = cstest::MakeModel(cstest::OrganModelInfo());
  filter->SetModel(model);
  input->SetPixel({ { 1, 1, 1 } }, std::numeric_limits<float>::infinity());
  EXPECT_TRUE(ThrowsWith([&] { writer->Update(); }, { "infinite" }));
  EXPECT_FALSE(cstest::FileExists(output));
}

// ------------------------------------------------------------------------------------------
// Progress and abort

class ProgressRecorder : public itk::Command
{
public:
  ITK_DISALLOW_COPY_AND_MOVE(ProgressRecorder);
  using Self = ProgressRecorder;
  using Pointer = itk::SmartPointer<Self>;
  itkNewMacro(Self);

  void
  Execute(itk::Object * caller, const itk::EventObject & event) override
  {
    auto * process = dynamic_cast<itk::ProcessObject *>(caller);
    if (itk::ProgressEvent().CheckEvent(&event))
    {
      values.push_back(process->GetProgress());
      if (abortAt >= 0.0f && process->GetProgress() >= abortAt && !abortRequested)
      {
        abortRequested = true;
        process->AbortGenerateDataOn();
      }
    }
    else if (itk::AbortEvent().CheckEvent(&event))
    {
      aborted = true;
    }
  }
  void
  Execute(const itk::Object *, const itk::EventObject &) override
  {
  }

  std::vector<float> values;
  float              abortAt{ -1.0f };
  bool               abortRequested{ false };
  bool               aborted{ false };

protected:
  ProgressRecorder() = default;
};

TEST(ComboSegImageFilterProgress, EventsArriveInOrderPerWindow)
{
  auto                model = cstest::MakeModel(cstest::OrganModelInfo());
  FloatImage::Pointer input = cstest::MakeOrganImage({ { 32, 32, 32 } }, { { 2, 2, 2 } }, cstest::Rotation(0, 0));
  auto                filter = FilterType::New();
  filter->SetModel(model);
  filter->SetInput(input);
  auto recorder = ProgressRecorder::New();
  filter->AddObserver(itk::ProgressEvent(), recorder);
  ASSERT_NO_THROW(filter->Update());
  // A 32^3 grid with 16^3 windows overlapping by half: many windows, one event each at least.
  ASSERT_GT(recorder->values.size(), 10u);
  EXPECT_FLOAT_EQ(recorder->values.front(), 0.0f);
  EXPECT_FLOAT_EQ(recorder->values.back(), 1.0f);
  for (size_t i = 1; i < recorder->values.size(); ++i)
    EXPECT_GE(recorder->values[i], recorder->values[i - 1]) << "event " << i;
}

// With test-time augmentation the passes share the inference's part of the progress: it still
// only rises, and each pass reports its windows.
TEST(ComboSegImageFilterProgress, TestTimePassesShareTheProgress)
{
  auto                model = cstest::MakeModel(cstest::OrganModelInfo());
  FloatImage::Pointer input = cstest::MakeOrganImage({ { 24, 16, 16 } }, { { 2, 2, 2 } }, cstest::Rotation(0, 0));
  std::vector<size_t> events;
  for (unsigned int axes : { 0u, 1u })
  {
    auto filter = FilterType::New();
    filter->SetModel(model);
    filter->SetInput(input);
    filter->SetTestTimeMirrorAxes(axes);
    auto recorder = ProgressRecorder::New();
    filter->AddObserver(itk::ProgressEvent(), recorder);
    ASSERT_NO_THROW(filter->Update());
    EXPECT_FLOAT_EQ(recorder->values.back(), 1.0f);
    for (size_t i = 1; i < recorder->values.size(); ++i)
      ASSERT_GE(recorder->values[i], recorder->values[i - 1]) << "event " << i << ", axes " << axes;
    events.push_back(recorder->values.size());
  }
  EXPECT_GT(events[1], events[0]) << "the second pass reported no windows";
}

TEST(ComboSegImageFilterProgress, AbortStopsTheFilterBetweenWindows)
{
  auto                model = cstest::MakeModel(cstest::OrganModelInfo());
  FloatImage::Pointer input = cstest::MakeOrganImage({ { 32, 32, 32 } }, { { 2, 2, 2 } }, cstest::Rotation(0, 0));
  auto                filter = FilterType::New();
  filter->SetModel(model);
  filter->SetInput(input);
  auto recorder = ProgressRecorder::New();
  recorder->abortAt = 0.3f;
  filter->AddObserver(itk::ProgressEvent(), recorder);
  filter->AddObserver(itk::AbortEvent(), recorder);
  bool abortedException = false;
  try
  {
    filter->Update();
  }
  catch (const itk::ProcessAborted &)
  {
    abortedException = true;
  }
  EXPECT_TRUE(abortedException);
  EXPECT_TRUE(recorder->aborted);
  ASSERT_FALSE(recorder->values.empty());
  // No event after the one that asked to stop: the engine stopped at that window.
  EXPECT_LT(recorder->values.back(), 0.9f);
  EXPECT_GE(recorder->values.back(), 0.3f);
  // The filter runs again once the flag is cleared by the next update.
  recorder->abortAt = -1.0f;
  filter->Modified();
  EXPECT_NO_THROW(filter->Update());
  EXPECT_FLOAT_EQ(recorder->values.back(), 1.0f);
}

} // namespace
