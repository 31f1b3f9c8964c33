#include "itkComboSegIO.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <sys/stat.h>

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

bool
FileExists(const std::string & path)
{
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

std::string
Lower(std::string s)
{
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

bool
EndsWith(const std::string & s, const std::string & suffix)
{
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string
Trim(const std::string & s)
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
  const std::string t = Trim(s);
  if (t.empty())
    return false;
  char *     end = nullptr;
  const long v = std::strtol(t.c_str(), &end, 10);
  if (*end != '\0')
    return false;
  value = static_cast<int>(v);
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

std::vector<LabelName>
ReadTextLabelNames(const std::string & path)
{
  std::ifstream in(path);
  if (!in)
  {
    itkGenericExceptionMacro(<< "cannot read label names from " << path << ": cannot open the file");
  }
  std::vector<LabelName> names;
  std::string            line;
  int                    lineNumber = 0;
  bool                   firstData = true;
  while (std::getline(in, line))
  {
    ++lineNumber;
    const std::string trimmed = Trim(line);
    if (trimmed.empty() || trimmed[0] == '#')
      continue;
    std::vector<std::string> fields;
    if (line.find(',') != std::string::npos)
    {
      std::stringstream s(line);
      std::string       field;
      while (std::getline(s, field, ','))
        fields.push_back(Trim(field));
    }
    else
    {
      std::istringstream s(line);
      std::string        field;
      while (s >> field)
        fields.push_back(field);
    }
    LabelName label;
    if (fields.size() < 2 || !ParseInt(fields[0], label.value))
    {
      if (firstData && line.find(',') != std::string::npos)
      {
        firstData = false; // a CSV header such as "value,name"
        continue;
      }
      itkGenericExceptionMacro(<< path << " line " << lineNumber << ": expected 'value name [R G B A]', got '" << trimmed
                                    << "'");
    }
    firstData = false;
    // Names may hold spaces in colour tables: everything between the value and the colour.
    size_t nameEnd = fields.size();
    int    rgb[3];
    if (fields.size() >= 5 && ParseInt(fields[fields.size() - 1], rgb[0]))
    {
      const size_t colourStart = fields.size() >= 6 ? fields.size() - 4 : fields.size() - 3;
      if (ParseInt(fields[colourStart], rgb[0]) && ParseInt(fields[colourStart + 1], rgb[1]) &&
          ParseInt(fields[colourStart + 2], rgb[2]))
      {
        nameEnd = colourStart;
        for (int c = 0; c < 3; ++c)
          label.rgb[c] = static_cast<uint8_t>(std::min(std::max(rgb[c], 0), 255));
        label.hasColor = true;
      }
    }
    for (size_t f = 1; f < nameEnd; ++f)
      label.name += (f > 1 ? " " : "") + fields[f];
    names.push_back(label);
  }
  return names;
}

} // namespace

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

bool
ComboSegIsDirectory(const std::string & path)
{
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
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

template <typename TImage>
typename TImage::Pointer
ReadScan(const std::string & path)
{
  constexpr unsigned int D = TImage::ImageDimension;
  ComboSegRegisterImageIO();
  if (path.empty())
  {
    itkGenericExceptionMacro(<< "no scan file name given");
  }
  if (ComboSegIsDirectory(path))
  {
    const std::vector<std::string> files = ComboSegDicomSeriesFiles(path);
    auto                           reader = ImageSeriesReader<TImage>::New();
    reader->SetImageIO(GDCMImageIO::New());
    reader->SetFileNames(files);
    try
    {
      reader->Update();
    }
    catch (const ExceptionObject & e)
    {
      itkGenericExceptionMacro(<< "cannot read the DICOM series in " << path << ": " << e.GetDescription());
    }
    return reader->GetOutput();
  }
  if (!FileExists(path))
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
  auto reader = ImageFileReader<TImage>::New();
  reader->SetImageIO(io);
  reader->SetFileName(path);
  try
  {
    reader->Update();
  }
  catch (const ExceptionObject & e)
  {
    itkGenericExceptionMacro(<< "cannot read " << path << ": " << e.GetDescription());
  }
  return reader->GetOutput();
}

#define COMBOSEG_INSTANTIATE_READ_SCAN(T, D) template Image<T, D>::Pointer ReadScan<Image<T, D>>(const std::string &)
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
  if (!FileExists(path))
  {
    itkGenericExceptionMacro(<< "cannot read label names from " << path << ": no such file");
  }
  const std::string      lower = Lower(path);
  std::vector<LabelName> names =
    EndsWith(lower, ".nrrd") || EndsWith(lower, ".nhdr") ? ReadNrrdLabelNames(path) : ReadTextLabelNames(path);
  std::sort(names.begin(), names.end(), [](const LabelName & a, const LabelName & b) { return a.value < b.value; });
  for (size_t i = 1; i < names.size(); ++i)
  {
    if (names[i].value == names[i - 1].value)
    {
      itkGenericExceptionMacro(<< path << ": label value " << names[i].value << " is named twice ('" << names[i - 1].name
                                    << "' and '" << names[i].name << "')");
    }
  }
  return names;
}

} // end namespace itk
