// The evaluation measures of the ITK layer (itkComboSegEvaluation.h) on small generated label
// maps whose answers are counted by hand.
#include <cmath>

#include "gtest/gtest.h"
#include "itkComboSegEvaluation.h"

namespace
{

using LabelMap = itk::ComboSegLabelMap;

LabelMap::Pointer
EmptyMap(unsigned int size, double spacing)
{
  auto                 map = LabelMap::New();
  LabelMap::RegionType region;
  region.SetSize({ { size, size, size } });
  map->SetRegions(region);
  map->SetSpacing(spacing);
  map->Allocate(true);
  return map;
}

// Label `value` in the box [lo, hi] (inclusive) of every axis, shifted by `shiftX` along x.
void
DrawBox(LabelMap * map, int value, long lo, long hi, long shiftX = 0)
{
  for (long z = lo; z <= hi; ++z)
    for (long y = lo; y <= hi; ++y)
      for (long x = lo + shiftX; x <= hi + shiftX; ++x)
        map->SetPixel({ { x, y, z } }, value);
}

} // namespace

TEST(ComboSegEvaluation, OverlapMeasuresOfShiftedBoxesAreTheHandCountedOnes)
{
  // Reference: a 4^3 box of label 3; prediction: the same box one voxel further along x.
  const LabelMap::Pointer reference = EmptyMap(10, 2.0), predicted = EmptyMap(10, 2.0);
  DrawBox(reference, 3, 2, 5);
  DrawBox(predicted, 3, 2, 5, 1);
  const auto structures = itk::ComboSegCompareStructures(reference, predicted);
  ASSERT_EQ(structures.size(), 1u);
  const itk::ComboSegStructureAgreement & a = structures[0];
  EXPECT_EQ(a.labelValue, 3);
  EXPECT_EQ(a.referenceVoxels, 64);
  EXPECT_EQ(a.predictedVoxels, 64);
  EXPECT_EQ(a.overlapVoxels, 48); // 3 x 4 x 4
  EXPECT_DOUBLE_EQ(a.dice, 2.0 * 48 / 128);
  EXPECT_DOUBLE_EQ(a.jaccard, 48.0 / 80);
  EXPECT_DOUBLE_EQ(a.precision, 0.75);
  EXPECT_DOUBLE_EQ(a.recall, 0.75);
  EXPECT_DOUBLE_EQ(a.falsePositiveRate, 16.0 / (1000 - 64)); // among the reference's background
  EXPECT_DOUBLE_EQ(a.falseNegativeRate, 0.25);
  EXPECT_DOUBLE_EQ(a.referenceVolumeMl, 64 * 8.0 / 1000); // 2 mm voxels: 8 mm^3 each
  EXPECT_DOUBLE_EQ(a.predictedVolumeMl, 64 * 8.0 / 1000);
  EXPECT_DOUBLE_EQ(itk::ComboSegMeanDice(structures), 0.75);
}

TEST(ComboSegEvaluation, Hausdorff95OfBoxesShiftedByTwoVoxels)
{
  // 4^3 boxes two voxels apart along x, 1.5 mm voxels. Of each box's 56 boundary voxels, the 16
  // on its far x face lie 2 voxels from the other's boundary, 16 lie 1 voxel from it (the 12 on
  // the next layer's faces and the 4 in the middle of the near x face) and 24 on it: 112
  // distances, the 107th (ceil(0.95 x 112)) in increasing order is 2 voxels, the mean 96 / 112.
  const LabelMap::Pointer reference = EmptyMap(12, 1.5), predicted = EmptyMap(12, 1.5);
  DrawBox(reference, 1, 2, 5);
  DrawBox(predicted, 1, 2, 5, 2);
  const auto structures = itk::ComboSegCompareStructures(reference, predicted);
  ASSERT_EQ(structures.size(), 1u);
  EXPECT_NEAR(structures[0].hausdorff95, 2 * 1.5, 1e-5);
  EXPECT_NEAR(structures[0].meanSurfaceDistance, 1.5 * 96 / 112, 1e-5);
  // Identical maps: no distance at all.
  const auto same = itk::ComboSegCompareStructures(reference, reference);
  EXPECT_DOUBLE_EQ(same[0].hausdorff95, 0.0);
  EXPECT_DOUBLE_EQ(same[0].dice, 1.0);
}

TEST(ComboSegEvaluation, MissingStructuresAndTheAllStructuresRow)
{
  // Label 1 in both maps, label 2 only in the reference, label 4 only in the prediction.
  const LabelMap::Pointer reference = EmptyMap(12, 1.0), predicted = EmptyMap(12, 1.0);
  DrawBox(reference, 1, 1, 3);
  DrawBox(predicted, 1, 1, 3);
  DrawBox(reference, 2, 6, 7);
  DrawBox(predicted, 4, 8, 9);
  const auto structures = itk::ComboSegCompareStructures(reference, predicted);
  ASSERT_EQ(structures.size(), 3u);
  EXPECT_EQ(structures[0].labelValue, 1);
  EXPECT_EQ(structures[1].labelValue, 2);
  EXPECT_EQ(structures[2].labelValue, 4);
  EXPECT_DOUBLE_EQ(structures[1].dice, 0.0);
  EXPECT_TRUE(std::isnan(structures[1].hausdorff95)) << "no distance to a structure that is missing";
  EXPECT_TRUE(std::isnan(structures[1].precision));
  EXPECT_TRUE(std::isnan(structures[2].recall));
  // The mean counts the reference's structures only: (1 + 0) / 2.
  EXPECT_DOUBLE_EQ(itk::ComboSegMeanDice(structures), 0.5);
  // All structures merged: 27 + 8 reference voxels, 27 + 8 predicted, 27 shared.
  const itk::ComboSegStructureAgreement all = itk::ComboSegCompareAllStructures(reference, predicted);
  EXPECT_EQ(all.referenceVoxels, 35);
  EXPECT_EQ(all.predictedVoxels, 35);
  EXPECT_EQ(all.overlapVoxels, 27);
  EXPECT_DOUBLE_EQ(all.dice, 54.0 / 70);
}

TEST(ComboSegEvaluation, MapsOnAnotherGridAreBroughtOntoTheReference)
{
  // A 2 mm map of a box compared with its 1 mm reference, once resampled by nearest neighbour.
  const LabelMap::Pointer reference = EmptyMap(12, 1.0), coarse = EmptyMap(6, 2.0);
  LabelMap::PointType     origin;
  origin.Fill(0.5); // coarse voxel centres between the fine ones: voxel i covers fine 2i, 2i + 1
  coarse->SetOrigin(origin);
  DrawBox(reference, 5, 2, 7);
  DrawBox(coarse, 5, 1, 3);
  EXPECT_THROW(itk::ComboSegCompareStructures(reference, coarse), itk::ExceptionObject)
    << "maps on different grids are refused, not compared voxel by voxel";
  const LabelMap::Pointer onReference = itk::ComboSegOnReferenceGrid(reference, coarse);
  const auto              structures = itk::ComboSegCompareStructures(reference, onReference);
  ASSERT_EQ(structures.size(), 1u);
  EXPECT_DOUBLE_EQ(structures[0].dice, 1.0);
}
