#include "itkComboSegProcessing.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <unordered_map>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <utility>

#include "itkBinaryFillholeImageFilter.h"
#include "itkImageRegionIterator.h"
#include "itkLabelStatisticsImageFilter.h"
#include "itkLinearInterpolateImageFunction.h"
#include "itkMacro.h"
#include "itkMultiThreaderBase.h"
#include "itkNearestNeighborInterpolateImageFunction.h"
#include "itkRegionOfInterestImageFilter.h"
#include "itkResampleImageFilter.h"
#include "vnl/vnl_det.h"
#include "vnl/vnl_inverse.h"
#include "vnl/vnl_matrix_fixed.h"
#include "vnl/vnl_vector_fixed.h"

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace itk
{

namespace
{

using Matrix3 = vnl_matrix_fixed<double, 3, 3>;
using Vector3 = vnl_vector_fixed<double, 3>;

// Index-to-physical matrix: direction * diag(spacing).
Matrix3
IndexToPhysical(const ComboSegGrid & g)
{
  Matrix3 m(g.direction.data()); // row-major
  for (unsigned int i = 0; i < 3; ++i)
    for (unsigned int j = 0; j < 3; ++j)
      m(i, j) *= g.spacing[j];
  return m;
}

Matrix3
InverseOfIndexToPhysical(const ComboSegGrid & g)
{
  const Matrix3 m = IndexToPhysical(g);
  const double  determinant = vnl_det(m);
  if (!(std::fabs(determinant) >= 1e-12))
  {
    itkGenericExceptionMacro(<< "image direction matrix is singular (determinant " << determinant << ")");
  }
  return vnl_inverse(m);
}

// The affine map from dst indices to src continuous indices: c = M i + t.
struct IndexMap
{
  Matrix3 m;
  Vector3 t;
};

IndexMap
MapBetween(const ComboSegGrid & dst, const ComboSegGrid & src)
{
  const Matrix3 srcInverse = InverseOfIndexToPhysical(src);
  IndexMap      map;
  map.m = srcInverse * IndexToPhysical(dst);
  map.t = srcInverse * (Vector3(dst.origin.data()) - Vector3(src.origin.data()));
  return map;
}

void
CheckGrid(const ComboSegGrid & g, const char * what)
{
  for (int i = 0; i < 3; ++i)
  {
    if (g.size[i] <= 0)
    {
      itkGenericExceptionMacro(<< what << " is empty (" << ComboSegGridToString(g) << ")");
    }
    if (!(g.spacing[i] > 0.0) || !std::isfinite(g.spacing[i]))
    {
      itkGenericExceptionMacro(<< what << " has an invalid spacing (" << ComboSegGridToString(g) << ")");
    }
  }
}

// An ITK image over a caller's buffer (no copy); the buffer must outlive it.
template <typename TPixel>
typename Image<TPixel, 3>::Pointer
ImageOnBuffer(const TPixel * values, const ComboSegGrid & grid)
{
  using ImageType = Image<TPixel, 3>;
  auto                              image = ImageType::New();
  typename ImageType::RegionType    region;
  typename ImageType::SpacingType   spacing;
  typename ImageType::PointType     origin;
  typename ImageType::DirectionType direction;
  for (unsigned int i = 0; i < 3; ++i)
  {
    region.SetSize(i, static_cast<SizeValueType>(grid.size[i]));
    spacing[i] = grid.spacing[i];
    origin[i] = grid.origin[i];
    for (unsigned int j = 0; j < 3; ++j)
      direction(i, j) = grid.direction[3 * i + j];
  }
  image->SetRegions(region);
  image->SetSpacing(spacing);
  image->SetOrigin(origin);
  image->SetDirection(direction);
  // ITK's filters only read their inputs: a const buffer is never written through this image
  // (ResampleOnto grafts it as the output only for its non-const dst).
  image->GetPixelContainer()->SetImportPointer(const_cast<TPixel *>(values),
                                               static_cast<SizeValueType>(grid.NumberOfVoxels()), false);
  return image;
}

template <typename TFilter>
void
LimitWorkUnits(TFilter * filter, int numberOfThreads)
{
  if (numberOfThreads > 0)
  {
    filter->SetNumberOfWorkUnits(static_cast<ThreadIdType>(numberOfThreads));
  }
}

// ITK's ResampleImageFilter from src onto the voxel centres of dstGrid, with ITK's edge rule
// for every caller: a point counts as inside when its continuous index lies in
// [-0.5, size - 0.5) along every axis (half a voxel beyond the outer centres), the interpolator
// clamps its neighbours to the image there, and points outside get `outside`.
template <typename TInterpolator, typename TPixel>
void
ResampleOnto(TPixel * dst, const ComboSegGrid & dstGrid, const TPixel * src, const ComboSegGrid & srcGrid,
             TPixel outside, int numberOfThreads)
{
  CheckGrid(dstGrid, "target grid");
  CheckGrid(srcGrid, "source grid");
  InverseOfIndexToPhysical(srcGrid); // a singular direction is named, not left to ITK's message
  using ImageType = Image<TPixel, 3>;
  auto resample = ResampleImageFilter<ImageType, ImageType, double>::New();
  resample->SetInput(ImageOnBuffer(src, srcGrid));
  resample->SetInterpolator(TInterpolator::New());
  resample->SetDefaultPixelValue(outside);
  const auto output = ImageOnBuffer(dst, dstGrid);
  resample->SetOutputParametersFromImage(output);
  LimitWorkUnits(resample.GetPointer(), numberOfThreads);
  // Grafted, the output is dst itself: no buffer of the filter's own (28 MB for ch2, touched for
  // the first time) to copy from. The copy stays for an ITK that would allocate one anyway.
  resample->GraftOutput(output);
  resample->Update();
  if (resample->GetOutput()->GetBufferPointer() != dst)
    std::copy_n(resample->GetOutput()->GetBufferPointer(), dstGrid.NumberOfVoxels(), dst);
}

} // namespace

void
ComboSegAdviseHugePages(void * buffer, size_t bytes)
{
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t huge = uintptr_t{ 1 } << 21;
  if (!buffer || bytes < 2 * huge)
    return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(buffer) + huge - 1) & ~(huge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(buffer) + bytes) & ~(huge - 1);
  if (end > begin)
    (void)madvise(reinterpret_cast<void *>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)buffer;
  (void)bytes;
#endif
}

void
ComboSegParallelChunks(int64_t n, int numberOfThreads, const std::function<void(int64_t, int64_t)> & body)
{
  const int64_t chunks = (n + ComboSegParallelChunk - 1) / ComboSegParallelChunk;
  if (chunks <= 1)
  {
    if (n > 0)
      body(0, n);
    return;
  }
  MultiThreaderBase::Pointer threader = MultiThreaderBase::New();
  if (numberOfThreads > 0)
  {
    threader->SetNumberOfWorkUnits(static_cast<ThreadIdType>(numberOfThreads));
  }
  threader->ParallelizeArray(
    0, static_cast<SizeValueType>(chunks),
    [&](SizeValueType c) {
      const int64_t begin = static_cast<int64_t>(c) * ComboSegParallelChunk;
      body(begin, std::min(n, begin + ComboSegParallelChunk));
    },
    nullptr);
}

