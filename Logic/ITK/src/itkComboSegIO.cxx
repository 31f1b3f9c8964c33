#include "itkComboSegIO.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <type_traits>

#include "itkComboSegFiles.h"
#include "itkComboSegModel.h"
#include "itkComboSegProcessing.h"
#include "itkGDCMImageIO.h"
#include "itkGDCMImageIOFactory.h"
#include "itkGDCMSeriesFileNames.h"
#include "itkImageFileReader.h"
#include "itkImageIOFactory.h"
#include "itkImageSeriesReader.h"
#include "itkMetaDataObject.h"
#include "itkMetaImageIOFactory.h"
#include "itkNiftiImageIOFactory.h"
#include "itkNrrdImageIO.h"
#include "itkNrrdImageIOFactory.h"

namespace itk
{

namespace
{

bool
FactoryRegistered(const char * className)
{
  for (auto * factory : ObjectFactoryBase::GetRegisteredFactories())
  {
    if (std::string(factory->GetNameOfClass()) == className)
    {
      return true;
    }
  }
  return false;
}

// Label-name files may quote their fields: blanks and double quotes go.
std::string
TrimBlanksAndQuotes(const std::string & s)
{
  const auto first = s.find_first_not_of(" \t\r\n\"");
  if (first == std::string::npos)
    return "";
  const auto last = s.find_last_not_of(" \t\r\n\"");
  return s.substr(first, last - first + 1);
}

bool
ParseInt(const std::string & s, int & value)
{
  long long parsed = 0;
  if (!ComboSegParseInt(TrimBlanksAndQuotes(s), parsed))
    return false;
  value = static_cast<int>(parsed);
  return true;
}

std::vector<LabelName>
ReadNrrdLabelNames(const std::string & path)
{
  ComboSegRegisterImageIO();
  auto io = NrrdImageIO::New();
  io->SetFileName(path);
  try
  {
    io->ReadImageInformation();
  }
  catch (const ExceptionObject & e)
  {
    itkGenericExceptionMacro(<< "cannot read label names from " << path << ": " << e.GetDescription());
  }
  const MetaDataDictionary & dictionary = io->GetMetaDataDictionary();
  auto                       get = [&](const std::string & key, std::string & value) {
    return ExposeMetaData<std::string>(dictionary, key, value);
  };
  std::vector<LabelName> names;
  for (int i = 0;; ++i)
  {
    const std::string prefix = "Segment" + std::to_string(i) + "_";
    LabelName         label;
    if (!get(prefix + "Name", label.name))
    {
      break;
    }
    std::string text;
    label.value = i + 1; // segmentations without label values number segments from 1
    if (get(prefix + "LabelValue", text) && !ParseInt(text, label.value))
    {
      itkGenericExceptionMacro(<< path << ": " << prefix << "LabelValue '" << text << "' is not an integer");
    }
    if (get(prefix + "Color", text))
    {
      std::istringstream in(text);
      double             rgb[3];
      if (in >> rgb[0] >> rgb[1] >> rgb[2])
      {
        for (int c = 0; c < 3; ++c)
          label.rgb[c] = static_cast<uint8_t>(std::lround(std::min(std::max(rgb[c], 0.0), 1.0) * 255.0));
        label.hasColor = true;
      }
    }
    names.push_back(label);
  }
  return names;
}

// The fields of one CSV line; double quotes protect commas (Slicer quotes such values).
std::vector<std::string>
SplitCsvLine(const std::string & line)
{
  std::vector<std::string> fields(1);
  bool                     quoted = false;
  for (char c : line)
  {
    if (c == '"')
      quoted = !quoted;
    else if (c == ',' && !quoted)
      fields.emplace_back();
    else
      fields.back() += c;
  }
  for (std::string & field : fields)
    field = TrimBlanksAndQuotes(field);
  return fields;
}

std::vector<std::string>
SplitOnBlanks(const std::string & line)
{
  std::vector<std::string> fields;
  std::istringstream       s(line);
  std::string              field;
  while (s >> field)
    fields.push_back(field);
  return fields;
}

// The data lines of a text file (blank lines and '#' comments skipped), with their numbers.
std::vector<std::pair<int, std::string>>
DataLines(const std::string & path)
{
  std::ifstream in(path);
  if (!in)
  {
    itkGenericExceptionMacro(<< "cannot read label names from " << path << ": cannot open the file");
  }
  std::vector<std::pair<int, std::string>> lines;
  std::string                              line;
  for (int number = 1; std::getline(in, line); ++number)
  {
    const std::string trimmed = TrimBlanksAndQuotes(line);
    if (!trimmed.empty() && trimmed[0] != '#')
      lines.emplace_back(number, trimmed);
  }
  return lines;
}

void
SetColour(LabelName & label, const int rgb[3])
{
  for (int c = 0; c < 3; ++c)
    label.rgb[c] = static_cast<uint8_t>(std::min(std::max(rgb[c], 0), 255));
  label.hasColor = true;
}

// The columns of a CSV colour table, found by its header (Slicer 5: LabelValue, Name, Color_R,
// Color_G, Color_B, Color_A and terminology columns; or value, name[, R, G, B]).
struct CsvColumns
{
  int value{ -1 }, name{ -1 }, type{ -1 }, typeModifier{ -1 };
  int rgb[3]{ -1, -1, -1 };
};

CsvColumns
CsvColumnsOfHeader(const std::vector<std::string> & header, const std::string & path)
{
  CsvColumns columns;
  for (size_t i = 0; i < header.size(); ++i)
  {
    const std::string h = ComboSegToLower(header[i]);
    const int         c = static_cast<int>(i);
    if (h == "labelvalue" || h == "value" || h == "label")
      columns.value = c;
    else if (h == "name")
      columns.name = c;
    else if (h == "type_codemeaning")
      columns.type = c;
    else if (h == "typemodifier_codemeaning")
      columns.typeModifier = c;
    else if (h == "color_r" || h == "r")
      columns.rgb[0] = c;
    else if (h == "color_g" || h == "g")
      columns.rgb[1] = c;
    else if (h == "color_b" || h == "b")
      columns.rgb[2] = c;
  }
  if (columns.value < 0 || (columns.name < 0 && columns.type < 0))
  {
    itkGenericExceptionMacro(<< path
                             << ": the CSV header needs a label value column (LabelValue or value) and a name "
                                "column (Name, or Slicer's Type_CodeMeaning)");
  }
  return columns;
}

// Slicer may leave Name empty and describe the entry by terminology alone: "left kidney".
std::string
CsvName(const std::vector<std::string> & fields, const CsvColumns & columns)
{
  auto field = [&](int c) {
    return c >= 0 && static_cast<size_t>(c) < fields.size() ? fields[c] : std::string();
  };
  const std::string name = field(columns.name);
  if (!name.empty())
    return name;
  const std::string modifier = field(columns.typeModifier), type = field(columns.type);
  return modifier.empty() ? type : modifier + " " + type;
}

std::vector<LabelName>
ReadCsvLabelNames(const std::string & path, const std::vector<std::pair<int, std::string>> & lines)
{
  int        value = 0;
  const auto first = SplitCsvLine(lines.front().second);
  const bool hasHeader = !ParseInt(first.front(), value);
  // Without a header: value,name[,R,G,B[,A]].
  const CsvColumns columns = hasHeader ? CsvColumnsOfHeader(first, path) : CsvColumns{ 0, 1, -1, -1, { 2, 3, 4 } };
  std::vector<LabelName> names;
  for (size_t l = hasHeader ? 1 : 0; l < lines.size(); ++l)
  {
    const std::vector<std::string> fields = SplitCsvLine(lines[l].second);
    LabelName                      label;
    const bool                     hasValue = static_cast<size_t>(columns.value) < fields.size() &&
                          ParseInt(fields[columns.value], label.value);
    label.name = hasValue ? CsvName(fields, columns) : "";
    if (label.name.empty())
    {
      itkGenericExceptionMacro(<< path << " line " << lines[l].first << ": expected "
                               << (hasHeader ? "a label value and a name under the header" : "'value,name[,R,G,B]'")
                               << ", got '" << lines[l].second << "'");
    }
    int  rgb[3];
    bool colour = true;
    for (int c = 0; c < 3; ++c)
      colour = colour && columns.rgb[c] >= 0 && static_cast<size_t>(columns.rgb[c]) < fields.size() &&
               ParseInt(fields[columns.rgb[c]], rgb[c]);
    if (colour)
      SetColour(label, rgb);
    names.push_back(label);
  }
  return names;
}

// Slicer's .ctbl / .txt colour table: `value name R G B A` per line; names may hold spaces.
std::vector<LabelName>
ReadColourTableLabelNames(const std::string & path, const std::vector<std::pair<int, std::string>> & lines)
{
  std::vector<LabelName> names;
  for (const auto & line : lines)
  {
    const std::vector<std::string> fields = SplitOnBlanks(line.second);
    LabelName                      label;
    if (fields.size() < 2 || !ParseInt(fields[0], label.value))
    {
      itkGenericExceptionMacro(<< path << " line " << line.first << ": expected 'value name [R G B A]', got '"
                               << line.second << "'");
    }
    // Everything between the value and the colour (R G B, or R G B A) is the name.
    size_t nameEnd = fields.size();
    int    rgb[3], alpha;
    if (fields.size() >= 5 && ParseInt(fields.back(), alpha))
    {
      const size_t colourStart = fields.size() >= 6 ? fields.size() - 4 : fields.size() - 3;
      if (ParseInt(fields[colourStart], rgb[0]) && ParseInt(fields[colourStart + 1], rgb[1]) &&
          ParseInt(fields[colourStart + 2], rgb[2]))
      {
        nameEnd = colourStart;
        SetColour(label, rgb);
      }
    }
    for (size_t f = 1; f < nameEnd; ++f)
      label.name += (f > 1 ? " " : "") + fields[f];
    names.push_back(label);
  }
  return names;
}

// A text file is a CSV when its first data line holds a comma, else a colour table. An empty one
// names nothing (labels then map by value).
std::vector<LabelName>
ReadTextLabelNames(const std::string & path)
{
  const auto lines = DataLines(path);
  if (lines.empty())
    return {};
  return lines.front().second.find(',') != std::string::npos ? ReadCsvLabelNames(path, lines)
                                                             : ReadColourTableLabelNames(path, lines);
}

std::vector<LabelName>
ReadModelLabelNames(const std::string & path)
{
  auto model = ComboSegModel::New();
  model->Load(path);
  return ComboSegModelClasses(model->GetInfo());
}

} // namespace

std::vector<LabelName>
ComboSegModelClasses(const cs_model_info & info)
{
  std::vector<LabelName> classes;
  for (int32_t k = 1; k < info.arch.num_classes; ++k)
  {
    const cs_class_info & c = info.classes[k];
    classes.push_back(LabelName{ c.value, c.name, { { c.rgb[0], c.rgb[1], c.rgb[2] } }, true });
  }
  return classes;
}

void
ComboSegRegisterImageIO()
{
  static std::once_flag once;
  std::call_once(once, []() {
    if (!FactoryRegistered("NiftiImageIOFactory"))
      NiftiImageIOFactory::RegisterOneFactory();
    if (!FactoryRegistered("NrrdImageIOFactory"))
      NrrdImageIOFactory::RegisterOneFactory();
    if (!FactoryRegistered("MetaImageIOFactory"))
      MetaImageIOFactory::RegisterOneFactory();
    if (!FactoryRegistered("GDCMImageIOFactory"))
      GDCMImageIOFactory::RegisterOneFactory();
  });
}

std::vector<std::string>
ComboSegDicomSeriesFiles(const std::string & folder)
{
  auto names = GDCMSeriesFileNames::New();
  names->SetUseSeriesDetails(true);
  std::vector<std::string> best;
  try
  {
    names->SetDirectory(folder);
    for (const std::string & uid : names->GetSeriesUIDs())
    {
      std::vector<std::string> files = names->GetFileNames(uid);
      if (files.size() > best.size())
        best = files;
    }
  }
  catch (const ExceptionObject & e)
  {
    itkGenericExceptionMacro(<< "cannot read the DICOM folder " << folder << ": " << e.GetDescription());
  }
  if (best.empty())
  {
    itkGenericExceptionMacro(<< "no DICOM series found in the folder " << folder);
  }
  return best;
}

namespace
{

// The file's own pixel type read by ITK, then cast to TImage's over the threads: ITK's reader
// would cast on one thread, into memory first touched there.
template <typename TImage, typename TFilePixel>
typename TImage::Pointer
ReadAndCast(ImageIOBase * io, const std::string & path, int numberOfThreads)
{
  using FileImage = Image<TFilePixel, TImage::ImageDimension>;
  auto reader = ImageFileReader<FileImage>::New();
  reader->SetImageIO(io);
  reader->SetFileName(path);
  reader->Update();
  const FileImage * file = reader->GetOutput();
  auto              image = TImage::New();
  image->CopyInformation(file);
  image->SetRegions(file->GetLargestPossibleRegion());
  image->SetMetaDataDictionary(file->GetMetaDataDictionary());
  image->Allocate(); // not zeroed: every voxel is written below
  const TFilePixel *           in = file->GetBufferPointer();
  typename TImage::PixelType * out = image->GetBufferPointer();
  const int64_t                n = static_cast<int64_t>(file->GetPixelContainer()->Size());
  ComboSegAdviseHugePages(out, static_cast<size_t>(n) * sizeof(*out));
  ComboSegParallelChunks(n, numberOfThreads, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      out[i] = static_cast<typename TImage::PixelType>(in[i]);
  });
  return image;
}

// A float image read from a file of integer or double pixels, cast over the threads; nullptr
// where ITK's reader does as well (float files, other target types).
template <typename TImage>
typename TImage::Pointer
ReadCastToFloat(ImageIOBase * io, const std::string & path, int numberOfThreads)
{
  if (!std::is_same<typename TImage::PixelType, float>::value)
    return nullptr;
  switch (io->GetComponentType())
  {
    case IOComponentEnum::UCHAR: return ReadAndCast<TImage, unsigned char>(io, path, numberOfThreads);
    case IOComponentEnum::CHAR: return ReadAndCast<TImage, signed char>(io, path, numberOfThreads);
    case IOComponentEnum::USHORT: return ReadAndCast<TImage, unsigned short>(io, path, numberOfThreads);
    case IOComponentEnum::SHORT: return ReadAndCast<TImage, short>(io, path, numberOfThreads);
    case IOComponentEnum::UINT: return ReadAndCast<TImage, unsigned int>(io, path, numberOfThreads);
    case IOComponentEnum::INT: return ReadAndCast<TImage, int>(io, path, numberOfThreads);
    case IOComponentEnum::DOUBLE: return ReadAndCast<TImage, double>(io, path, numberOfThreads);
    default: return nullptr;
  }
}

} // namespace

