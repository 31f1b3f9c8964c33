// itkComboSegTrainingPlot.cxx - the training curves as a PNG picture, drawn with cairo.
#include "itkComboSegTrainingPlot.h"

#include "itkComboSegFiles.h"
#include "itkComboSegTrainingParts.h"

#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <vector>

namespace itk
{
namespace training
{
namespace
{

struct Color
{
  double r, g, b;
};
const Color Black{ 0.0, 0.0, 0.0 }, Grey{ 0.86, 0.86, 0.86 };
const Color Orange{ 0.90, 0.47, 0.08 }, Blue{ 0.12, 0.35, 0.78 };

// The canvas and the plot area inside it, in pixels.
struct Frame
{
  static constexpr int    Width = 640, Height = 400;
  static constexpr double Left = 70, Right = 570, Top = 50, Bottom = 340;
};

// What one curve shows: its values per epoch and the range its axis spans.
struct Axis
{
  double low, high;
  double
  Y(double v) const
  {
    const double t = (std::min(high, std::max(low, v)) - low) / (high - low);
    return Frame::Bottom - t * (Frame::Bottom - Frame::Top);
  }
};

struct Epochs
{
  int64_t first, last;
  double
  X(int64_t epoch) const
  {
    return Frame::Left + double(epoch - first) / double(last - first) * (Frame::Right - Frame::Left);
  }
};

using Surface = std::unique_ptr<cairo_surface_t, decltype(&cairo_surface_destroy)>;
using Cairo = std::unique_ptr<cairo_t, decltype(&cairo_destroy)>;

void
SetColor(cairo_t * cr, const Color & c)
{
  cairo_set_source_rgb(cr, c.r, c.g, c.b);
}

// Text placed by a point of its box: ax, ay in [0, 1] (0 0 its top left, 0.5 0.5 its centre).
void
Text(cairo_t * cr, const std::string & text, double x, double y, double ax, double ay, double angle = 0.0)
{
  cairo_text_extents_t e;
  cairo_text_extents(cr, text.c_str(), &e);
  cairo_save(cr);
  cairo_translate(cr, x, y);
  cairo_rotate(cr, angle);
  cairo_move_to(cr, -e.x_bearing - ax * e.width, -e.y_bearing - ay * e.height);
  cairo_show_text(cr, text.c_str());
  cairo_restore(cr);
}

// The loss axis: the loss's range (widened when flat), ticks with the decimals that tell them apart.
Axis
LossAxis(const std::vector<ComboSegTrainingRecord> & history, int & decimals)
{
  double low = std::numeric_limits<double>::infinity(), high = -low;
  for (const auto & h : history)
    if (std::isfinite(h.trainLoss))
      low = std::min(low, h.trainLoss), high = std::max(high, h.trainLoss);
  if (!(high >= low))
    low = 0.0, high = 1.0;
  if (high - low < 1e-9)
    low -= 0.5, high += 0.5;
  const double tick = (high - low) / 5.0;
  decimals = std::max(0, std::min(6, 1 - static_cast<int>(std::floor(std::log10(tick)))));
  return Axis{ low, high };
}

// Epoch ticks a round step apart (1, 2, 5, 10, ...), at most about eight.
int64_t
EpochStep(const Epochs & epochs)
{
  const int64_t span = epochs.last - epochs.first;
  for (int64_t scale = 1;; scale *= 10)
    for (int64_t m : { 1, 2, 5 })
      if (span / (m * scale) <= 8)
        return m * scale;
}

// Grid lines at Dice 0, 0.2, .., 1, which are also the loss ticks; the frame; the axes' words.
void
DrawAxes(cairo_t * cr, const Axis & loss, int decimals, const Epochs & epochs, bool validated)
{
  cairo_set_line_width(cr, 1.0);
  cairo_set_font_size(cr, 12.0);
  for (int i = 0; i <= 5; ++i)
  {
    const double y = std::round(Frame::Bottom - i * (Frame::Bottom - Frame::Top) / 5.0) + 0.5;
    SetColor(cr, Grey);
    cairo_move_to(cr, Frame::Left, y);
    cairo_line_to(cr, Frame::Right, y);
    cairo_stroke(cr);
    char text[32];
    if (validated)
    {
      std::snprintf(text, sizeof text, "%.1f", i / 5.0);
      SetColor(cr, Blue);
      Text(cr, text, Frame::Left - 8, y, 1.0, 0.5);
    }
    std::snprintf(text, sizeof text, "%.*f", decimals, loss.low + (loss.high - loss.low) * i / 5.0);
    SetColor(cr, Orange);
    Text(cr, text, Frame::Right + 8, y, 0.0, 0.5);
  }
  // The first and last epochs, and round ones between them that keep clear of both.
  const int64_t        step = EpochStep(epochs);
  std::vector<int64_t> ticks{ epochs.first };
  for (int64_t e = (epochs.first / step + 1) * step; e < epochs.last; e += step)
    if (2 * (e - epochs.first) >= step && 2 * (epochs.last - e) >= step)
      ticks.push_back(e);
  ticks.push_back(epochs.last);
  SetColor(cr, Black);
  for (int64_t e : ticks)
  {
    const double x = std::round(epochs.X(e)) + 0.5;
    cairo_move_to(cr, x, Frame::Bottom);
    cairo_line_to(cr, x, Frame::Bottom + 5);
    cairo_stroke(cr);
    Text(cr, std::to_string(e), x, Frame::Bottom + 8, 0.5, 0.0);
  }
  cairo_rectangle(cr, Frame::Left + 0.5, Frame::Top + 0.5, Frame::Right - Frame::Left, Frame::Bottom - Frame::Top);
  cairo_stroke(cr);
  cairo_set_font_size(cr, 13.0);
  Text(cr, "epoch", (Frame::Left + Frame::Right) / 2, Frame::Height - 12, 0.5, 1.0);
  SetColor(cr, Orange);
  Text(cr, "training loss", Frame::Width - 14, (Frame::Top + Frame::Bottom) / 2, 0.5, 0.0, M_PI / 2);
  if (validated)
  {
    SetColor(cr, Blue);
    Text(cr, "mean validation Dice", 14, (Frame::Top + Frame::Bottom) / 2, 0.5, 0.0, -M_PI / 2);
  }
}

// A curve through the finite values, broken where a value is missing, with a dot per epoch.
template <typename Value>
void
DrawCurve(cairo_t * cr, const std::vector<ComboSegTrainingRecord> & history, Value value, const Axis & axis,
          const Epochs & epochs, const Color & color)
{
  SetColor(cr, color);
  cairo_set_line_width(cr, 2.0);
  bool drawing = false;
  for (const auto & h : history)
  {
    const double v = value(h);
    if (!std::isfinite(v))
    {
      drawing = false;
      continue;
    }
    const double x = epochs.X(h.epoch), y = axis.Y(v);
    drawing ? cairo_line_to(cr, x, y) : cairo_move_to(cr, x, y);
    drawing = true;
  }
  cairo_stroke(cr);
  for (const auto & h : history)
    if (std::isfinite(value(h)))
    {
      cairo_arc(cr, epochs.X(h.epoch), axis.Y(value(h)), 3.0, 0.0, 2 * M_PI);
      cairo_fill(cr);
    }
}

// The legend above the plot: a short line of each curve's colour and its name.
void
DrawLegend(cairo_t * cr, bool validated)
{
  cairo_set_font_size(cr, 13.0);
  double x = Frame::Left;
  auto   entry = [&](const Color & color, const std::string & name) {
    SetColor(cr, color);
    cairo_set_line_width(cr, 2.0);
    cairo_move_to(cr, x, Frame::Top / 2);
    cairo_line_to(cr, x + 24, Frame::Top / 2);
    cairo_stroke(cr);
    SetColor(cr, Black);
    cairo_text_extents_t e;
    cairo_text_extents(cr, name.c_str(), &e);
    Text(cr, name, x + 30, Frame::Top / 2, 0.0, 0.5);
    x += 30 + e.x_advance + 24;
  };
  entry(Orange, "training loss (mean per epoch)");
  if (validated)
    entry(Blue, "mean validation Dice");
}

void
WritePngAtomically(cairo_surface_t * surface, const std::string & path)
{
  const std::string    tmp = ComboSegTemporaryPath(path);
  const cairo_status_t status = cairo_surface_write_to_png(surface, tmp.c_str());
  if (status != CAIRO_STATUS_SUCCESS)
  {
    std::remove(tmp.c_str());
    itkGenericExceptionMacro("cannot write the plot " << path << ": " << cairo_status_to_string(status));
  }
  ComboSegCommitFile(tmp, path);
}

} // namespace

void
WriteHistoryPlotPng(const std::string & path, const std::vector<ComboSegTrainingRecord> & history)
{
  Surface surface(cairo_image_surface_create(CAIRO_FORMAT_RGB24, Frame::Width, Frame::Height), cairo_surface_destroy);
  Cairo   cr(cairo_create(surface.get()), cairo_destroy);
  if (cairo_status(cr.get()) != CAIRO_STATUS_SUCCESS)
    itkGenericExceptionMacro("cannot draw the plot " << path << ": " << cairo_status_to_string(cairo_status(cr.get())));
  cairo_set_source_rgb(cr.get(), 1.0, 1.0, 1.0);
  cairo_paint(cr.get());
  cairo_select_font_face(cr.get(), "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);

  const bool    validated = HasValidation(history);
  int           decimals = 0;
  const Axis    loss = LossAxis(history, decimals), dice{ 0.0, 1.0 };
  const int64_t first = history.empty() ? 1 : history.front().epoch;
  const Epochs  epochs{ first, history.empty() ? 2 : std::max(history.back().epoch, first + 1) };
  DrawAxes(cr.get(), loss, decimals, epochs, validated);
  DrawCurve(
    cr.get(), history, [](const ComboSegTrainingRecord & h) { return h.trainLoss; }, loss, epochs, Orange);
  DrawCurve(
    cr.get(), history, [](const ComboSegTrainingRecord & h) { return h.meanDice; }, dice, epochs, Blue);
  DrawLegend(cr.get(), validated);
  cairo_surface_flush(surface.get());
  WritePngAtomically(surface.get(), path);
}

} // namespace training
} // namespace itk