namespace
{

// Visits every dst voxel with its continuous index in src, rows in parallel on ITK's threader
// (at most numberOfThreads work units; 0: ITK's default); along x the continuous index advances
// by the first column of the map.
template <typename TVisitor>
void
ForEachVoxel(const ComboSegGrid & dst, const IndexMap & map, int numberOfThreads, TVisitor && visit)
{
  const int64_t nx = dst.size[0], ny = dst.size[1], nz = dst.size[2];
  const auto    visitRow = [&](SizeValueType rowIndex) {
    const auto    row = static_cast<int64_t>(rowIndex);
    const int64_t y = row % ny, z = row / ny;
    double        c[3];
    for (unsigned int d = 0; d < 3; ++d)
    {
      c[d] = map.m(d, 1) * static_cast<double>(y) + map.m(d, 2) * static_cast<double>(z) + map.t[d];
    }
    int64_t offset = row * nx;
    for (int64_t x = 0; x < nx; ++x, ++offset)
    {
      const double cx = c[0] + map.m(0, 0) * static_cast<double>(x);
      const double cy = c[1] + map.m(1, 0) * static_cast<double>(x);
      const double cz = c[2] + map.m(2, 0) * static_cast<double>(x);
      visit(offset, cx, cy, cz);
    }
  };
  MultiThreaderBase::Pointer threader = MultiThreaderBase::New();
  if (numberOfThreads > 0)
  {
    threader->SetNumberOfWorkUnits(static_cast<ThreadIdType>(numberOfThreads));
  }
  threader->ParallelizeArray(0, static_cast<SizeValueType>(ny * nz), visitRow, nullptr);
}

// ITK's edge rule (ImageFunction::IsInsideBuffer): continuous index in [-0.5, size - 0.5).
inline bool
Inside(const ComboSegGrid & g, double cx, double cy, double cz)
{
  return cx >= -0.5 && cy >= -0.5 && cz >= -0.5 && cx < g.size[0] - 0.5 && cy < g.size[1] - 0.5 && cz < g.size[2] - 0.5;
}

// The 8 neighbours and weights of a trilinear interpolation, clamped at the grid's edges.
struct Trilinear
{
  int64_t offset[8];
  double  weight[8];
};

inline void
TrilinearAt(const ComboSegGrid & g, double cx, double cy, double cz, Trilinear & t)
{
  const double c[3] = { cx, cy, cz };
  int64_t      lo[3], hi[3];
  double       f[3];
  for (int d = 0; d < 3; ++d)
  {
    const double clamped = std::min(std::max(c[d], 0.0), static_cast<double>(g.size[d] - 1));
    lo[d] = static_cast<int64_t>(std::floor(clamped));
    hi[d] = std::min(lo[d] + 1, g.size[d] - 1);
    f[d] = clamped - static_cast<double>(lo[d]);
  }
  const int64_t sx = 1, sy = g.size[0], sz = g.size[0] * g.size[1];
  int           n = 0;
  for (int k = 0; k < 2; ++k)
    for (int j = 0; j < 2; ++j)
      for (int i = 0; i < 2; ++i, ++n)
      {
        t.offset[n] = (i ? hi[0] : lo[0]) * sx + (j ? hi[1] : lo[1]) * sy + (k ? hi[2] : lo[2]) * sz;
        t.weight[n] = (i ? f[0] : 1.0 - f[0]) * (j ? f[1] : 1.0 - f[1]) * (k ? f[2] : 1.0 - f[2]);
      }
}

// Axis of an orientation letter in LPS physical space: "R" means x increases towards the right
// (the letters name where each axis points, as DICOM and Slicer do). Written out because ITK 5.2
// has no parser for such strings (DICOMOrientation came with ITK 5.3) and its SpatialOrientation
// codes name the opposite end of each axis; OrientImageFilter does not fit either: the model
// grid also changes the spacing, and one resampling onto it interpolates once, where
// reorienting first would copy the scan once more.
bool
OrientationAxis(char letter, Vector3 & axis)
{
  switch (letter)
  {
    case 'L': axis = Vector3(1, 0, 0); return true;
    case 'R': axis = Vector3(-1, 0, 0); return true;
    case 'P': axis = Vector3(0, 1, 0); return true;
    case 'A': axis = Vector3(0, -1, 0); return true;
    case 'S': axis = Vector3(0, 0, 1); return true;
    case 'I': axis = Vector3(0, 0, -1); return true;
    default: return false;
  }
}

// The direction matrix (columns: the model grid's axes in LPS) of a 3D model's orientation.
Matrix3
ModelAxes(const cs_model_info & info)
{
  const std::string orientation(info.orientation);
  Vector3           axes[3];
  bool              valid = orientation.size() == 3;
  for (unsigned int i = 0; valid && i < 3; ++i)
  {
    valid = OrientationAxis(orientation[i], axes[i]);
  }
  // Each physical axis exactly once.
  valid = valid && std::fabs(axes[0][0] + axes[1][0] + axes[2][0]) == 1 &&
          std::fabs(axes[0][1] + axes[1][1] + axes[2][1]) == 1 && std::fabs(axes[0][2] + axes[1][2] + axes[2][2]) == 1;
  if (!valid)
  {
    itkGenericExceptionMacro(<< "model '" << info.name << "' has an invalid orientation '" << orientation
                             << "' (expected three letters such as RAS or LPS)");
  }
  Matrix3 direction;
  for (unsigned int j = 0; j < 3; ++j)
    direction.set_column(j, axes[j]);
  return direction;
}

// Size and origin of a grid with the model's axes and spacing that covers every voxel centre of
// the input and is centred on them.
void
CoverInput(const ComboSegGrid & input, ComboSegGrid & model)
{
  const Matrix3 toPhysical = IndexToPhysical(input);
  const Matrix3 axes(model.direction.data());
  Vector3       lo(std::numeric_limits<double>::max());
  Vector3       hi(-std::numeric_limits<double>::max());
  for (int corner = 0; corner < 8; ++corner)
  {
    const Vector3 index((corner & 1) ? static_cast<double>(input.size[0] - 1) : 0.0,
                        (corner & 2) ? static_cast<double>(input.size[1] - 1) : 0.0,
                        (corner & 4) ? static_cast<double>(input.size[2] - 1) : 0.0);
    const Vector3 point = toPhysical * index + Vector3(input.origin.data());
    // Coordinates along the model's axes (orthonormal, so the transpose inverts them).
    const Vector3 alongAxes = axes.transpose() * point;
    for (unsigned int a = 0; a < 3; ++a)
    {
      lo[a] = std::min(lo[a], alongAxes[a]);
      hi[a] = std::max(hi[a], alongAxes[a]);
    }
  }
  Vector3 start;
  for (unsigned int a = 0; a < 3; ++a)
  {
    const double extent = hi[a] - lo[a];
    model.size[a] = static_cast<int64_t>(std::ceil(extent / model.spacing[a] - 1e-6)) + 1;
    start[a] = lo[a] - 0.5 * (static_cast<double>(model.size[a] - 1) * model.spacing[a] - extent);
  }
  const Vector3 origin = axes * start;
  for (unsigned int d = 0; d < 3; ++d)
    model.origin[d] = origin[d];
}

std::string
ChannelList(const cs_model_info & info)
{
  std::string list;
  for (int32_t c = 0; c < info.arch.in_channels; ++c)
  {
    list += (c ? ", " : "") + std::string(info.channels[c].name);
  }
  return list;
}

// Whether voxel i (value v) lies in the body the channel's recipe normalises over; recipes
// without a body (CT, plain z-score, none) take every voxel.
bool
InBody(const cs_channel_info & channel, float v, float minimum, const uint8_t * mask, int64_t i)
{
  switch (channel.norm)
  {
    case CS_NORM_ZSCORE_NONZERO:
    case CS_NORM_UPPER_PEAK: return v != 0.0f;
    case CS_NORM_ZSCORE_MASK: return mask ? mask[i] != 0 : v > minimum;
    default: return true;
  }
}

bool
HasBody(const cs_channel_info & channel)
{
  return channel.norm == CS_NORM_ZSCORE_NONZERO || channel.norm == CS_NORM_ZSCORE_MASK ||
         channel.norm == CS_NORM_UPPER_PEAK;
}

} // namespace

