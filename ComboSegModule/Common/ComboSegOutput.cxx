// ComboSegOutput.cxx - label maps (NRRD with segment keys, NIfTI, MetaImage), colour tables, TSV
// tables and PNGs.
#include "ComboSegOutput.h"
#include "ComboSegCLI.h"
#include "ComboSegRunOutputs.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <sstream>
#include <stdexcept>

#include <png.h>

#include "itkImageFileWriter.h"
#include "itkComboSegProcessing.h"
#include "itkMetaDataObject.h"
#include "itkNrrdImageIO.h"

namespace
{

std::string ColorFloats(const std::array<uint8_t, 3> &rgb)
{
  char text[64];
  std::snprintf(text, sizeof(text), "%.6f %.6f %.6f", rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0);
  return text;
}

// Formats other than NRRD go through ITK's IO factories, which pick the IO from the file name: the
// image is written under its final stem and the canonical extension into the temporary folder
// "<path>.tmp-<pid>" (same file system; a later write removes it if this process is killed), then
// renamed out, detached data files (.mhd's .zraw) before the header, so that a killed or failed
// run leaves nothing under the final names.
void WriteWithIOFactory(const ComboSegLabelImage *image, const std::string &path, const std::string &extension)
{
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  const std::string header = base.substr(0, base.size() - extension.size()) + extension;
  const std::string folder = itk::ComboSegMakeTemporaryFolder(path);
  try
  {
    auto writer = itk::ImageFileWriter<ComboSegLabelImage>::New();
    writer->SetFileName(folder + "/" + header);
    writer->SetInput(image);
    writer->SetUseCompression(true);
    writer->Update();
    for (const std::string &name : itk::ComboSegFolderEntries(folder))
      if (name != header)
        ComboSegCommitFile(folder + "/" + name, dir + name);
    ComboSegCommitFile(folder + "/" + header, path);
  }
  catch (...)
  {
    itk::ComboSegRemoveTree(folder);
    throw;
  }
  itk::ComboSegRemoveTree(folder); // empty by now
}

} // namespace

std::string ComboSegCheckExtension(const std::string &what, const std::string &path,
                                   const std::vector<std::string> &extensions)
{
  const size_t slash = path.find_last_of('/');
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  std::string list;
  for (const std::string &e : extensions)
  {
    // A name that is only the extension ("x/.nii") is no file name either.
    if (base.size() > e.size() && itk::ComboSegEndsWithNoCase(base, e))
      return e;
    list += (list.empty() ? "" : ", ") + e;
  }
  throw std::invalid_argument("cannot write the " + what + " '" + path +
                              "': unsupported file name extension (supported: " + list + ")");
}

const std::vector<std::string> &ComboSegLabelMapExtensions()
{
  static const std::vector<std::string> extensions = {".nrrd", ".nii.gz", ".nii", ".mha", ".mhd"};
  return extensions;
}

std::string ComboSegLabelMapExtension(const std::string &path)
{
  return ComboSegCheckExtension("label map", path, ComboSegLabelMapExtensions());
}

const std::vector<std::string> &ComboSegColorTableExtensions()
{
  static const std::vector<std::string> extensions = {".ctbl", ".txt", ".csv"};
  return extensions;
}

std::vector<ComboSegSegmentInfo> ComboSegSegmentsFromModel(const cs_model_info &info)
{
  return itk::ComboSegModelClasses(info);
}

namespace
{
// A label's voxel bounding box: the smallest and largest index along x, y and z in turn.
using LabelBox = std::array<long, 6>;
using LabelBoxes = std::map<short, LabelBox>;

void Include(LabelBoxes &boxes, short value, const LabelBox &run)
{
  const auto it = boxes.find(value);
  if (it == boxes.end())
  {
    boxes.emplace(value, run);
    return;
  }
  LabelBox &box = it->second;
  for (int a = 0; a < 3; ++a)
  {
    box[2 * a] = std::min(box[2 * a], run[2 * a]);
    box[2 * a + 1] = std::max(box[2 * a + 1], run[2 * a + 1]);
  }
}
} // namespace