template <typename TImage>
typename TImage::Pointer
ReadScan(const std::string & path, int numberOfThreads)
{
  constexpr unsigned int D = TImage::ImageDimension;
  ComboSegRegisterImageIO();
  if (path.empty())
  {
    itkGenericExceptionMacro(<< "no scan file name given");
  }
  if (ComboSegIsFolder(path))
  {
    const std::vector<std::string> files = ComboSegDicomSeriesFiles(path);
    auto                           reader = ImageSeriesReader<TImage>::New();
    auto                           io = GDCMImageIO::New();
    reader->SetImageIO(io);
    reader->SetFileNames(files);
    try
    {
      reader->Update();
    }
    catch (const ExceptionObject & e)
    {
      itkGenericExceptionMacro(<< "cannot read the DICOM series in " << path << ": " << e.GetDescription());
    }
    // The series' tags (a slice's: Modality and the like are the series') travel with the scan.
    reader->GetOutput()->SetMetaDataDictionary(io->GetMetaDataDictionary());
    return reader->GetOutput();
  }
  if (!ComboSegFileExists(path))
  {
    itkGenericExceptionMacro(<< "cannot read " << path << ": no such file or folder");
  }
  ImageIOBase::Pointer io = ImageIOFactory::CreateImageIO(path.c_str(), ImageIOFactory::IOFileModeEnum::ReadMode);
  if (!io)
  {
    itkGenericExceptionMacro(<< "cannot read " << path << ": not an image file in a known format, or corrupted");
  }
  io->SetFileName(path);
  try
  {
    io->ReadImageInformation();
  }
  catch (const ExceptionObject & e)
  {
    itkGenericExceptionMacro(<< "cannot read " << path << ": " << e.GetDescription());
  }
  // Trailing axes of size 1 are harmless; real extra dimensions are not.
  const unsigned int dims = io->GetNumberOfDimensions();
  std::ostringstream sizes;
  bool               tooMany = false;
  for (unsigned int d = 0; d < dims; ++d)
  {
    sizes << (d ? "x" : "") << io->GetDimensions(d);
    if (d >= D && io->GetDimensions(d) > 1)
      tooMany = true;
  }
  if (tooMany)
  {
    itkGenericExceptionMacro(<< path << " is a " << dims << "D image (size " << sizes.str() << "); ComboSeg reads " << D
                             << "D scans here: give one file per channel or time point");
  }
  if (io->GetNumberOfComponents() > 1)
  {
    itkGenericExceptionMacro(<< path << " has " << io->GetNumberOfComponents()
                             << " components per voxel; ComboSeg reads scalar images (one file per channel)");
  }
  for (unsigned int d = 0; d < dims; ++d)
  {
    if (io->GetDimensions(d) == 0)
      itkGenericExceptionMacro(<< path << " is empty (size " << sizes.str() << ")");
  }
  try
  {
    if (typename TImage::Pointer cast = ReadCastToFloat<TImage>(io, path, numberOfThreads))
      return cast;
    auto reader = ImageFileReader<TImage>::New();
    reader->SetImageIO(io);
    reader->SetFileName(path);
    reader->Update();
    return reader->GetOutput();
  }
  catch (const ExceptionObject & e)
  {
    itkGenericExceptionMacro(<< "cannot read " << path << ": " << e.GetDescription());
  }
}