std::string
ComboSegGridToString(const ComboSegGrid & g)
{
  std::ostringstream s;
  s << "size " << g.size[0] << "x" << g.size[1] << "x" << g.size[2] << ", spacing " << g.spacing[0] << " "
    << g.spacing[1] << " " << g.spacing[2] << ", origin " << g.origin[0] << " " << g.origin[1] << " " << g.origin[2]
    << ", direction";
  for (double d : g.direction)
  {
    s << " " << d;
  }
  return s.str();
}

bool
ComboSegSameGrid(const ComboSegGrid & a, const ComboSegGrid & b, double tolerance)
{
  for (int i = 0; i < 3; ++i)
  {
    if (a.size[i] != b.size[i])
      return false;
    if (std::fabs(a.spacing[i] - b.spacing[i]) > tolerance * std::min(a.spacing[i], b.spacing[i]))
      return false;
  }
  const double minSpacing = std::min({ a.spacing[0], a.spacing[1], a.spacing[2] });
  for (int i = 0; i < 3; ++i)
  {
    if (std::fabs(a.origin[i] - b.origin[i]) > tolerance * minSpacing)
      return false;
  }
  for (int i = 0; i < 9; ++i)
  {
    if (std::fabs(a.direction[i] - b.direction[i]) > tolerance)
      return false;
  }
  return true;
}

bool
ComboSegSameLattice(const ComboSegGrid & a, const ComboSegGrid & b, double tolerance)
{
  // b's indices map to a's by a signed permutation plus an integer shift covering a exactly.
  const IndexMap map = MapBetween(b, a);
  int64_t        mappedSize[3] = { 0, 0, 0 };
  for (unsigned int i = 0; i < 3; ++i)
  {
    int nonZero = 0;
    for (unsigned int j = 0; j < 3; ++j)
    {
      const double v = map.m(i, j);
      if (std::fabs(v) < tolerance)
        continue;
      if (std::fabs(std::fabs(v) - 1.0) > tolerance)
        return false;
      ++nonZero;
      mappedSize[i] = b.size[j];
      // A flipped axis starts at a's last index.
      const double start = v > 0 ? map.t[i] : map.t[i] - static_cast<double>(b.size[j] - 1);
      if (std::fabs(start) > tolerance)
        return false;
    }
    if (nonZero != 1)
      return false;
  }
  return mappedSize[0] == a.size[0] && mappedSize[1] == a.size[1] && mappedSize[2] == a.size[2];
}

ComboSegGrid
ComboSegModelGrid(const ComboSegGrid & input, const cs_model_info & info)
{
  CheckGrid(input, "input image");
  for (int i = 0; i < 3; ++i)
  {
    if (!(info.spacing[i] > 0.0))
    {
      itkGenericExceptionMacro(<< "model '" << info.name << "' has an invalid spacing " << info.spacing[i]);
    }
  }
  ComboSegGrid model;
  if (info.arch.spatial_dims == 2)
  {
    if (input.size[2] != 1)
    {
      itkGenericExceptionMacro(<< "model '" << info.name << "' is 2D but the image has " << input.size[2]
                               << " slices: give it a 2D image");
    }
    model.direction = input.direction;
    model.spacing = { { info.spacing[0], info.spacing[1], input.spacing[2] } };
  }
  else
  {
    const Matrix3 axes = ModelAxes(info);
    for (unsigned int i = 0; i < 3; ++i)
      for (unsigned int j = 0; j < 3; ++j)
        model.direction[3 * i + j] = axes(i, j);
    model.spacing = { { info.spacing[0], info.spacing[1], info.spacing[2] } };
  }
  CoverInput(input, model);
  if (info.arch.spatial_dims == 2)
  {
    model.size[2] = 1;
  }
  return model;
}

// True when every dst voxel centre is a src voxel centre (axes permuted or flipped, whole-voxel
// shifts): resampling is then a copy.
namespace
{
bool
VoxelCentresCoincide(const ComboSegGrid & dstGrid, const ComboSegGrid & srcGrid)
{
  const IndexMap map = MapBetween(dstGrid, srcGrid);
  const auto     whole = [](double v) {
    return std::fabs(v - std::round(v)) < 1e-6;
  };
  for (unsigned int i = 0; i < 3; ++i)
  {
    if (!whole(map.t[i]))
      return false;
    for (unsigned int j = 0; j < 3; ++j)
      if (!whole(map.m(i, j)))
        return false;
  }
  return true;
}
} // namespace

void
ComboSegResampleLinear(float * dst, const ComboSegGrid & dstGrid, const float * src, const ComboSegGrid & srcGrid,
                       float outside, int numberOfThreads)
{
  // On coinciding grids the nearest voxel is the exact value. ITK's linear path steps along each
  // row by adding the index increment, which leaves weights of about 1e-13 on the neighbours: the
  // zeros around the head became tiny non-zero values that zscore_nonzero counted (60 voxels of
  // the quickstart's label map changed).
  if (VoxelCentresCoincide(dstGrid, srcGrid))
  {
    ResampleOnto<NearestNeighborInterpolateImageFunction<Image<float, 3>, double>>(dst, dstGrid, src, srcGrid, outside,
                                                                                   numberOfThreads);
    return;
  }
  ResampleOnto<LinearInterpolateImageFunction<Image<float, 3>, double>>(dst, dstGrid, src, srcGrid, outside,
                                                                        numberOfThreads);
}

void
ComboSegResampleNearest(int32_t * dst, const ComboSegGrid & dstGrid, const int32_t * src, const ComboSegGrid & srcGrid,
                        int32_t outside, int numberOfThreads)
{
  ResampleOnto<NearestNeighborInterpolateImageFunction<Image<int32_t, 3>, double>>(dst, dstGrid, src, srcGrid, outside,
                                                                                   numberOfThreads);
}

