// itkComboSegTrainingPlot.cxx - the training curves as a PNG picture.
#include "itkComboSegTrainingPlot.h"

#include "itkComboSegFiles.h"
#include "itkComboSegTrainingParts.h"

#include "itkImage.h"
#include "itkImageFileWriter.h"
#include "itkImageRegionIterator.h"
#include "itkPNGImageIO.h"
#include "itkRGBPixel.h"

#include <array>
#include <cmath>
#include <cstdio>
#include <map>

namespace itk
{
namespace training
{
namespace
{

// The plot: an RGB raster with lines, markers and a 3x5 pixel font for the few words it needs.

struct Raster
{
  int width, height;
  std::vector<uint8_t> rgb;
  Raster(int w, int h)
    : width(w)
    , height(h)
    , rgb(static_cast<size_t>(w) * h * 3, 255)
  {}
  void Set(int x, int y, const std::array<uint8_t, 3> &c)
  {
    if (x < 0 || y < 0 || x >= width || y >= height) return;
    std::memcpy(&rgb[(static_cast<size_t>(y) * width + x) * 3], c.data(), 3);
  }
  void Fill(int x0, int y0, int x1, int y1, const std::array<uint8_t, 3> &c)
  {
    for (int y = y0; y <= y1; ++y)
      for (int x = x0; x <= x1; ++x) Set(x, y, c);
  }
  // Bresenham, two pixels thick.
  void Line(int x0, int y0, int x1, int y1, const std::array<uint8_t, 3> &c, int thick = 2)
  {
    const int dx = std::abs(x1 - x0), sx = x0 < x1 ? 1 : -1;
    const int dy = -std::abs(y1 - y0), sy = y0 < y1 ? 1 : -1;
    int err = dx + dy;
    for (;;)
    {
      Fill(x0, y0, x0 + thick - 1, y0 + thick - 1, c);
      if (x0 == x1 && y0 == y1) break;
      const int e2 = 2 * err;
      if (e2 >= dy) err += dy, x0 += sx;
      if (e2 <= dx) err += dx, y0 += sy;
    }
  }
  // Text in a 3x5 font scaled by `scale`; unknown characters are blank.
  void Text(int x, int y, const std::string &text, const std::array<uint8_t, 3> &c, int scale = 2)
  {
    static const std::map<char, std::array<uint8_t, 5>> font = {
      { '0', { 7, 5, 5, 5, 7 } }, { '1', { 2, 6, 2, 2, 7 } }, { '2', { 7, 1, 7, 4, 7 } },
      { '3', { 7, 1, 7, 1, 7 } }, { '4', { 5, 5, 7, 1, 1 } }, { '5', { 7, 4, 7, 1, 7 } },
      { '6', { 7, 4, 7, 5, 7 } }, { '7', { 7, 1, 1, 1, 1 } }, { '8', { 7, 5, 7, 5, 7 } },
      { '9', { 7, 5, 7, 1, 7 } }, { '.', { 0, 0, 0, 0, 2 } }, { '-', { 0, 0, 7, 0, 0 } },
      { 'A', { 2, 5, 7, 5, 5 } }, { 'C', { 7, 4, 4, 4, 7 } }, { 'D', { 6, 5, 5, 5, 6 } },
      { 'E', { 7, 4, 6, 4, 7 } }, { 'H', { 5, 5, 7, 5, 5 } }, { 'I', { 7, 2, 2, 2, 7 } },
      { 'L', { 4, 4, 4, 4, 7 } }, { 'N', { 6, 5, 5, 5, 5 } }, { 'O', { 7, 5, 5, 5, 7 } },
      { 'P', { 7, 5, 7, 4, 4 } }, { 'R', { 6, 5, 6, 5, 5 } }, { 'S', { 7, 4, 7, 1, 7 } },
      { 'T', { 7, 2, 2, 2, 2 } }, { 'V', { 5, 5, 5, 5, 2 } }, { 'M', { 5, 7, 7, 5, 5 } },
    };
    for (char ch : text)
    {
      const auto it = font.find(ch);
      if (it != font.end())
        for (int row = 0; row < 5; ++row)
          for (int col = 0; col < 3; ++col)
            if (it->second[row] & (4 >> col))
              Fill(x + col * scale, y + row * scale, x + col * scale + scale - 1, y + row * scale + scale - 1, c);
      x += 4 * scale;
    }
  }
};

void WritePng(const std::string &path, const Raster &raster)
{
  using PixelType = RGBPixel<unsigned char>;
  using ImageType = Image<PixelType, 2>;
  auto image = ImageType::New();
  ImageType::RegionType region;
  region.SetSize(0, raster.width);
  region.SetSize(1, raster.height);
  image->SetRegions(region);
  image->Allocate();
  ImageRegionIterator<ImageType> it(image, region);
  for (size_t i = 0; !it.IsAtEnd(); ++it, ++i)
  {
    PixelType p;
    p.Set(raster.rgb[3 * i], raster.rgb[3 * i + 1], raster.rgb[3 * i + 2]);
    it.Set(p);
  }
  // A temporary name that still ends in .png, renamed over the target.
  const std::string tmp = ComboSegTemporaryPath(path, ".png");
  auto writer = ImageFileWriter<ImageType>::New();
  writer->SetImageIO(PNGImageIO::New());
  writer->SetFileName(tmp);
  writer->SetInput(image);
  try
  {
    writer->Update();
  }
  catch (const ExceptionObject &e)
  {
    std::remove(tmp.c_str());
    itkGenericExceptionMacro("cannot write the plot " << path << ": " << e.GetDescription());
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
  {
    std::remove(tmp.c_str());
    itkGenericExceptionMacro("cannot write the plot " << path << ": " << std::strerror(errno));
  }
  cs_remove_stale_temporaries(path.c_str());
}


} // namespace

void WriteHistoryPlotPng(const std::string &path, const std::vector<ComboSegTrainingRecord> &history)
{
  const int W = 640, H = 400, left = 60, right = 84, top = 40, bottom = 50;
  const bool validated = HasValidation(history);
  const int pw = W - left - right, ph = H - top - bottom;
  const std::array<uint8_t, 3> black{ { 0, 0, 0 } }, grey{ { 220, 220, 220 } };
  const std::array<uint8_t, 3> orange{ { 230, 120, 20 } }, blue{ { 30, 90, 200 } };
  Raster r(W, H);

  double lossMin = std::numeric_limits<double>::infinity(), lossMax = -lossMin;
  for (const auto &h : history)
    if (std::isfinite(h.trainLoss)) lossMin = std::min(lossMin, h.trainLoss), lossMax = std::max(lossMax, h.trainLoss);
  if (!(lossMax >= lossMin)) lossMin = 0.0, lossMax = 1.0;
  if (lossMax - lossMin < 1e-9) lossMin -= 0.5, lossMax += 0.5;

  // Grid at Dice 0, 0.2, .., 1 (left axis: Dice, right axis: loss). The loss ticks get the
  // decimals that tell them apart.
  const double lossTick = (lossMax - lossMin) / 5.0;
  const int decimals = std::max(0, std::min(6, 1 - static_cast<int>(std::floor(std::log10(lossTick)))));
  for (int i = 0; i <= 5; ++i)
  {
    const int y = top + ph - i * ph / 5;
    r.Line(left, y, left + pw, y, grey, 1);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", i / 5.0);
    if (validated) r.Text(left - 34, y - 5, buf, blue);
    std::snprintf(buf, sizeof buf, "%.*f", decimals, lossMin + lossTick * i);
    r.Text(left + pw + 6, y - 5, buf, orange);
  }
  r.Line(left, top, left, top + ph, black, 1);
  r.Line(left + pw, top, left + pw, top + ph, black, 1);
  r.Line(left, top + ph, left + pw, top + ph, black, 1);
  if (validated) r.Text(left, 12, "DICE", blue);
  r.Text(left + pw - 28, 12, "LOSS", orange);
  r.Text(left + pw / 2 - 20, H - 18, "EPOCH", black);

  const int64_t first = history.empty() ? 1 : history.front().epoch;
  const int64_t last = history.empty() ? 1 : std::max(history.back().epoch, first + 1);
  auto X = [&](int64_t epoch) { return left + static_cast<int>((epoch - first) * pw / double(last - first)); };
  for (int64_t e : { first, last })
    r.Text(X(e) - 4, top + ph + 8, std::to_string(e), black);

  auto plot = [&](auto value, double lo, double hi, const std::array<uint8_t, 3> &color) {
    int px = -1, py = -1;
    for (const auto &h : history)
    {
      const double v = value(h);
      if (!std::isfinite(v))
      {
        px = -1;
        continue;
      }
      const int x = X(h.epoch);
      const int y = top + ph - static_cast<int>(std::lround((std::min(hi, std::max(lo, v)) - lo) / (hi - lo) * ph));
      if (px >= 0) r.Line(px, py, x, y, color);
      r.Fill(x - 2, y - 2, x + 3, y + 3, color);
      px = x, py = y;
    }
  };
  plot([](const ComboSegTrainingRecord &h) { return h.trainLoss; }, lossMin, lossMax, orange);
  plot([](const ComboSegTrainingRecord &h) { return h.meanDice; }, 0.0, 1.0, blue);
  WritePng(path, r);
}

} // namespace training
} // namespace itk
