#include "itkComboSegProcessing.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <utility>

#include "itkMacro.h"

namespace itk
{

namespace
{

using Matrix3 = std::array<double, 9>; // row-major
using Vector3 = std::array<double, 3>;

Matrix3
Multiply(const Matrix3 & a, const Matrix3 & b)
{
  Matrix3 r{};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      r[3 * i + j] = a[3 * i] * b[j] + a[3 * i + 1] * b[3 + j] + a[3 * i + 2] * b[6 + j];
  return r;
}

Vector3
Apply(const Matrix3 & a, const Vector3 & v)
{
  return { { a[0] * v[0] + a[1] * v[1] + a[2] * v[2], a[3] * v[0] + a[4] * v[1] + a[5] * v[2],
             a[6] * v[0] + a[7] * v[1] + a[8] * v[2] } };
}

Matrix3
Inverse(const Matrix3 & m)
{
  const double det = m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) +
                     m[2] * (m[3] * m[7] - m[4] * m[6]);
  if (std::fabs(det) < 1e-12)
  {
    itkGenericExceptionMacro(<< "image direction matrix is singular (determinant " << det << ")");
  }
  const double inv = 1.0 / det;
  return { { (m[4] * m[8] - m[5] * m[7]) * inv, (m[2] * m[7] - m[1] * m[8]) * inv, (m[1] * m[5] - m[2] * m[4]) * inv,
             (m[5] * m[6] - m[3] * m[8]) * inv, (m[0] * m[8] - m[2] * m[6]) * inv, (m[2] * m[3] - m[0] * m[5]) * inv,
             (m[3] * m[7] - m[4] * m[6]) * inv, (m[1] * m[6] - m[0] * m[7]) * inv, (m[0] * m[4] - m[1] * m[3]) * inv } };
}

// Index-to-physical matrix: direction * diag(spacing).
Matrix3
IndexToPhysical(const ComboSegGrid & g)
{
  Matrix3 m = g.direction;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      m[3 * i + j] *= g.spacing[j];
  return m;
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
  const Matrix3 srcInverse = Inverse(IndexToPhysical(src));
  IndexMap      map;
  map.m = Multiply(srcInverse, IndexToPhysical(dst));
  map.t = Apply(srcInverse, { { dst.origin[0] - src.origin[0], dst.origin[1] - src.origin[1],
                                dst.origin[2] - src.origin[2] } });
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

// Visits every dst voxel with its continuous index in src, rows in parallel; along x the
// continuous index advances by the first column of the map.
template <typename TVisitor>
void
ForEachVoxel(const ComboSegGrid & dst, const IndexMap & map, TVisitor && visit)
{
  const int64_t nx = dst.size[0], ny = dst.size[1], nz = dst.size[2];
  const int64_t rows = ny * nz;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < rows; ++row)
  {
    const int64_t y = row % ny, z = row / ny;
    double        c[3];
    for (int d = 0; d < 3; ++d)
    {
      c[d] = map.m[3 * d + 1] * static_cast<double>(y) + map.m[3 * d + 2] * static_cast<double>(z) + map.t[d];
    }
    int64_t offset = row * nx;
    for (int64_t x = 0; x < nx; ++x, ++offset)
    {
      const double cx = c[0] + map.m[0] * static_cast<double>(x);
      const double cy = c[1] + map.m[3] * static_cast<double>(x);
      const double cz = c[2] + map.m[6] * static_cast<double>(x);
      visit(offset, cx, cy, cz);
    }
  }
}

// Continuous index inside the voxels of a grid (half a voxel beyond the outer centres).
inline bool
Inside(const ComboSegGrid & g, double cx, double cy, double cz)
{
  constexpr double eps = 1e-6;
  return cx >= -0.5 - eps && cy >= -0.5 - eps && cz >= -0.5 - eps && cx <= g.size[0] - 0.5 + eps &&
         cy <= g.size[1] - 0.5 + eps && cz <= g.size[2] - 0.5 + eps;
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
  const double  c[3] = { cx, cy, cz };
  int64_t       lo[3], hi[3];
  double        f[3];
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

template <typename T>
void
ResampleNearestT(T * dst, const ComboSegGrid & dstGrid, const T * src, const ComboSegGrid & srcGrid, T outside)
{
  CheckGrid(dstGrid, "target grid");
  CheckGrid(srcGrid, "source grid");
  const IndexMap map = MapBetween(dstGrid, srcGrid);
  ForEachVoxel(dstGrid, map, [&](int64_t o, double cx, double cy, double cz) {
    if (!Inside(srcGrid, cx, cy, cz))
    {
      dst[o] = outside;
      return;
    }
    const double  c[3] = { cx, cy, cz };
    int64_t       idx[3];
    for (int d = 0; d < 3; ++d)
    {
      idx[d] = std::min(std::max(static_cast<int64_t>(std::floor(c[d] + 0.5)), int64_t{ 0 }), srcGrid.size[d] - 1);
    }
    dst[o] = src[idx[0] + srcGrid.size[0] * (idx[1] + srcGrid.size[1] * idx[2])];
  });
}

// Axis of an orientation letter in LPS physical space: "R" means x increases towards the right.
bool
OrientationAxis(char letter, Vector3 & axis)
{
  switch (letter)
  {
    case 'L': axis = { { 1, 0, 0 } }; return true;
    case 'R': axis = { { -1, 0, 0 } }; return true;
    case 'P': axis = { { 0, 1, 0 } }; return true;
    case 'A': axis = { { 0, -1, 0 } }; return true;
    case 'S': axis = { { 0, 0, 1 } }; return true;
    case 'I': axis = { { 0, 0, -1 } }; return true;
    default: return false;
  }
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
    case CS_NORM_ZSCORE_NONZERO: return v != 0.0f;
    case CS_NORM_ZSCORE_MASK: return mask ? mask[i] != 0 : v > minimum;
    default: return true;
  }
}

bool
HasBody(const cs_channel_info & channel)
{
  return channel.norm == CS_NORM_ZSCORE_NONZERO || channel.norm == CS_NORM_ZSCORE_MASK;
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
  for (int i = 0; i < 3; ++i)
  {
    int nonZero = 0;
    for (int j = 0; j < 3; ++j)
    {
      const double v = map.m[3 * i + j];
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
    const std::string orientation(info.orientation);
    Vector3           axes[3];
    bool              valid = orientation.size() == 3;
    for (int i = 0; valid && i < 3; ++i)
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
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j)
        model.direction[3 * i + j] = axes[j][i];
    model.spacing = { { info.spacing[0], info.spacing[1], info.spacing[2] } };
  }

  // Bounding box of the input's voxel centres in the model's axes.
  const Matrix3 toPhysical = IndexToPhysical(input);
  Vector3       lo{ { std::numeric_limits<double>::max(), std::numeric_limits<double>::max(),
                      std::numeric_limits<double>::max() } };
  Vector3       hi{ { -lo[0], -lo[1], -lo[2] } };
  for (int corner = 0; corner < 8; ++corner)
  {
    const Vector3 index{ { (corner & 1) ? static_cast<double>(input.size[0] - 1) : 0.0,
                           (corner & 2) ? static_cast<double>(input.size[1] - 1) : 0.0,
                           (corner & 4) ? static_cast<double>(input.size[2] - 1) : 0.0 } };
    Vector3       p = Apply(toPhysical, index);
    for (int d = 0; d < 3; ++d)
      p[d] += input.origin[d];
    for (int a = 0; a < 3; ++a)
    {
      // Coordinate along model axis a (the axes are orthonormal).
      double q = 0.0;
      for (int d = 0; d < 3; ++d)
        q += model.direction[3 * d + a] * p[d];
      lo[a] = std::min(lo[a], q);
      hi[a] = std::max(hi[a], q);
    }
  }
  Vector3 start{};
  for (int a = 0; a < 3; ++a)
  {
    const double extent = hi[a] - lo[a];
    model.size[a] = static_cast<int64_t>(std::ceil(extent / model.spacing[a] - 1e-6)) + 1;
    // Centre the grid on the input's extent.
    start[a] = lo[a] - 0.5 * (static_cast<double>(model.size[a] - 1) * model.spacing[a] - extent);
  }
  if (info.arch.spatial_dims == 2)
  {
    model.size[2] = 1;
  }
  for (int d = 0; d < 3; ++d)
  {
    model.origin[d] = 0.0;
    for (int a = 0; a < 3; ++a)
      model.origin[d] += model.direction[3 * d + a] * start[a];
  }
  return model;
}

void
ComboSegResampleLinear(float * dst, const ComboSegGrid & dstGrid, const float * src, const ComboSegGrid & srcGrid,
                       float outside)
{
  CheckGrid(dstGrid, "target grid");
  CheckGrid(srcGrid, "source grid");
  const IndexMap map = MapBetween(dstGrid, srcGrid);
  ForEachVoxel(dstGrid, map, [&](int64_t o, double cx, double cy, double cz) {
    if (!Inside(srcGrid, cx, cy, cz))
    {
      dst[o] = outside;
      return;
    }
    Trilinear t;
    TrilinearAt(srcGrid, cx, cy, cz, t);
    double v = 0.0;
    for (int n = 0; n < 8; ++n)
      v += t.weight[n] * src[t.offset[n]];
    dst[o] = static_cast<float>(v);
  });
}

void
ComboSegResampleNearest(int32_t * dst, const ComboSegGrid & dstGrid, const int32_t * src,
                        const ComboSegGrid & srcGrid, int32_t outside)
{
  ResampleNearestT(dst, dstGrid, src, srcGrid, outside);
}

ComboSegIntensityStatistics
ComboSegChannelStatistics(const float * values, int64_t n, const cs_channel_info & channel, const uint8_t * mask)
{
  ComboSegIntensityStatistics stats;
  float                       minimum = std::numeric_limits<float>::max();
  for (int64_t i = 0; i < n; ++i)
    minimum = std::min(minimum, values[i]);
  stats.minimum = n > 0 ? minimum : 0.0f;
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
  // Two passes in double: stable for large volumes.
  double  sum = 0.0;
  int64_t count = 0;
  auto    used = [&](int64_t i) { return InBody(channel, values[i], stats.minimum, mask, i); };
  for (int64_t i = 0; i < n; ++i)
    if (used(i))
    {
      sum += values[i];
      ++count;
    }
  if (count == 0)
  {
    itkGenericExceptionMacro(<< "channel '" << channel.name << "' has no voxel to normalise over ("
                                         << (channel.norm == CS_NORM_ZSCORE_MASK && mask ? "the mask is empty"
                                                                                  : channel.norm == CS_NORM_ZSCORE_MASK
                                                                                      ? "every voxel has the scan's lowest value"
                                                                                      : "every voxel is zero")
                                         << ")");
  }
  stats.mean = sum / static_cast<double>(count);
  double squares = 0.0;
  for (int64_t i = 0; i < n; ++i)
    if (used(i))
      squares += (values[i] - stats.mean) * (values[i] - stats.mean);
  const double std = std::sqrt(squares / static_cast<double>(count));
  // A constant image stays centred rather than blowing up.
  stats.std = std > 1e-8 ? std : 1.0;
  return stats;
}

void
ComboSegNormalise(float * values, int64_t n, const cs_channel_info & channel,
                  const ComboSegIntensityStatistics & stats, const uint8_t * mask)
{
  const double scale = 1.0 / stats.std;
  switch (channel.norm)
  {
    case CS_NORM_NONE:
      return;
    case CS_NORM_CLIP_SCALE:
      for (int64_t i = 0; i < n; ++i)
      {
        const float clipped = std::min(std::max(values[i], channel.clip_low), channel.clip_high);
        values[i] = static_cast<float>((clipped - stats.mean) * scale);
      }
      return;
    case CS_NORM_ZSCORE_NONZERO:
    case CS_NORM_ZSCORE_MASK:
      for (int64_t i = 0; i < n; ++i)
        values[i] = InBody(channel, values[i], stats.minimum, mask, i)
                      ? static_cast<float>((values[i] - stats.mean) * scale)
                      : 0.0f;
      return;
    case CS_NORM_ZSCORE:
    default:
      for (int64_t i = 0; i < n; ++i)
        values[i] = static_cast<float>((values[i] - stats.mean) * scale);
      return;
  }
}

float
ComboSegPadValue(const cs_channel_info & channel, const ComboSegIntensityStatistics & stats)
{
  switch (channel.norm)
  {
    case CS_NORM_CLIP_SCALE: return channel.clip_low;
    case CS_NORM_ZSCORE_NONZERO:
    case CS_NORM_ZSCORE_MASK: return 0.0f;
    default: return stats.minimum;
  }
}

void
ComboSegPrepareChannels(const std::vector<ComboSegChannel> & channels, const cs_model_info & info,
                        const uint8_t * mask, ComboSegGrid & modelGrid, std::vector<float> & image)
{
  const int32_t expected = info.arch.in_channels;
  const int32_t given = static_cast<int32_t>(channels.size());
  if (given < expected)
  {
    std::ostringstream missing;
    for (int32_t c = given; c < expected; ++c)
      missing << (c > given ? ", " : "") << "channel " << c << " '" << info.channels[c].name << "'";
    itkGenericExceptionMacro(<< "model '" << info.name << "' expects " << expected << " channel(s) (" << ChannelList(info)
                                       << ") but was given " << given << ": missing " << missing.str());
  }
  if (given > expected)
  {
    std::ostringstream extra;
    for (int32_t c = expected; c < given; ++c)
      extra << (c > expected ? ", " : "") << channels[c].source;
    itkGenericExceptionMacro(<< "model '" << info.name << "' expects " << expected << " channel(s) (" << ChannelList(info)
                                       << ") but was given " << given << ": extra " << extra.str());
  }
  for (int32_t c = 0; c < given; ++c)
  {
    const ComboSegChannel & ch = channels[c];
    if (ch.grid.NumberOfVoxels() <= 0 || !ch.values)
    {
      itkGenericExceptionMacro(<< ch.source << " is empty (" << ComboSegGridToString(ch.grid) << ")");
    }
    if (c > 0 && !ComboSegSameGrid(ch.grid, channels[0].grid))
    {
      itkGenericExceptionMacro(<< ch.source << " is on a different grid than " << channels[0].source << ": "
                                         << ComboSegGridToString(ch.grid) << " versus "
                                         << ComboSegGridToString(channels[0].grid));
    }
    const int64_t n = ch.grid.NumberOfVoxels();
    int64_t       bad = 0, first = -1;
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(ch.values[i]))
      {
        if (first < 0)
          first = i;
        ++bad;
      }
    if (bad > 0)
    {
      const int64_t x = first % ch.grid.size[0], y = (first / ch.grid.size[0]) % ch.grid.size[1],
                    z = first / (ch.grid.size[0] * ch.grid.size[1]);
      itkGenericExceptionMacro(<< ch.source << " has " << bad << " NaN or infinite voxel(s), the first at index [" << x
                                         << ", " << y << ", " << z << "]");
    }
  }