namespace
{
struct PartialSum
{
  double  sum{ 0.0 };
  int64_t count{ 0 };
};

PartialSum
SumOverChunks(int64_t n, int numberOfThreads, const std::function<PartialSum(int64_t, int64_t)> & body)
{
  PartialSum total;
  for (const PartialSum & part : ComboSegPerChunk(n, numberOfThreads, body))
  {
    total.sum += part.sum;
    total.count += part.count;
  }
  return total;
}

// A float as a key whose unsigned order is the floats' order (negatives below positives).
uint64_t
OrderKey(float v)
{
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

float
KeyValue(uint64_t key)
{
  const uint32_t k = static_cast<uint32_t>(key), u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
  float          v;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

// Counts of voxels [0, n) in `bins` bins over the threads; binOf(i) is voxel i's bin, or -1 for
// none. Integer counts: the same for any thread count.
template <typename BinOf>
std::vector<int64_t>
HistogramOverChunks(int64_t n, int numberOfThreads, size_t bins, const BinOf & binOf)
{
  const std::function<std::vector<int64_t>(int64_t, int64_t)> chunkCounts = [&](int64_t begin, int64_t end) {
    std::vector<int64_t> counts(bins, 0);
    for (int64_t i = begin; i < end; ++i)
    {
      const int64_t bin = binOf(i);
      if (bin >= 0)
        ++counts[static_cast<size_t>(bin)];
    }
    return counts;
  };
  std::vector<int64_t> total(bins, 0);
  for (const std::vector<int64_t> & part : ComboSegPerChunk(n, numberOfThreads, chunkCounts))
    for (size_t b = 0; b < bins; ++b)
      total[b] += part[b];
  return total;
}

// Counts of the non-zero values whose keys are `prefix` above bit shift + bits, by their `bits`
// bits at `shift`.
std::vector<int64_t>
KeyHistogram(const float * values, int64_t n, int shift, int bits, uint64_t prefix, int numberOfThreads)
{
  const uint64_t mask = (uint64_t{ 1 } << bits) - 1;
  return HistogramOverChunks(n, numberOfThreads, static_cast<size_t>(mask + 1), [&](int64_t i) {
    const uint64_t key = OrderKey(values[i]);
    return values[i] != 0.0f && (key >> (shift + bits)) == prefix ? static_cast<int64_t>((key >> shift) & mask)
                                                                  : int64_t{ -1 };
  });
}

// The k-th smallest (from 0) of the non-zero values, exactly (what std::nth_element picks): the
// keys' 32 bits in three histogram passes of 11, 11 and 10 bits, each narrowing the prefix to
// the bin that holds it. No copy of the values, every pass over the threads.
float
NonZeroOrderStatistic(const float * values, int64_t n, int64_t k, int numberOfThreads)
{
  uint64_t prefix = 0;
  for (const auto & [shift, bits] : { std::pair<int, int>{ 21, 11 }, { 10, 11 }, { 0, 10 } })
  {
    const std::vector<int64_t> counts = KeyHistogram(values, n, shift, bits, prefix, numberOfThreads);
    size_t                     bin = 0;
    while (k >= counts[bin])
      k -= counts[bin++];
    prefix = (prefix << bits) | bin;
  }
  return KeyValue(prefix);
}

// The brightest major peak of the histogram of the non-zero voxels (CS_NORM_UPPER_PEAK,
// docs/design.md): 128 bins from the lowest non-zero value to the 99.5th percentile (bright
// outliers such as vessels or fat do not stretch the bins), smoothed over 5 bins; of the local
// maxima at least half as high as the highest, the brightest. In a T1 MR that is white matter,
// whether or not the scan holds skull, neck or background, which move a z-score's mean.
// Over the threads in fixed chunks, integer counts: the same peak for any thread count.
double
UpperHistogramPeak(const float * values, int64_t n, int numberOfThreads)
{
  struct Part
  {
    int64_t count{ 0 };
    float   lowest{ std::numeric_limits<float>::infinity() };
  };
  const std::function<Part(int64_t, int64_t)> chunkBody = [&](int64_t begin, int64_t end) {
    Part part;
    for (int64_t i = begin; i < end; ++i)
      if (values[i] != 0.0f)
      {
        ++part.count;
        part.lowest = std::min(part.lowest, values[i]);
      }
    return part;
  };
  Part body;
  for (const Part & part : ComboSegPerChunk(n, numberOfThreads, chunkBody))
  {
    body.count += part.count;
    body.lowest = std::min(body.lowest, part.lowest);
  }
  if (body.count == 0)
    return 0.0;
  const int64_t top = static_cast<int64_t>(0.995 * static_cast<double>(body.count - 1));
  const double  high = NonZeroOrderStatistic(values, n, top, numberOfThreads), low = body.lowest;
  if (!(high > low))
    return high;
  constexpr int              bins = 128, half = 2;
  const std::vector<int64_t> binCounts = HistogramOverChunks(n, numberOfThreads, bins, [&](int64_t i) {
    return values[i] != 0.0f && values[i] <= high
             ? static_cast<int64_t>(std::min(bins - 1, static_cast<int>((values[i] - low) / (high - low) * bins)))
             : int64_t{ -1 };
  });
  std::vector<double>        counts(binCounts.begin(), binCounts.end()), smooth(bins, 0.0);
  for (int b = 0; b < bins; ++b)
    for (int j = std::max(0, b - half); j <= std::min(bins - 1, b + half); ++j)
      smooth[b] += counts[j];
  const double highest = *std::max_element(smooth.begin(), smooth.end());
  int          peak = 0;
  for (int b = 0; b < bins; ++b)
  {
    const bool local = (b == 0 || smooth[b] >= smooth[b - 1]) && (b == bins - 1 || smooth[b] >= smooth[b + 1]);
    if (local && smooth[b] >= 0.5 * highest)
      peak = b;
  }
  return low + (peak + 0.5) * (high - low) / bins;
}

// The smallest value, NaN skipped (std::min keeps its first argument against a NaN).
float
MinimumOf(const float * values, int64_t n, int numberOfThreads)
{
  constexpr float                              none = std::numeric_limits<float>::max();
  const std::function<float(int64_t, int64_t)> chunkMinimum = [&](int64_t begin, int64_t end) {
    float minimum = none;
    for (int64_t i = begin; i < end; ++i)
      minimum = std::min(minimum, values[i]);
    return minimum;
  };
  float minimum = none;
  for (float part : ComboSegPerChunk(n, numberOfThreads, chunkMinimum))
    minimum = std::min(minimum, part);
  return n > 0 ? minimum : 0.0f;
}
} // namespace

ComboSegIntensityStatistics
ComboSegChannelStatistics(const float * values, int64_t n, const cs_channel_info & channel, const uint8_t * mask,
                          int numberOfThreads)
{
  ComboSegIntensityStatistics stats;
  stats.minimum = MinimumOf(values, n, numberOfThreads);
  if (channel.norm == CS_NORM_CLIP_SCALE)
  {
    stats.mean = channel.mean;
    stats.std = channel.std > 0.0f ? channel.std : 1.0;
    return stats;
  }
  if (channel.norm == CS_NORM_NONE)
  {
    return stats;
  }
  if (channel.norm == CS_NORM_UPPER_PEAK)
  {
    const double peak = UpperHistogramPeak(values, n, numberOfThreads);
    if (!(peak > 0.0))
    {
      itkGenericExceptionMacro(<< "channel '" << channel.name
                               << "': the upper_peak normalisation needs a scan of positive "
                               << "intensities (a raw MR), but its brightest histogram peak is at " << peak
                               << (peak == 0.0 ? " (every voxel is zero)"
                                               : " (already normalised? use zscore_nonzero)"));
    }
    stats.mean = 0.0;
    stats.std = peak;
    return stats;
  }
  // Two passes in double: stable for large volumes.
  auto used = [&](int64_t i) {
    return InBody(channel, values[i], stats.minimum, mask, i);
  };
  const PartialSum body = SumOverChunks(n, numberOfThreads, [&](int64_t begin, int64_t end) {
    PartialSum part;
    for (int64_t i = begin; i < end; ++i)
      if (used(i))
      {
        part.sum += values[i];
        ++part.count;
      }
    return part;
  });
  const int64_t    count = body.count;
  if (count == 0)
  {
    itkGenericExceptionMacro(<< "channel '" << channel.name << "' has no voxel to normalise over ("
                             << (channel.norm == CS_NORM_ZSCORE_MASK && mask ? "the mask is empty"
                                 : channel.norm == CS_NORM_ZSCORE_MASK       ? "every voxel has the scan's lowest value"
                                                                             : "every voxel is zero")
                             << ")");
  }
  stats.mean = body.sum / static_cast<double>(count);
  const double squares = SumOverChunks(n, numberOfThreads, [&](int64_t begin, int64_t end) {
                           PartialSum part;
                           for (int64_t i = begin; i < end; ++i)
                             if (used(i))
                               part.sum += (values[i] - stats.mean) * (values[i] - stats.mean);
                           return part;
                         }).sum;
  const double std = std::sqrt(squares / static_cast<double>(count));
  // A constant image stays centred rather than blowing up.
  stats.std = std > 1e-8 ? std : 1.0;
  return stats;
}

namespace
{
// ComboSegNormalise on values [begin, end): each voxel by itself.
void
NormaliseRange(float * values, int64_t begin, int64_t end, const cs_channel_info & channel,
               const ComboSegIntensityStatistics & stats, const uint8_t * mask)
{
  const double scale = 1.0 / stats.std;
  switch (channel.norm)
  {
    case CS_NORM_NONE: return;
    case CS_NORM_CLIP_SCALE:
      for (int64_t i = begin; i < end; ++i)
      {
        const float clipped = std::min(std::max(values[i], channel.clip_low), channel.clip_high);
        values[i] = static_cast<float>((clipped - stats.mean) * scale);
      }
      return;
    case CS_NORM_ZSCORE_NONZERO:
    case CS_NORM_ZSCORE_MASK:
    case CS_NORM_UPPER_PEAK:
      for (int64_t i = begin; i < end; ++i)
        values[i] = InBody(channel, values[i], stats.minimum, mask, i)
                      ? static_cast<float>((values[i] - stats.mean) * scale)
                      : 0.0f;
      return;
    case CS_NORM_ZSCORE:
    default:
      for (int64_t i = begin; i < end; ++i)
        values[i] = static_cast<float>((values[i] - stats.mean) * scale);
      return;
  }
}
} // namespace

void
ComboSegNormalise(float * values, int64_t n, const cs_channel_info & channel, const ComboSegIntensityStatistics & stats,
                  const uint8_t * mask, int numberOfThreads)
{
  if (channel.norm == CS_NORM_NONE)
    return;
  ComboSegParallelChunks(n, numberOfThreads,
                         [&](int64_t begin, int64_t end) { NormaliseRange(values, begin, end, channel, stats, mask); });
}

float
ComboSegPadValue(const cs_channel_info & channel, const ComboSegIntensityStatistics & stats)
{
  switch (channel.norm)
  {
    case CS_NORM_CLIP_SCALE: return channel.clip_low;
    case CS_NORM_ZSCORE_NONZERO:
    case CS_NORM_ZSCORE_MASK:
    case CS_NORM_UPPER_PEAK: return 0.0f;
    default: return stats.minimum;
  }
}

namespace
{

// The channels the model expects, by count: messages name the missing or extra ones.
void
CheckChannelCount(const std::vector<ComboSegChannel> & channels, const cs_model_info & info)
{
  const int32_t expected = info.arch.in_channels;
  const int32_t given = static_cast<int32_t>(channels.size());
  if (given < expected)
  {
    std::ostringstream missing;
    for (int32_t c = given; c < expected; ++c)
      missing << (c > given ? ", " : "") << "channel " << c << " '" << info.channels[c].name << "'";
    itkGenericExceptionMacro(<< "model '" << info.name << "' expects " << expected << " channel(s) ("
                             << ChannelList(info) << ") but was given " << given << ": missing " << missing.str());
  }
  if (given > expected)
  {
    std::ostringstream extra;
    for (int32_t c = expected; c < given; ++c)
      extra << (c > expected ? ", " : "") << channels[c].source;
    itkGenericExceptionMacro(<< "model '" << info.name << "' expects " << expected << " channel(s) ("
                             << ChannelList(info) << ") but was given " << given << ": extra " << extra.str());
  }
}

// One channel: not empty, on the first channel's grid, every voxel finite.
void
CheckChannel(const ComboSegChannel & ch, const ComboSegChannel & first)
{
  if (ch.grid.NumberOfVoxels() <= 0 || !ch.values)
  {
    itkGenericExceptionMacro(<< ch.source << " is empty (" << ComboSegGridToString(ch.grid) << ")");
  }
  if (&ch != &first && !ComboSegSameGrid(ch.grid, first.grid))
  {
    itkGenericExceptionMacro(<< ch.source << " is on a different grid than " << first.source << ": "
                             << ComboSegGridToString(ch.grid) << " versus " << ComboSegGridToString(first.grid));
  }
  const int64_t n = ch.grid.NumberOfVoxels();
  int64_t       bad = 0, firstBad = -1;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(ch.values[i]))
    {
      if (firstBad < 0)
        firstBad = i;
      ++bad;
    }
  if (bad > 0)
  {
    const int64_t x = firstBad % ch.grid.size[0], y = (firstBad / ch.grid.size[0]) % ch.grid.size[1],
                  z = firstBad / (ch.grid.size[0] * ch.grid.size[1]);
    itkGenericExceptionMacro(<< ch.source << " has " << bad << " NaN or infinite voxel(s), the first at index [" << x
                             << ", " << y << ", " << z << "]");
  }
}

} // namespace

void
ComboSegPrepareChannels(const std::vector<ComboSegChannel> & channels, const cs_model_info & info, const uint8_t * mask,
                        ComboSegGrid & modelGrid, ComboSegVolume & image, int numberOfThreads)
{
  CheckChannelCount(channels, info);
  for (const ComboSegChannel & ch : channels)
    CheckChannel(ch, channels.front());

  modelGrid = ComboSegModelGrid(channels[0].grid, info);
  const int64_t        m = modelGrid.NumberOfVoxels();
  std::vector<uint8_t> modelMask;
  if (mask)
  {
    // Masks travel as int32 through the nearest-neighbour resampler.
    const int64_t        n = channels[0].grid.NumberOfVoxels();
    std::vector<int32_t> in(mask, mask + n), out(static_cast<size_t>(m));
    ComboSegResampleNearest(out.data(), modelGrid, in.data(), channels[0].grid, 0, numberOfThreads);
    modelMask.assign(out.begin(), out.end());
  }
  image.resize(static_cast<size_t>(m) * channels.size()); // every voxel resampled below
  for (size_t c = 0; c < channels.size(); ++c)
  {
    const cs_channel_info &           recipe = info.channels[c];
    const ComboSegIntensityStatistics stats =
      ComboSegChannelStatistics(channels[c].values, channels[c].grid.NumberOfVoxels(), recipe, mask, numberOfThreads);
    float * out = image.data() + c * static_cast<size_t>(m);
    ComboSegResampleLinear(out, modelGrid, channels[c].values, channels[c].grid, ComboSegPadValue(recipe, stats),
                           numberOfThreads);
    ComboSegNormalise(out, m, recipe, stats, mask ? modelMask.data() : nullptr, numberOfThreads);
  }
}

std::vector<uint8_t>
ComboSegOutsideBody(const std::vector<ComboSegChannel> & channels, const cs_model_info & info, const uint8_t * mask,
                    int numberOfThreads)
{
  std::vector<uint8_t> outside;
  for (size_t c = 0; c < channels.size(); ++c)
  {
    const cs_channel_info & recipe = info.channels[c];
    if (!HasBody(recipe))
      continue;
    const int64_t n = channels[c].grid.NumberOfVoxels();
    const float * values = channels[c].values;
    if (outside.empty())
      outside.assign(static_cast<size_t>(n), 1);
    // Only a mask recipe without a mask needs the scan's lowest value: no pass over the others.
    const bool  needsMinimum = recipe.norm == CS_NORM_ZSCORE_MASK && !mask && n > 0;
    const float minimum = needsMinimum ? *std::min_element(values, values + n) : 0.0f;
    uint8_t *   out = outside.data();
    ComboSegParallelChunks(n, numberOfThreads, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        if (InBody(recipe, values[i], minimum, mask, i))
          out[i] = 0;
    });
  }
  return outside;
}

