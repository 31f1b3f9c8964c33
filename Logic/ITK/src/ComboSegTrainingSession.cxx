#include "itkComboSegTrainingSession.h"
#include "itkComboSegProcessing.h"

#include "itkComboSegInputChecks.h"
#include "itkComboSegProcessing.h"

#include "itkImage.h"
#include "itkImageFileWriter.h"
#include "itkImageRegionIterator.h"
#include "itkPNGImageIO.h"
#include "itkRGBPixel.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <sstream>

#include <fcntl.h>
#include <unistd.h>

namespace itk
{
namespace
{

const double NaN = std::numeric_limits<double>::quiet_NaN();

// Owners of engine handles, so that every exit path frees them.
struct Context
{
  cs_context_t ctx = nullptr;
  Context()
  {
    const cs_status st = cs_context_init(&ctx);
    if (st != CS_OK)
      ComboSegThrowEngineError(__FILE__, __LINE__, "cannot create an engine context", st, nullptr);
  }
  ~Context() { cs_context_free(ctx); }
  Context(const Context &) = delete;
  Context &operator=(const Context &) = delete;
};

struct ModelOwner
{
  cs_model_t model = nullptr;
  ~ModelOwner() { cs_model_free(model); }
  void Reset(cs_model_t m)
  {
    cs_model_free(model);
    model = m;
  }
  cs_model_t Release()
  {
    cs_model_t m = model;
    model = nullptr;
    return m;
  }
};

struct TrainerOwner
{
  cs_trainer_t trainer = nullptr;
  ~TrainerOwner() { cs_trainer_free(trainer); }
};

void Check(cs_status st, cs_context_t ctx, const std::string &what)
{
  if (st != CS_OK) ComboSegThrowEngineError(__FILE__, __LINE__, what.c_str(), st, ctx);
}

bool FileExists(const std::string &path) { return access(path.c_str(), F_OK) == 0; }

// Writes text to path atomically: a temporary file beside it, flushed to disk, renamed over it.
void WriteFileAtomically(const std::string &path, const std::string &text)
{
  const std::string tmp = path + ".tmp-" + std::to_string(getpid());
  FILE *f = std::fopen(tmp.c_str(), "wb");
  if (!f) itkGenericExceptionMacro("cannot write " << path << ": " << std::strerror(errno));
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0 &&
                  fsync(fileno(f)) == 0;
  const bool closed = std::fclose(f) == 0;
  if (!ok || !closed || std::rename(tmp.c_str(), path.c_str()) != 0)
  {
    const int err = errno;
    std::remove(tmp.c_str());
    itkGenericExceptionMacro("cannot write " << path << ": " << std::strerror(err));
  }
  cs_remove_stale_temporaries(path.c_str());
}

bool IsNrrd(const std::string &path)
{
  std::string lower = path;
  for (char &c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  auto endsWith = [&](const char *suffix) {
    const size_t n = std::strlen(suffix);
    return lower.size() >= n && lower.compare(lower.size() - n, n, suffix) == 0;
  };
  return endsWith(".nrrd") || endsWith(".nhdr");
}

// The structures the cases name: the given names, plus those a Slicer segmentation file carries
// (PrepareCase prefers a file's own names), one entry per name.
std::vector<LabelName> CollectNames(const std::vector<LabelName> &given, const std::vector<ComboSegCaseFiles> &cases)
{
  std::vector<LabelName> names;
  std::set<std::string> seen;
  auto add = [&](const LabelName &n) {
    if (n.value != 0 && !n.name.empty() && seen.insert(ComboSegStructureNameKey(n.name)).second) names.push_back(n);
  };
  for (const LabelName &n : given) add(n);
  for (const ComboSegCaseFiles &c : cases)
    if (!c.labels.empty() && IsNrrd(c.labels))
      for (const LabelName &n : ReadLabelNames(c.labels)) add(n);
  return names;
}

// The label values present in the cases' label maps (for a new model without names).
std::vector<int32_t> CollectLabelValues(const std::vector<ComboSegCaseFiles> &cases)
{
  std::set<int32_t> values;
  for (const ComboSegCaseFiles &c : cases)
  {
    if (c.labels.empty()) continue;
    auto labels = ReadScan<Image<int, 3>>(c.labels);
    const int *v = labels->GetBufferPointer();
    const size_t n = labels->GetLargestPossibleRegion().GetNumberOfPixels();
    for (size_t i = 0; i < n; ++i) values.insert(v[i]);
  }
  return std::vector<int32_t>(values.begin(), values.end());
}

// Copies s into a fixed engine field, cut at a UTF-8 character boundary.
template <size_t N>
void CopyText(char (&dst)[N], const std::string &s)
{
  size_t n = std::min(s.size(), N - 1);
  while (n > 0 && n < s.size() && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  std::memcpy(dst, s.data(), n);
  dst[n] = '\0';
}

// Distinct colours for classes that come without one: hues a golden angle apart.
std::array<uint8_t, 3> PaletteColor(int i)
{
  const double h = std::fmod(i * 0.618033988749895, 1.0) * 6.0;
  const double s = 0.65, v = 0.9;
  const int sector = static_cast<int>(h);
  const double f = h - sector, p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  double r, g, b;
  switch (sector % 6)
  {
    case 0: r = v, g = t, b = p; break;
    case 1: r = q, g = v, b = p; break;
    case 2: r = p, g = v, b = t; break;
    case 3: r = p, g = q, b = v; break;
    case 4: r = t, g = p, b = v; break;
    default: r = v, g = p, b = q; break;
  }
  return { { static_cast<uint8_t>(r * 255), static_cast<uint8_t>(g * 255), static_cast<uint8_t>(b * 255) } };
}

cs_class_info MakeClass(int32_t value, const std::string &name, const std::array<uint8_t, 3> &rgb)
{
  cs_class_info c{};
  c.value = value;
  CopyText(c.name, name);
  std::memcpy(c.rgb, rgb.data(), 3);
  return c;
}

std::string FormatDouble(double v, int precision = 6)
{
  if (std::isnan(v)) return "nan";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", precision, v);
  return buf;
}

double ParseDouble(const std::string &s)
{
  if (s == "nan" || s.empty()) return NaN;
  return std::strtod(s.c_str(), nullptr);
}

std::vector<std::string> SplitTabs(const std::string &line)
{
  std::vector<std::string> fields;
  std::string field;
  std::istringstream in(line);
  while (std::getline(in, field, '\t')) fields.push_back(field);
  return fields;
}

// Mean over the classes 1..K-1 that have a value.
double MeanForeground(const std::vector<double> &dice)
{
  double sum = 0.0;
  int n = 0;
  for (size_t k = 1; k < dice.size(); ++k)
    if (!std::isnan(dice[k])) sum += dice[k], ++n;
  return n ? sum / n : NaN;
}

// Whether any epoch was validated (a run without validation cases has NaN everywhere).
bool HasValidation(const std::vector<ComboSegTrainingRecord> &history)
{
  for (const auto &r : history)
    if (!std::isnan(r.meanDice)) return true;
  return false;
}

std::string JoinNames(const std::vector<std::string> &names)
{
  std::string text;
  for (const std::string &n : names) text += (text.empty() ? "" : ", ") + n;
  return text.empty() ? "none" : text;
}

std::string EpochComment(int64_t epoch, int64_t epochs, double loss, double dice)
{
  std::ostringstream text;
  text << "epoch " << epoch;
  if (epochs > 0) text << "/" << epochs;
  char buf[64];
  std::snprintf(buf, sizeof buf, " loss %.3f", loss);
  text << buf;
  if (!std::isnan(dice))
  {
    std::snprintf(buf, sizeof buf, " Dice %.3f", dice);
    text << buf;
  }
  return text.str();
}

// ------------------------------------------------------------------------------------------
// The sidecar beside a checkpoint: what the checkpoint does not hold (epoch, time, best Dice,
// history), so that a resumed run continues them. Plain text, one "key value" per line, then the
// history rows tab-separated: epoch step seconds loss lr mean dice_0 .. dice_K-1.

const char *const SidecarMagic = "comboseg-training-session 1";

struct Sidecar
{
  int64_t epoch = 0;
  int64_t step = 0;
  int64_t stepsPerEpoch = 0;
  int32_t classes = 0;
  double seconds = 0.0;
  int64_t bestEpoch = 0;
  double bestDice = NaN;
  std::vector<std::pair<std::string, std::string>> settings; // RunSettings of the run that wrote it
  std::vector<ComboSegTrainingRecord> history;
};

const char *NormalizationName(cs_norm_kind norm)
{
  switch (norm)
  {
    case CS_NORM_CLIP_SCALE: return "clip";
    case CS_NORM_ZSCORE_NONZERO: return "zscore-nonzero";
    case CS_NORM_ZSCORE_MASK: return "zscore-brain";
    case CS_NORM_ZSCORE: return "zscore";
    default: return "none";
  }
}

const char *ModalityName(cs_modality modality)
{
  switch (modality)
  {
    case CS_MODALITY_CT: return "CT";
    case CS_MODALITY_MR: return "MR";
    case CS_MODALITY_PET: return "PET";
    case CS_MODALITY_US: return "US";
    default: return "other";
  }
}

// What a resumed run must share with the run that wrote the checkpoint, as (name, value) with
// values free of blanks (one comma-separated entry per channel or axis).
std::vector<std::pair<std::string, std::string>> RunSettings(const cs_model_info &info, const cs_train_config &config,
                                                             int32_t globalBatch)
{
  std::string modality, normalization, range, spacing, patch;
  for (int32_t c = 0; c < info.arch.in_channels; ++c)
  {
    const cs_channel_info &ch = info.channels[c];
    const std::string sep = c ? "," : "";
    modality += sep + ModalityName(ch.modality);
    normalization += sep + NormalizationName(ch.norm);
    if (ch.norm == CS_NORM_CLIP_SCALE) range += sep + FormatDouble(ch.clip_low) + ".." + FormatDouble(ch.clip_high);
  }
  for (int i = 0; i < 3; ++i)
  {
    spacing += (i ? "," : "") + FormatDouble(info.spacing[i]);
    patch += (i ? "," : "") + std::to_string(config.patch_size[i]);
  }
  std::vector<std::pair<std::string, std::string>> settings = {
    { "modality", modality },
    { "normalization", normalization },
    { "target_spacing", spacing },
    { "learning_rate", FormatDouble(config.learning_rate) },
    { "loss", cs_loss_kind_name(config.loss.kind) },
    { "patch_size", patch },
    { "batch_size", std::to_string(globalBatch) },
  };
  if (!range.empty()) settings.insert(settings.begin() + 2, { "intensity_range", range });
  return settings;
}

// Refuses a resume whose settings differ from the checkpoint's, naming each difference.
void CheckResumeSettings(const std::string &checkpoint, const std::vector<std::pair<std::string, std::string>> &saved,
                         const std::vector<std::pair<std::string, std::string>> &now)
{
  if (saved.empty()) return; // a sidecar from before settings were recorded
  const std::map<std::string, std::string> before(saved.begin(), saved.end());
  std::ostringstream differences;
  for (const auto &setting : now)
  {
    const auto found = before.find(setting.first);
    if (found == before.end() || found->second == setting.second) continue;
    differences << (differences.tellp() > 0 ? "; " : "") << setting.first << " " << found->second << " then, "
                << setting.second << " now";
  }
  if (differences.tellp() > 0)
    itkGenericExceptionMacro("cannot resume from " << checkpoint << ": its settings differ from this run's ("
                                                   << differences.str()
                                                   << "). Start over (ComboSegTrain --restart), or run again with "
                                                      "the checkpoint's settings to continue it");
}

void WriteSidecar(const std::string &path, const Sidecar &s)
{
  std::ostringstream out;
  out << SidecarMagic << "\n"
      << "epoch " << s.epoch << "\nstep " << s.step << "\nsteps_per_epoch " << s.stepsPerEpoch
      << "\nclasses " << s.classes << "\nseconds " << FormatDouble(s.seconds, 10) << "\nbest_epoch "
      << s.bestEpoch << "\nbest_dice " << FormatDouble(s.bestDice, 10) << "\n";
  for (const auto &setting : s.settings) out << "setting " << setting.first << " " << setting.second << "\n";
  out << "history\n";
  for (const auto &r : s.history)
  {
    out << r.epoch << '\t' << r.step << '\t' << FormatDouble(r.seconds, 10) << '\t'
        << FormatDouble(r.trainLoss, 9) << '\t' << FormatDouble(r.learningRate, 9) << '\t'
        << FormatDouble(r.meanDice, 9);
    for (double d : r.dice) out << '\t' << FormatDouble(d, 9);
    out << '\n';
  }
  WriteFileAtomically(path, out.str());
}

bool ReadSidecar(const std::string &path, Sidecar &s)
{
  std::ifstream in(path);
  if (!in) return false;
  std::string line;
  if (!std::getline(in, line) || line != SidecarMagic)
    itkGenericExceptionMacro("cannot resume: " << path << " is not a training-session file");
  while (std::getline(in, line) && line != "history")
  {
    std::istringstream kv(line);
    std::string key, value;
    kv >> key >> value;
    if (key == "epoch") s.epoch = std::stoll(value);
    else if (key == "step") s.step = std::stoll(value);
    else if (key == "steps_per_epoch") s.stepsPerEpoch = std::stoll(value);
    else if (key == "classes") s.classes = std::stoi(value);
    else if (key == "seconds") s.seconds = ParseDouble(value);
    else if (key == "best_epoch") s.bestEpoch = std::stoll(value);
    else if (key == "best_dice") s.bestDice = ParseDouble(value);
    else if (key == "setting")
    {
      std::string settingValue;
      kv >> settingValue;
      s.settings.emplace_back(value, settingValue);
    }
  }
  while (std::getline(in, line))
  {
    const std::vector<std::string> f = SplitTabs(line);
    if (f.size() < 6 + static_cast<size_t>(s.classes))
      itkGenericExceptionMacro("cannot resume: " << path << " has a truncated history row");
    ComboSegTrainingRecord r;
    r.epoch = std::stoll(f[0]);
    r.step = std::stoll(f[1]);
    r.seconds = ParseDouble(f[2]);
    r.trainLoss = ParseDouble(f[3]);
    r.learningRate = ParseDouble(f[4]);
    r.meanDice = ParseDouble(f[5]);
    for (int32_t k = 0; k < s.classes; ++k) r.dice.push_back(ParseDouble(f[6 + k]));
    s.history.push_back(r);
  }
  return true;
}

// ------------------------------------------------------------------------------------------
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
  const std::string tmp = path + ".tmp-" + std::to_string(getpid()) + ".png";
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

// ------------------------------------------------------------------------------------------
// Prepared cases: kept in memory while they fit the budget, else read again when needed.

class CaseStore
{
public:
  CaseStore(const std::vector<ComboSegCaseFiles> &files, const cs_model_info &info,
            const std::vector<LabelName> &names, uint64_t &budget)
    : m_Files(files)
    , m_Info(info)
    , m_Names(names)
    , m_Cached(files.size())
    , m_Present(static_cast<size_t>(info.arch.num_classes), false)
  {
    // Every case is read once up front: bad files and unknown labels fail before training.
    for (size_t i = 0; i < files.size(); ++i)
    {
      auto prepared = std::make_shared<ComboSegPreparedCase>(this->Prepare(i));
      for (int32_t k : prepared->labels) m_Present[static_cast<size_t>(k)] = true;
      const uint64_t bytes = sizeof(float) * prepared->image.size() + sizeof(int32_t) * prepared->labels.size() +
                             prepared->outsideBody.size();
      if (bytes <= budget)
      {
        budget -= bytes;
        m_Cached[i] = prepared;
      }
      else
        m_Streamed.push_back(i);
    }
  }

  // Partial labels (docs/partial-labels.md): `complete` fills in each case's labels, now for the
  // cases in memory and on every later read of a streamed one.
  void SetLabelCompletion(std::function<void(ComboSegPreparedCase &)> complete)
  {
    m_Complete = std::move(complete);
    for (auto &c : m_Cached)
      if (c) m_Complete(*c);
    m_Current.reset();
  }

  size_t Size() const { return m_Files.size(); }
  // Whether any case's labels hold class k (as read, before any completion).
  bool Present(int32_t k) const { return m_Present[static_cast<size_t>(k)]; }
  size_t StreamedCount() const { return m_Streamed.size(); }
  const ComboSegCaseFiles &Files(size_t i) const { return m_Files[i]; }

  // The case i: from memory, or read now (the last one read stays until the next).
  const ComboSegPreparedCase &Get(size_t i)
  {
    if (m_Cached[i]) return *m_Cached[i];
    if (m_CurrentIndex != i || !m_Current)
    {
      m_Current.reset();
      m_Current = std::make_shared<ComboSegPreparedCase>(this->Prepare(i));
      m_CurrentIndex = i;
    }
    return *m_Current;
  }

  // For sampling: a streamed case drawn stands for the streamed case in memory, which moves on
  // to the next one every `rotateEvery` draws, so each is read about once per epoch.
  const ComboSegPreparedCase &Draw(size_t i, int64_t rotateEvery)
  {
    if (m_Cached[i]) return *m_Cached[i];
    if (!m_Current || ++m_Draws > rotateEvery)
    {
      m_Draws = 1;
      m_Rotation = m_Current ? (m_Rotation + 1) % m_Streamed.size() : m_Rotation;
      return this->Get(m_Streamed[m_Rotation]);
    }
    return *m_Current;
  }

private:
  ComboSegPreparedCase Prepare(size_t i) const
  {
    ComboSegPreparedCase c = PrepareCase(m_Files[i], m_Info, m_Names);
    const int64_t n = c.size[0] * c.size[1] * c.size[2];
    if (n <= 0 || c.image.size() != static_cast<size_t>(n * m_Info.arch.in_channels))
      itkGenericExceptionMacro("case " << m_Files[i].id << " was not prepared to the model's "
                                       << m_Info.arch.in_channels << " channel(s)");
    if (c.labels.size() != static_cast<size_t>(n))
      itkGenericExceptionMacro("case " << m_Files[i].id << " has no label map ("
                                       << m_Files[i].labels << ")");
    if (m_Complete) m_Complete(c);
    return c;
  }

  std::vector<ComboSegCaseFiles> m_Files;
  cs_model_info m_Info;
  std::vector<LabelName> m_Names;
  std::vector<std::shared_ptr<ComboSegPreparedCase>> m_Cached;
  std::vector<bool> m_Present;
  std::vector<size_t> m_Streamed;
  std::function<void(ComboSegPreparedCase &)> m_Complete;
  std::shared_ptr<ComboSegPreparedCase> m_Current;
  size_t m_CurrentIndex = 0;
  size_t m_Rotation = 0;
  int64_t m_Draws = 0;
};

// Partial labels: 1 for the classes the training labels mark (background always), 0 for a base
// model's classes they lack. With names, the named classes are labelled (a named class absent
// from a scan is absent there); without, the classes whose values the training label maps hold.
std::vector<uint8_t> LabelledClasses(const cs_model_info &info, const std::vector<LabelName> &siteNames,
                                     const CaseStore &trainStore, const ComboSegTrainingSession::Peers &peers)
{
  const int32_t K = info.arch.num_classes;
  std::set<std::string> named;
  for (const LabelName &n : siteNames) named.insert(ComboSegStructureNameKey(n.name));
  std::vector<uint8_t> labelled(static_cast<size_t>(K), 0);
  labelled[0] = 1;
  for (int32_t k = 1; k < K; ++k)
  {
    bool on = siteNames.empty() ? trainStore.Present(k) : named.count(ComboSegStructureNameKey(info.classes[k].name)) > 0;
    if (peers.size > 1) on = peers.AnyOf(on); // every rank's share of the cases: one answer for all
    labelled[static_cast<size_t>(k)] = on ? 1 : 0;
  }
  return labelled;
}

// A prepared case segmented as ComboSegSegment would: the network's labels, the background rule
// (no structure where the scan holds no data) and the model's recommended clean-up, in its order.
std::vector<int32_t> SegmentPreparedCase(cs_context_t ctx, cs_model_t model, const ComboSegPreparedCase &c,
                                         const cs_infer_options &options)
{
  const cs_model_info &info = *cs_model_get_info(model);
  std::vector<int32_t> predicted(static_cast<size_t>(c.size[0] * c.size[1] * c.size[2]));
  Check(cs_predict_volume(ctx, model, c.image.data(), c.size, &options, nullptr, predicted.data()), ctx,
        "cannot segment case " + c.id);
  for (size_t i = 0; i < c.outsideBody.size(); ++i)
    if (c.outsideBody[i]) predicted[i] = 0;
  const std::array<int64_t, 3> size{ { c.size[0], c.size[1], c.size[2] } };
  if (info.postprocessing.largest_component) ComboSegKeepLargestComponents(predicted.data(), size);
  if (info.postprocessing.fill_holes) ComboSegFillHoles(predicted.data(), size);
  return predicted;
}

// Pseudo-labels for the classes a site did not draw: where its label map says 0, the base
// model's own segmentation of the scan fills in the undrawn classes it finds there, so that
// training goes on teaching them as the base model had them instead of letting them drift
// (docs/partial-labels.md). Drawn classes keep exactly the site's voxels.
void FillUndrawnClasses(cs_context_t ctx, cs_model_t base, const std::vector<uint8_t> &labelled,
                        const cs_infer_options &options, ComboSegPreparedCase &c)
{
  const std::vector<int32_t> predicted = SegmentPreparedCase(ctx, base, c, options);
  for (size_t i = 0; i < predicted.size(); ++i)
    if (c.labels[i] == 0 && !labelled[static_cast<size_t>(predicted[i])]) c.labels[i] = predicted[i];
}

// A copy of a model that the caller may change freely.
cs_model_t CloneModel(cs_context_t ctx, cs_model_t model)
{
  cs_model_t copy = nullptr;
  Check(cs_model_add_classes(ctx, model, nullptr, 0, &copy), ctx, "cannot copy the model");
  return copy;
}

} // namespace

// ------------------------------------------------------------------------------------------

ComboSegTrainingSession::ComboSegTrainingSession()
  : m_TrainConfig(cs_train_config_default())
  , m_Sampling(cs_sampling_options_default())
{}

ComboSegTrainingSession::~ComboSegTrainingSession() = default;

void
ComboSegTrainingSession::SetNewModel(const cs_unet_config &arch, const std::vector<cs_channel_info> &channels)
{
  m_NewModel = true;
  m_NewArch = arch;
  m_NewChannels = channels;
}

std::string
ComboSegTrainingSession::GetCheckpointFileName() const
{
  if (!m_CheckpointFileName.empty()) return m_CheckpointFileName;
  return m_OutputModelFileName.empty() ? std::string() : m_OutputModelFileName + ".checkpoint";
}

void
ComboSegTrainingSession::SplitCases(const std::vector<ComboSegCaseFiles> &cases, double fraction, uint64_t seed,
                                    std::vector<ComboSegCaseFiles> &training,
                                    std::vector<ComboSegCaseFiles> &validation)
{
  training.clear();
  validation.clear();
  std::vector<size_t> order(cases.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  // Fisher-Yates with the engine's generator: the same split on every platform.
  cs_rng rng;
  cs_rng_seed(&rng, seed ^ 0x5EED5A1175ull);
  for (size_t i = order.size(); i > 1; --i)
    std::swap(order[i - 1], order[static_cast<size_t>(cs_rng_below(&rng, static_cast<int64_t>(i)))]);
  size_t nval = 0;
  if (fraction > 0.0 && cases.size() >= 2)
    nval = std::min(cases.size() - 1, std::max<size_t>(1, static_cast<size_t>(std::lround(fraction * cases.size()))));
  for (size_t i = 0; i < order.size(); ++i)
    (i < nval ? validation : training).push_back(cases[order[i]]);
}

void
ComboSegTrainingSession::WriteHistoryTable(const std::string &path, const std::vector<std::string> &classNames,
                                           const std::vector<ComboSegTrainingRecord> &history)
{
  // Without validation cases there is no Dice: no columns of nan.
  const bool validated = HasValidation(history);
  std::ostringstream out;
  out << "epoch\tstep\tseconds\ttrain_loss\tlearning_rate";
  if (validated)
  {
    for (size_t k = 1; k < classNames.size(); ++k) out << "\tdice " << classNames[k];
    out << "\tmean_dice";
  }
  out << "\n";
  for (const auto &r : history)
  {
    out << r.epoch << '\t' << r.step << '\t' << FormatDouble(r.seconds, 6) << '\t' << FormatDouble(r.trainLoss, 6)
        << '\t' << FormatDouble(r.learningRate, 6);
    if (validated)
    {
      for (size_t k = 1; k < classNames.size(); ++k)
        out << '\t' << FormatDouble(k < r.dice.size() ? r.dice[k] : NaN, 4);
      out << '\t' << FormatDouble(r.meanDice, 4);
    }
    out << '\n';
  }
  WriteFileAtomically(path, out.str());
}

void
ComboSegTrainingSession::WriteHistoryPlot(const std::string &path, const std::vector<ComboSegTrainingRecord> &history)
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

namespace
{

double Median(std::vector<double> v)
{
  if (v.empty()) return NaN;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double Percentile(std::vector<float> &v, double p)
{
  if (v.empty()) return NaN;
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * (v.size() - 1) + 0.5));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(i), v.end());
  return v[i];
}

// The physical axis (0 x, 1 y, 2 z) each image axis runs along most.
std::array<int, 3> PhysicalAxes(const ComboSegGrid &grid)
{
  std::array<int, 3> axes{ { 0, 1, 2 } };
  for (int i = 0; i < 3; ++i)
  {
    int best = 0;
    for (int r = 1; r < 3; ++r)
      if (std::fabs(grid.direction[3 * r + i]) > std::fabs(grid.direction[3 * best + i])) best = r;
    axes[i] = best;
  }
  return axes;
}

// What one channel's intensities over the cases say: CT's signature and the labelled voxels.
struct IntensityFingerprint
{
  int64_t scans = 0, ctScans = 0, negative = 0;
  std::string ctEvidence;      // what the last scan found to be CT showed
  std::vector<float> labelled; // a sample of the labelled voxels' values
};

std::string Mm(double v) { return FormatDouble(v, 3); }

} // namespace

ComboSegDataConfiguration
ComboSegTrainingSession::ChooseConfiguration(const std::vector<ComboSegCaseFiles> &cases, int32_t levels,
                                             int32_t spatialDims)
{
  if (cases.empty()) itkGenericExceptionMacro("no training cases to configure a new model from");
  const size_t C = cases[0].channels.size();
  std::vector<IntensityFingerprint> prints(C);
  std::array<std::vector<double>, 3> spacings, extents; // per physical axis, over the cases
  for (const ComboSegCaseFiles &c : cases)
  {
    std::vector<int32_t> labels;
    for (size_t ch = 0; ch < C && ch < c.channels.size(); ++ch)
    {
      auto image = ReadScan<Image<float, 3>>(c.channels[ch]);
      const ComboSegGrid grid = ComboSegGridOf(image.GetPointer());
      const int64_t n = grid.NumberOfVoxels();
      if (ch == 0)
      {
        const std::array<int, 3> axes = PhysicalAxes(grid);
        for (int i = 0; i < 3; ++i)
        {
          spacings[axes[i]].push_back(grid.spacing[i]);
          extents[axes[i]].push_back(grid.spacing[i] * grid.size[i]);
        }
        if (!c.labels.empty())
        {
          // The labelled voxels on the scan's grid (the label map may lie on another).
          auto labelImage = ReadScan<Image<int, 3>>(c.labels);
          const ComboSegGrid labelGrid = ComboSegGridOf(labelImage.GetPointer());
          const std::vector<int32_t> values(labelImage->GetBufferPointer(),
                                            labelImage->GetBufferPointer() + labelGrid.NumberOfVoxels());
          labels.resize(static_cast<size_t>(n));
          ComboSegResampleNearest(labels.data(), grid, values.data(), labelGrid, 0);
        }
      }
      const float *v = image->GetBufferPointer();
      IntensityFingerprint &f = prints[ch];
      // The modality check's reading of a scan: its DICOM Modality tag, else CT's signature.
      const ComboSegModalityEvidence modality = ComboSegScanModality(v, n, image->GetMetaDataDictionary());
      f.scans++;
      if (modality.modality == CS_MODALITY_CT) f.ctScans++, f.ctEvidence = modality.evidence;
      int64_t labelled = 0;
      for (int64_t i = 0; i < n; ++i) labelled += !labels.empty() && labels[static_cast<size_t>(i)] != 0;
      const int64_t stride = std::max<int64_t>(1, labelled / 200000); // a sample is enough for percentiles
      int64_t seen = 0;
      for (int64_t i = 0; i < n; ++i)
      {
        f.negative += v[i] < 0.0f;
        if ((labelled == 0 || labels[static_cast<size_t>(i)] != 0) && seen++ % (labelled ? stride : std::max<int64_t>(1, n / 200000)) == 0)
          f.labelled.push_back(v[i]);
      }
    }
  }

  ComboSegDataConfiguration config;
  config.channels.resize(C);
  std::ostringstream modality, normalization;
  for (size_t ch = 0; ch < C; ++ch)
  {
    IntensityFingerprint &f = prints[ch];
    cs_channel_info &info = config.channels[ch];
    std::memset(&info, 0, sizeof info);
    const bool ct = 2 * f.ctScans > f.scans; // most scans are CT
    const std::string which = C > 1 ? "channel " + std::to_string(ch + 1) + ": " : "";
    if (ct)
    {
      info.modality = CS_MODALITY_CT;
      modality << which << "CT (" << f.ctScans << " of " << f.scans << " scan(s); " << f.ctEvidence << ")";
      const double low = Percentile(f.labelled, 0.5), high = Percentile(f.labelled, 99.5);
      double sum = 0.0, sum2 = 0.0;
      for (float x : f.labelled)
      {
        const double y = std::min(high, std::max(low, double(x)));
        sum += y, sum2 += y * y;
      }
      const double count = double(std::max<size_t>(1, f.labelled.size()));
      const double mean = sum / count, sd = std::sqrt(std::max(0.0, sum2 / count - mean * mean));
      info.norm = CS_NORM_CLIP_SCALE;
      info.clip_low = static_cast<float>(low);
      info.clip_high = static_cast<float>(high > low ? high : low + 1.0);
      info.mean = static_cast<float>(mean);
      info.std = static_cast<float>(sd > 0.0 ? sd : 1.0);
      normalization << which << "clip to [" << FormatDouble(info.clip_low, 4) << ", " << FormatDouble(info.clip_high, 4)
                    << "] (the 0.5 and 99.5 percentiles of the labelled voxels), then z-score by their mean "
                    << FormatDouble(info.mean, 4) << " and standard deviation " << FormatDouble(info.std, 4);
    }
    else
    {
      info.modality = f.negative == 0 ? CS_MODALITY_MR : CS_MODALITY_OTHER;
      modality << which
               << (f.negative == 0 ? "MR (no Hounsfield signature; intensities are non-negative)"
                                   : "other (no Hounsfield signature; negative values: already normalised)");
      info.norm = CS_NORM_ZSCORE_NONZERO;
      normalization << which << "zscore-nonzero (mean 0 and standard deviation 1 over each scan's non-zero voxels)";
    }
    if (ch + 1 < C) modality << "; ", normalization << "; ";
  }
  config.modalityReason = modality.str();
  config.normalizationReason = normalization.str();

  // Spacing: the cases' median; patch: the median image at that spacing, fitted to the network.
  const int32_t multiple = 1 << std::max(0, levels - 1);
  const int32_t cap = spatialDims == 2 ? 256 : 64;
  std::ostringstream medianSize;
  for (int a = 0; a < 3; ++a)
  {
    config.spacing[a] = Median(spacings[a]);
    std::vector<double> voxels;
    for (double e : extents[a]) voxels.push_back(e / config.spacing[a]);
    const double median = Median(voxels);
    const int32_t rounded = static_cast<int32_t>(std::ceil(median / multiple - 1e-6)) * multiple;
    config.patchSize[a] = std::max(multiple, std::min(cap / multiple * multiple, rounded));
    medianSize << (a ? "x" : "") << FormatDouble(median, 4);
  }
  if (spatialDims == 2) config.patchSize[2] = 1;
  config.spacingReason = Mm(config.spacing[0]) + "x" + Mm(config.spacing[1]) + "x" + Mm(config.spacing[2]) +
                         " mm (the median of the " + std::to_string(cases.size()) + " case(s)' voxel spacings)";
  config.patchReason = std::to_string(config.patchSize[0]) + "x" + std::to_string(config.patchSize[1]) + "x" +
                       std::to_string(config.patchSize[2]) + " (the median image, " + medianSize.str() +
                       " voxels at that spacing, rounded up to a multiple of " + std::to_string(multiple) +
                       " and capped at " + std::to_string(cap) + ")";
  return config;
}

ComboSegTrainingResult
ComboSegTrainingSession::Run()
{
  using Clock = std::chrono::steady_clock;
  const Clock::time_point started = Clock::now();
  m_History.clear();
  m_ResultModel = nullptr;

  if (m_OutputModelFileName.empty()) itkGenericExceptionMacro("no output model file was given");
  if (m_TrainingCases.empty()) itkGenericExceptionMacro("no training cases were given");
  if (m_StepsPerEpoch <= 0) itkGenericExceptionMacro("steps per epoch must be positive");
  if (m_Epochs <= 0 && m_TimeBudget <= 0.0) itkGenericExceptionMacro("give a number of epochs or a time budget");
  const int64_t epochs = m_Epochs > 0 ? m_Epochs : 0;

  Context context;
  cs_context_t ctx = context.ctx;
  cs_context_set_threads(ctx, m_NumberOfThreads);

  ComboSegTrainingResult result;

  // ---- the cases
  std::vector<ComboSegCaseFiles> training = m_TrainingCases, validation = m_ValidationCases;
  if (validation.empty()) SplitCases(m_TrainingCases, m_ValidationFraction, m_TrainConfig.seed, training, validation);
  result.trainingCases = static_cast<int64_t>(training.size());
  result.validationCases = static_cast<int64_t>(validation.size());

  // ---- the model
  const std::vector<LabelName> siteNames = CollectNames(m_LabelNames, training);
  ModelOwner model;
  std::string provenance;
  if (m_NewModel)
  {
    cs_unet_config arch = m_NewArch;
    cs_model_info info;
    arch.num_classes = 2; // placeholder until the classes are known
    Check(cs_model_info_init(&info, &arch), ctx, "bad architecture");
    // Classes: background, then the named labels by value (or "label <v>" without names).
    std::vector<cs_class_info> classes;
    classes.push_back(MakeClass(0, "background", { { 0, 0, 0 } }));
    std::vector<LabelName> names = siteNames;
    if (names.empty())
      for (int32_t v : CollectLabelValues(training))
        if (v != 0) names.push_back(LabelName{ v, "label " + std::to_string(v), { { 0, 0, 0 } }, false });
    std::sort(names.begin(), names.end(), [](const LabelName &a, const LabelName &b) { return a.value < b.value; });
    for (const LabelName &n : names)
      classes.push_back(MakeClass(n.value, n.name, n.hasColor ? n.rgb : PaletteColor(static_cast<int>(classes.size()))));
    if (classes.size() < 2)
      itkGenericExceptionMacro("a new model needs the names of its structures (label names) or at least one "
                               "foreground label");
    if (classes.size() > CS_MAX_CLASSES)
      itkGenericExceptionMacro("a model holds at most " << CS_MAX_CLASSES << " classes, the labels name "
                                                        << classes.size());
    arch.num_classes = static_cast<int32_t>(classes.size());
    Check(cs_model_info_init(&info, &arch), ctx, "bad architecture");
    for (int32_t k = 0; k < arch.num_classes; ++k) info.classes[k] = classes[k];
    if (!m_NewChannels.empty())
    {
      if (static_cast<int32_t>(m_NewChannels.size()) != arch.in_channels)
        itkGenericExceptionMacro("the architecture has " << arch.in_channels << " input channel(s) but "
                                                         << m_NewChannels.size() << " channel descriptions were given");
      for (int32_t c = 0; c < arch.in_channels; ++c) info.channels[c] = m_NewChannels[c];
    }
    for (int i = 0; i < 3; ++i) info.spacing[i] = m_TargetSpacing[i];
    CopyText(info.orientation, m_Orientation);
    info.postprocessing.largest_component = 1; // recommended to segmenters; a base model's is kept
    for (int i = 0; i < 3; ++i)
      if (m_TrainConfig.patch_size[i] > 0) info.patch_size[i] = m_TrainConfig.patch_size[i];
    Check(cs_model_create(ctx, &info, m_TrainConfig.seed, &model.model), ctx, "cannot create the model");
  }
  else
  {
    if (m_BaseModel && m_BaseModel->GetModel())
      model.Reset(CloneModel(ctx, m_BaseModel->GetModel()));
    else if (!m_BaseModelFileName.empty())
      Check(cs_model_load(ctx, m_BaseModelFileName.c_str(), &model.model), ctx,
            "cannot load the base model " + m_BaseModelFileName);
    else
      itkGenericExceptionMacro("give a base model or a new architecture");
    const cs_model_info &base = *cs_model_get_info(model.model);
    provenance = std::string("fine-tuned from ") + base.name + "; ";

    // Structures the site names that the base model lacks: grow the head.
    std::vector<cs_class_info> added;
    for (const LabelName &n : siteNames)
    {
      bool known = false;
      for (int32_t k = 0; k < base.arch.num_classes && !known; ++k) known = ComboSegStructureNameKey(base.classes[k].name) == ComboSegStructureNameKey(n.name);
      for (const auto &a : added) known = known || ComboSegStructureNameKey(a.name) == ComboSegStructureNameKey(n.name);
      if (known) continue;
      if (!m_AddMissingClasses)
        itkGenericExceptionMacro("the base model " << base.name << " has no class named '" << n.name
                                                   << "' (allow adding structures to learn it)");
      // Keep label values unique among the classes: a taken value moves past the largest.
      int32_t value = n.value;
      auto taken = [&](int32_t v) {
        for (int32_t k = 0; k < base.arch.num_classes; ++k)
          if (base.classes[k].value == v) return true;
        for (const auto &a : added)
          if (a.value == v) return true;
        return false;
      };
      if (taken(value))
      {
        value = 0;
        for (int32_t k = 0; k < base.arch.num_classes; ++k) value = std::max(value, base.classes[k].value);
        for (const auto &a : added) value = std::max(value, a.value);
        ++value;
      }
      added.push_back(MakeClass(value, n.name, n.hasColor ? n.rgb
                                                          : PaletteColor(base.arch.num_classes + static_cast<int>(added.size()))));
      result.addedClasses.push_back(n.name);
    }
    if (!added.empty())
    {
      cs_model_t grown = nullptr;
      Check(cs_model_add_classes(ctx, model.model, added.data(), static_cast<int32_t>(added.size()), &grown), ctx,
            "cannot add the new structures to the model");
      model.Reset(grown);
    }
  }

  // Metadata the output model carries: what it was trained on, with which loss, under which licence.
  {
    cs_model_info info = *cs_model_get_info(model.model);
    if (!m_ModelName.empty()) CopyText(info.name, m_ModelName);
    if (!m_ModelDescription.empty()) CopyText(info.description, m_ModelDescription);
    if (!m_Licence.empty()) CopyText(info.licence, m_Licence);
    if (!m_TrainingDataDescription.empty())
      CopyText(info.training_data, m_TrainingDataDescription);
    else
    {
      std::ostringstream text;
      text << provenance << training.size() << " training case(s) (";
      for (size_t i = 0; i < training.size(); ++i) text << (i ? ", " : "") << training[i].id;
      text << "), " << validation.size() << " validation case(s)";
      CopyText(info.training_data, text.str());
    }
    info.loss = m_TrainConfig.loss;
    info.loss.class_weights = nullptr;
    info.loss.labelled_classes = nullptr;
    for (int i = 0; i < 3; ++i)
      if (m_TrainConfig.patch_size[i] > 0) info.patch_size[i] = m_TrainConfig.patch_size[i];
    Check(cs_model_set_info(ctx, model.model, &info), ctx, "bad model metadata");
  }
  const cs_model_info info = *cs_model_get_info(model.model);
  const int32_t K = info.arch.num_classes;
  const int32_t C = info.arch.in_channels;
  std::vector<std::string> classNames;
  for (int32_t k = 0; k < K; ++k) classNames.emplace_back(info.classes[k].name);
  // Patches flipped along x swap left/right classes (L_thalamus, R_thalamus...), keeping labels true.
  const std::vector<int32_t> mirrorClasses = ComboSegLeftRightPartners(info);
  cs_sampling_options sampling = m_Sampling;
  if (!sampling.mirror_classes) sampling.mirror_classes = mirrorClasses.data();

  // ---- read and prepare the cases on the model's grid
  uint64_t budget = m_MemoryBudget;
  if (m_Progress) m_Progress(0.0, "preparing " + std::to_string(training.size() + validation.size()) + " case(s)");
  // Data-parallel: each rank reads its own contiguous share of the training cases (all of them
  // when there are fewer cases than ranks); only rank 0 validates.
  const bool parallel = m_Peers.size > 1;
  std::vector<ComboSegCaseFiles> shard = training;
  if (parallel && training.size() >= static_cast<size_t>(m_Peers.size))
  {
    const size_t n = training.size(), size = static_cast<size_t>(m_Peers.size), r = static_cast<size_t>(m_Peers.rank);
    const size_t first = r * (n / size) + std::min(r, n % size), count = n / size + (r < n % size ? 1 : 0);
    shard.assign(training.begin() + static_cast<std::ptrdiff_t>(first),
                 training.begin() + static_cast<std::ptrdiff_t>(first + count));
  }
  if (parallel && m_Peers.rank != 0) validation.clear();
  CaseStore trainStore(shard, info, m_LabelNames, budget);
  CaseStore validStore(validation, info, m_LabelNames, budget);

  cs_infer_options inferOptions = cs_infer_options_default();
  inferOptions.overlap = m_ValidationOverlap;

  // ---- partial labels: the base model's classes the site did not label are kept, taught by the
  // base model's own segmentation of each training scan (pseudo-labels)
  const std::vector<uint8_t> labelled = m_NewModel ? std::vector<uint8_t>(static_cast<size_t>(K), 1)
                                                   : LabelledClasses(info, siteNames, trainStore, m_Peers);
  const bool partial = std::find(labelled.begin(), labelled.end(), 0) != labelled.end();
  result.trainedClasses.clear();
  result.keptClasses.clear();
  for (int32_t k = 1; k < K; ++k)
    (labelled[static_cast<size_t>(k)] ? result.trainedClasses : result.keptClasses).push_back(classNames[k]);
  ModelOwner frozenBase; // the base model as it was, for streamed cases read during training
  if (partial)
  {
    if (m_Progress)
      m_Progress(0.0, "trained (labelled): " + JoinNames(result.trainedClasses) +
                        "; not labelled, kept as the base model segments them on the training scans "
                        "(docs/partial-labels.md): " + JoinNames(result.keptClasses));
    frozenBase.Reset(CloneModel(ctx, model.model));
    cs_model_t base = frozenBase.model;
    trainStore.SetLabelCompletion([ctx, base, &labelled, inferOptions](ComboSegPreparedCase &c) {
      FillUndrawnClasses(ctx, base, labelled, inferOptions, c);
    });
  }

  // ---- the trainer
  cs_train_config config = m_TrainConfig;
  for (int i = 0; i < 3; ++i) config.patch_size[i] = info.patch_size[i];
  if (info.arch.spatial_dims == 2) config.patch_size[2] = 1;
  if (epochs > 0) config.total_steps = epochs * m_StepsPerEpoch;
  if (parallel)
  {
    if (config.batch_size % m_Peers.size != 0)
      itkGenericExceptionMacro("the batch size " << config.batch_size << " must be a multiple of the " << m_Peers.size
                                                 << " ranks (each takes an equal share)");
    config.batch_size /= m_Peers.size;
  }
  TrainerOwner trainer;
  Check(cs_trainer_init(ctx, model.model, &config, &trainer.trainer), ctx, "cannot set up training");

  // ---- resume from a checkpoint
  const std::string checkpoint = this->GetCheckpointFileName();
  const std::string sidecarPath = checkpoint + ".session";
  Sidecar state;
  state.stepsPerEpoch = m_StepsPerEpoch;
  state.classes = K;
  state.settings = RunSettings(info, config, m_TrainConfig.batch_size);
  if (!m_Resume)
  {
    // Starting over: a stale checkpoint must not pair with this run's sidecar after a kill.
    std::remove(checkpoint.c_str());
    std::remove(sidecarPath.c_str());
  }
  else if (FileExists(checkpoint))
  {
    Sidecar saved;
    const bool haveSidecar = ReadSidecar(sidecarPath, saved);
    if (haveSidecar && saved.classes != K)
      itkGenericExceptionMacro("cannot resume from " << checkpoint << ": it was trained for " << saved.classes
                                                     << " classes, this run has " << K << " (start over)");
    if (haveSidecar) CheckResumeSettings(checkpoint, saved.settings, state.settings);
    const cs_status st = cs_trainer_load_checkpoint(trainer.trainer, checkpoint.c_str());
    if (st != CS_OK)
      ComboSegThrowEngineError(__FILE__, __LINE__,
                               ("cannot resume from " + checkpoint + " (start over to ignore it)").c_str(), st, ctx);
    const int64_t steps = cs_trainer_steps_done(trainer.trainer);
    if (haveSidecar && saved.step >= steps)
    {
      // The sidecar is written before the checkpoint: a run killed between the two left it one
      // epoch ahead, so the epochs after the checkpoint are dropped and trained again.
      state = saved;
      state.history.clear();
      state.bestDice = NaN;
      state.bestEpoch = 0;
      state.epoch = 0;
      state.seconds = 0.0;
      for (const ComboSegTrainingRecord &r : saved.history)
      {
        if (r.step > steps) break;
        state.history.push_back(r);
        state.epoch = r.epoch;
        state.seconds = r.seconds;
        if (std::isnan(state.bestDice) || r.meanDice > state.bestDice) state.bestDice = r.meanDice, state.bestEpoch = r.epoch;
      }
      state.step = steps;
    }
    else
    {
      // No sidecar (or an older one): the checkpoint's step tells the epoch; the history is lost.
      state.history = saved.history;
      state.bestDice = saved.bestDice;
      state.bestEpoch = saved.bestEpoch;
      state.seconds = saved.seconds;
      state.stepsPerEpoch = haveSidecar && saved.stepsPerEpoch > 0 ? saved.stepsPerEpoch : m_StepsPerEpoch;
      state.epoch = steps / state.stepsPerEpoch;
      state.step = steps;
    }
    state.stepsPerEpoch = m_StepsPerEpoch;
    state.settings = RunSettings(info, config, m_TrainConfig.batch_size);
    result.resumed = true;
  }
  if (parallel)
  {
    // every rank must start from the same step (the same checkpoint); rank 0's weights go to all
    std::string message;
    if (m_Peers.Attach(trainer.trainer, message) != CS_OK)
      itkGenericExceptionMacro("cannot start data-parallel training: " << message);
  }
  m_History = state.history;
  const double secondsBefore = state.seconds;
  auto elapsed = [&]() { return secondsBefore + std::chrono::duration<double>(Clock::now() - started).count(); };

  // ---- buffers of one batch
  const int64_t patchVoxels = int64_t(config.patch_size[0]) * config.patch_size[1] * config.patch_size[2];
  const int32_t B = config.batch_size;
  std::vector<float> images(static_cast<size_t>(B) * C * patchVoxels);
  std::vector<int32_t> labels(static_cast<size_t>(B) * patchVoxels);
  const int64_t rotateEvery =
    trainStore.StreamedCount() ? std::max<int64_t>(1, m_StepsPerEpoch * B / static_cast<int64_t>(trainStore.Size())) : 1;

  auto cancelledHere = [&]() { return m_Cancelled.load() || (m_CancelFlag && m_CancelFlag->load()); };
  auto budgetUsedHere = [&]() { return m_TimeBudget > 0.0 && elapsed() >= m_TimeBudget; };
  // Data-parallel: all ranks must stop at the same step, so both are agreed after each step.
  bool agreedCancel = false, agreedBudget = false;
  auto agreeStop = [&]() {
    agreedCancel = m_Peers.AnyOf(cancelledHere());
    agreedBudget = m_Peers.AnyOf(budgetUsedHere());
  };
  auto cancelled = [&]() { return parallel ? agreedCancel : cancelledHere(); };
  auto budgetUsed = [&]() { return parallel ? agreedBudget : budgetUsedHere(); };
  // Under a time budget the schedule (and the curriculum, which follows it) must end with the
  // run: before each step its length becomes the steps done plus those the remaining time allows
  // at this run's mean pace so far (validation included), never beyond the epochs. Data-parallel
  // ranks measure different times, and their learning rates must agree: they keep the fixed
  // length.
  const int64_t stepsAtStart = cs_trainer_steps_done(trainer.trainer);
  const double secondsAtStart = elapsed();
  auto fitScheduleToBudget = [&]() {
    const int64_t done = cs_trainer_steps_done(trainer.trainer);
    if (m_TimeBudget <= 0.0 || parallel) return;
    double secondsPerStep = 0.0; // this run's pace, else (resuming) the earlier runs'
    if (done > stepsAtStart) secondsPerStep = (elapsed() - secondsAtStart) / double(done - stepsAtStart);
    else if (done > 0 && secondsAtStart > 0.0) secondsPerStep = secondsAtStart / double(done);
    else return; // the first step trains at the peak rate whatever the length
    const double remaining = std::max(0.0, m_TimeBudget - elapsed());
    int64_t total = done + std::max<int64_t>(1, std::llround(remaining / std::max(secondsPerStep, 1e-9)));
    if (epochs > 0) total = std::min(total, epochs * m_StepsPerEpoch);
    Check(cs_trainer_set_total_steps(trainer.trainer, total), ctx, "cannot set the schedule's length");
  };
  auto fraction = [&](int64_t stepsDone) {
    double f = 0.0;
    if (epochs > 0) f = double(stepsDone) / double(epochs * m_StepsPerEpoch);
    if (m_TimeBudget > 0.0) f = std::max(f, elapsed() / m_TimeBudget);
    return std::min(1.0, f);
  };

  // Best model so far: in memory for GetModel(), on disk at the output path.
  ModelOwner best;
  auto saveBest = [&]() {
    if (m_Peers.rank == 0) // data-parallel: every rank holds the same weights, rank 0 writes
      Check(cs_model_save(ctx, model.model, m_OutputModelFileName.c_str()), ctx,
            "cannot write the model " + m_OutputModelFileName);
    best.Reset(CloneModel(ctx, model.model));
  };
  auto writeReports = [&]() {
    if (m_Peers.rank != 0) return;
    if (!m_HistoryFileName.empty()) WriteHistoryTable(m_HistoryFileName, classNames, m_History);
    if (!m_PlotFileName.empty()) WriteHistoryPlot(m_PlotFileName, m_History);
  };

  int64_t epoch = state.epoch;
  Clock::time_point lastReport = Clock::now();
  if (result.resumed && m_Progress)
    m_Progress(fraction(state.step), "resuming after epoch " + std::to_string(epoch) + " (step " +
                                       std::to_string(state.step) + ")");

  while (!cancelled() && (epochs == 0 || epoch < epochs) && !budgetUsed())
  {
    ++epoch;
    // One generator per epoch: a resumed run samples what an uninterrupted one would have.
    cs_rng rng;
    cs_rng_seed(&rng, config.seed + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(epoch) +
                          0xD1B54A32D192ED03ull * static_cast<uint64_t>(m_Peers.rank)); // own patches per rank
    double lossSum = 0.0;
    int64_t lossCount = 0, skipped = 0;
    float lr = 0.0f;
    for (int64_t s = 0; s < m_StepsPerEpoch && !cancelled(); ++s)
    {
      cs_status st = CS_OK;
      std::string stepMessage;
      try
      {
      for (int32_t b = 0; b < B; ++b)
      {
        const size_t i = static_cast<size_t>(cs_rng_below(&rng, static_cast<int64_t>(trainStore.Size())));
        const ComboSegPreparedCase &c = trainStore.Draw(i, rotateEvery);
        Check(cs_sample_patch(ctx, &rng, c.image.data(), c.labels.data(), C, c.size, K, config.patch_size, &sampling,
                              images.data() + size_t(b) * C * patchVoxels, labels.data() + size_t(b) * patchVoxels),
              ctx, "cannot sample a patch of case " + trainStore.Files(i).id);
      }
      }
      catch (const std::exception &e)
      {
        if (!parallel) throw;
        st = CS_ERR_IO; // a bad case: the other ranks must hear of it at this step's agreement
        stepMessage = e.what();
      }
      cs_step_result step;
      if (st == CS_OK)
      {
        fitScheduleToBudget();
        st = cs_trainer_step(trainer.trainer, images.data(), labels.data(), &step);
        if (st != CS_OK) stepMessage = cs_context_last_error(ctx);
      }
      if (parallel)
      {
        // the status all ranks agree on: any rank's failure stops all, with its message
        st = m_Peers.StepEnd(st, stepMessage);
        if (st != CS_OK && st != CS_ERR_NUMERIC) itkGenericExceptionMacro("training step failed: " << stepMessage);
        agreeStop();
      }
      if (st == CS_ERR_NUMERIC)
        ++skipped; // weights kept; a whole epoch of these is an error below
      else
      {
        Check(st, ctx, "training step failed");
        lossSum += step.loss;
        ++lossCount;
        lr = step.learning_rate;
      }
      if (m_Progress && std::chrono::duration<double>(Clock::now() - lastReport).count() >= m_ProgressInterval)
      {
        lastReport = Clock::now();
        char buf[128];
        std::snprintf(buf, sizeof buf, " step %lld/%lld loss %.3f", static_cast<long long>(s + 1),
                      static_cast<long long>(m_StepsPerEpoch), lossCount ? lossSum / lossCount : NaN);
        m_Progress(fraction(cs_trainer_steps_done(trainer.trainer)),
                   "epoch " + std::to_string(epoch) + (epochs ? "/" + std::to_string(epochs) : "") + buf);
      }
      if (budgetUsed()) break;
    }
    if (cancelled()) break; // the last checkpoint stays: a re-run resumes from it
    if (lossCount == 0)
      itkGenericExceptionMacro("epoch " << epoch << ": every step gave a non-finite loss (" << skipped
                                        << " steps); lower the learning rate");

    // ---- validation: hard Dice per class on whole volumes, averaged over the cases
    ComboSegTrainingRecord record;
    record.epoch = epoch;
    record.step = cs_trainer_steps_done(trainer.trainer);
    record.trainLoss = lossSum / lossCount;
    record.learningRate = lr;
    record.dice.assign(K, NaN);
    if (validStore.Size() > 0)
    {
      std::vector<double> sum(K, 0.0);
      std::vector<int> count(K, 0);
      std::vector<float> dice(K);
      for (size_t v = 0; v < validStore.Size() && !cancelled(); ++v)
      {
        const ComboSegPreparedCase &c = validStore.Get(v);
        const int64_t n = c.size[0] * c.size[1] * c.size[2];
        // the best epoch is chosen on the output users get
        const std::vector<int32_t> predicted = SegmentPreparedCase(ctx, model.model, c, inferOptions);
        cs_dice_per_class(predicted.data(), c.labels.data(), n, K, dice.data());
        for (int32_t k = 0; k < K; ++k)
          if (!std::isnan(dice[k])) sum[k] += dice[k], ++count[k];
      }
      if (cancelled()) break;
      // Kept classes are not in the site's labels: their Dice would only measure that.
      for (int32_t k = 0; k < K; ++k) record.dice[k] = count[k] && labelled[static_cast<size_t>(k)] ? sum[k] / count[k] : NaN;
    }
    record.meanDice = MeanForeground(record.dice);
    record.seconds = elapsed();
    m_History.push_back(record);

    // ---- the best model, the checkpoint and its sidecar, the reports
    const bool improved = validStore.Size() == 0 || std::isnan(state.bestDice) ||
                          (!std::isnan(record.meanDice) && record.meanDice > state.bestDice);
    if (improved)
    {
      saveBest();
      state.bestDice = record.meanDice;
      state.bestEpoch = epoch;
    }
    // Sidecar first, then the checkpoint: a kill between the two leaves the sidecar ahead,
    // which resuming can undo (the reverse could not be).
    state.epoch = epoch;
    state.step = record.step;
    state.seconds = record.seconds;
    state.history = m_History;
    if (m_Peers.rank == 0)
    {
      WriteSidecar(sidecarPath, state);
      Check(cs_trainer_save_checkpoint(trainer.trainer, checkpoint.c_str()), ctx,
            "cannot write the checkpoint " + checkpoint);
    }
    writeReports();
    if (m_Progress) m_Progress(fraction(record.step), EpochComment(epoch, epochs, record.trainLoss, record.meanDice));
  }

  result.cancelled = cancelled();
  epoch = state.epoch; // epochs finished: a stopped one does not count
  result.completed = !result.cancelled && ((epochs > 0 && epoch >= epochs) || budgetUsed());
  result.epochs = epoch;
  result.steps = cs_trainer_steps_done(trainer.trainer);
  result.seconds = elapsed();
  result.bestEpoch = state.bestEpoch;
  result.bestMeanDice = state.bestDice;

  // The result model: the best of this run, else the one an earlier run wrote.
  if (best.model)
  {
    m_ResultModel = ComboSegModel::New();
    m_ResultModel->SetModel(best.Release());
  }
  else if (FileExists(m_OutputModelFileName))
  {
    m_ResultModel = ComboSegModel::New();
    m_ResultModel->Load(m_OutputModelFileName);
  }
  else if (!result.cancelled)
  {
    saveBest(); // no epoch finished (e.g. a time budget shorter than one step)
    m_ResultModel = ComboSegModel::New();
    m_ResultModel->SetModel(best.Release());
  }
  if (!result.cancelled) writeReports();
  if (m_Progress && result.completed) m_Progress(1.0, "done: " + EpochComment(epoch, epochs, m_History.empty() ? NaN : m_History.back().trainLoss, state.bestDice));
  return result;
}

} // namespace itk