  modelGrid = ComboSegModelGrid(channels[0].grid, info);
  const int64_t        m = modelGrid.NumberOfVoxels();
  std::vector<uint8_t> modelMask;
  if (mask)
  {
    // Masks travel as int32 through the nearest-neighbour resampler.
    const int64_t        n = channels[0].grid.NumberOfVoxels();
    std::vector<int32_t> in(mask, mask + n), out(static_cast<size_t>(m));
    ComboSegResampleNearest(out.data(), modelGrid, in.data(), channels[0].grid, 0);
    modelMask.assign(out.begin(), out.end());
  }
  image.assign(static_cast<size_t>(m) * static_cast<size_t>(given), 0.0f);
  for (int32_t c = 0; c < given; ++c)
  {
    const cs_channel_info &           recipe = info.channels[c];
    const ComboSegIntensityStatistics stats =
      ComboSegChannelStatistics(channels[c].values, channels[c].grid.NumberOfVoxels(), recipe, mask);
    float * out = image.data() + static_cast<size_t>(c) * static_cast<size_t>(m);
    ComboSegResampleLinear(out, modelGrid, channels[c].values, channels[c].grid, ComboSegPadValue(recipe, stats));
    ComboSegNormalise(out, m, recipe, stats, mask ? modelMask.data() : nullptr);
  }
}