namespace
{
// Whether the map sends voxel centres exactly onto voxel centres (whole numbers, no tolerance:
// the model grid of a scan already at the model's spacing and axes, possibly flipped).
bool
IntegralMap(const IndexMap & map)
{
  for (unsigned int i = 0; i < 3; ++i)
  {
    if (map.t[i] != std::round(map.t[i]))
      return false;
    for (unsigned int j = 0; j < 3; ++j)
      if (map.m(i, j) != std::round(map.m(i, j)))
        return false;
  }
  return true;
}

// ComboSegProbabilitiesToLabels for an integral map: there the trilinear weights are exactly 1
// for the coinciding voxel and 0 for the other seven, so its probability alone is the
// interpolated value, bit for bit; one read per class instead of eight.
void
ArgmaxAtCentres(int32_t * labels, const ComboSegGrid & outputGrid, const float * probabilities,
                const ComboSegGrid & modelGrid, const IndexMap & map, int32_t numberOfClasses, float minimumProbability,
                int numberOfThreads)
{
  const int64_t plane = modelGrid.NumberOfVoxels();
  const int64_t sy = modelGrid.size[0], sz = modelGrid.size[0] * modelGrid.size[1];
  ForEachVoxel(outputGrid, map, numberOfThreads, [&](int64_t o, double cx, double cy, double cz) {
    if (!Inside(modelGrid, cx, cy, cz))
    {
      labels[o] = 0;
      return;
    }
    const float * p = probabilities + static_cast<int64_t>(cx) + static_cast<int64_t>(cy) * sy +
                      static_cast<int64_t>(cz) * sz;
    int32_t best = 0;
    double  bestValue = -1.0;
    for (int32_t k = 0; k < numberOfClasses; ++k, p += plane)
      if (static_cast<double>(*p) > bestValue)
      {
        bestValue = *p;
        best = k;
      }
    labels[o] = bestValue < minimumProbability ? 0 : best;
  });
}
} // namespace

