#include "itkComboSegDataSet.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <cjson/cJSON.h>

#include "itkComboSegFiles.h"
#include "itkComboSegProcessing.h"
#include "itkImageIOFactory.h"
#include "itkMacro.h"

namespace itk
{

namespace
{

std::string
FolderOf(const std::string & path)
{
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

std::string
BaseName(const std::string & path)
{
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string
Join(const std::string & folder, std::string relative)
{
  if (!relative.empty() && relative[0] == '/')
    return relative;
  while (relative.compare(0, 2, "./") == 0)
    relative.erase(0, 2);
  return folder + "/" + relative;
}

// Case-insensitive, '_' and '-' as spaces, runs of spaces collapsed: "Left_Kidney" == "left kidney".
std::string
NormalisedName(const std::string & name)
{
  std::string out;
  for (char ch : name)
  {
    char c = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (c == '_' || c == '-' || std::isspace(static_cast<unsigned char>(c)))
      c = ' ';
    if (c == ' ' && (out.empty() || out.back() == ' '))
      continue;
    out += c;
  }
  while (!out.empty() && out.back() == ' ')
    out.pop_back();
  return out;
}

std::string
ReadWholeFile(const std::string & path)
{
  std::ifstream in(path, std::ios::binary);
  if (!in)
  {
    itkGenericExceptionMacro(<< "cannot read " << path << ": no such file or not readable");
  }
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Keys "0", "1", ... of a JSON object, as a list ordered by the number.
std::vector<std::string>
IndexedStrings(const cJSON * object, const std::string & source, const char * what)
{
  if (object && !cJSON_IsObject(object))
    itkGenericExceptionMacro(<< source << ": \"" << what << "\" must be an object of \"index\": \"name\" entries");
  std::map<int, std::string> byIndex;
  for (const cJSON * item = object ? object->child : nullptr; item; item = item->next)
  {
    char *     end = nullptr;
    const long index = std::strtol(item->string, &end, 10);
    if (*end != '\0' || !cJSON_IsString(item))
    {
      itkGenericExceptionMacro(<< source << ": \"" << what << "\" entries must be \"index\": \"name\", got \""
                               << item->string << "\"");
    }
    byIndex[static_cast<int>(index)] = item->valuestring;
  }
  std::vector<std::string> list;
  for (const auto & entry : byIndex)
    list.push_back(entry.second);
  return list;
}

// Labelled voxels (non-zero values) of a label map whose centre lies outside the scan's voxels.
int64_t
LabelledVoxelsOutside(const int * values, const ComboSegGrid & labelGrid, const ComboSegGrid & scanGrid)
{
  const double tolerance = 1e-3;
  int64_t      outside = 0;
  int64_t      i = 0;
  for (int64_t z = 0; z < labelGrid.size[2]; ++z)
    for (int64_t y = 0; y < labelGrid.size[1]; ++y)
      for (int64_t x = 0; x < labelGrid.size[0]; ++x, ++i)
      {
        if (values[i] == 0)
          continue;
        const double index[3] = { double(x), double(y), double(z) };
        double       offset[3]; // from the scan's first voxel, in mm
        for (int r = 0; r < 3; ++r)
        {
          offset[r] = labelGrid.origin[r] - scanGrid.origin[r];
          for (int c = 0; c < 3; ++c)
            offset[r] += labelGrid.direction[3 * r + c] * labelGrid.spacing[c] * index[c];
        }
        for (int c = 0; c < 3; ++c) // the scan's continuous index (orthonormal axes)
        {
          double along = 0.0;
          for (int r = 0; r < 3; ++r)
            along += scanGrid.direction[3 * r + c] * offset[r];
          along /= scanGrid.spacing[c];
          if (along < -0.5 - tolerance || along > scanGrid.size[c] - 0.5 + tolerance)
          {
            ++outside;
            break;
          }
        }
      }
  return outside;
}

// The layers of a label file: more than one when a Slicer segmentation's segments overlap (a
// 4D .seg.nrrd, read as several components per voxel).
unsigned int
LabelLayers(const std::string & path)
{
  ImageIOBase::Pointer io = ImageIOFactory::CreateImageIO(path.c_str(), ImageIOFactory::IOFileModeEnum::ReadMode);
  if (!io)
    return 1; // ReadScan names the problem
  io->SetFileName(path);
  try
  {
    io->ReadImageInformation();
  }
  catch (const ExceptionObject &)
  {
    return 1;
  }
  unsigned int layers = io->GetNumberOfComponents();
  for (unsigned int d = 3; d < io->GetNumberOfDimensions(); ++d)
    layers *= static_cast<unsigned int>(io->GetDimensions(d));
  return std::max(layers, 1u);
}

// ComboSegOutsideBody brought onto the model grid (voxels off the scan count as outside), so
// that validation applies the background rule the segmentation filter applies.
std::vector<uint8_t>
OutsideBodyOnModelGrid(const std::vector<ComboSegChannel> & channels, const cs_model_info & info,
                       const ComboSegGrid & modelGrid)
{
  const std::vector<uint8_t> outside = ComboSegOutsideBody(channels, info, nullptr);
  if (outside.empty())
    return {};
  const std::vector<int32_t> onScan(outside.begin(), outside.end());
  std::vector<int32_t>       onModel(static_cast<size_t>(modelGrid.NumberOfVoxels()));
  ComboSegResampleNearest(onModel.data(), modelGrid, onScan.data(), channels[0].grid, 1);
  return std::vector<uint8_t>(onModel.begin(), onModel.end());
}

struct JsonDeleter
{
  void
  operator()(cJSON * json) const
  {
    cJSON_Delete(json);
  }
};

} // namespace

std::string
ComboSegStructureNameKey(const std::string & name)
{
  return NormalisedName(name);
}

ComboSegDataSetDescription
ReadMSDDataSet(const std::string & folder)
{
  const std::string                   jsonPath = folder + "/dataset.json";
  const std::string                   text = ReadWholeFile(jsonPath);
  std::unique_ptr<cJSON, JsonDeleter> json(cJSON_Parse(text.c_str()));
  if (!json || !cJSON_IsObject(json.get()))
  {
    const char * where = cJSON_GetErrorPtr();
    itkGenericExceptionMacro(<< jsonPath << " is not a valid JSON object"
                             << (where ? std::string(" near '") + std::string(where).substr(0, 30) + "'" : ""));
  }
  ComboSegDataSetDescription description;
  const cJSON *              channels = cJSON_GetObjectItemCaseSensitive(json.get(), "channel_names");
  if (!channels)
    channels = cJSON_GetObjectItemCaseSensitive(json.get(), "modality");
  description.channelNames = IndexedStrings(channels, jsonPath, channels ? channels->string : "channel_names");

  // MSD: {"0": "background", "1": "liver"}; nnU-Net v2: {"background": 0, "liver": 1}.
  const cJSON * labels = cJSON_GetObjectItemCaseSensitive(json.get(), "labels");
  if (labels && !cJSON_IsObject(labels))
    itkGenericExceptionMacro(<< jsonPath << ": \"labels\" must be an object of value-name entries");
  for (const cJSON * item = labels ? labels->child : nullptr; item; item = item->next)
  {
    LabelName  label;
    char *     end = nullptr;
    const long value = std::strtol(item->string, &end, 10);
    if (cJSON_IsString(item) && *end == '\0')
    {
      label.value = static_cast<int>(value);
      label.name = item->valuestring;
    }
    else if (cJSON_IsNumber(item))
    {
      label.value = item->valueint;
      label.name = item->string;
    }
    else
    {
      itkGenericExceptionMacro(<< jsonPath << ": label \"" << item->string
                               << "\" is neither \"value\": \"name\" nor \"name\": value (regions are not supported)");
    }
    description.labelNames.push_back(label);
  }
  std::sort(description.labelNames.begin(), description.labelNames.end(),
            [](const LabelName & a, const LabelName & b) { return a.value < b.value; });

  const cJSON *     endingItem = cJSON_GetObjectItemCaseSensitive(json.get(), "file_ending");
  const std::string ending = cJSON_IsString(endingItem) ? endingItem->valuestring : ".nii.gz";

  // Case ids: from "training", else every label file.
  std::vector<std::string> ids;
  const cJSON *            training = cJSON_GetObjectItemCaseSensitive(json.get(), "training");
  if (cJSON_IsArray(training) && cJSON_GetArraySize(training) > 0)
  {
    for (const cJSON * item = training->child; item; item = item->next)
    {
      const cJSON * label = cJSON_GetObjectItemCaseSensitive(item, "label");
      if (!cJSON_IsString(label))
      {
        itkGenericExceptionMacro(<< jsonPath << ": a \"training\" entry has no \"label\" file name");
      }
      std::string name = BaseName(label->valuestring);
      if (!ComboSegEndsWith(name, ending))
      {
        itkGenericExceptionMacro(<< jsonPath << ": label file " << label->valuestring << " does not end with "
                                 << ending);
      }
      ids.push_back(name.substr(0, name.size() - ending.size()));
    }
  }
  else
  {
    const std::string        labelFolder = folder + "/labelsTr";
    std::vector<std::string> names;
    if (!ComboSegListFolder(labelFolder, names))
    {
      itkGenericExceptionMacro(<< "cannot list " << labelFolder << ": the data set has no labelsTr folder");
    }
    for (const std::string & name : names)
    {
      if (name[0] != '.' && ComboSegEndsWith(name, ending))
        ids.push_back(name.substr(0, name.size() - ending.size()));
    }
    std::sort(ids.begin(), ids.end());
  }
  if (ids.empty())
  {
    itkGenericExceptionMacro(<< "the data set in " << folder << " has no training cases");
  }

  const size_t channelCount = std::max<size_t>(description.channelNames.size(), 1);
  for (const std::string & id : ids)
  {
    ComboSegCaseFiles files;
    files.id = id;
    files.labels = folder + "/labelsTr/" + id + ending;
    if (!ComboSegFileExists(files.labels))
    {
      itkGenericExceptionMacro(<< "case " << id << ": label map " << files.labels << " not found");
    }
    for (size_t c = 0; c < channelCount; ++c)
    {
      char suffix[16];
      std::snprintf(suffix, sizeof(suffix), "_%04d", static_cast<int>(c));
      std::string path = folder + "/imagesTr/" + id + suffix + ending;
      if (!ComboSegFileExists(path) && channelCount == 1 && ComboSegFileExists(folder + "/imagesTr/" + id + ending))
      {
        path = folder + "/imagesTr/" + id + ending;
      }
      if (!ComboSegFileExists(path))
      {
        itkGenericExceptionMacro(<< "case " << id << ": image of channel " << c
                                 << (c < description.channelNames.size() ? " (" + description.channelNames[c] + ")"
                                                                         : std::string())
                                 << " not found: " << path);
      }
      files.channels.push_back(path);
    }
    description.cases.push_back(files);
  }
  return description;
}

ComboSegDataSetDescription
ReadCaseList(const std::string & listFile)
{
  std::ifstream in(listFile);
  if (!in)
  {
    itkGenericExceptionMacro(<< "cannot read the case list " << listFile << ": no such file or not readable");
  }
  const std::string          folder = FolderOf(listFile);
  ComboSegDataSetDescription description;
  std::string                line;
  int                        lineNumber = 0;
  while (std::getline(in, line))
  {
    ++lineNumber;
    const auto hash = line.find('#');
    if (hash != std::string::npos)
      line.erase(hash);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' '))
      line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos)
      continue;
    std::vector<std::string> fields;
    std::stringstream        s(line);
    std::string              field;
    while (std::getline(s, field, '\t'))
      fields.push_back(field);
    if (fields.size() < 2 || fields[1].empty())
    {
      itkGenericExceptionMacro(<< listFile << " line " << lineNumber
                               << ": expected 'label<TAB>channel1[<TAB>channel2...]', got '" << line << "'");
    }
    ComboSegCaseFiles files;
    if (!fields[0].empty())
      files.labels = Join(folder, fields[0]);
    for (size_t f = 1; f < fields.size(); ++f)
      files.channels.push_back(Join(folder, fields[f]));
    std::string id = BaseName(files.labels.empty() ? files.channels[0] : files.labels);
    for (const char * ext : { ".nii.gz", ".seg.nrrd", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd" })
      if (ComboSegEndsWith(id, ext))
      {
        id.erase(id.size() - std::string(ext).size());
        break;
      }
    files.id = id;
    if (!description.cases.empty() && description.cases[0].channels.size() != files.channels.size())
    {
      itkGenericExceptionMacro(<< listFile << " line " << lineNumber << ": " << files.channels.size()
                               << " channel(s) where the first case has " << description.cases[0].channels.size());
    }
    description.cases.push_back(files);
  }
  if (description.cases.empty())
  {
    itkGenericExceptionMacro(<< "the case list " << listFile << " holds no case");
  }
  return description;
}

std::vector<std::pair<int32_t, int32_t>>
ComboSegMapLabelValues(const std::vector<LabelName> & names, const cs_model_info & info, const std::string & source)
{
  std::vector<std::pair<int32_t, int32_t>> mapping;
  const int32_t                            classes = info.arch.num_classes;
  if (names.empty())
  {
    for (int32_t k = 0; k < classes; ++k)
      mapping.emplace_back(info.classes[k].value, k);
    return mapping;
  }
  std::map<std::string, int32_t> classOfName;
  for (int32_t k = 1; k < classes; ++k)
    classOfName[NormalisedName(info.classes[k].name)] = k;
  std::ostringstream unknown;
  mapping.emplace_back(0, 0); // value 0 is background whatever it is called
  for (const LabelName & label : names)
  {
    if (label.value == 0)
      continue;
    const auto found = classOfName.find(NormalisedName(label.name));
    if (found == classOfName.end())
    {
      unknown << (unknown.tellp() > 0 ? ", " : "") << "'" << label.name << "' (value " << label.value << ")";
      continue;
    }
    mapping.emplace_back(label.value, found->second);
  }
  std::ostringstream classList;
  for (int32_t k = 1; k < classes; ++k)
    classList << (k > 1 ? ", " : "") << info.classes[k].name;
  if (unknown.tellp() > 0)
  {
    itkGenericExceptionMacro(<< source << ": label(s) " << unknown.str() << " are not classes of model '" << info.name
                             << "' (its classes: " << classList.str() << ")");
  }
  return mapping;
}

ComboSegPreparedCase
PrepareCase(const ComboSegCaseFiles & files, const cs_model_info & info, const std::vector<LabelName> & labelNames)
{
  using ImageType = Image<float, 3>;
  using LabelImageType = Image<int, 3>;
  ComboSegPreparedCase prepared;
  prepared.id = files.id;

  std::vector<ImageType::Pointer> images;
  std::vector<ComboSegChannel>    channels;
  for (size_t c = 0; c < files.channels.size(); ++c)
  {
    images.push_back(ReadScan<ImageType>(files.channels[c]));
    ComboSegChannel channel;
    channel.values = images.back()->GetBufferPointer();
    channel.grid = ComboSegGridOf(images.back().GetPointer());
    channel.source = "case " + files.id + " channel " + std::to_string(c) + " (" + files.channels[c] + ")";
    channels.push_back(channel);
  }
  ComboSegGrid modelGrid;
  ComboSegPrepareChannels(channels, info, nullptr, modelGrid, prepared.image);
  for (int d = 0; d < 3; ++d)
    prepared.size[d] = modelGrid.size[d];
  prepared.outsideBody = OutsideBodyOnModelGrid(channels, info, modelGrid);
  if (files.labels.empty())
  {
    return prepared;
  }

  if (!ComboSegIsFolder(files.labels))
  {
    const unsigned int layers = LabelLayers(files.labels);
    if (layers > 1)
      itkGenericExceptionMacro(<< "label map " << files.labels << " holds " << layers
                               << " layers: its segments overlap (a Slicer segmentation whose segments share "
                                  "voxels). Training needs one structure per voxel: remove the overlaps (e.g. "
                                  "Segment Editor with \"Modify other segments: overwrite all\") and save again");
  }
  LabelImageType::Pointer labelImage = ReadScan<LabelImageType>(files.labels);
  const ComboSegGrid      labelGrid = ComboSegGridOf(labelImage.GetPointer());
  // A label map on another grid (cropped to its structures, as Slicer's crop to extent writes
  // it, or another spacing) is resampled by nearest neighbour below, as long as every structure
  // lies on the scan.
  if (!ComboSegSameLattice(channels[0].grid, labelGrid))
  {
    const int64_t outside = LabelledVoxelsOutside(labelImage->GetBufferPointer(), labelGrid, channels[0].grid);
    if (outside > 0)
      itkGenericExceptionMacro(<< "label map " << files.labels << ": " << outside
                               << " labelled voxel(s) lie outside its scan " << files.channels[0]
                               << " (is it the scan's label map?): " << ComboSegGridToString(labelGrid) << " versus "
                               << ComboSegGridToString(channels[0].grid));
  }
  images.clear();

  // A Slicer segmentation names its own segments; otherwise the data set's names, else values.
  std::vector<LabelName> names;
  if (ComboSegEndsWithNoCase(files.labels, ".nrrd") || ComboSegEndsWithNoCase(files.labels, ".nhdr"))
    names = ReadLabelNames(files.labels);
  if (names.empty())
    names = labelNames;
  const auto                 mapping = ComboSegMapLabelValues(names, info, "label map " + files.labels);
  std::map<int32_t, int32_t> classOf(mapping.begin(), mapping.end());

  const int64_t        n = labelGrid.NumberOfVoxels();
  std::vector<int32_t> classes(static_cast<size_t>(n));
  const int *          values = labelImage->GetBufferPointer();
  if (std::all_of(values, values + n, [](int v) { return v == 0; }))
    itkGenericExceptionMacro(<< "label map " << files.labels << " holds no structure: every voxel is 0 (background)");
  std::set<int32_t> unknown;
  for (int64_t i = 0; i < n; ++i)
  {
    const auto found = classOf.find(values[i]);
    if (found == classOf.end())
      unknown.insert(values[i]);
    else
      classes[static_cast<size_t>(i)] = found->second;
  }
  if (!unknown.empty())
  {
    std::ostringstream list;
    for (int32_t v : unknown)
      list << (list.tellp() > 0 ? ", " : "") << v;
    itkGenericExceptionMacro(<< "label map " << files.labels << ": label value(s) " << list.str()
                             << (names.empty() ? " are not label values of model '" + std::string(info.name) + "'"
                                               : std::string(" have no name"))
                             << " in the model's classes");
  }
  prepared.labels.resize(static_cast<size_t>(modelGrid.NumberOfVoxels()));
  ComboSegResampleNearest(prepared.labels.data(), modelGrid, classes.data(), labelGrid, 0);
  return prepared;
}

} // end namespace itk
