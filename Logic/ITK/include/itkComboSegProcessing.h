/*
 * itkComboSegProcessing.h - the pre- and post-processing around the engine, shared by
 * itk::ComboSegImageFilter (inference) and PrepareCase (training data).
 *
 * Everything works on 3D grids with x fastest in memory; 2D images are lifted to one slice.
 * Pre-processing follows the model's metadata: the grid it runs on has the model's orientation
 * axes and spacing (ComboSegModelGrid), channels are resampled onto it linearly and normalised
 * by each channel's recipe. Post-processing resamples the K probability maps back onto the
 * input's exact grid (linear) before the argmax, so the output geometry is the input's.
 * Errors are itk::ExceptionObject whose message names the problem.
 */
#ifndef itkComboSegProcessing_h
#define itkComboSegProcessing_h

#include <array>
#include <functional>
#include <memory>
#include <utility>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "itkImage.h"
#include "itkImageRegionConstIterator.h"
#include "comboseg/comboseg.h"

namespace itk
{

/** A voxel grid: physical point (LPS, mm) = origin + direction * (spacing .* index). */
struct ComboSegGrid
{
  std::array<int64_t, 3> size{ { 0, 0, 0 } };
  std::array<double, 3>  spacing{ { 1.0, 1.0, 1.0 } };
  std::array<double, 3>  origin{ { 0.0, 0.0, 0.0 } };
  std::array<double, 9>  direction{ { 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0 } }; // row-major