// Hand-written rather than ITK's ResampleImageFilter: resampling the K maps onto the input grid
// would hold them at the input's size (27 x 181 x 217 x 181 floats = 767 MB for the quickstart,
// against none here), or, one class at a time, recompute per class the interpolation weights
// this loop computes once per voxel. Timing of the two: `argmax_bench running|resample` in
// Testing/Benchmark (not yet measured on an idle machine; see the commit history).
void
ComboSegProbabilitiesToLabels(int32_t * labels, const ComboSegGrid & outputGrid, const float * probabilities,
                              const ComboSegGrid & modelGrid, int32_t numberOfClasses, float minimumProbability,
                              int numberOfThreads)
{
  CheckGrid(outputGrid, "output grid");
  CheckGrid(modelGrid, "model grid");
  if (numberOfClasses < 1)
  {
    itkGenericExceptionMacro(<< "no classes to choose from");
  }
  const int64_t  plane = modelGrid.NumberOfVoxels();
  const IndexMap map = MapBetween(outputGrid, modelGrid);
  if (IntegralMap(map))
  {
    ArgmaxAtCentres(labels, outputGrid, probabilities, modelGrid, map, numberOfClasses, minimumProbability,
                    numberOfThreads);
    return;
  }
  ForEachVoxel(outputGrid, map, numberOfThreads, [&](int64_t o, double cx, double cy, double cz) {
    if (!Inside(modelGrid, cx, cy, cz))
    {
      labels[o] = 0;
      return;
    }
    Trilinear t;
    TrilinearAt(modelGrid, cx, cy, cz, t);
    int32_t best = 0;
    double  bestValue = -1.0;
    for (int32_t k = 0; k < numberOfClasses; ++k)
    {
      const float * p = probabilities + static_cast<int64_t>(k) * plane;
      double        v = 0.0;
      for (int n = 0; n < 8; ++n)
        v += t.weight[n] * p[t.offset[n]];
      if (v > bestValue)
      {
        bestValue = v;
        best = k;
      }
    }
    labels[o] = bestValue < minimumProbability ? 0 : best;
  });
}

bool
ComboSegCentresCoincideExactly(const ComboSegGrid & outputGrid, const ComboSegGrid & modelGrid)
{
  CheckGrid(outputGrid, "output grid");
  CheckGrid(modelGrid, "model grid");
  return IntegralMap(MapBetween(outputGrid, modelGrid));
}

bool
ComboSegIndicesCoincide(const ComboSegGrid & outputGrid, const ComboSegGrid & modelGrid)
{
  if (outputGrid.size != modelGrid.size || !ComboSegCentresCoincideExactly(outputGrid, modelGrid))
    return false;
  const IndexMap map = MapBetween(outputGrid, modelGrid);
  for (unsigned int i = 0; i < 3; ++i)
  {
    if (map.t[i] != 0.0)
      return false;
    for (unsigned int j = 0; j < 3; ++j)
      if (map.m(i, j) != (i == j ? 1.0 : 0.0))
        return false;
  }
  return true;
}

void
ComboSegLabelsAtCentres(int32_t * labels, const ComboSegGrid & outputGrid, const int32_t * modelLabels,
                        const ComboSegGrid & modelGrid, int numberOfThreads)
{
  if (!ComboSegCentresCoincideExactly(outputGrid, modelGrid))
  {
    itkGenericExceptionMacro(<< "the voxel centres of the output grid " << ComboSegGridToString(outputGrid)
                             << " are not those of the model grid " << ComboSegGridToString(modelGrid));
  }
  const int64_t sy = modelGrid.size[0], sz = modelGrid.size[0] * modelGrid.size[1];
  ForEachVoxel(
    outputGrid, MapBetween(outputGrid, modelGrid), numberOfThreads, [&](int64_t o, double cx, double cy, double cz) {
      labels[o] =
        Inside(modelGrid, cx, cy, cz)
          ? modelLabels[static_cast<int64_t>(cx) + static_cast<int64_t>(cy) * sy + static_cast<int64_t>(cz) * sz]
          : 0;
    });
}

namespace
{

using LabelImage = Image<int32_t, 3>;

ComboSegGrid
GridOfSize(const std::array<int64_t, 3> & size)
{
  ComboSegGrid grid;
  grid.size = size;
  return grid;
}

} // namespace