#define COMBOSEG_INSTANTIATE_READ_SCAN(T, D)                                                                           \
  template Image<T, D>::Pointer ReadScan<Image<T, D>>(const std::string &, int)
COMBOSEG_INSTANTIATE_READ_SCAN(float, 3);
COMBOSEG_INSTANTIATE_READ_SCAN(double, 3);
COMBOSEG_INSTANTIATE_READ_SCAN(short, 3);
COMBOSEG_INSTANTIATE_READ_SCAN(unsigned short, 3);
COMBOSEG_INSTANTIATE_READ_SCAN(int, 3);
COMBOSEG_INSTANTIATE_READ_SCAN(unsigned char, 3);
COMBOSEG_INSTANTIATE_READ_SCAN(float, 2);
COMBOSEG_INSTANTIATE_READ_SCAN(short, 2);
COMBOSEG_INSTANTIATE_READ_SCAN(int, 2);
COMBOSEG_INSTANTIATE_READ_SCAN(unsigned char, 2);

std::vector<LabelName>
ReadLabelNames(const std::string & path)
{
  if (!ComboSegFileExists(path))
  {
    itkGenericExceptionMacro(<< "cannot read label names from " << path << ": no such file");
  }
  std::vector<LabelName> names;
  if (ComboSegEndsWithNoCase(path, ".nrrd") || ComboSegEndsWithNoCase(path, ".nhdr"))
    names = ReadNrrdLabelNames(path);
  else if (ComboSegEndsWithNoCase(path, ".csv") || ComboSegEndsWithNoCase(path, ".ctbl") ||
           ComboSegEndsWithNoCase(path, ".txt"))
    names = ReadTextLabelNames(path);
  else if (ComboSegEndsWithNoCase(path, ".safetensors"))
    names = ReadModelLabelNames(path);
  else
  {
    itkGenericExceptionMacro(<< "cannot read label names from " << path << ": " << ComboSegLabelNameFormats);
  }
  std::sort(names.begin(), names.end(), [](const LabelName & a, const LabelName & b) { return a.value < b.value; });
  for (size_t i = 1; i < names.size(); ++i)
  {
    if (names[i].value == names[i - 1].value)
    {
      itkGenericExceptionMacro(<< path << ": label value " << names[i].value << " is named twice ('"
                               << names[i - 1].name << "' and '" << names[i].name << "')");
    }
  }
  return names;
}

} // end namespace itk
