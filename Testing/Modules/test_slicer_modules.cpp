// test_slicer_modules.cpp - the CLI modules driven the way 3D Slicer drives them.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cs_slicer_harness.h"
#include "cs_test_data.h"
#include "cs_test_model.h"

#include "itkImage.h"
#include "itkImageFileReader.h"
#include "itkImageFileWriter.h"
#include "itkMetaDataObject.h"
#include "itkNrrdImageIO.h"

#include <vtkNew.h>
#include <vtkPolyData.h>
#include <vtkPolyDataReader.h>

namespace
{

using FloatImage = itk::Image<float, 3>;
using LabelImage = itk::Image<short, 3>;

const std::vector<std::string> kModules = {"ComboSegSegment", "ComboSegEvaluate", "ComboSegTrain"};

std::string ReadFile(const std::string &path)
{
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The module's XML as Slicer gets it: `exe --xml`.
std::unique_ptr<slicer::Node> ModuleXml(const std::string &module)
{
  const slicer::RunResult r = slicer::Run({slicer::ModulePath(module), "--xml"}, 30);
  EXPECT_EQ(r.exitCode, 0) << r.err;
  std::string error;
  auto xml = slicer::ParseXml(r.out, error);
  EXPECT_TRUE(xml) << module << " --xml is not well-formed: " << error;
  return xml;
}

// A non-identity geometry: anisotropic spacing, rotated axes, offset origin (LPS, as ITK holds it).
template <typename TImage>
typename TImage::Pointer MakeImage(long nx, long ny, long nz)
{
  auto image = TImage::New();
  typename TImage::RegionType region;
  region.SetSize({{size_t(nx), size_t(ny), size_t(nz)}});
  image->SetRegions(region);
  const double spacing[3] = {1.2, 0.9, 1.5};
  image->SetSpacing(spacing);
  const double origin[3] = {-20.5, 14.25, 7.0};
  image->SetOrigin(origin);
  typename TImage::DirectionType d;
  const double c = std::cos(0.3), s = std::sin(0.3);
  d(0, 0) = c;
  d(0, 1) = -s;
  d(0, 2) = 0;
  d(1, 0) = s;
  d(1, 1) = c;
  d(1, 2) = 0;
  d(2, 0) = 0;
  d(2, 1) = 0;
  d(2, 2) = -1; // mirrored: as Slicer volumes often are
  image->SetDirection(d);
  image->Allocate();
  image->FillBuffer(0);
  return image;
}

// Writes an image as Slicer does for CLI inputs: uncompressed NRRD.
template <typename TImage>
void WriteNrrd(const TImage *image, const std::string &path)
{
  auto writer = itk::ImageFileWriter<TImage>::New();
  writer->SetImageIO(itk::NrrdImageIO::New());
  writer->SetInput(image);
  writer->SetFileName(path);
  writer->SetUseCompression(false);
  writer->Update();
}

template <typename TImage>
typename TImage::Pointer ReadImage(const std::string &path)
{
  auto reader = itk::ImageFileReader<TImage>::New();
  reader->SetImageIO(itk::NrrdImageIO::New());
  reader->SetFileName(path);
  reader->Update();
  return reader->GetOutput();
}

template <typename A, typename B>
void ExpectSameGeometry(const A *a, const B *b)
{
  EXPECT_EQ(a->GetLargestPossibleRegion().GetSize(), b->GetLargestPossibleRegion().GetSize());
  for (int i = 0; i < 3; ++i)
  {
    EXPECT_NEAR(a->GetSpacing()[i], b->GetSpacing()[i], 1e-5);
    EXPECT_NEAR(a->GetOrigin()[i], b->GetOrigin()[i], 1e-4);
    for (int j = 0; j < 3; ++j)
      EXPECT_NEAR(a->GetDirection()(i, j), b->GetDirection()(i, j), 1e-5);
  }
}

std::string MetaString(const itk::MetaDataDictionary &dict, const std::string &key)
{
  std::string value;
  if (!itk::ExposeMetaData<std::string>(dict, key, value))
    return "<missing " + key + ">";
  return value;
}

void ExpectProgressRisesToOne(const std::string &out)
{
  const std::vector<double> progress = slicer::ProgressValues(out);
  ASSERT_GE(progress.size(), 3u) << out;
  EXPECT_DOUBLE_EQ(progress.front(), 0.0);
  EXPECT_DOUBLE_EQ(progress.back(), 1.0);
  for (size_t i = 1; i < progress.size(); ++i)
    EXPECT_GE(progress[i], progress[i - 1]) << "progress went back at value " << i;
  EXPECT_NE(out.find("<filter-start>"), std::string::npos);
  EXPECT_NE(out.find("<filter-end>"), std::string::npos);
}

// Shared by the Segment tests: a model file and a blob volume with a non-identity geometry.
class SegmentModule : public ::testing::Test
{
protected:
  static void SetUpTestSuite()
  {
    s_Dir = new slicer::TempDir;
    s_Model = s_Dir->Path() + "/test-blobs.safetensors";
    cstest::MakeTestModel(s_Model);
  }
  static void TearDownTestSuite()
  {
    delete s_Dir;
    s_Dir = nullptr;
  }
  FloatImage::Pointer Blobs(long nx, long ny, long nz)
  {
    auto image = MakeImage<FloatImage>(nx, ny, nz);
    std::vector<float> values;
    std::vector<int32_t> labels;
    cstest::MakeBlobs(nx, ny, nz, values, labels);
    std::copy(values.begin(), values.end(), image->GetBufferPointer());
    return image;
  }
  static slicer::TempDir *s_Dir;
  static std::string s_Model;
};
slicer::TempDir *SegmentModule::s_Dir = nullptr;
std::string SegmentModule::s_Model;

} // namespace

// ---------------------------------------------------------------------------------------------
// What Slicer does at start-up: probe each executable with --xml and build its panel.

class ModuleDescription : public ::testing::TestWithParam<std::string>
{
};

TEST_P(ModuleDescription, XmlAnswersQuicklyAndKeepsSlicersRules)
{
  const std::string exe = slicer::ModulePath(GetParam());
  if (!slicer::Exists(exe))
  {
    if (GetParam() == "ComboSegTrain")
      GTEST_SKIP() << "ComboSegTrain is not built in this tree";
    FAIL() << exe << " is missing from the build tree's cli-modules folder";
  }
  const slicer::RunResult r = slicer::Run({exe, "--xml"}, 30);
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_LT(r.seconds, 5.0) << "Slicer gives --xml 5 s";
  ASSERT_EQ(r.out.compare(0, 5, "<?xml"), 0) << "--xml output must start with <?xml";
  std::string error;
  auto xml = slicer::ParseXml(r.out, error);
  ASSERT_TRUE(xml) << "not well-formed: " << error;
  for (const std::string &problem : slicer::CheckModuleXml(*xml))
    ADD_FAILURE() << GetParam() << ": " << problem;
  // The embedded XML is the source file, byte for byte.
  const std::string source = std::string(COMBOSEG_SOURCE_DIR) + "/ComboSegModule/" + GetParam() + "/" + GetParam() +
                             ".xml";
  EXPECT_EQ(r.out, ReadFile(source));
}

TEST_P(ModuleDescription, HelpIsGeneratedFromTheXml)
{
  const std::string exe = slicer::ModulePath(GetParam());
  if (!slicer::Exists(exe))
    GTEST_SKIP() << exe << " not built";
  auto xml = ModuleXml(GetParam());
  ASSERT_TRUE(xml);
  const slicer::RunResult r = slicer::Run({exe, "--help"}, 30);
  ASSERT_EQ(r.exitCode, 0) << r.err;
  for (const auto &section : xml->children)
    for (const auto &p : section->children)
      if (p->Child("longflag"))
        EXPECT_NE(r.out.find("--" + slicer::StripDashes(p->ChildText("longflag"))), std::string::npos)
            << "--help does not mention " << p->ChildText("longflag");
}

TEST_P(ModuleDescription, RefusesUnknownOptionsWithAMessage)
{
  const std::string exe = slicer::ModulePath(GetParam());
  if (!slicer::Exists(exe))
    GTEST_SKIP() << exe << " not built";
  const slicer::RunResult r = slicer::Run({exe, "--noSuchOption", "1", "a", "b"}, 30);
  EXPECT_NE(r.exitCode, 0);
  EXPECT_NE(r.err.find("noSuchOption"), std::string::npos) << r.err;
}

INSTANTIATE_TEST_SUITE_P(SlicerModules, ModuleDescription, ::testing::ValuesIn(kModules));

// ---------------------------------------------------------------------------------------------
// ComboSegSegment

TEST_F(SegmentModule, RunsLikeSlicerAndOutputsLoadWithGeometryAndNames)
{
  auto xml = ModuleXml("ComboSegSegment");
  ASSERT_TRUE(xml);
  slicer::TempDir tmp;
  FloatImage::Pointer input = Blobs(40, 36, 24);
  const std::string inputFile = tmp.NodeFile("vtkMRMLScalarVolumeNode1", ".nrrd");
  WriteNrrd(input.GetPointer(), inputFile);
  const std::string output = tmp.NodeFile("vtkMRMLLabelMapVolumeNode1", ".nrrd");
  const std::string colors = tmp.NodeFile("vtkMRMLColorTableNode1", ".ctbl");
  const std::string preview = tmp.Path() + "/preview.png";
  const std::string surfaces = tmp.Path() + "/surfaces";
  const std::string returns = tmp.Path() + "/returns.params";
  const std::vector<std::string> argv = slicer::BuildCommandLine(slicer::ModulePath("ComboSegSegment"), *xml,
                                                                 {{"inputVolume", inputFile},
                                                                  {"modelFile", s_Model},
                                                                  {"overlap", "0.25"},
                                                                  {"largestComponent", "true"},
                                                                  {"fillHoles", "false"},
                                                                  {"threads", "2"},
                                                                  {"outputLabelMap", output},
                                                                  {"outputColorTable", colors},
                                                                  {"surfaceDirectory", surfaces},
                                                                  {"previewImage", preview}},
                                                                 returns);
  const slicer::RunResult r = slicer::Run(argv, 300);
  ASSERT_EQ(r.exitCode, 0) << slicer::Join(argv) << "\n" << r.out << r.err;
  ExpectProgressRisesToOne(r.out);

  // The label map: the input's geometry, the model's names, colours and values.
  auto labels = ReadImage<LabelImage>(output);
  ExpectSameGeometry(labels.GetPointer(), input.GetPointer());
  const itk::MetaDataDictionary &dict = labels->GetMetaDataDictionary();
  EXPECT_EQ(MetaString(dict, "Segment0_Name"), "left blob");
  EXPECT_EQ(MetaString(dict, "Segment0_LabelValue"), "5");
  EXPECT_EQ(MetaString(dict, "Segment1_Name"), "right blob");
  EXPECT_EQ(MetaString(dict, "Segment1_LabelValue"), "9");
  EXPECT_EQ(MetaString(dict, "Segment0_Layer"), "0");
  EXPECT_EQ(MetaString(dict, "Segment0_ID"), "Segment_5");
  float r0, g0, b0;
  ASSERT_EQ(std::sscanf(MetaString(dict, "Segment0_Color").c_str(), "%f %f %f", &r0, &g0, &b0), 3);
  EXPECT_NEAR(r0, 230 / 255.0, 1e-4);
  EXPECT_NEAR(b0, 40 / 255.0, 1e-4);
  EXPECT_EQ(MetaString(dict, "Segmentation_MasterRepresentation"), "Binary labelmap");
  std::map<int, long> counts;
  const size_t n = labels->GetPixelContainer()->Size();
  for (size_t i = 0; i < n; ++i)
    ++counts[labels->GetBufferPointer()[i]];
  for (const auto &c : counts)
    EXPECT_TRUE(c.first == 0 || c.first == 5 || c.first == 9) << "unexpected label value " << c.first;
  // Extent keys bound the voxels of each segment.
  long e[6];
  const std::string extent = MetaString(dict, "Segment0_Extent");
  ASSERT_EQ(std::sscanf(extent.c_str(), "%ld %ld %ld %ld %ld %ld", &e[0], &e[1], &e[2], &e[3], &e[4], &e[5]), 6);
  if (counts[5] > 0)
    EXPECT_LE(e[0], e[1]);

  // Colour table: `value name R G B A`.
  const std::string table = ReadFile(colors);
  EXPECT_NE(table.find("5 left_blob 230 40 40 255"), std::string::npos) << table;
  EXPECT_NE(table.find("9 right_blob 40 90 230 255"), std::string::npos) << table;

  // Preview PNG.
  const std::string png = ReadFile(preview);
  ASSERT_GT(png.size(), 24u);
  EXPECT_EQ(png.compare(0, 8, "\x89PNG\r\n\x1a\n"), 0);

  // Return parameters: volumes agree with the label map.
  const auto values = slicer::ReadReturnParameters(returns);
  ASSERT_TRUE(values.count("structureVolumes") && values.count("numberOfStructures") && values.count("elapsedSeconds"));
  const int found = std::atoi(values.at("numberOfStructures").c_str());
  EXPECT_EQ(found, int(counts.count(5) && counts[5] > 0) + int(counts.count(9) && counts[9] > 0));
  EXPECT_GT(std::atof(values.at("elapsedSeconds").c_str()), 0.0);
  const double voxelMl = 1.2 * 0.9 * 1.5 / 1000.0;
  const std::string volumes = values.at("structureVolumes");
  const size_t at = volumes.find("left blob: ");
  ASSERT_NE(at, std::string::npos) << volumes;
  EXPECT_NEAR(std::atof(volumes.c_str() + at + 11), counts[5] * voxelMl, 1e-4 + 1e-5 * counts[5] * voxelMl);

  // Surfaces: one .vtk per structure found, in RAS, labelled so for Slicer.
  for (const auto &c : counts)
  {
    if (c.first == 0)
      continue;
    const std::string file = surfaces + "/" + std::to_string(c.first) +
                             (c.first == 5 ? "_left_blob.vtk" : "_right_blob.vtk");
    ASSERT_TRUE(slicer::Exists(file)) << file;
    vtkNew<vtkPolyDataReader> reader;
    reader->SetFileName(file.c_str());
    reader->Update();
    EXPECT_NE(std::string(reader->GetHeader() ? reader->GetHeader() : "").find("SPACE=RAS"), std::string::npos);
    EXPECT_GT(reader->GetOutput()->GetNumberOfPolys(), 0);
    // RAS bounds within the volume's RAS box.
    double bounds[6];
    reader->GetOutput()->GetBounds(bounds);
    itk::ContinuousIndex<double, 3> corner;
    double lo[3] = {1e9, 1e9, 1e9}, hi[3] = {-1e9, -1e9, -1e9};
    for (int m = 0; m < 8; ++m)
    {
      corner[0] = (m & 1) ? 39.5 : -0.5;
      corner[1] = (m & 2) ? 35.5 : -0.5;
      corner[2] = (m & 4) ? 23.5 : -0.5;
      FloatImage::PointType p;
      input->TransformContinuousIndexToPhysicalPoint(corner, p);
      const double ras[3] = {-p[0], -p[1], p[2]};
      for (int d = 0; d < 3; ++d)
      {
        lo[d] = std::min(lo[d], ras[d]);
        hi[d] = std::max(hi[d], ras[d]);
      }
    }
    for (int d = 0; d < 3; ++d)
    {
      EXPECT_GE(bounds[2 * d], lo[d] - 1e-3);
      EXPECT_LE(bounds[2 * d + 1], hi[d] + 1e-3);
    }
  }
}

// Names and colours reach Slicer only through a Segmentation node: the output's description says
// to choose "Create new Segmentation"; with it (a .seg.nrrd temporary path) the segments load with
// their names, colours and values; a LabelMap output gets the voxels, and names only from the
// colour table written beside it.
TEST_F(SegmentModule, OutputReachesSlicerAsASegmentationOrAsALabelMapWithItsColourTable)
{
  auto xml = ModuleXml("ComboSegSegment");
  ASSERT_TRUE(xml);
  std::string outputDescription; // what the panel shows for the output
  for (const auto &section : xml->children)
    for (const auto &p : section->children)
      if (p->ChildText("name") == "outputLabelMap")
        outputDescription = p->ChildText("description");
  EXPECT_NE(outputDescription.find("Create new Segmentation"), std::string::npos) << outputDescription;

  slicer::TempDir tmp;
  const std::string inputFile = tmp.NodeFile("vtkMRMLScalarVolumeNode1", ".nrrd");
  WriteNrrd(Blobs(40, 36, 24).GetPointer(), inputFile);
  const std::string segmentation = tmp.NodeFile("vtkMRMLSegmentationNode1", ".seg.nrrd");
  const std::string labelMap = tmp.NodeFile("vtkMRMLLabelMapVolumeNode1", ".nrrd");
  const std::string colors = tmp.NodeFile("vtkMRMLColorTableNode1", ".ctbl");
  for (const auto &outputs : std::vector<std::map<std::string, std::string>>{
           {{"outputLabelMap", segmentation}}, {{"outputLabelMap", labelMap}, {"outputColorTable", colors}}})
  {
    std::map<std::string, std::string> values = {{"inputVolume", inputFile}, {"modelFile", s_Model}, {"threads", "2"}};
    values.insert(outputs.begin(), outputs.end());
    const auto argv =
        slicer::BuildCommandLine(slicer::ModulePath("ComboSegSegment"), *xml, values, tmp.Path() + "/returns.params");
    const slicer::RunResult r = slicer::Run(argv, 300);
    ASSERT_EQ(r.exitCode, 0) << slicer::Join(argv) << "\n" << r.out << r.err;
  }

  const std::vector<slicer::SegmentationSegment> segments = slicer::LoadAsSegmentationNode(segmentation);
  ASSERT_EQ(segments.size(), 2u);
  EXPECT_EQ(segments[0].name, "left blob");
  EXPECT_EQ(segments[0].labelValue, 5);
  EXPECT_EQ(segments[1].name, "right blob");
  EXPECT_EQ(segments[1].labelValue, 9);
  EXPECT_NEAR(segments[1].color[2], 230 / 255.0, 1e-4);
  auto voxels = ReadImage<LabelImage>(segmentation);
  for (size_t i = 0; i < voxels->GetPixelContainer()->Size(); ++i)
    ASSERT_TRUE(voxels->GetBufferPointer()[i] == 0 || voxels->GetBufferPointer()[i] == 5 ||
                voxels->GetBufferPointer()[i] == 9);

  auto labels = ReadImage<LabelImage>(labelMap);
  ASSERT_EQ(labels->GetPixelContainer()->Size(), voxels->GetPixelContainer()->Size());
  EXPECT_TRUE(std::equal(labels->GetBufferPointer(), labels->GetBufferPointer() + labels->GetPixelContainer()->Size(),
                         voxels->GetBufferPointer()))
      << "both outputs hold the same labels";
  const std::map<int, std::string> names = slicer::LabelMapNames(colors);
  ASSERT_TRUE(names.count(5) && names.count(9));
  EXPECT_EQ(names.at(5), "left_blob");
  EXPECT_EQ(names.at(9), "right_blob");
}

// Bundled models are found relative to the executable: a copy of it in a tree whose models folder
// is empty finds none, and must say which file it looked for, and where.
TEST_F(SegmentModule, MissingBundledModelIsAnErrorNamingTheFile)
{
  auto xml = ModuleXml("ComboSegSegment");
  ASSERT_TRUE(xml);
  slicer::TempDir tmp;
  // Deep enough that the install tree's relative models folder also lies inside tmp.
  const std::string tree = tmp.Path() + "/a/b/c/d/e";
  const std::string cliDir = tree + "/cli-modules", modelsDir = tree + "/Resources/Models";
  std::filesystem::create_directories(cliDir);
  std::filesystem::create_directories(modelsDir);
  const std::string exe = cliDir + "/ComboSegSegment";
  std::filesystem::copy_file(slicer::ModulePath("ComboSegSegment"), exe);
  const std::string inputFile = tmp.NodeFile("vtkMRMLScalarVolumeNode1", ".nrrd");
  WriteNrrd(Blobs(16, 16, 16).GetPointer(), inputFile);
  const std::string output = tmp.NodeFile("vtkMRMLLabelMapVolumeNode1", ".nrrd");
  const auto argv = slicer::BuildCommandLine(exe, *xml, {{"inputVolume", inputFile}, {"outputLabelMap", output}}, "");
  const slicer::RunResult r = slicer::Run(argv, 60);
  EXPECT_EQ(r.exitCode, 1) << r.err;
  EXPECT_NE(r.err.find(cliDir + "/../Resources/Models/brain-structures-t1.safetensors"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--modelFile"), std::string::npos) << r.err;
  EXPECT_FALSE(slicer::Exists(output));
}

TEST_F(SegmentModule, RefusesBadValuesBeforeLoadingAnything)
{
  auto xml = ModuleXml("ComboSegSegment");
  ASSERT_TRUE(xml);
  for (const auto &bad : std::vector<std::pair<std::string, std::string>>{
           {"overlap", "half"}, {"overlap", "0.99"}, {"threads", "2.5"}, {"model", "no-such-model"}})
  {
    const auto argv = slicer::BuildCommandLine(
        slicer::ModulePath("ComboSegSegment"), *xml,
        {{bad.first, bad.second}, {"inputVolume", "/nonexistent/in.nrrd"}, {"outputLabelMap", "/nonexistent/out.nrrd"}},
        "");
    const slicer::RunResult r = slicer::Run(argv, 30);
    EXPECT_EQ(r.exitCode, 1) << bad.first << "=" << bad.second;
    EXPECT_NE(r.err.find(bad.first), std::string::npos) << r.err;
  }
}

TEST_F(SegmentModule, KilledMidRunLeavesNoOutputUnderItsName)
{
  auto xml = ModuleXml("ComboSegSegment");
  ASSERT_TRUE(xml);
  slicer::TempDir tmp;
  const std::string inputFile = tmp.NodeFile("vtkMRMLScalarVolumeNode1", ".nrrd");
  WriteNrrd(Blobs(112, 112, 96).GetPointer(), inputFile);
  const std::string output = tmp.NodeFile("vtkMRMLLabelMapVolumeNode1", ".nrrd");
  const auto argv = slicer::BuildCommandLine(slicer::ModulePath("ComboSegSegment"), *xml,
                                             {{"inputVolume", inputFile},
                                              {"modelFile", s_Model},
                                              {"overlap", "0.75"},
                                              {"threads", "1"},
                                              {"outputLabelMap", output}},
                                             tmp.Path() + "/returns.params");
  // Cancel as Slicer does (hard kill) once inference is under way.
  const slicer::RunResult r = slicer::Run(argv, 300, [](const std::string &out) {
    const std::vector<double> p = slicer::ProgressValues(out);
    return !p.empty() && p.back() > 0.06 && p.back() < 0.8;
  });
  ASSERT_EQ(r.signal, SIGKILL) << "the run ended before it could be killed:\n" << r.out;
  EXPECT_FALSE(slicer::Exists(output));
  EXPECT_FALSE(slicer::Exists(tmp.Path() + "/returns.params"));
}

// A run killed while writing leaves its temporary "<output>.tmp-<pid>" (a file, or a folder for
// formats written through ITK's IO factories) beside the output; the next run that writes the same
// output removes it (its process is gone), and only it.
TEST_F(SegmentModule, ASuccessfulRunRemovesTheTemporariesOfKilledRuns)
{
  auto xml = ModuleXml("ComboSegSegment");
  ASSERT_TRUE(xml);
  slicer::TempDir tmp;
  const std::string inputFile = tmp.NodeFile("vtkMRMLScalarVolumeNode1", ".nrrd");
  WriteNrrd(Blobs(24, 20, 16).GetPointer(), inputFile);
  const std::string output = tmp.NodeFile("vtkMRMLLabelMapVolumeNode1", ".nrrd");
  auto deadProcess = []() {
    const pid_t child = fork();
    if (child == 0)
      _exit(0);
    waitpid(child, nullptr, 0);
    return child;
  };
  const std::string stale = output + ".tmp-" + std::to_string(deadProcess());
  const std::string staleFolder = output + ".tmp-" + std::to_string(deadProcess());
  const std::string live = output + ".tmp-" + std::to_string(getppid());
  for (const std::string &f : {stale, live})
    std::ofstream(f) << "partial";
  std::filesystem::create_directories(staleFolder);
  std::ofstream(staleFolder + "/labels.mha") << "partial";
  const auto argv = slicer::BuildCommandLine(
      slicer::ModulePath("ComboSegSegment"), *xml,
      {{"inputVolume", inputFile}, {"modelFile", s_Model}, {"outputLabelMap", output}}, tmp.Path() + "/returns.params");
  const slicer::RunResult r = slicer::Run(argv, 300);
  ASSERT_EQ(r.exitCode, 0) << r.out;
  EXPECT_TRUE(slicer::Exists(output));
  EXPECT_FALSE(slicer::Exists(stale)) << "left by a dead process: removed";
  EXPECT_FALSE(slicer::Exists(staleFolder)) << "a dead process's temporary folder: removed";
  EXPECT_TRUE(slicer::Exists(live)) << "a running process's temporary is left alone";
}

// Issue 16 item 5: a corrupted model's field reaches the user escaped (not as raw terminal
// control bytes), and the message leads with the problem, not with a source file and line.
TEST_F(SegmentModule, CorruptModelFieldIsShownEscapedWithoutSourceLocation)
{
  auto xml = ModuleXml("ComboSegSegment");
  ASSERT_TRUE(xml);
  slicer::TempDir tmp;
  std::string bytes;
  {
    std::ifstream in(s_Model, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  ASSERT_GT(bytes.size(), 8u);
  uint64_t headerLength = 0;
  for (int i = 7; i >= 0; --i)
    headerLength = headerLength << 8 | static_cast<unsigned char>(bytes[i]);
  std::string header = bytes.substr(8, headerLength);
  const std::string field = "\"spatial_dims\":\"3";
  const size_t at = header.find(field);
  ASSERT_NE(at, std::string::npos) << header.substr(0, 200);
  // An ESC sequence after the value; spaces keep the data 8-byte aligned.
  header.insert(at + field.size(), "\\u001b[31m");
  header.append(6, ' ');
  std::string corrupt(8, '\0');
  for (int i = 0; i < 8; ++i)
    corrupt[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  corrupt += header + bytes.substr(8 + headerLength);
  const std::string model = tmp.Path() + "/corrupt.safetensors";
  std::ofstream(model, std::ios::binary) << corrupt;

  const std::string inputFile = tmp.NodeFile("vtkMRMLScalarVolumeNode1", ".nrrd");
  WriteNrrd(Blobs(16, 16, 16).GetPointer(), inputFile);
  const std::string output = tmp.NodeFile("vtkMRMLLabelMapVolumeNode1", ".nrrd");
  const auto argv =
      slicer::BuildCommandLine(slicer::ModulePath("ComboSegSegment"), *xml,
                               {{"inputVolume", inputFile}, {"modelFile", model}, {"outputLabelMap", output}}, "");
  const slicer::RunResult r = slicer::Run(argv, 60);
  EXPECT_EQ(r.exitCode, 1) << r.err;
  EXPECT_NE(r.err.find("spatial_dims"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("3\\x1B[31m"), std::string::npos) << "the ESC byte escaped: " << r.err;
  EXPECT_EQ(r.err.find('\x1b'), std::string::npos) << "a raw ESC byte reached the terminal";
  EXPECT_EQ(r.err.find(".cxx:"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("ITK ERROR"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.rfind("ComboSeg Segment error: ", 0), 0u) << r.err;
}

// ---------------------------------------------------------------------------------------------
// ComboSegEvaluate: a synthetic case whose measures are computed by hand.

TEST(EvaluateModule, AgreesWithHandComputedMeasures)
{
  auto xml = ModuleXml("ComboSegEvaluate");
  ASSERT_TRUE(xml);
  slicer::TempDir tmp;
  auto reference = MakeImage<LabelImage>(20, 18, 16);
  auto predicted = MakeImage<LabelImage>(20, 18, 16);
  auto fill = [](LabelImage *image, short value, int x0, int x1, int y0, int y1, int z0, int z1) {
    for (int z = z0; z <= z1; ++z)
      for (int y = y0; y <= y1; ++y)
        for (int x = x0; x <= x1; ++x)
          image->SetPixel({{x, y, z}}, value);
  };
  fill(reference, 1, 2, 9, 2, 9, 2, 9);      // 8^3 = 512 voxels
  fill(predicted, 1, 4, 11, 2, 9, 2, 9);     // shifted 2 voxels in x: 6*8*8 = 384 shared
  fill(reference, 2, 13, 17, 11, 15, 3, 12); // identical in both: 5*5*10 = 250
  fill(predicted, 2, 13, 17, 11, 15, 3, 12);
  fill(predicted, 3, 1, 2, 14, 15, 13, 14); // only predicted: 8 voxels
  const std::string refFile = tmp.NodeFile("vtkMRMLLabelMapVolumeNode1", ".nrrd");
  const std::string predFile = tmp.NodeFile("vtkMRMLLabelMapVolumeNode2", ".nrrd");
  WriteNrrd(reference.GetPointer(), refFile);
  WriteNrrd(predicted.GetPointer(), predFile);
  const std::string names = tmp.Path() + "/names.ctbl";
  std::ofstream(names) << "0 Background 0 0 0 0\n1 liver 200 100 80 255\n2 spleen 90 40 200 255\n3 stray 1 2 3 255\n";
  const std::string tableFile = tmp.NodeFile("vtkMRMLTableNode1", ".tsv");
  const std::string returns = tmp.Path() + "/returns.params";
  const auto argv = slicer::BuildCommandLine(slicer::ModulePath("ComboSegEvaluate"), *xml,
                                             {{"referenceLabelMap", refFile},
                                              {"predictedLabelMap", predFile},
                                              {"namesFile", names},
                                              {"outputTable", tableFile}},
                                             returns);
  const slicer::RunResult r = slicer::Run(argv, 120);
  ASSERT_EQ(r.exitCode, 0) << slicer::Join(argv) << "\n" << r.out << r.err;
  ExpectProgressRisesToOne(r.out);

  std::ifstream in(tableFile);
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  std::vector<std::string> header;
  {
    std::stringstream s(line);
    std::string cell;
    while (std::getline(s, cell, '\t'))
      header.push_back(cell);
  }
  std::map<std::string, std::map<std::string, std::string>> rows; // name -> column -> value
  while (std::getline(in, line))
  {
    std::stringstream s(line);
    std::string cell;
    std::map<std::string, std::string> row;
    for (size_t c = 0; std::getline(s, cell, '\t'); ++c)
      row[header.at(c)] = cell;
    rows[row["Name"]] = row;
  }
  ASSERT_EQ(rows.size(), 3u);
  auto num = [&rows](const std::string &name, const std::string &column) {
    return std::atof(rows.at(name).at(column).c_str());
  };
  const double total = 20 * 18 * 16;
  EXPECT_NEAR(num("liver", "Dice"), 2.0 * 384 / (512 + 512), 1e-6);
  EXPECT_NEAR(num("liver", "Jaccard"), 384.0 / (512 + 512 - 384), 1e-6);
  EXPECT_NEAR(num("liver", "Precision"), 384.0 / 512, 1e-6);
  EXPECT_NEAR(num("liver", "Recall"), 384.0 / 512, 1e-6);
  EXPECT_NEAR(num("liver", "FalsePositiveRate"), 128.0 / (total - 512), 1e-6);
  EXPECT_NEAR(num("liver", "FalseNegativeRate"), 128.0 / 512, 1e-6);
  EXPECT_NEAR(num("liver", "ReferenceVolume_ml"), 512 * 1.2 * 0.9 * 1.5 / 1000, 1e-5);
  // Shifted by 2 voxels of 1.2 mm along x: boundary distances lie in (0, 2.4] mm.
  EXPECT_GT(num("liver", "Hausdorff95_mm"), 0.0);
  EXPECT_LE(num("liver", "Hausdorff95_mm"), 2.4 + 1e-4);
  EXPECT_GT(num("liver", "MeanSurfaceDistance_mm"), 0.0);
  EXPECT_LT(num("liver", "MeanSurfaceDistance_mm"), num("liver", "Hausdorff95_mm") + 1e-6);
  EXPECT_NEAR(num("spleen", "Dice"), 1.0, 1e-9);
  EXPECT_NEAR(num("spleen", "Hausdorff95_mm"), 0.0, 1e-6);
  EXPECT_NEAR(num("spleen", "MeanSurfaceDistance_mm"), 0.0, 1e-6);
  EXPECT_NEAR(num("stray", "Dice"), 0.0, 1e-9);
  EXPECT_EQ(rows.at("stray").at("Hausdorff95_mm"), "nan");
  EXPECT_EQ(rows.at("stray").at("PredictedVoxels"), "8");

  const auto values = slicer::ReadReturnParameters(returns);
  EXPECT_NEAR(std::atof(values.at("meanDice").c_str()), (0.75 + 1.0) / 2, 1e-6);
  EXPECT_EQ(values.at("numberOfStructures"), "3");
}

// --allStructures adds a row for all structures merged (e.g. the whole tumour): any label counts
// against any label, so swapped labels are wrong per structure and right as a whole.
// The table's folder and format are checked before the label maps are read (which do not exist).
TEST(EvaluateModule, TableLocationIsCheckedBeforeTheMapsAreRead)
{
  slicer::TempDir tmp;
  for (const std::string &table : {tmp.Path() + "/nope/measures.tsv", tmp.Path() + "/measures.csv"})
  {
    const slicer::RunResult r = slicer::Run({slicer::ModulePath("ComboSegEvaluate"), "--outputTable", table,
                                             tmp.Path() + "/missing-reference.nrrd", tmp.Path() + "/missing-test.nrrd"},
                                            60);
    EXPECT_EQ(r.exitCode, 1) << table;
    EXPECT_NE(r.err.find(table.find("nope") != std::string::npos ? tmp.Path() + "/nope" : table), std::string::npos)
        << r.err;
    EXPECT_EQ(r.err.find("missing"), std::string::npos) << "a map was read first: " << r.err;
  }
}

TEST(EvaluateModule, AllStructuresRowMergesEveryLabel)
{
  slicer::TempDir tmp;
  auto reference = MakeImage<LabelImage>(20, 18, 16);
  auto predicted = MakeImage<LabelImage>(20, 18, 16);
  auto fill = [](LabelImage *image, short value, int x0, int x1, int y0, int y1, int z0, int z1) {
    for (int z = z0; z <= z1; ++z)
      for (int y = y0; y <= y1; ++y)
        for (int x = x0; x <= x1; ++x)
          image->SetPixel({{x, y, z}}, value);
  };
  fill(reference, 1, 2, 9, 2, 9, 2, 9);      // 512 voxels
  fill(predicted, 2, 2, 9, 2, 9, 2, 9);      // the same voxels, the other label
  fill(reference, 2, 13, 17, 11, 15, 3, 12); // 250 voxels
  fill(predicted, 1, 13, 17, 11, 15, 3, 12);
  fill(predicted, 3, 1, 2, 14, 15, 13, 14); // 8 voxels only predicted
  const std::string refFile = tmp.Path() + "/reference.nrrd", predFile = tmp.Path() + "/predicted.nrrd";
  WriteNrrd(reference.GetPointer(), refFile);
  WriteNrrd(predicted.GetPointer(), predFile);
  const std::string tableFile = tmp.Path() + "/table.tsv", returns = tmp.Path() + "/returns.params";
  const slicer::RunResult r = slicer::Run({slicer::ModulePath("ComboSegEvaluate"), "--allStructures", "--outputTable",
                                           tableFile, "--returnparameterfile", returns, refFile, predFile},
                                          120);
  ASSERT_EQ(r.exitCode, 0) << r.out << r.err;

  std::ifstream in(tableFile);
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  std::vector<std::string> header;
  {
    std::stringstream s(line);
    std::string cell;
    while (std::getline(s, cell, '\t'))
      header.push_back(cell);
  }
  std::map<std::string, std::map<std::string, std::string>> rows; // label value -> column -> value
  while (std::getline(in, line))
  {
    std::stringstream s(line);
    std::string cell;
    std::map<std::string, std::string> row;
    for (size_t c = 0; std::getline(s, cell, '\t'); ++c)
      row[header.at(c)] = cell;
    rows[row["LabelValue"]] = row;
  }
  ASSERT_EQ(rows.size(), 4u); // 1, 2, 3 and all
  ASSERT_EQ(rows.count("all"), 1u);
  const auto &all = rows.at("all");
  EXPECT_EQ(all.at("Name"), "all structures");
  EXPECT_NEAR(std::atof(all.at("Dice").c_str()), 2.0 * 762 / (762 + 770), 1e-6);
  EXPECT_NEAR(std::atof(all.at("Precision").c_str()), 762.0 / 770, 1e-6);
  EXPECT_NEAR(std::atof(all.at("Recall").c_str()), 1.0, 1e-9);
  EXPECT_NEAR(std::atof(all.at("FalseNegativeRate").c_str()), 0.0, 1e-9);
  EXPECT_EQ(all.at("ReferenceVoxels"), "762");
  EXPECT_EQ(all.at("PredictedVoxels"), "770");
  EXPECT_EQ(all.at("OverlapVoxels"), "762");
  EXPECT_NEAR(std::atof(rows.at("1").at("Dice").c_str()), 0.0, 1e-9);
  // The merged row counts in neither the mean Dice nor the number of structures.
  const auto values = slicer::ReadReturnParameters(returns);
  EXPECT_NEAR(std::atof(values.at("meanDice").c_str()), 0.0, 1e-9);
  EXPECT_EQ(values.at("numberOfStructures"), "3");
}

TEST(EvaluateModule, RealLabelMapAgainstItselfIsPerfect)
{
  CS_REQUIRE_DATA("slicer-seg/liver_spine_seg.nrrd");
  slicer::TempDir tmp;
  const std::string labels = cstest::DataPath("slicer-seg/liver_spine_seg.nrrd");
  const std::string tableFile = tmp.Path() + "/table.tsv";
  const slicer::RunResult r =
      slicer::Run({slicer::ModulePath("ComboSegEvaluate"), "--outputTable", tableFile, labels, labels}, 300);
  ASSERT_EQ(r.exitCode, 0) << r.err;
  std::ifstream in(tableFile);
  std::string line;
  ASSERT_TRUE(std::getline(in, line)); // header
  int rows = 0;
  while (std::getline(in, line))
  {
    std::vector<std::string> cells;
    std::stringstream s(line);
    std::string cell;
    while (std::getline(s, cell, '\t'))
      cells.push_back(cell);
    ASSERT_GE(cells.size(), 10u) << line;
    EXPECT_DOUBLE_EQ(std::atof(cells[2].c_str()), 1.0) << line;  // Dice
    EXPECT_NEAR(std::atof(cells[8].c_str()), 0.0, 1e-3) << line; // Hausdorff95_mm
    ++rows;
  }
  EXPECT_EQ(rows, 2); // 1 liver, 2 spine
}
