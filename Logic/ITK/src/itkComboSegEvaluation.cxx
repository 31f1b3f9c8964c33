#include "itkComboSegEvaluation.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "itkBinaryContourImageFilter.h"
#include "itkBinaryThresholdImageFilter.h"
#include "itkComboSegProcessing.h"
#include "itkImageRegionConstIterator.h"
#include "itkImageRegionIterator.h"
#include "itkLabelOverlapMeasuresImageFilter.h"
#include "itkLabelStatisticsImageFilter.h"
#include "itkMacro.h"
#include "itkSignedMaurerDistanceMapImageFilter.h"

namespace itk
{

namespace
{

using MaskImage = Image<unsigned char, 3>;
using DistanceImage = Image<float, 3>;
using LabelRegion = ComboSegLabelMap::RegionType;

constexpr double NaN = std::numeric_limits<double>::quiet_NaN();

template <typename TFilter>
void
LimitWorkUnits(TFilter * filter, int numberOfThreads)
{
  if (numberOfThreads > 0)
  {
    filter->SetNumberOfWorkUnits(static_cast<ThreadIdType>(numberOfThreads));
  }
}

void
CheckSameGrid(const ComboSegLabelMap * reference, const ComboSegLabelMap * predicted)
{
  if (!reference || !predicted)
  {
    itkGenericExceptionMacro(<< "ComboSegCompareStructures: a label map is missing");
  }
  const ComboSegGrid a = ComboSegGridOf(reference), b = ComboSegGridOf(predicted);
  if (!ComboSegSameGrid(a, b))
  {
    itkGenericExceptionMacro(<< "the evaluated label map is on another grid than the reference ("
                             << ComboSegGridToString(b) << " versus " << ComboSegGridToString(a)
                             << "): bring it there with ComboSegOnReferenceGrid");
  }
}

// The voxels of `value` inside box, in a mask one voxel larger on every side (background there),
// so that every voxel of the structure has its six neighbours in the mask.
MaskImage::Pointer
PaddedMask(const ComboSegLabelMap * labels, int value, const LabelRegion & box)
{
  auto        mask = MaskImage::New();
  LabelRegion padded(box.GetSize());
  padded.PadByRadius(1);
  mask->SetRegions(padded);
  mask->SetSpacing(labels->GetSpacing());
  mask->Allocate(true);
  LabelRegion                                inner(box.GetSize()); // the box's place inside the padded mask
  ImageRegionConstIterator<ComboSegLabelMap> from(labels, box);
  ImageRegionIterator<MaskImage>             to(mask, inner);
  for (; !from.IsAtEnd(); ++from, ++to)
    to.Set(from.Get() == value ? 1 : 0);
  return mask;
}

// Unsigned distance (mm) from every voxel to the boundary of the mask's structure.
DistanceImage::Pointer
DistanceToBoundary(const MaskImage * mask, int numberOfThreads)
{
  auto distance = SignedMaurerDistanceMapImageFilter<MaskImage, DistanceImage>::New();
  distance->SetInput(mask);
  distance->SetUseImageSpacing(true);
  distance->SetSquaredDistance(false);
  distance->SetInsideIsPositive(false);
  distance->SetBackgroundValue(0);
  LimitWorkUnits(distance.GetPointer(), numberOfThreads);
  distance->Update();
  return distance->GetOutput();
}

// The distances, at the boundary voxels of `from` (voxels with a background face neighbour), to
// the boundary of the other structure.
void
AddBoundaryDistances(const MaskImage * from, const DistanceImage * toOther, std::vector<double> & distances,
                     int numberOfThreads)
{
  auto boundary = BinaryContourImageFilter<MaskImage, MaskImage>::New();
  boundary->SetInput(from);
  boundary->SetForegroundValue(1);
  boundary->SetBackgroundValue(0);
  boundary->FullyConnectedOff(); // a face neighbour outside makes a boundary voxel
  LimitWorkUnits(boundary.GetPointer(), numberOfThreads);
  boundary->Update();
  ImageRegionConstIterator<MaskImage>     onBoundary(boundary->GetOutput(), from->GetLargestPossibleRegion());
  ImageRegionConstIterator<DistanceImage> distance(toOther, from->GetLargestPossibleRegion());
  for (; !onBoundary.IsAtEnd(); ++onBoundary, ++distance)
    if (onBoundary.Get())
      distances.push_back(std::fabs(static_cast<double>(distance.Get())));
}

// 95th percentile (nearest rank) and mean of both boundaries' distances to each other, inside
// the box that holds the structure in both maps.
void
SurfaceDistances(const ComboSegLabelMap * reference, const ComboSegLabelMap * predicted, const LabelRegion & box,
                 ComboSegStructureAgreement & agreement, int numberOfThreads)
{
  const MaskImage::Pointer     inReference = PaddedMask(reference, agreement.labelValue, box);
  const MaskImage::Pointer     inPredicted = PaddedMask(predicted, agreement.labelValue, box);
  const DistanceImage::Pointer toReference = DistanceToBoundary(inReference, numberOfThreads);
  const DistanceImage::Pointer toPredicted = DistanceToBoundary(inPredicted, numberOfThreads);
  std::vector<double>          distances;
  AddBoundaryDistances(inReference, toPredicted, distances, numberOfThreads);
  AddBoundaryDistances(inPredicted, toReference, distances, numberOfThreads);
  std::sort(distances.begin(), distances.end());
  double sum = 0.0;
  for (double d : distances)
    sum += d;
  const size_t rank = static_cast<size_t>(std::ceil(0.95 * static_cast<double>(distances.size())));
  agreement.hausdorff95 = distances[std::max<size_t>(rank, 1) - 1];
  agreement.meanSurfaceDistance = sum / static_cast<double>(distances.size());
}

// The overlap measures from the voxel counts.
void
OverlapMeasures(int64_t voxels, double voxelMl, ComboSegStructureAgreement & a)
{
  const double r = static_cast<double>(a.referenceVoxels), p = static_cast<double>(a.predictedVoxels),
               tp = static_cast<double>(a.overlapVoxels);
  const double fp = p - tp, fn = r - tp, tn = static_cast<double>(voxels) - r - fp;
  a.dice = (r + p) > 0 ? 2.0 * tp / (r + p) : NaN;
  a.jaccard = (r + p - tp) > 0 ? tp / (r + p - tp) : NaN;
  a.precision = p > 0 ? tp / p : NaN;
  a.recall = r > 0 ? tp / r : NaN;
  a.falsePositiveRate = (fp + tn) > 0 ? fp / (fp + tn) : NaN;
  a.falseNegativeRate = r > 0 ? fn / r : NaN;
  a.referenceVolumeMl = r * voxelMl;
  a.predictedVolumeMl = p * voxelMl;
}

double
VoxelMl(const ComboSegLabelMap * labels)
{
  const auto spacing = labels->GetSpacing();
  return spacing[0] * spacing[1] * spacing[2] / 1000.0;
}

// The bounding box of every label value of a map.
std::map<int, LabelRegion>
BoundingBoxes(const ComboSegLabelMap * labels, int numberOfThreads)
{
  auto statistics = LabelStatisticsImageFilter<ComboSegLabelMap, ComboSegLabelMap>::New();
  statistics->SetInput(labels);
  statistics->SetLabelInput(labels);
  LimitWorkUnits(statistics.GetPointer(), numberOfThreads);
  statistics->Update();
  std::map<int, LabelRegion> boxes;
  for (int value : statistics->GetValidLabelValues())
    boxes[value] = statistics->GetRegion(value);
  return boxes;
}

// The smallest region holding both (either may be empty).
LabelRegion
Union(const LabelRegion & a, const LabelRegion & b)
{
  if (a.GetNumberOfPixels() == 0)
    return b;
  if (b.GetNumberOfPixels() == 0)
    return a;
  LabelRegion united;
  for (unsigned int d = 0; d < 3; ++d)
  {
    const IndexValueType lo = std::min(a.GetIndex(d), b.GetIndex(d));
    const IndexValueType hi = std::max(a.GetUpperIndex()[d], b.GetUpperIndex()[d]);
    united.SetIndex(d, lo);
    united.SetSize(d, static_cast<SizeValueType>(hi - lo + 1));
  }
  return united;
}

ComboSegLabelMap::Pointer
NonZero(const ComboSegLabelMap * labels, int numberOfThreads)
{
  auto threshold = BinaryThresholdImageFilter<ComboSegLabelMap, ComboSegLabelMap>::New();
  threshold->SetInput(labels);
  threshold->SetLowerThreshold(0);
  threshold->SetUpperThreshold(0);
  threshold->SetInsideValue(0);
  threshold->SetOutsideValue(1);
  LimitWorkUnits(threshold.GetPointer(), numberOfThreads);
  threshold->Update();
  return threshold->GetOutput();
}

} // namespace

ComboSegLabelMap::Pointer
ComboSegOnReferenceGrid(const ComboSegLabelMap * reference, const ComboSegLabelMap * predicted, int numberOfThreads)
{
  const ComboSegGrid referenceGrid = ComboSegGridOf(reference), predictedGrid = ComboSegGridOf(predicted);
  if (ComboSegSameGrid(referenceGrid, predictedGrid))
  {
    return const_cast<ComboSegLabelMap *>(predicted);
  }
  auto onReference = ComboSegLabelMap::New();
  onReference->CopyInformation(reference);
  onReference->SetRegions(reference->GetLargestPossibleRegion());
  onReference->Allocate();
  ComboSegResampleNearest(onReference->GetBufferPointer(), referenceGrid, predicted->GetBufferPointer(), predictedGrid,
                          0, numberOfThreads);
  return onReference;
}

std::vector<ComboSegStructureAgreement>
ComboSegCompareStructures(const ComboSegLabelMap * reference, const ComboSegLabelMap * predicted,
                          const std::function<void(double)> & progress, int numberOfThreads)
{
  CheckSameGrid(reference, predicted);
  // Voxel counts per label value: |R|, |P| and |R n P| (ITK's "source" is the reference).
  auto counts = LabelOverlapMeasuresImageFilter<ComboSegLabelMap>::New();
  counts->SetSourceImage(reference);
  counts->SetTargetImage(predicted);
  LimitWorkUnits(counts.GetPointer(), numberOfThreads);
  counts->Update();
  const std::map<int, LabelRegion> referenceBoxes = BoundingBoxes(reference, numberOfThreads);
  const std::map<int, LabelRegion> predictedBoxes = BoundingBoxes(predicted, numberOfThreads);
  const auto                       measuresByValue = counts->GetLabelSetMeasures(); // a copy of the filter's map
  std::set<int>                    values;
  for (const auto & measures : measuresByValue)
    if (measures.first != 0)
      values.insert(measures.first);

  const int64_t voxels = static_cast<int64_t>(reference->GetLargestPossibleRegion().GetNumberOfPixels());
  std::vector<ComboSegStructureAgreement> structures;
  for (int value : values)
  {
    const auto &               measures = measuresByValue.at(value);
    ComboSegStructureAgreement a;
    a.labelValue = value;
    a.referenceVoxels = static_cast<int64_t>(measures.m_Source);
    a.predictedVoxels = static_cast<int64_t>(measures.m_Target);
    a.overlapVoxels = static_cast<int64_t>(measures.m_Intersection);
    OverlapMeasures(voxels, VoxelMl(reference), a);
    a.hausdorff95 = a.meanSurfaceDistance = NaN; // undefined when the structure is missing from one map
    if (a.referenceVoxels > 0 && a.predictedVoxels > 0)
    {
      SurfaceDistances(reference, predicted, Union(referenceBoxes.at(value), predictedBoxes.at(value)), a,
                       numberOfThreads);
    }
    structures.push_back(a);
    if (progress)
      progress(static_cast<double>(structures.size()) / static_cast<double>(values.size()));
  }
  return structures;
}

ComboSegStructureAgreement
ComboSegCompareAllStructures(const ComboSegLabelMap * reference, const ComboSegLabelMap * predicted,
                             int numberOfThreads)
{
  CheckSameGrid(reference, predicted);
  const ComboSegLabelMap::Pointer anyReference = NonZero(reference, numberOfThreads);
  const ComboSegLabelMap::Pointer anyPredicted = NonZero(predicted, numberOfThreads);
  for (const ComboSegStructureAgreement & a :
       ComboSegCompareStructures(anyReference, anyPredicted, {}, numberOfThreads))
    return a;
  // Neither map holds a structure.
  ComboSegStructureAgreement none;
  none.labelValue = 1;
  OverlapMeasures(static_cast<int64_t>(reference->GetLargestPossibleRegion().GetNumberOfPixels()), VoxelMl(reference),
                  none);
  none.hausdorff95 = none.meanSurfaceDistance = NaN;
  return none;
}

double
ComboSegMeanDice(const std::vector<ComboSegStructureAgreement> & structures)
{
  double sum = 0.0;
  int    count = 0;
  for (const ComboSegStructureAgreement & a : structures)
    if (a.referenceVoxels > 0)
    {
      sum += a.dice;
      ++count;
    }
  return count ? sum / count : NaN;
}

} // end namespace itk