std::vector<std::array<long, 7>> ComboSegLabelExtents(const ComboSegLabelImage *labels)
{
  // Runs of one value along x, chunk by chunk over ITK's threads, merged in chunk order (ITK's
  // LabelStatisticsImageFilter gave the same boxes, but computed every label's mean and variance
  // on the way, most of the time on one thread: 30 ms of ch2's run).
  const auto region = labels->GetBufferedRegion();
  const long nx = long(region.GetSize(0)), ny = long(region.GetSize(1));
  const auto start = region.GetIndex();
  const short *p = labels->GetBufferPointer();
  const auto parts =
      itk::ComboSegPerChunk<LabelBoxes>(int64_t(region.GetNumberOfPixels()), 0, [&](int64_t begin, int64_t end) {
        LabelBoxes boxes;
        for (int64_t i = begin; i < end;)
        {
          const int64_t rowEnd = std::min(end, (i / nx + 1) * nx);
          int64_t j = i + 1;
          while (j < rowEnd && p[j] == p[i])
            ++j;
          const long x = long(i % nx) + start[0], y = long(i / nx % ny) + start[1], z = long(i / nx / ny) + start[2];
          if (p[i] != 0)
            Include(boxes, p[i], {{x, x + long(j - 1 - i), y, y, z, z}});
          i = j;
        }
        return boxes;
      });
  LabelBoxes all;
  for (const LabelBoxes &part : parts)
    for (const auto &box : part)
      Include(all, box.first, box.second);
  std::vector<std::array<long, 7>> out;
  for (const auto &box : all)
  {
    const LabelBox &b = box.second;
    out.push_back({{box.first, b[0], b[1], b[2], b[3], b[4], b[5]}});
  }
  return out;
}

void ComboSegWriteLabelMap(const ComboSegLabelImage *labels, const std::vector<ComboSegSegmentInfo> &segments,
                           const std::string &path)
{
  const std::string extension = ComboSegLabelMapExtension(path);
  // Work on a shallow copy so that the caller's image keeps its own metadata dictionary.
  ComboSegLabelImage::Pointer image = ComboSegLabelImage::New();
  image->Graft(labels);
  if (extension != ".nrrd")
  {
    image->SetMetaDataDictionary(itk::MetaDataDictionary()); // no keys from the input scan
    WriteWithIOFactory(image, path, extension);
    return;
  }
  itk::MetaDataDictionary dict;
  auto set = [&dict](const std::string &key, const std::string &value) {
    itk::EncapsulateMetaData<std::string>(dict, key, value);
  };
  std::map<long, std::array<long, 7>> extents;
  for (const auto &e : ComboSegLabelExtents(labels))
    extents[e[0]] = e;
  for (size_t i = 0; i < segments.size(); ++i)
  {
    const ComboSegSegmentInfo &s = segments[i];
    const std::string key = "Segment" + std::to_string(i) + "_";
    std::string extent = "0 -1 0 -1 0 -1";
    const auto it = extents.find(s.value);
    if (it != extents.end())
    {
      const auto &b = it->second;
      extent = std::to_string(b[1]) + " " + std::to_string(b[2]) + " " + std::to_string(b[3]) + " " +
               std::to_string(b[4]) + " " + std::to_string(b[5]) + " " + std::to_string(b[6]);
    }
    set(key + "ID", "Segment_" + std::to_string(s.value));
    set(key + "Name", s.name);
    set(key + "NameAutoGenerated", "0");
    set(key + "Color", ColorFloats(s.rgb));
    set(key + "ColorAutoGenerated", "0");
    set(key + "LabelValue", std::to_string(s.value));
    set(key + "Layer", "0");
    set(key + "Extent", extent);
    set(key + "Tags", "|");
  }
  set("Segmentation_MasterRepresentation", "Binary labelmap");
  set("Segmentation_ContainedRepresentationNames", "Binary labelmap|");
  set("Segmentation_ReferenceImageExtentOffset", "0 0 0");
  set("Segmentation_ConversionParameters", "");
  image->SetMetaDataDictionary(dict);

  const std::string tmp = ComboSegTemporaryPath(path);
  auto writer = itk::ImageFileWriter<ComboSegLabelImage>::New();
  writer->SetImageIO(itk::NrrdImageIO::New()); // the temporary name has no .nrrd extension
  writer->SetFileName(tmp);
  writer->SetInput(image);
  writer->SetUseCompression(true);
  try
  {
    writer->Update();
  }
  catch (...)
  {
    std::remove(tmp.c_str());
    throw;
  }
  ComboSegCommitFile(tmp, path);
}

std::string ComboSegColorTableText(const std::vector<ComboSegSegmentInfo> &segments)
{
  std::ostringstream out;
  out << "# Color table file written by ComboSeg\n# " << segments.size() + 1 << " values\n";
  out << "0 Background 0 0 0 0\n";
  for (const ComboSegSegmentInfo &s : segments)
  {
    std::string name = s.name;
    std::replace(name.begin(), name.end(), ' ', '_');
    out << s.value << " " << name << " " << int(s.rgb[0]) << " " << int(s.rgb[1]) << " " << int(s.rgb[2]) << " 255\n";
  }
  return out.str();
}

