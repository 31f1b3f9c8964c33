// ComboSegEvaluate - Slicer CLI: per-structure agreement between a reference and a label map.
#include "ComboSegCLI.h"
#include "ComboSegInputs.h"
#include "ComboSegEvaluateXML.h"
#include "ComboSegOutput.h"
#include "ComboSegRunOutputs.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "itkComboSegIO.h"
#include "itkComboSegInputChecks.h"
#include "itkComboSegProcessing.h"
#include "itkSignedMaurerDistanceMapImageFilter.h"

namespace
{

using LabelImageType = itk::Image<int, 3>;
using MaskImageType = itk::Image<unsigned char, 3>;
using DistanceImageType = itk::Image<float, 3>;

std::map<int, std::string> Names(const ComboSegArguments &args)
{
  std::map<int, std::string> names;
  if (args.IsSet("namesFile"))
  {
    for (const itk::LabelName &l : itk::ReadLabelNames(args.GetString("namesFile")))
      names[l.value] = l.name;
    return names;
  }
  // Without a names file, the maps' own segment keys (NRRD); other formats simply carry none.
  for (const char *param : {"referenceLabelMap", "predictedLabelMap"})
  {
    try
    {
      for (const itk::LabelName &l : itk::ReadLabelNames(args.GetString(param)))
        names[l.value] = l.name;
    }
    catch (const std::exception &)
    {
      names.clear();
    }
    if (!names.empty())
      break;
  }
  return names;
}

// Boundary voxels of a mask: inside voxels with a 6-neighbour outside (the box is padded).
std::vector<size_t> SurfaceVoxels(const std::vector<unsigned char> &mask, const long n[3])
{
  std::vector<size_t> out;
  const long sx = 1, sy = n[0], sz = n[0] * n[1];
  for (long k = 1; k + 1 < n[2]; ++k)
    for (long j = 1; j + 1 < n[1]; ++j)
      for (long i = 1; i + 1 < n[0]; ++i)
      {
        const long o = k * sz + j * sy + i * sx;
        if (mask[o] && (!mask[o - sx] || !mask[o + sx] || !mask[o - sy] || !mask[o + sy] || !mask[o - sz] ||
                        !mask[o + sz]))
          out.push_back(size_t(o));
      }
  return out;
}

// Unsigned distance (mm) from every voxel to the nearest boundary voxel of the mask.
DistanceImageType::Pointer DistanceToBoundary(const std::vector<unsigned char> &mask, const long n[3],
                                              const LabelImageType::SpacingType &spacing)
{
  auto image = MaskImageType::New();
  MaskImageType::RegionType region;
  region.SetSize({{size_t(n[0]), size_t(n[1]), size_t(n[2])}});
  image->SetRegions(region);
  image->SetSpacing(spacing);
  image->Allocate();
  std::copy(mask.begin(), mask.end(), image->GetBufferPointer());
  auto distance = itk::SignedMaurerDistanceMapImageFilter<MaskImageType, DistanceImageType>::New();
  distance->SetInput(image);
  distance->SetUseImageSpacing(true);
  distance->SetSquaredDistance(false);
  distance->SetInsideIsPositive(false);
  distance->SetBackgroundValue(0);
  distance->Update();
  return distance->GetOutput();
}

struct SurfaceDistances
{
  double hausdorff95 = std::numeric_limits<double>::quiet_NaN();
  double mean = std::numeric_limits<double>::quiet_NaN();
};

// Symmetric surface distances between the voxels of `value` in a and b, inside their common
// bounding box padded by one voxel: 95th percentile (nearest rank) and mean of the distances of
// both boundaries to each other (both directions pooled).
SurfaceDistances Distances(const int *a, const int *b, const long size[3], const LabelImageType::SpacingType &spacing,
                           int value)
{
  long lo[3] = {size[0], size[1], size[2]}, hi[3] = {-1, -1, -1};
  bool inA = false, inB = false;
  for (long k = 0, o = 0; k < size[2]; ++k)
    for (long j = 0; j < size[1]; ++j)
      for (long i = 0; i < size[0]; ++i, ++o)
      {
        const bool va = a[o] == value, vb = b[o] == value;
        inA |= va;
        inB |= vb;
        if (va || vb)
        {
          const long idx[3] = {i, j, k};
          for (int d = 0; d < 3; ++d)
          {
            lo[d] = std::min(lo[d], idx[d]);
            hi[d] = std::max(hi[d], idx[d]);
          }
        }
      }
  SurfaceDistances result;
  if (!inA || !inB)
    return result; // undefined when the structure is missing from one map
  const long n[3] = {hi[0] - lo[0] + 3, hi[1] - lo[1] + 3, hi[2] - lo[2] + 3};
  std::vector<unsigned char> ma(size_t(n[0] * n[1] * n[2]), 0), mb(ma.size(), 0);
  for (long k = lo[2]; k <= hi[2]; ++k)
    for (long j = lo[1]; j <= hi[1]; ++j)
      for (long i = lo[0]; i <= hi[0]; ++i)
      {
        const long src = (k * size[1] + j) * size[0] + i;
        const long dst = ((k - lo[2] + 1) * n[1] + (j - lo[1] + 1)) * n[0] + (i - lo[0] + 1);
        ma[dst] = a[src] == value;
        mb[dst] = b[src] == value;
      }
  const DistanceImageType::Pointer da = DistanceToBoundary(ma, n, spacing);
  const DistanceImageType::Pointer db = DistanceToBoundary(mb, n, spacing);
  std::vector<double> all;
  for (size_t o : SurfaceVoxels(ma, n))
    all.push_back(std::fabs(db->GetBufferPointer()[o]));
  for (size_t o : SurfaceVoxels(mb, n))
    all.push_back(std::fabs(da->GetBufferPointer()[o]));
  std::sort(all.begin(), all.end());
  double sum = 0.0;
  for (double d : all)
    sum += d;
  const size_t rank = size_t(std::ceil(0.95 * all.size()));
  result.hausdorff95 = all[std::max<size_t>(rank, 1) - 1];
  result.mean = sum / all.size();
  return result;
}

std::string Number(double v)
{
  if (std::isnan(v))
    return "nan";
  std::ostringstream s;
  s.precision(6);
  s << v;
  return s.str();
}

int Run(ComboSegArguments &args, ComboSegProgress &progress)
{
  ComboSegRunOutputs outputs(args); // the table's folder and name, checked before the work
  progress.Start("ComboSeg Evaluate", "reading the label maps");
  LabelImageType::Pointer reference = ComboSegReadLabelMap(args.GetString("referenceLabelMap"), progress);
  LabelImageType::Pointer predicted = ComboSegReadLabelMap(args.GetString("predictedLabelMap"), progress);
  const itk::ComboSegGrid refGrid = itk::ComboSegGridOf(reference.GetPointer());
  const itk::ComboSegGrid predGrid = itk::ComboSegGridOf(predicted.GetPointer());
  if (itk::ComboSegPhysicalOverlap(refGrid, predGrid) <= 0.0)
    ComboSegWarn(progress, "the two label maps do not overlap in space (" + args.GetString("predictedLabelMap") +
                             " lies elsewhere than " + args.GetString("referenceLabelMap") +
                             "): every structure of the evaluated map is lost; check that they belong to one scan");
  const size_t count = size_t(refGrid.NumberOfVoxels());
  std::vector<int> pred(predicted->GetBufferPointer(), predicted->GetBufferPointer() + predGrid.NumberOfVoxels());
  if (!itk::ComboSegSameGrid(refGrid, predGrid))
  {
    progress.Comment("the evaluated map is resampled onto the reference grid (nearest neighbour)");
    std::vector<int> resampled(count);
    itk::ComboSegResampleNearest(resampled.data(), refGrid, pred.data(), predGrid, 0);
    pred.swap(resampled);
  }
  const int *ref = reference->GetBufferPointer();
  const std::map<int, std::string> names = Names(args);
  progress.Progress(0.1);

  std::map<int, long> refCount, predCount, overlap;
  for (size_t i = 0; i < count; ++i)
  {
    if (ref[i] != 0)
      ++refCount[ref[i]];
    if (pred[i] != 0)
      ++predCount[pred[i]];
    if (ref[i] != 0 && ref[i] == pred[i])
      ++overlap[ref[i]];
  }
  std::set<int> values;
  for (const auto &c : refCount)
    values.insert(c.first);
  for (const auto &c : predCount)
    values.insert(c.first);

  const auto spacing = reference->GetSpacing();
  const double voxelMl = spacing[0] * spacing[1] * spacing[2] / 1000.0;
  const long size[3] = {long(refGrid.size[0]), long(refGrid.size[1]), long(refGrid.size[2])};
  std::vector<std::vector<std::string>> rows;
  double diceSum = 0.0;
  int diceCount = 0;
  size_t done = 0;
  // One row of measures for label value v of ref and prediction; `value` and `name` label it.
  auto measure = [&](const int *refMap, const int *predMap, int v, double r, double p, double tp,
                     const std::string &value, const std::string &name) {
    const double fp = p - tp, fn = r - tp, tn = double(count) - r - fp;
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const double dice = (r + p) > 0 ? 2.0 * tp / (r + p) : nan;
    const double jaccard = (r + p - tp) > 0 ? tp / (r + p - tp) : nan;
    const double precision = p > 0 ? tp / p : nan;
    const double recall = r > 0 ? tp / r : nan;
    const double fpRate = (fp + tn) > 0 ? fp / (fp + tn) : nan;
    const double fnRate = r > 0 ? fn / r : nan;
    const SurfaceDistances sd = Distances(refMap, predMap, size, spacing, v);
    rows.push_back({value, name, Number(dice), Number(jaccard), Number(precision), Number(recall), Number(fpRate),
                    Number(fnRate), Number(sd.hausdorff95), Number(sd.mean), Number(r * voxelMl),
                    Number(p * voxelMl), std::to_string(long(r)), std::to_string(long(p)),
                    std::to_string(long(tp))});
    return dice;
  };
  for (int v : values)
  {
    const double r = refCount[v], p = predCount[v], tp = overlap[v];
    const auto name = names.find(v);
    const double dice = measure(ref, pred.data(), v, r, p, tp, std::to_string(v),
                                name != names.end() ? name->second : "label " + std::to_string(v));
    if (r > 0)
    {
      diceSum += dice;
      ++diceCount;
    }
    progress.Progress(0.1 + 0.85 * double(++done) / (values.size() + 1));
  }
  const size_t structures = rows.size();
  if (args.GetBool("allStructures"))
  {
    // Every structure merged into one: any non-zero label in each map (e.g. the whole tumour).
    std::vector<int> refAll(count), predAll(count);
    double r = 0, p = 0, tp = 0;
    for (size_t i = 0; i < count; ++i)
    {
      refAll[i] = ref[i] != 0;
      predAll[i] = pred[i] != 0;
      r += refAll[i];
      p += predAll[i];
      tp += refAll[i] & predAll[i];
    }
    measure(refAll.data(), predAll.data(), 1, r, p, tp, "all", "all structures");
  }
  if (outputs.Has("outputTable"))
    ComboSegWriteTable(outputs.Staged("outputTable"),
                       {"LabelValue", "Name", "Dice", "Jaccard", "Precision", "Recall", "FalsePositiveRate",
                        "FalseNegativeRate", "Hausdorff95_mm", "MeanSurfaceDistance_mm", "ReferenceVolume_ml",
                        "PredictedVolume_ml", "ReferenceVoxels", "PredictedVoxels", "OverlapVoxels"},
                       rows);
  const double meanDice = diceCount ? diceSum / diceCount : std::numeric_limits<double>::quiet_NaN();
  outputs.Commit();
  args.SetReturn("meanDice", meanDice);
  args.SetReturn("numberOfStructures", std::to_string(structures));
  progress.Comment(std::to_string(structures) + " structures, mean Dice " + Number(meanDice));
  progress.End();
  return 0;
}

} // namespace

int main(int argc, char **argv)
{
  return ComboSegMain(argc, argv, ComboSegEvaluateXML, &Run);
}
