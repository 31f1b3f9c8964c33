// test_output_formats.cpp - ComboSegSegment run from a script: the label map's format follows the
// output file name (.nrrd, .nii.gz, .nii, .mha, .mhd), other names and unwritable locations are
// refused before any work, the outputs arrive all together or not at all, and the model's
// recommended clean-up is applied unless the raw output is asked for.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include <cerrno>
#include <dirent.h>
#include <sys/stat.h>

#include <gtest/gtest.h>

#include "ComboSegOutput.h"
#include "cs_slicer_harness.h"
#include "cs_test_model.h"

#include "itkImage.h"
#include "itkImageFileReader.h"
#include "itkComboSegProcessing.h"
#include "itkImageFileWriter.h"
#include "itkImageRegionIteratorWithIndex.h"
#include "itkLabelStatisticsImageFilter.h"
#include "itkMultiThreaderBase.h"
#include "itkMetaImageIOFactory.h"
#include "itkNiftiImageIOFactory.h"
#include "itkNrrdImageIOFactory.h"

namespace
{

using FloatImage = itk::Image<float, 3>;
using LabelImage = itk::Image<short, 3>;

// Names in a folder (without . and ..).
std::set<std::string> FolderEntries(const std::string &folder)
{
  std::set<std::string> names;
  if (DIR *d = opendir(folder.c_str()))
  {
    while (const dirent *e = readdir(d))
      if (std::string(e->d_name) != "." && std::string(e->d_name) != "..")
        names.insert(e->d_name);
    closedir(d);
  }
  return names;
}

// Reads through ITK's IO factories, as any ITK tool would; `ioClass` receives the IO ITK chose.
LabelImage::Pointer ReadWithFactories(const std::string &path, std::string &ioClass)
{
  auto reader = itk::ImageFileReader<LabelImage>::New();
  reader->SetFileName(path);
  reader->Update();
  ioClass = reader->GetImageIO()->GetNameOfClass();
  return reader->GetOutput();
}

// A script user's run: positional input and output, no return-parameter file.
slicer::RunResult Segment(const std::string &model, const std::string &input, const std::string &output,
                          const std::vector<std::string> &extra = {})
{
  std::vector<std::string> argv = {
      slicer::ModulePath("ComboSegSegment"), "--modelFile", model, "--threads", "2", "--overlap", "0.25"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.push_back(input);
  argv.push_back(output);
  return slicer::Run(argv, 300);
}

// One model, one input with a rotated, mirrored, anisotropic geometry, and the NRRD output every
// other format is compared with.
class SegmentOutputFormats : public ::testing::Test
{
protected:
  static void SetUpTestSuite()
  {
    // Factories of the formats under test, whether or not this executable registers them itself.
    itk::NrrdImageIOFactory::RegisterOneFactory();
    itk::NiftiImageIOFactory::RegisterOneFactory();
    itk::MetaImageIOFactory::RegisterOneFactory();
    s_Dir = new slicer::TempDir;
    s_Model = s_Dir->Path() + "/test-blobs.safetensors";
    cstest::MakeTestModel(s_Model);

    s_Input = FloatImage::New();
    FloatImage::RegionType region;
    region.SetSize({{40, 36, 24}});
    s_Input->SetRegions(region);
    const double spacing[3] = {1.2, 0.9, 1.5}, origin[3] = {-20.5, 14.25, 7.0};
    s_Input->SetSpacing(spacing);
    s_Input->SetOrigin(origin);
    FloatImage::DirectionType d;
    const double c = std::cos(0.3), s = std::sin(0.3);
    d(0, 0) = c;
    d(0, 1) = -s;
    d(0, 2) = 0;
    d(1, 0) = s;
    d(1, 1) = c;
    d(1, 2) = 0;
    d(2, 0) = 0;
    d(2, 1) = 0;
    d(2, 2) = -1;
    s_Input->SetDirection(d);
    s_Input->Allocate();
    std::vector<float> values;
    std::vector<int32_t> labels;
    cstest::MakeBlobs(40, 36, 24, values, labels);
    std::copy(values.begin(), values.end(), s_Input->GetBufferPointer());
    s_InputFile = s_Dir->Path() + "/input.nrrd";
    auto writer = itk::ImageFileWriter<FloatImage>::New();
    writer->SetInput(s_Input);
    writer->SetFileName(s_InputFile);
    writer->Update();

    const std::string nrrd = s_Dir->Path() + "/reference.nrrd";
    const slicer::RunResult r = Segment(s_Model, s_InputFile, nrrd);
    ASSERT_EQ(r.exitCode, 0) << r.out << r.err;
    std::string io;
    s_Reference = ReadWithFactories(nrrd, io);
    ASSERT_EQ(io, "NrrdImageIO");
  }
  static void TearDownTestSuite()
  {
    delete s_Dir;
    s_Dir = nullptr;
    s_Input = nullptr;
    s_Reference = nullptr;
  }

  // Segments into tmp/<name> and checks it is read back through `expectedIO` with the input's
  // geometry and the NRRD output's labels, voxel for voxel, and that the folder then holds
  // exactly `files` (no temporary folder or partial file left).
  void ExpectFormat(const std::string &name, const std::string &expectedIO, const std::set<std::string> &files)
  {
    ASSERT_TRUE(s_Reference);
    slicer::TempDir tmp;
    const std::string output = tmp.Path() + "/" + name;
    const slicer::RunResult r = Segment(s_Model, s_InputFile, output);
    ASSERT_EQ(r.exitCode, 0) << r.out << r.err;
    std::string io;
    LabelImage::Pointer labels = ReadWithFactories(output, io);
    EXPECT_EQ(io, expectedIO) << output;
    EXPECT_EQ(labels->GetLargestPossibleRegion().GetSize(), s_Input->GetLargestPossibleRegion().GetSize());
    for (int i = 0; i < 3; ++i)
    {
      EXPECT_NEAR(labels->GetSpacing()[i], s_Input->GetSpacing()[i], 1e-5);
      EXPECT_NEAR(labels->GetOrigin()[i], s_Input->GetOrigin()[i], 1e-4);
      for (int j = 0; j < 3; ++j)
        EXPECT_NEAR(labels->GetDirection()(i, j), s_Input->GetDirection()(i, j), 1e-5);
    }
    const size_t n = s_Reference->GetPixelContainer()->Size();
    ASSERT_EQ(labels->GetPixelContainer()->Size(), n);
    size_t differ = 0, foreground = 0;
    for (size_t i = 0; i < n; ++i)
    {
      differ += labels->GetBufferPointer()[i] != s_Reference->GetBufferPointer()[i];
      foreground += s_Reference->GetBufferPointer()[i] != 0;
    }
    EXPECT_EQ(differ, 0u) << name << " differs from the NRRD output";
    EXPECT_GT(foreground, 0u) << "the reference segmentation is empty: the comparison proves little";
    EXPECT_EQ(FolderEntries(tmp.Path()), files);
  }

  static slicer::TempDir *s_Dir;
  static std::string s_Model, s_InputFile;
  static FloatImage::Pointer s_Input;
  static LabelImage::Pointer s_Reference;
};
slicer::TempDir *SegmentOutputFormats::s_Dir = nullptr;
std::string SegmentOutputFormats::s_Model, SegmentOutputFormats::s_InputFile;
FloatImage::Pointer SegmentOutputFormats::s_Input;
LabelImage::Pointer SegmentOutputFormats::s_Reference;

} // namespace

TEST_F(SegmentOutputFormats, NiftiGzIsARealNifti)
{
  ExpectFormat("label.nii.gz", "NiftiImageIO", {"label.nii.gz"});
}

TEST_F(SegmentOutputFormats, NiftiIsARealNifti)
{
  ExpectFormat("label.nii", "NiftiImageIO", {"label.nii"});
}

TEST_F(SegmentOutputFormats, MhaIsARealMetaImage)
{
  ExpectFormat("label.mha", "MetaImageIO", {"label.mha"});
}

TEST_F(SegmentOutputFormats, MhdComesWithItsDataFile)
{
  ExpectFormat("label.mhd", "MetaImageIO", {"label.mhd", "label.zraw"}); // ITK reads .mhd only in lower case
}

TEST_F(SegmentOutputFormats, NiftiWithColorTableKeepsNamesBeside)
{
  slicer::TempDir tmp;
  const std::string output = tmp.Path() + "/label.nii.gz", colors = tmp.Path() + "/label.ctbl";
  const slicer::RunResult r = Segment(s_Model, s_InputFile, output, {"--outputColorTable", colors});
  ASSERT_EQ(r.exitCode, 0) << r.out << r.err;
  EXPECT_EQ(FolderEntries(tmp.Path()), (std::set<std::string>{"label.nii.gz", "label.ctbl"}));
  std::ifstream in(colors);
  const std::string table((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(table.find("5 left_blob 230 40 40 255"), std::string::npos) << table;
}

TEST_F(SegmentOutputFormats, UnsupportedExtensionFailsNamingTheFileAndLeavesNothing)
{
  slicer::TempDir tmp;
  const std::string output = tmp.Path() + "/label.xyz";
  const slicer::RunResult r = Segment(s_Model, s_InputFile, output);
  EXPECT_NE(r.exitCode, 0);
  EXPECT_EQ(r.signal, 0);
  EXPECT_NE(r.err.find(output), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(".nii.gz"), std::string::npos) << "the message lists the supported extensions: " << r.err;
  EXPECT_TRUE(FolderEntries(tmp.Path()).empty());
}

TEST_F(SegmentOutputFormats, UnsupportedExtensionIsCheckedBeforeAnyWork)
{
  // Neither the model nor the input exists: the output name is what is reported, so it was
  // checked first.
  slicer::TempDir tmp;
  const std::string output = tmp.Path() + "/label.xyz";
  const slicer::RunResult r = Segment(tmp.Path() + "/missing.safetensors", tmp.Path() + "/missing.nrrd", output);
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_NE(r.err.find(output), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("missing"), std::string::npos) << r.err;
  EXPECT_TRUE(FolderEntries(tmp.Path()).empty());
  // The preview is an output image too: PNG only.
  const slicer::RunResult p = Segment(tmp.Path() + "/missing.safetensors", tmp.Path() + "/missing.nrrd",
                                      tmp.Path() + "/label.nrrd", {"--previewImage", tmp.Path() + "/preview.jpg"});
  EXPECT_EQ(p.exitCode, 1);
  EXPECT_NE(p.err.find("preview.jpg"), std::string::npos) << p.err;
  EXPECT_TRUE(FolderEntries(tmp.Path()).empty());
}

// Every output location is checked before the model or the input is read (neither exists here,
// so a message about the output shows that it came first): missing folders, a file where the
// surface folder should be, a colour table name asking for a format that is not written.
TEST_F(SegmentOutputFormats, EveryOutputLocationIsCheckedBeforeAnyWork)
{
  slicer::TempDir tmp;
  const std::string file = tmp.Path() + "/a-file";
  std::ofstream(file) << "x";
  const std::string label = tmp.Path() + "/label.nrrd";
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{tmp.Path() + "/nope/sub/out.nrrd"}, tmp.Path() + "/nope/sub"},
      {{"--outputColorTable", tmp.Path() + "/nope/labels.ctbl", label}, tmp.Path() + "/nope"},
      {{"--outputColorTable", tmp.Path() + "/labels.lut", label}, "labels.lut"},
      {{"--surfaceDirectory", tmp.Path() + "/nope/sub/surfaces", label}, tmp.Path() + "/nope/sub"},
      {{"--surfaceDirectory", file, label}, file},
      {{"--previewImage", tmp.Path() + "/nope/preview.png", label}, tmp.Path() + "/nope"},
      {{"--outputColorTable", label, label}, label},
  };
  for (const auto &c : cases)
  {
    std::vector<std::string> extra(c.first.begin(), c.first.end() - 1);
    const slicer::RunResult r =
        Segment(tmp.Path() + "/missing.safetensors", tmp.Path() + "/missing.nrrd", c.first.back(), extra);
    EXPECT_EQ(r.exitCode, 1) << slicer::Join(c.first);
    EXPECT_NE(r.err.find(c.second), std::string::npos) << slicer::Join(c.first) << ": " << r.err;
    EXPECT_EQ(r.err.find("missing"), std::string::npos) << "the model or input was read first: " << r.err;
    EXPECT_EQ(FolderEntries(tmp.Path()), std::set<std::string>{"a-file"}) << slicer::Join(c.first);
  }
}

// All outputs of a run arrive under their names and nothing else is left in their folders (an
// existing surface folder, as Slicer gives one, receives the surfaces beside what it holds); a
// .csv colour table is Slicer's CSV.
TEST_F(SegmentOutputFormats, AllOutputsArriveTogether)
{
  slicer::TempDir tmp;
  ASSERT_EQ(mkdir((tmp.Path() + "/surfaces").c_str(), 0775), 0);
  std::ofstream(tmp.Path() + "/surfaces/notes.txt") << "kept";
  const slicer::RunResult r = Segment(s_Model, s_InputFile, tmp.Path() + "/label.nrrd",
                                      {"--outputColorTable", tmp.Path() + "/labels.csv", "--previewImage",
                                       tmp.Path() + "/preview.png", "--surfaceDirectory", tmp.Path() + "/surfaces"});
  ASSERT_EQ(r.exitCode, 0) << r.out << r.err;
  EXPECT_EQ(FolderEntries(tmp.Path()), (std::set<std::string>{"label.nrrd", "labels.csv", "preview.png", "surfaces"}));
  const std::set<std::string> surfaces = FolderEntries(tmp.Path() + "/surfaces");
  EXPECT_TRUE(surfaces.count("notes.txt"));
  EXPECT_GE(surfaces.size(), 2u);
  for (const std::string &name : surfaces)
    EXPECT_TRUE(name == "notes.txt" || name.find("_blob.vtk") != std::string::npos) << name;
  std::ifstream in(tmp.Path() + "/labels.csv");
  const std::string table((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(table.rfind("LabelValue,Name,Color_R,Color_G,Color_B,Color_A\n", 0), 0u) << table;
  EXPECT_NE(table.find("\n5,left blob,230,40,40,255\n"), std::string::npos) << table;
}

// Outputs in one folder spelt two ways (here "<dir>" and "<dir>/.", as a relative and an absolute
// path would be) all arrive: they share one staging folder.
TEST_F(SegmentOutputFormats, OutputsInOneFolderSpeltTwoWaysAllArrive)
{
  slicer::TempDir tmp;
  const slicer::RunResult r =
      Segment(s_Model, s_InputFile, tmp.Path() + "/label.nrrd", {"--previewImage", tmp.Path() + "/./preview.png"});
  ASSERT_EQ(r.exitCode, 0) << r.out << r.err;
  EXPECT_EQ(FolderEntries(tmp.Path()), (std::set<std::string>{"label.nrrd", "preview.png"}));
}

// A failure at the end leaves no output of the run: here a surface file cannot take its name (a
// folder holds it), after the label map, colour table and preview were written.
TEST_F(SegmentOutputFormats, AFailureAtTheEndLeavesNoOutputOfTheRun)
{
  ASSERT_TRUE(s_Reference);
  std::set<short> found;
  for (size_t i = 0; i < s_Reference->GetPixelContainer()->Size(); ++i)
    found.insert(s_Reference->GetBufferPointer()[i]);
  ASSERT_TRUE(found.count(5) || found.count(9)) << "the test model finds no blob: no surface to write";
  slicer::TempDir tmp;
  const std::string surfaces = tmp.Path() + "/surfaces";
  for (const char *blocked : {"/5_left_blob.vtk", "/9_right_blob.vtk"})
  {
    ASSERT_EQ(mkdir((surfaces).c_str(), 0775) == 0 || errno == EEXIST, true);
    ASSERT_EQ(mkdir((surfaces + blocked).c_str(), 0775), 0);
    std::ofstream(surfaces + blocked + "/keep") << "x";
  }
  const slicer::RunResult r = Segment(s_Model, s_InputFile, tmp.Path() + "/label.nrrd",
                                      {"--outputColorTable", tmp.Path() + "/labels.ctbl", "--previewImage",
                                       tmp.Path() + "/preview.png", "--surfaceDirectory", surfaces});
  EXPECT_EQ(r.exitCode, 1) << r.out;
  EXPECT_NE(r.err.find("_blob.vtk"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("no output of this run was kept"), std::string::npos) << r.err;
  EXPECT_EQ(FolderEntries(tmp.Path()), std::set<std::string>{"surfaces"});
  EXPECT_EQ(FolderEntries(surfaces), (std::set<std::string>{"5_left_blob.vtk", "9_right_blob.vtk"}));
}

// A model that recommends keeping the largest component gets it by default; --rawOutput returns
// the network's own labels, to which --largestComponent still adds the step. An untrained model
// scatters its labels.
TEST_F(SegmentOutputFormats, TheModelsRecommendedCleanUpIsAppliedUnlessTheRawOutputIsAsked)
{
  slicer::TempDir tmp;
  const std::string model = tmp.Path() + "/recommends.safetensors";
  cstest::MakeTestModel(model, 0, cs_postprocessing{1, 0});
  auto segment = [&](const std::string &name, const std::vector<std::string> &extra) {
    const slicer::RunResult r = Segment(model, s_InputFile, tmp.Path() + "/" + name, extra);
    EXPECT_EQ(r.exitCode, 0) << r.out << r.err;
    std::string io;
    LabelImage::Pointer labels = ReadWithFactories(tmp.Path() + "/" + name, io);
    return std::make_pair(r.out,
                          std::vector<int32_t>(labels->GetBufferPointer(),
                                               labels->GetBufferPointer() + labels->GetPixelContainer()->Size()));
  };
  const auto byDefault = segment("default.nrrd", {});
  const auto raw = segment("raw.nrrd", {"--rawOutput"});
  const auto asked = segment("asked.nrrd", {"--rawOutput", "--largestComponent"});
  EXPECT_NE(byDefault.first.find("clean-up: largest component (the model's recommendation)"), std::string::npos)
      << byDefault.first;
  EXPECT_NE(raw.first.find("clean-up: none"), std::string::npos) << raw.first;
  std::vector<int32_t> cleaned = raw.second;
  const auto size = s_Input->GetLargestPossibleRegion().GetSize();
  itk::ComboSegKeepLargestComponents(cleaned.data(), {{int64_t(size[0]), int64_t(size[1]), int64_t(size[2])}});
  ASSERT_NE(cleaned, raw.second) << "the raw labels should hold several pieces per class for this test";
  EXPECT_EQ(byDefault.second, cleaned);
  EXPECT_EQ(asked.second, cleaned) << "--largestComponent applies whatever the model says";
}

// The NRRD's segment extents: each label's voxel bounding box, as ITK's LabelStatisticsImageFilter
// gives it, on an image of three parallel chunks whose region does not start at 0, with labels
// that cross chunks and rows, a negative one and a single voxel.
TEST(SegmentExtents, EveryLabelsBoxIsTheOneITKFinds)
{
  auto image = LabelImage::New();
  LabelImage::RegionType region;
  region.SetIndex({{3, -2, 5}});
  region.SetSize({{70, 50, 40}}); // 140000 voxels
  image->SetRegions(region);
  image->Allocate();
  image->FillBuffer(0);
  uint32_t state = 12345;
  for (itk::ImageRegionIteratorWithIndex<LabelImage> it(image, region); !it.IsAtEnd(); ++it)
  {
    const auto i = it.GetIndex();
    state = state * 1664525u + 1013904223u;
    if (i[0] >= 10 && i[0] < 60 && i[1] >= 5 && i[1] < 30 && i[2] >= 12 && i[2] < 30)
      it.Set(7); // crosses the chunk boundaries (voxels 65536 and 131072 are at z 23 and 42)
    if (state % 997 == 0)
      it.Set(short(state % 5) - 4); // scattered -4 .. 0
  }
  image->SetPixel({{72, 47, 44}}, 31000); // one voxel, in the last corner
  const itk::ThreadIdType before = itk::MultiThreaderBase::GetGlobalDefaultNumberOfThreads();
  for (int threads : {1, 2})
  {
    itk::MultiThreaderBase::SetGlobalDefaultNumberOfThreads(threads);
    const auto extents = ComboSegLabelExtents(image);
    auto statistics = itk::LabelStatisticsImageFilter<LabelImage, LabelImage>::New();
    statistics->SetInput(image);
    statistics->SetLabelInput(image);
    statistics->Update();
    size_t labels = 0;
    for (short value : statistics->GetValidLabelValues())
      labels += value != 0;
    ASSERT_EQ(extents.size(), labels) << "threads " << threads;
    EXPECT_GE(labels, 3u);
    for (const auto &e : extents)
    {
      ASSERT_NE(e[0], 0);
      ASSERT_TRUE(statistics->HasLabel(short(e[0]))) << "label " << e[0];
      const auto box = statistics->GetBoundingBox(short(e[0]));
      for (int k = 0; k < 6; ++k)
        EXPECT_EQ(e[k + 1], long(box[k])) << "label " << e[0] << " bound " << k << " threads " << threads;
    }
  }
  itk::MultiThreaderBase::SetGlobalDefaultNumberOfThreads(before);
}