// Slicer 5's colour-table CSV; a name with a comma or a quote is quoted.
static std::string ColorTableCsv(const std::vector<ComboSegSegmentInfo> &segments)
{
  std::string out = "LabelValue,Name,Color_R,Color_G,Color_B,Color_A\n0,Background,0,0,0,0\n";
  for (const ComboSegSegmentInfo &s : segments)
  {
    std::string name = s.name;
    if (name.find_first_of(",\"") != std::string::npos)
    {
      std::string quoted = "\"";
      for (char c : name)
        quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
      name = quoted + "\"";
    }
    out += std::to_string(s.value) + "," + name + "," + std::to_string(s.rgb[0]) + "," + std::to_string(s.rgb[1]) +
           "," + std::to_string(s.rgb[2]) + ",255\n";
  }
  return out;
}

void ComboSegWriteColorTable(const std::vector<ComboSegSegmentInfo> &segments, const std::string &path)
{
  const std::string format = ComboSegCheckExtension("colour table", path, ComboSegColorTableExtensions());
  ComboSegWriteFileAtomically(path, format == ".csv" ? ColorTableCsv(segments) : ComboSegColorTableText(segments));
}

void ComboSegWriteTable(const std::string &path, const std::vector<std::string> &header,
                        const std::vector<std::vector<std::string>> &rows)
{
  std::string text;
  auto line = [&text](const std::vector<std::string> &cells) {
    for (size_t i = 0; i < cells.size(); ++i)
    {
      std::string cell = cells[i];
      std::replace(cell.begin(), cell.end(), '\t', ' ');
      std::replace(cell.begin(), cell.end(), '\n', ' ');
      text += (i ? "\t" : "") + cell;
    }
    text += "\n";
  };
  line(header);
  for (const auto &row : rows)
    line(row);
  ComboSegWriteFileAtomically(path, text);
}

namespace
{
// libpng reports errors by longjmp back to the setjmp here: a function of its own, so that no local
// changed after setjmp is read after the jump.
bool WritePngRows(png_structp png, png_infop info, FILE *f, int width, int height, const uint8_t *rgb)
{
  if (setjmp(png_jmpbuf(png)) != 0)
    return false;
  png_init_io(png, f);
  png_set_IHDR(png, info, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height), 8, PNG_COLOR_TYPE_RGB,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < height; ++y)
    png_write_row(png, const_cast<png_bytep>(rgb + static_cast<size_t>(y) * width * 3));
  png_write_end(png, nullptr);
  return true;
}
} // namespace

void ComboSegWritePng(const std::string &path, int width, int height, const std::vector<uint8_t> &rgb)
{
  if (width <= 0 || height <= 0 || rgb.size() != static_cast<size_t>(width) * height * 3)
    throw std::invalid_argument("PNG " + path + ": pixel buffer does not match its size");
  const std::string tmp = ComboSegTemporaryPath(path);
  FILE *f = std::fopen(tmp.c_str(), "wb");
  if (!f)
    throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  bool ok = png && info && WritePngRows(png, info, f, width, height, rgb.data());
  png_destroy_write_struct(png ? &png : nullptr, info ? &info : nullptr);
  ok = ok && itk::ComboSegFlushToDisk(f);
  if (std::fclose(f) != 0 || !ok)
  {
    std::remove(tmp.c_str());
    throw std::runtime_error("cannot write PNG " + path);
  }
  ComboSegCommitFile(tmp, path);
}

std::array<int, 3> ComboSegVoxelAxesOfLps(const ComboSegScalarImage::DirectionType &direction)
{
  // Greedy on the largest cosines, so that an oblique volume still gets three distinct axes.
  std::array<int, 3> axisOf{{-1, -1, -1}};
  bool used[3] = {false, false, false};
  for (int round = 0; round < 3; ++round)
  {
    int bestLps = 0, bestVoxel = 0;
    double best = -1.0;
    for (int a = 0; a < 3; ++a)
      for (int d = 0; d < 3; ++d)
        if (axisOf[a] < 0 && !used[d] && std::fabs(direction(a, d)) > best)
        {
          best = std::fabs(direction(a, d));
          bestLps = a;
          bestVoxel = d;
        }
    axisOf[bestLps] = bestVoxel;
    used[bestVoxel] = true;
  }
  return axisOf;
}