namespace
{

// Pieces of equal nonzero label, 6-connected, as a union-find forest over voxel indices in which
// each piece's root is its lowest index (a join puts the higher root under the lower). Relaxed
// atomics: in the parallel passes a thread may shorten a path that another reads, and either
// value it sees is an ancestor.
using Parents = std::unique_ptr<std::atomic<uint32_t>[]>;

uint32_t
RootOf(std::atomic<uint32_t> * parent, uint32_t v)
{
  for (;;)
  {
    const uint32_t p = parent[v].load(std::memory_order_relaxed);
    if (p == v)
      return v;
    const uint32_t g = parent[p].load(std::memory_order_relaxed);
    parent[v].store(g, std::memory_order_relaxed); // path halving
    v = g;
  }
}

void
Join(std::atomic<uint32_t> * parent, uint32_t a, uint32_t b)
{
  a = RootOf(parent, a);
  b = RootOf(parent, b);
  if (a != b)
    parent[std::max(a, b)].store(std::min(a, b), std::memory_order_relaxed);
}

// The z-slabs [z0, z1) of the label map, one per work unit.
struct Slabs
{
  int64_t                    count;
  MultiThreaderBase::Pointer threader;
  int64_t
  Begin(int64_t s, int64_t nz) const
  {
    return nz * s / count;
  }
};

Slabs
MakeSlabs(int64_t nz, int numberOfThreads)
{
  Slabs slabs{ 0, MultiThreaderBase::New() };
  if (numberOfThreads > 0)
    slabs.threader->SetNumberOfWorkUnits(static_cast<ThreadIdType>(numberOfThreads));
  slabs.count = std::max<int64_t>(1, std::min<int64_t>(nz, slabs.threader->GetNumberOfWorkUnits()));
  return slabs;
}

void
ForEachSlab(const Slabs & slabs, const std::function<void(int64_t)> & body)
{
  slabs.threader->ParallelizeArray(
    0, static_cast<SizeValueType>(slabs.count), [&](SizeValueType s) { body(static_cast<int64_t>(s)); }, nullptr);
}

// body(first voxel, length, label) for each run of one nonzero label along x in planes [z0, z1).
template <typename TBody>
void
ForEachRun(const int32_t * labels, const std::array<int64_t, 3> & size, int64_t z0, int64_t z1, TBody body)
{
  const int64_t nx = size[0];
  for (int64_t row = z0 * size[1]; row < z1 * size[1]; ++row)
    for (int64_t o = row * nx, end = o + nx; o < end;)
    {
      int64_t next = o + 1;
      while (next < end && labels[next] == labels[o])
        ++next;
      if (labels[o] != 0)
        body(o, next - o, labels[o]);
      o = next;
    }
}

// The forest of the label map's pieces: each slab's own on its thread, then joined across the
// slabs' faces.
Parents
ConnectPieces(const int32_t * labels, const std::array<int64_t, 3> & size, const Slabs & slabs)
{
  const int64_t           nx = size[0], plane = size[0] * size[1], nz = size[2];
  Parents                 parent(new std::atomic<uint32_t>[static_cast<size_t>(plane * nz)]); // written below
  std::atomic<uint32_t> * p = parent.get();
  ForEachSlab(slabs, [&](int64_t s) {
    const int64_t first = slabs.Begin(s, nz) * plane, end = slabs.Begin(s + 1, nz) * plane;
    for (int64_t o = first; o < end; ++o)
    {
      p[o].store(static_cast<uint32_t>(o), std::memory_order_relaxed);
      const int32_t label = labels[o];
      if (label == 0)
        continue;
      if (o % nx > 0 && labels[o - 1] == label)
        Join(p, static_cast<uint32_t>(o - 1), static_cast<uint32_t>(o));
      if (o % plane >= nx && labels[o - nx] == label)
        Join(p, static_cast<uint32_t>(o - nx), static_cast<uint32_t>(o));
      if (o - plane >= first && labels[o - plane] == label)
        Join(p, static_cast<uint32_t>(o - plane), static_cast<uint32_t>(o));
    }
  });
  for (int64_t s = 1; s < slabs.count; ++s)
    for (int64_t o = slabs.Begin(s, nz) * plane, end = o + plane; o < end; ++o)
      if (labels[o] != 0 && labels[o - plane] == labels[o])
        Join(p, static_cast<uint32_t>(o - plane), static_cast<uint32_t>(o));
  return parent;
}

} // namespace

void
ComboSegKeepLargestComponents(int32_t * labels, const std::array<int64_t, 3> & size, int numberOfThreads)
{
  const int64_t n = size[0] * size[1] * size[2];
  if (n >= int64_t{ std::numeric_limits<uint32_t>::max() })
  {
    itkGenericExceptionMacro(<< "a label map of " << n << " voxels is too large for the largest-component clean-up "
                             << "(at most " << std::numeric_limits<uint32_t>::max() - 1 << ")");
  }
  // In parallel where ITK's ScalarConnectedComponentImageFilter ran on one thread (85 ms of ch2's
  // run); the same pieces, and ties go to the piece whose first voxel comes first, the one it
  // numbers first.
  const Slabs   slabs = MakeSlabs(size[2], numberOfThreads);
  const Parents parent = ConnectPieces(labels, size, slabs);
  using Sizes = std::unordered_map<uint32_t, uint64_t>; // root -> voxels
  std::vector<Sizes> sizes(static_cast<size_t>(slabs.count));
  ForEachSlab(slabs, [&](int64_t s) {
    ForEachRun(
      labels, size, slabs.Begin(s, size[2]), slabs.Begin(s + 1, size[2]), [&](int64_t o, int64_t length, int32_t) {
        sizes[static_cast<size_t>(s)][RootOf(parent.get(), static_cast<uint32_t>(o))] += static_cast<uint64_t>(length);
      });
  });
  Sizes all;
  for (const Sizes & part : sizes)
    for (const auto & piece : part)
      all[piece.first] += piece.second;
  std::unordered_map<int32_t, std::pair<uint64_t, uint32_t>> largest; // label -> (voxels, root)
  for (const auto & piece : all)
  {
    auto &     best = largest[labels[piece.first]];
    const bool larger = piece.second > best.first || (piece.second == best.first && piece.first < best.second);
    if (best.first == 0 || larger)
      best = { piece.second, piece.first };
  }
  ForEachSlab(slabs, [&](int64_t s) {
    ForEachRun(labels, size, slabs.Begin(s, size[2]), slabs.Begin(s + 1, size[2]),
               [&](int64_t o, int64_t length, int32_t label) {
                 if (RootOf(parent.get(), static_cast<uint32_t>(o)) != largest.find(label)->second.second)
                   std::fill(labels + o, labels + o + length, 0);
               });
  });
}

namespace
{

// Fills the holes of one class inside its bounding box padded by one voxel (whose faces reach
// the outside of the class, so the result equals filling the whole image): background voxels
// that BinaryFillholeImageFilter gives the class join it; voxels of other classes stay.
void
FillHolesOfClass(LabelImage * image, int32_t label, LabelImage::RegionType box, int numberOfThreads)
{
  box.PadByRadius(1);
  box.Crop(image->GetLargestPossibleRegion());
  auto crop = RegionOfInterestImageFilter<LabelImage, LabelImage>::New();
  crop->SetInput(image);
  crop->SetRegionOfInterest(box);
  auto fill = BinaryFillholeImageFilter<LabelImage>::New();
  fill->SetInput(crop->GetOutput());
  fill->SetForegroundValue(label);
  fill->FullyConnectedOff(); // holes reach the outside through 6-connected voxels
  LimitWorkUnits(fill.GetPointer(), numberOfThreads);
  fill->Update();
  // The crop starts at index 0: both iterators walk the box in the same order.
  ImageRegionConstIterator<LabelImage> filled(fill->GetOutput(), fill->GetOutput()->GetLargestPossibleRegion());
  ImageRegionIterator<LabelImage>      target(image, box);
  for (; !filled.IsAtEnd(); ++filled, ++target)
    if (filled.Get() == label && target.Get() == 0)
      target.Set(label);
}

} // namespace