std::vector<uint8_t>
ComboSegOutsideBody(const std::vector<ComboSegChannel> & channels, const cs_model_info & info, const uint8_t * mask)
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
    for (int64_t i = 0; i < n; ++i)
      if (InBody(recipe, values[i], minimum, mask, i))
        outside[static_cast<size_t>(i)] = 0;
  }
  return outside;
}

void
ComboSegProbabilitiesToLabels(int32_t * labels, const ComboSegGrid & outputGrid, const float * probabilities,
                              const ComboSegGrid & modelGrid, int32_t numberOfClasses, float minimumProbability)
{
  CheckGrid(outputGrid, "output grid");
  CheckGrid(modelGrid, "model grid");
  if (numberOfClasses < 1)
  {
    itkGenericExceptionMacro(<< "no classes to choose from");
  }
  const int64_t  plane = modelGrid.NumberOfVoxels();
  const IndexMap map = MapBetween(outputGrid, modelGrid);
  ForEachVoxel(outputGrid, map, [&](int64_t o, double cx, double cy, double cz) {
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

namespace
{

// A box of voxel indices, bounds inclusive.
struct Box
{
  int64_t lo[3], hi[3]; // inclusive
};

} // namespace

void
ComboSegKeepLargestComponents(int32_t * labels, const std::array<int64_t, 3> & size)
{
  const int64_t        nx = size[0], ny = size[1], nz = size[2], n = nx * ny * nz;
  std::vector<int32_t> component(static_cast<size_t>(n), -1);
  std::vector<int64_t> componentSize;
  std::vector<int32_t> componentLabel;
  std::vector<int64_t> queue;
  for (int64_t seed = 0; seed < n; ++seed)
  {
    if (labels[seed] == 0 || component[seed] >= 0)
      continue;
    const int32_t id = static_cast<int32_t>(componentSize.size());
    const int32_t label = labels[seed];
    int64_t       count = 0;
    queue.clear();
    queue.push_back(seed);
    component[seed] = id;
    for (size_t head = 0; head < queue.size(); ++head)
    {
      const int64_t o = queue[head];
      ++count;
      const int64_t x = o % nx, y = (o / nx) % ny, z = o / (nx * ny);
      const int64_t neighbours[6] = { x > 0 ? o - 1 : -1,           x + 1 < nx ? o + 1 : -1,
                                      y > 0 ? o - nx : -1,          y + 1 < ny ? o + nx : -1,
                                      z > 0 ? o - nx * ny : -1,     z + 1 < nz ? o + nx * ny : -1 };
      for (int64_t q : neighbours)
        if (q >= 0 && component[q] < 0 && labels[q] == label)
        {
          component[q] = id;
          queue.push_back(q);
        }
    }
    componentSize.push_back(count);
    componentLabel.push_back(label);
  }
  // The largest component of each label (the first found wins a tie).
  std::vector<int32_t> largest;
  for (size_t id = 0; id < componentSize.size(); ++id)
  {
    const size_t label = static_cast<size_t>(componentLabel[id]);
    if (largest.size() <= label)
      largest.resize(label + 1, -1);
    if (largest[label] < 0 || componentSize[id] > componentSize[static_cast<size_t>(largest[label])])
      largest[label] = static_cast<int32_t>(id);
  }
  for (int64_t o = 0; o < n; ++o)
    if (labels[o] != 0 && component[o] != largest[static_cast<size_t>(labels[o])])
      labels[o] = 0;
}

void
ComboSegFillHoles(int32_t * labels, const std::array<int64_t, 3> & size)
{
  const int64_t nx = size[0], ny = size[1], nz = size[2], n = nx * ny * nz;
  // Bounding box of every label present.
  std::vector<Box> boxes;
  for (int64_t o = 0; o < n; ++o)
  {
    const int32_t label = labels[o];
    if (label <= 0)
      continue;
    if (boxes.size() <= static_cast<size_t>(label))
      boxes.resize(static_cast<size_t>(label) + 1, Box{ { -1, -1, -1 }, { -1, -1, -1 } });
    Box &         b = boxes[static_cast<size_t>(label)];
    const int64_t c[3] = { o % nx, (o / nx) % ny, o / (nx * ny) };
    for (int d = 0; d < 3; ++d)
    {
      if (b.lo[d] < 0 || c[d] < b.lo[d])
        b.lo[d] = c[d];
      if (c[d] > b.hi[d])
        b.hi[d] = c[d];
    }
  }
  std::vector<uint8_t> outside;
  std::vector<int64_t> queue;
  for (size_t label = 1; label < boxes.size(); ++label)
  {
    Box b = boxes[label];
    if (b.lo[0] < 0)
      continue;
    // One voxel of margin so that the outside surrounds the class.
    for (int d = 0; d < 3; ++d)
    {
      b.lo[d] = std::max<int64_t>(b.lo[d] - 1, 0);
      b.hi[d] = std::min<int64_t>(b.hi[d] + 1, size[d] - 1);
    }
    const int64_t bx = b.hi[0] - b.lo[0] + 1, by = b.hi[1] - b.lo[1] + 1, bz = b.hi[2] - b.lo[2] + 1;
    outside.assign(static_cast<size_t>(bx * by * bz), 0);
    queue.clear();
    auto global = [&](int64_t x, int64_t y, int64_t z) { return (b.lo[0] + x) + nx * ((b.lo[1] + y) + ny * (b.lo[2] + z)); };
    const int32_t cls = static_cast<int32_t>(label);
    for (int64_t z = 0; z < bz; ++z)
      for (int64_t y = 0; y < by; ++y)
        for (int64_t x = 0; x < bx; ++x)
        {
          const bool face = x == 0 || y == 0 || z == 0 || x == bx - 1 || y == by - 1 || z == bz - 1;
          if (face && labels[global(x, y, z)] != cls)
          {
            const int64_t local = x + bx * (y + by * z);
            outside[static_cast<size_t>(local)] = 1;
            queue.push_back(local);
          }
        }
    for (size_t head = 0; head < queue.size(); ++head)
    {
      const int64_t l = queue[head];
      const int64_t x = l % bx, y = (l / bx) % by, z = l / (bx * by);
      const int64_t neighbours[6] = { x > 0 ? l - 1 : -1,       x + 1 < bx ? l + 1 : -1,
                                      y > 0 ? l - bx : -1,      y + 1 < by ? l + bx : -1,
                                      z > 0 ? l - bx * by : -1, z + 1 < bz ? l + bx * by : -1 };
      for (int64_t q : neighbours)
      {
        if (q < 0 || outside[static_cast<size_t>(q)])
          continue;
        const int64_t qx = q % bx, qy = (q / bx) % by, qz = q / (bx * by);
        if (labels[global(qx, qy, qz)] != cls)
        {
          outside[static_cast<size_t>(q)] = 1;
          queue.push_back(q);
        }
      }
    }
    // Enclosed background joins the class; enclosed organs of other classes stay.
    for (int64_t z = 0; z < bz; ++z)
      for (int64_t y = 0; y < by; ++y)
        for (int64_t x = 0; x < bx; ++x)
        {
          const int64_t g = global(x, y, z);
          if (!outside[static_cast<size_t>(x + bx * (y + by * z))] && labels[g] == 0)
            labels[g] = cls;
        }
  }
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
  static const std::pair<const char *, const char *> words[] = {
    { "L", "R" }, { "l", "r" }, { "Left", "Right" }, { "left", "right" }, { "LEFT", "RIGHT" }, { "lh", "rh" }
  };
  std::string out, word;
  auto        flush = [&]() {
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

} // end namespace itk