void ComboSegWritePreview(const std::string &path, const ComboSegScalarImage *image, const ComboSegLabelImage *labels,
                          const std::vector<ComboSegSegmentInfo> &segments)
{
  const auto size = image->GetLargestPossibleRegion().GetSize();
  if (labels->GetLargestPossibleRegion().GetSize() != size)
    throw std::invalid_argument("preview: the label map and the image differ in size");
  const auto spacing = image->GetSpacing();
  const long n[3] = {long(size[0]), long(size[1]), long(size[2])};
  const float *pixels = image->GetBufferPointer();
  const short *lab = labels->GetBufferPointer();
  const size_t count = size_t(n[0]) * n[1] * n[2];

  // Grey window from the 1st and 99th percentiles of a regular sample of voxels.
  std::vector<float> sample;
  const size_t stride = std::max<size_t>(1, count / 200000);
  for (size_t i = 0; i < count; i += stride)
    sample.push_back(pixels[i]);
  std::sort(sample.begin(), sample.end());
  const float lo = sample[size_t(0.01 * (sample.size() - 1))];
  float hi = sample[size_t(0.99 * (sample.size() - 1))];
  if (!(hi > lo))
    hi = lo + 1.0f;

  std::map<int, std::array<uint8_t, 3>> colors;
  for (const ComboSegSegmentInfo &s : segments)
    colors[s.value] = s.rgb;

  // The panels show what Slicer's red, green and yellow views show, whatever the storage order:
  // axial (patient left to the right, anterior up), coronal (left to the right, superior up),
  // sagittal (posterior to the right, superior up). Each screen axis runs along an LPS axis.
  struct ScreenAxis
  {
    int lps;       // 0 x (left), 1 y (posterior), 2 z (superior)
    bool positive; // the screen coordinate grows along +lps
  };
  struct Panel
  {
    ScreenAxis across, down;
  };
  const Panel panels[3] = {{{0, true}, {1, true}}, {{0, true}, {2, false}}, {{1, true}, {2, false}}};
  const std::array<int, 3> voxelAxisOf = ComboSegVoxelAxesOfLps(image->GetDirection());
  const auto direction = image->GetDirection();
  // Voxel index along the screen axis at fraction t of its length.
  auto voxelIndex = [&](const ScreenAxis &a, double t) {
    const int d = voxelAxisOf[a.lps];
    const long i = std::min(n[d] - 1, long(t * n[d]));
    return (direction(a.lps, d) > 0) == a.positive ? i : n[d] - 1 - i;
  };
  const int panelHeight = 256;
  std::vector<int> widths;
  for (const Panel &p : panels)
  {
    const int u = voxelAxisOf[p.across.lps], v = voxelAxisOf[p.down.lps];
    const double physicalU = n[u] * spacing[u], physicalV = n[v] * spacing[v];
    widths.push_back(std::max(1, int(std::lround(panelHeight * physicalU / std::max(1e-9, physicalV)))));
  }
  const int width = widths[0] + widths[1] + widths[2];
  std::vector<uint8_t> rgb(size_t(width) * panelHeight * 3, 0);
  int x0 = 0;
  for (int pi = 0; pi < 3; ++pi)
  {
    const Panel &p = panels[pi];
    for (int y = 0; y < panelHeight; ++y)
      for (int x = 0; x < widths[pi]; ++x)
      {
        long idx[3];
        const int u = voxelAxisOf[p.across.lps], v = voxelAxisOf[p.down.lps], w = 3 - u - v;
        idx[w] = n[w] / 2;
        idx[u] = voxelIndex(p.across, double(x) / widths[pi]);
        idx[v] = voxelIndex(p.down, double(y) / panelHeight);
        const size_t off = (size_t(idx[2]) * n[1] + idx[1]) * n[0] + idx[0];
        const float g = std::min(1.0f, std::max(0.0f, (pixels[off] - lo) / (hi - lo))) * 255.0f;
        float c[3] = {g, g, g};
        const auto it = colors.find(lab[off]);
        if (lab[off] != 0)
        {
          const std::array<uint8_t, 3> col = it != colors.end() ? it->second : std::array<uint8_t, 3>{{255, 255, 0}};
          for (int ch = 0; ch < 3; ++ch)
            c[ch] = 0.5f * c[ch] + 0.5f * col[ch];
        }
        uint8_t *out = &rgb[(size_t(y) * width + x0 + x) * 3];
        for (int ch = 0; ch < 3; ++ch)
          out[ch] = uint8_t(std::lround(c[ch]));
      }
    x0 += widths[pi];
  }
  ComboSegWritePng(path, width, panelHeight, rgb);
}