  int64_t
  NumberOfVoxels() const
  {
    return size[0] * size[1] * size[2];
  }
};

/** "size 3x4x5, spacing ..., origin ..., direction ..." for messages. */
std::string
ComboSegGridToString(const ComboSegGrid & grid);

/** Same size and, within tolerance (a fraction of a voxel), the same spacing, origin, direction. */
bool
ComboSegSameGrid(const ComboSegGrid & a, const ComboSegGrid & b, double tolerance = 1e-3);

/** True when b's voxel centres are a's, possibly with axes permuted or flipped (same lattice). */
bool
ComboSegSameLattice(const ComboSegGrid & a, const ComboSegGrid & b, double tolerance = 1e-3);

/** The grid a model runs on for an input grid: for 3D models the axes of the model's orientation
 * ("RAS", "LPS"...) and its spacing, covering every voxel centre of the input; for 2D models the
 * input's own axes with the model's in-plane spacing (one slice). */
ComboSegGrid
ComboSegModelGrid(const ComboSegGrid & input, const cs_model_info & info);

/* numberOfThreads, below: the most ITK work units (threads) a call runs on; 0 takes ITK's
 * default (MultiThreaderBase::GetGlobalDefaultNumberOfThreads). */

/** ComboSegParallelChunks' chunk, 64 Ki elements, whatever the thread count (a call per element
 * through the threader would cost more than the passes it runs). */
constexpr int64_t ComboSegParallelChunk = int64_t{ 1 } << 16;

/** body(begin, end) over [0, n) in contiguous chunks on ITK's threader (at most numberOfThreads
 * work units): for passes whose elements are independent, so any split gives the same result. */
void
ComboSegParallelChunks(int64_t n, int numberOfThreads, const std::function<void(int64_t, int64_t)> & body);

/** body(begin, end) of each of ComboSegParallelChunks' chunks, returned in chunk order: partial
 * results (sums, counts, extremes) that do not depend on the thread count once combined in that
 * order. */
template <typename T>
std::vector<T>
ComboSegPerChunk(int64_t n, int numberOfThreads, const std::function<T(int64_t, int64_t)> & body)
{
  std::vector<T> parts(static_cast<size_t>((n + ComboSegParallelChunk - 1) / ComboSegParallelChunk));
  ComboSegParallelChunks(n, numberOfThreads, [&](int64_t begin, int64_t end) {
    parts[static_cast<size_t>(begin / ComboSegParallelChunk)] = body(begin, end);
  });
  return parts;
}

/** Trilinear interpolation of src (on srcGrid) at the voxel centres of dstGrid, by ITK's
 * ResampleImageFilter: points outside src's voxels (continuous index outside [-0.5, size - 0.5)
 * along an axis, ITK's edge rule) get `outside`. */
void
ComboSegResampleLinear(float * dst, const ComboSegGrid & dstGrid, const float * src, const ComboSegGrid & srcGrid,
                       float outside, int numberOfThreads = 0);

/** Nearest-neighbour resampling of label maps and masks, with the same edge rule. */
void
ComboSegResampleNearest(int32_t * dst, const ComboSegGrid & dstGrid, const int32_t * src, const ComboSegGrid & srcGrid,
                        int32_t outside, int numberOfThreads = 0);

/** Asks the kernel for transparent huge pages on a buffer not written yet (its 2 MB-aligned
 * interior; Linux, buffers of 4 MB or more): its first touch then faults once per 2 MB instead of
 * once per 4 KiB, a fault that costs about 10 us on the virtual machines we measured on (ch2's
 * Segment run took 55.9k faults, about 0.5 s of its 7 s of CPU). A hint, without effect
 * elsewhere. */
void
ComboSegAdviseHugePages(void * buffer, size_t bytes);

/** n values of T, not initialised (the caller writes them all, over its threads), their pages
 * advised huge: the buffers of volumes the filter fills. */
template <typename T>
std::unique_ptr<T[]>
ComboSegNewVolumeBuffer(size_t n)
{
  std::unique_ptr<T[]> buffer(new T[n]);
  ComboSegAdviseHugePages(buffer.get(), n * sizeof(T));
  return buffer;
}

/** std::allocator whose value-less construct leaves a float as it is: resize adds elements without
 * writing them (a zero fill would touch every page on one thread before the parallel pass that
 * writes them all); large blocks get ComboSegAdviseHugePages. */
template <typename T>
struct ComboSegUninitialisedAllocator : std::allocator<T>
{
  template <typename U>
  struct rebind
  {
    using other = ComboSegUninitialisedAllocator<U>;
  };
  ComboSegUninitialisedAllocator() = default;
  template <typename U>
  ComboSegUninitialisedAllocator(const ComboSegUninitialisedAllocator<U> &) noexcept
  {
  }
  T *
  allocate(size_t n)
  {
    T * p = std::allocator<T>::allocate(n);
    ComboSegAdviseHugePages(p, n * sizeof(T));
    return p;
  }
  template <typename U>
  void
  construct(U * p) noexcept
  {
    ::new (static_cast<void *>(p)) U;
  }
  template <typename U, typename... Args>
  void
  construct(U * p, Args &&... args)
  {
    ::new (static_cast<void *>(p)) U(std::forward<Args>(args)...);
  }
};

/** Volumes on the model grid (C channels of nz x ny x nx floats, x fastest), written in full by
 * whoever sizes them. */
using ComboSegVolume = std::vector<float, ComboSegUninitialisedAllocator<float>>;

/** One input channel: voxel values (x fastest) on a grid; `source` names it in messages, e.g.
 * "input 1 (FLAIR)" or a file name. */
struct ComboSegChannel
{
  const float * values{ nullptr };
  ComboSegGrid  grid{};
  std::string   source{};
};

/** Intensity statistics of one channel as its recipe defines them (see cs_norm_kind). */
struct ComboSegIntensityStatistics
{
  double mean{ 0.0 };
  double std{ 1.0 };
  float  minimum{ 0.0f };
};

/** Mean and standard deviation over the voxels the recipe uses: non-zero voxels, the mask
 * (when mask is null: the voxels above the scan's minimum, i.e. the brain of a skull-stripped
 * scan whether its background is zero or, once z-scored, negative), or all; CT takes the
 * recipe's fixed values; CS_NORM_UPPER_PEAK gives mean 0 and std its histogram peak. The sums
 * run over fixed chunks added in order: the same statistics for any numberOfThreads. */
ComboSegIntensityStatistics
ComboSegChannelStatistics(const float * values, int64_t n, const cs_channel_info & channel, const uint8_t * mask,
                          int numberOfThreads = 0);

/** Normalises values in place by the recipe; mask (may be null) marks the body for
 * CS_NORM_ZSCORE_MASK. */
void
ComboSegNormalise(float * values, int64_t n, const cs_channel_info & channel,
                  const ComboSegIntensityStatistics & statistics, const uint8_t * mask, int numberOfThreads = 0);

/** Marks (1) the voxels of the channels' grid that hold no data: outside the body of every channel
 * whose recipe has one (the zero voxels for CS_NORM_ZSCORE_NONZERO; outside the mask, or without
 * one at the scan's lowest value, for CS_NORM_ZSCORE_MASK). Those recipes map such voxels to 0,
 * the value of average tissue, so a model can label the air around a head or the zeroed
 * background of a skull-stripped scan; the filter makes them background. Empty when no channel's
 * recipe has a body (CT, plain z-score). The channels must be those ComboSegPrepareChannels
 * accepted for info. */
std::vector<uint8_t>
ComboSegOutsideBody(const std::vector<ComboSegChannel> & channels, const cs_model_info & info, const uint8_t * mask,
                    int numberOfThreads = 0);

/** The value given to model-grid voxels outside the scan (air for CT, zero for z-scored data). */
float
ComboSegPadValue(const cs_channel_info & channel, const ComboSegIntensityStatistics & statistics);

/** Checks the channels against the model (count, names of missing or extra ones, empty images,
 * NaN or infinite voxels, all on one grid) and brings them onto the model grid, normalised:
 * image (C, nz, ny, nx) on modelGrid. mask (may be null) lies on the channels' grid. */
void
ComboSegPrepareChannels(const std::vector<ComboSegChannel> & channels, const cs_model_info & info, const uint8_t * mask,
                        ComboSegGrid & modelGrid, ComboSegVolume & image, int numberOfThreads = 0);

/** Class probabilities (K, nz, ny, nx) on modelGrid to class indices on outputGrid: each class
 * map is interpolated linearly at the output voxel and the argmax kept as a running maximum, so
 * no full-size probability map is ever held. A winning probability below minimumProbability, or
 * a voxel outside the model grid (ITK's edge rule, as the resamplers), gives background (0). */
void
ComboSegProbabilitiesToLabels(int32_t * labels, const ComboSegGrid & outputGrid, const float * probabilities,
                              const ComboSegGrid & modelGrid, int32_t numberOfClasses, float minimumProbability,
                              int numberOfThreads = 0);

/** Whether every voxel centre of outputGrid is exactly (no tolerance) a voxel centre of
 * modelGrid or outside it, as for a scan already at the model's spacing and axes (possibly
 * flipped). The interpolation weights are then exactly 1 and 0, so labels chosen on the model
 * grid and carried over by ComboSegLabelsAtCentres are those ComboSegProbabilitiesToLabels gives
 * with a minimum probability of 0, without a probability map. */
bool
ComboSegCentresCoincideExactly(const ComboSegGrid & outputGrid, const ComboSegGrid & modelGrid);

/** Whether voxel i of outputGrid is voxel i of modelGrid for every i (a scan already on the model's
 * grid): labels chosen on the model grid are then the output's as they are. */
bool
ComboSegIndicesCoincide(const ComboSegGrid & outputGrid, const ComboSegGrid & modelGrid);

/** Class indices on modelGrid to outputGrid, where ComboSegCentresCoincideExactly holds (throws
 * otherwise): the label at the same centre; background outside the model grid. */
void
ComboSegLabelsAtCentres(int32_t * labels, const ComboSegGrid & outputGrid, const int32_t * modelLabels,
                        const ComboSegGrid & modelGrid, int numberOfThreads = 0);

/** Keeps, for every class, only its largest 6-connected component; the rest become background.
 * The components of ITK's ScalarConnectedComponentImageFilter, found over z-slabs in parallel;
 * ties go to the component whose first voxel comes first (the one that filter numbers first).
 * Throws for maps of 2^32 - 1 voxels or more. */
void
ComboSegKeepLargestComponents(int32_t * labels, const std::array<int64_t, 3> & size, int numberOfThreads = 0);

/** Fills, for every class in increasing order, background voxels that the class encloses (not
 * 6-connected to the outside through voxels of other labels; ITK's BinaryFillholeImageFilter). */
void
ComboSegFillHoles(int32_t * labels, const std::array<int64_t, 3> & size, int numberOfThreads = 0);

/** Mirrors `volumes` consecutive volumes of the given size along one axis (0 x, 1 y, 2 z), in
 * place. */
void
ComboSegMirror(float * values, int64_t volumes, const std::array<int64_t, 3> & size, int axis);

/** For each class, the class that is its mirror image in left and right: the class whose name has
 * left and right swapped ("L_thalamus" and "R_thalamus", "Left-Putamen" and "Right-Putamen"), or
 * the class itself when it has no such partner. */
std::vector<int32_t>
ComboSegLeftRightPartners(const cs_model_info & info);

/** The mirrors a model's test-time augmentation runs: the axes asked for (a mask of x 1, y 2,
 * z 4) and, unless useModelRecommendation is false, the model's recommended ones; x and y only
 * for a 2D model. */
unsigned int
ComboSegTestTimeMirrorAxes(const cs_model_info & info, unsigned int askedAxes, bool useModelRecommendation);

/** The network's output for an image (C volumes on the model's grid) with test-time mirroring:
 * class probabilities (K volumes of `size`) averaged over its passes on the image mirrored along
 * every combination of `mirrorAxes`, each mirrored back (a mirror along x also swaps left/right
 * partner classes), and labels, their argmax. Either pointer may be null, but with mirrors the
 * probabilities are needed (the sum is kept there). The image is mirrored in place and restored.
 * `beforePass(p)` is called before each of the ComboSegMirrorPassCount(mirrorAxes) passes.
 * Returns the engine's status (CS_ERR_CANCELLED when options' progress callback asked). */
cs_status
ComboSegPredictMirrored(cs_context_t ctx, cs_model_t model, ComboSegVolume & image, const std::array<int64_t, 3> & size,
                        unsigned int mirrorAxes, cs_infer_options options, float * probabilities, int32_t * labels,
                        const std::function<void(unsigned int)> & beforePass = {});

/** The number of network passes ComboSegPredictMirrored runs: 2 to the number of axes. */
unsigned int
ComboSegMirrorPassCount(unsigned int mirrorAxes);

/** The grid of an ITK image, lifted to 3D for 2D images. */
template <typename TImage>
ComboSegGrid
ComboSegGridOf(const TImage * image)
{
  constexpr unsigned int D = TImage::ImageDimension;
  static_assert(D == 2 || D == 3, "ComboSeg handles 2D and 3D images");
  ComboSegGrid grid;
  const auto   region = image->GetLargestPossibleRegion();
  for (unsigned int i = 0; i < D; ++i)
  {
    grid.size[i] = static_cast<int64_t>(region.GetSize(i));
    grid.spacing[i] = image->GetSpacing()[i];
    for (unsigned int j = 0; j < D; ++j)
    {
      grid.direction[3 * i + j] = image->GetDirection()(i, j);
    }
  }
  // The largest possible region may start anywhere: the grid starts at its first voxel.
  typename TImage::PointType first;
  image->TransformIndexToPhysicalPoint(region.GetIndex(), first);
  for (unsigned int i = 0; i < D; ++i)
  {
    grid.origin[i] = first[i];
  }
  if (D == 2)
  {
    grid.size[2] = 1;
  }
  return grid;
}

/** The voxels of an ITK image's buffered region as floats, x fastest. */
template <typename TImage>
std::vector<float>
ComboSegValuesOf(const TImage * image)
{
  const auto region = image->GetLargestPossibleRegion();
  if (image->GetBufferedRegion() == region)
  {
    // The buffer is the whole image, x fastest: one converting copy.
    const auto * buffer = image->GetBufferPointer();
    return std::vector<float>(buffer, buffer + region.GetNumberOfPixels());
  }
  std::vector<float> values;
  values.reserve(region.GetNumberOfPixels());
  ImageRegionConstIterator<TImage> it(image, region);
  for (it.GoToBegin(); !it.IsAtEnd(); ++it)
  {
    values.push_back(static_cast<float>(it.Get()));
  }
  return values;
}

/** The voxels of an ITK image as floats, x fastest, without a copy where the image is float and
 * its buffer is the whole image (a 28 MB copy and its first touch for a 1 mm brain); else
 * converted into storage. The pointer lives as long as the image's buffer and storage. */
template <typename TImage>
const float *
ComboSegFloatValuesOf(const TImage * image, std::vector<float> & storage)
{
  if constexpr (std::is_same<typename TImage::PixelType, float>::value)
  {
    if (image->GetBufferedRegion() == image->GetLargestPossibleRegion())
    {
      return image->GetBufferPointer();
    }
  }
  storage = ComboSegValuesOf(image);
  return storage.data();
}

} // end namespace itk

#endif