void
ComboSegFillHoles(int32_t * labels, const std::array<int64_t, 3> & size, int numberOfThreads)
{
  const LabelImage::Pointer image = ImageOnBuffer(labels, GridOfSize(size));
  auto                      boxes = LabelStatisticsImageFilter<LabelImage, LabelImage>::New();
  boxes->SetInput(image);
  boxes->SetLabelInput(image);
  LimitWorkUnits(boxes.GetPointer(), numberOfThreads);
  boxes->Update();
  std::vector<int32_t> present(boxes->GetValidLabelValues().begin(), boxes->GetValidLabelValues().end());
  std::sort(present.begin(), present.end());
  // In increasing class order, each class seeing the holes the classes before it filled.
  for (int32_t label : present)
    if (label > 0)
      FillHolesOfClass(image, label, boxes->GetRegion(label), numberOfThreads);
}

void
ComboSegMirror(float * values, int64_t volumes, const std::array<int64_t, 3> & size, int axis)
{
  // Each volume is `outer` blocks of `length` rows of `inner` values along the axis.
  const int64_t inner = axis == 0 ? 1 : axis == 1 ? size[0] : size[0] * size[1];
  const int64_t length = size[static_cast<size_t>(axis)];
  const int64_t outer = volumes * size[0] * size[1] * size[2] / (inner * length);
  for (int64_t o = 0; o < outer; ++o)
  {
    float * block = values + o * length * inner;
    for (int64_t a = 0, b = length - 1; a < b; ++a, --b)
      std::swap_ranges(block + a * inner, block + (a + 1) * inner, block + b * inner);
  }
}

namespace
{

// The name with its left/right words swapped: words are separated by '_', '-', '.' or ' '.
std::string
SwapLeftRight(const std::string & name)
{
  static const std::pair<const char *, const char *> words[] = { { "L", "R" },        { "l", "r" },
                                                                 { "Left", "Right" }, { "left", "right" },
                                                                 { "LEFT", "RIGHT" }, { "lh", "rh" } };
  std::string                                        out, word;
  auto                                               flush = [&]() {
    for (const auto & w : words)
    {
      if (word == w.first || word == w.second)
      {
        word = word == w.first ? w.second : w.first;
        break;
      }
    }
    out += word;
    word.clear();
  };
  for (char c : name)
  {
    if (c == '_' || c == '-' || c == '.' || c == ' ')
    {
      flush();
      out += c;
    }
    else
      word += c;
  }
  flush();
  return out;
}

} // namespace

std::vector<int32_t>
ComboSegLeftRightPartners(const cs_model_info & info)
{
  const int32_t        K = info.arch.num_classes;
  std::vector<int32_t> partner(static_cast<size_t>(K));
  for (int32_t k = 0; k < K; ++k)
  {
    partner[static_cast<size_t>(k)] = k;
    const std::string mirrored = SwapLeftRight(info.classes[k].name);
    for (int32_t j = 0; j < K && mirrored != info.classes[k].name; ++j)
      if (j != k && mirrored == info.classes[j].name)
        partner[static_cast<size_t>(k)] = j;
  }
  return partner;
}

unsigned int
ComboSegTestTimeMirrorAxes(const cs_model_info & info, unsigned int askedAxes, bool useModelRecommendation)
{
  const unsigned int recommended = useModelRecommendation ? static_cast<unsigned int>(info.test_time_mirror_axes) : 0u;
  return (askedAxes | recommended) & (info.arch.spatial_dims == 2 ? 3u : 7u);
}

namespace
{

// The combinations of mirrors along the axes of a mask, in Gray-code order (one axis changes
// between consecutive passes, so each change is one in-place mirror).
std::vector<unsigned int>
MirrorPasses(unsigned int axes)
{
  std::vector<unsigned int> set;
  for (unsigned int a = 0; a < 3; ++a)
    if (axes >> a & 1u)
      set.push_back(a);
  std::vector<unsigned int> passes;
  for (unsigned int q = 0; q < (1u << set.size()); ++q)
  {
    const unsigned int gray = q ^ (q >> 1);
    unsigned int       mask = 0;
    for (size_t b = 0; b < set.size(); ++b)
      if (gray >> b & 1u)
        mask |= 1u << set[b];
    passes.push_back(mask);
  }
  return passes;
}

// Mirrors the image (C volumes) and the probabilities (K volumes) along the axes of a mask; a
// mirror along x also swaps the probabilities of left/right partner classes.
void
ToggleMirrors(unsigned int mask, const std::array<int64_t, 3> & size, ComboSegVolume & image, float * probabilities,
              const std::vector<int32_t> & partners)
{
  const int64_t n = size[0] * size[1] * size[2];
  const auto    channels = static_cast<int64_t>(image.size()) / n;
  for (int axis = 0; axis < 3; ++axis)
  {
    if (!(mask >> axis & 1u))
      continue;
    ComboSegMirror(image.data(), channels, size, axis);
    ComboSegMirror(probabilities, static_cast<int64_t>(partners.size()), size, axis);
    for (size_t k = 0; axis == 0 && k < partners.size(); ++k)
      if (static_cast<size_t>(partners[k]) > k)
        std::swap_ranges(probabilities + static_cast<int64_t>(k) * n, probabilities + static_cast<int64_t>(k + 1) * n,
                         probabilities + partners[k] * n);
  }
}

} // namespace

unsigned int
ComboSegMirrorPassCount(unsigned int mirrorAxes)
{
  return static_cast<unsigned int>(MirrorPasses(mirrorAxes).size());
}

cs_status
ComboSegPredictMirrored(cs_context_t ctx, cs_model_t model, ComboSegVolume & image, const std::array<int64_t, 3> & size,
                        unsigned int mirrorAxes, cs_infer_options options, float * probabilities, int32_t * labels,
                        const std::function<void(unsigned int)> & beforePass)
{
  const cs_model_info &           info = *cs_model_get_info(model);
  const std::vector<unsigned int> passes = MirrorPasses(mirrorAxes);
  const int64_t                   shape[3] = { size[0], size[1], size[2] };
  if (passes.size() == 1)
  {
    if (beforePass)
      beforePass(0);
    return cs_predict_volume(ctx, model, image.data(), shape, &options, probabilities, labels);
  }
  if (!probabilities)
    return CS_ERR_INVALID_ARGUMENT; // the average needs somewhere to be summed
  const std::vector<int32_t> partners = ComboSegLeftRightPartners(info);
  unsigned int               mirrored = 0; // the axes along which image and probability sum are mirrored now
  cs_status                  status = CS_OK;
  for (unsigned int p = 0; p < passes.size() && status == CS_OK; ++p)
  {
    ToggleMirrors(mirrored ^ passes[p], size, image, probabilities, partners);
    mirrored = passes[p];
    if (beforePass)
      beforePass(p);
    options.accumulate = p > 0 ? 1 : 0;
    status = cs_predict_volume(ctx, model, image.data(), shape, &options, probabilities, nullptr);
  }
  ToggleMirrors(mirrored, size, image, probabilities, partners);
  const int64_t n = size[0] * size[1] * size[2];
  const int32_t K = info.arch.num_classes;
  const float   average = 1.0f / static_cast<float>(passes.size());
  for (int64_t i = 0; i < n * K; ++i)
    probabilities[i] *= average;
  for (int64_t i = 0; labels && i < n; ++i)
  {
    int32_t best = 0; // the first of equal maxima, as the engine's argmax
    for (int32_t k = 1; k < K; ++k)
      if (probabilities[k * n + i] > probabilities[best * n + i])
        best = k;
    labels[i] = best;
  }
  return status;
}

} // end namespace itk
