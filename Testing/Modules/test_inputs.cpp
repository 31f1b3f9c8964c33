// test_inputs.cpp - the modules given what a Slicer user gives them (issue 17, input side):
// Slicer 5's CSV colour tables, channels named against the files and refused when they lie
// elsewhere in space, a scan of another modality, a 2D image, a plot name that is not PNG,
// intensity images and disjoint maps given to ComboSegEvaluate, and the preview's orientation.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ComboSegCLI.h"
#include "ComboSegInputs.h"
#include "ComboSegOutput.h"
#include "itkImage.h"
#include "itkLabelStatisticsImageFilter.h"
#include "itkMultiThreaderBase.h"
#include "cs_slicer_harness.h"
#include "cs_test_data.h"
#include "cs_test_model.h"
#include "itkComboSegIO.h"

#include "itkImage.h"
#include "itkImageFileReader.h"
#include "itkImageFileWriter.h"
#include "itkImageRegionIteratorWithIndex.h"
#include "itkNrrdImageIO.h"
#include "itkPNGImageIO.h"
#include "itkRGBPixel.h"

namespace
{

using FloatImage = itk::Image<float, 3>;
using LabelImage = itk::Image<short, 3>;
using RGBImage = itk::Image<itk::RGBPixel<unsigned char>, 2>;

template <typename TImage>
void Write(const TImage *image, const std::string &path)
{
  auto writer = itk::ImageFileWriter<TImage>::New();
  writer->SetImageIO(itk::NrrdImageIO::New()); // every file here is NRRD
  writer->SetInput(image);
  writer->SetFileName(path);
  writer->Update();
}

template <typename TImage>
typename TImage::Pointer NewImage(long nx, long ny, long nz, double originZ = 0.0)
{
  auto image = TImage::New();
  typename TImage::RegionType region;
  region.SetSize({{size_t(nx), size_t(ny), size_t(nz)}});
  image->SetRegions(region);
  const double origin[3] = {0.0, 0.0, originZ};
  image->SetOrigin(origin);
  image->Allocate();
  image->FillBuffer(0);
  return image;
}

// The blob volume the test model segments, as a NRRD file.
std::string BlobFile(const slicer::TempDir &tmp, const std::string &name, float background = 0.0f)
{
  auto image = NewImage<FloatImage>(24, 20, 16);
  std::vector<float> values;
  std::vector<int32_t> labels;
  cstest::MakeBlobs(24, 20, 16, values, labels);
  for (size_t i = 0; i < values.size(); ++i)
    image->GetBufferPointer()[i] = labels[i] ? values[i] : background + values[i];
  const std::string path = tmp.Path() + "/" + name;
  Write(image.GetPointer(), path);
  return path;
}

// The test model with its channel declared MR (the blob model's channel is "other").
std::string MRTestModel(const slicer::TempDir &tmp)
{
  const std::string path = tmp.Path() + "/blobs-mr.safetensors";
  cstest::MakeTestModel(path, 2);
  cs_context_t ctx = nullptr;
  EXPECT_EQ(cs_context_init(&ctx), CS_OK);
  cs_model_t model = nullptr;
  EXPECT_EQ(cs_model_load(ctx, path.c_str(), &model), CS_OK) << cs_context_last_error(ctx);
  cs_model_info info = *cs_model_get_info(model);
  info.channels[0].modality = CS_MODALITY_MR;
  EXPECT_EQ(cs_model_set_info(ctx, model, &info), CS_OK) << cs_context_last_error(ctx);
  EXPECT_EQ(cs_model_save(ctx, model, path.c_str()), CS_OK) << cs_context_last_error(ctx);
  cs_model_free(model);
  cs_context_free(ctx);
  return path;
}

bool Contains(const std::string &text, const std::string &part)
{
  return text.find(part) != std::string::npos;
}

// Column `column` of the rows of a TSV table, by the value of its Name column.
std::map<std::string, std::string> ColumnByName(const std::string &path, const std::string &column)
{
  std::ifstream in(path);
  std::string line;
  std::vector<std::string> header;
  std::map<std::string, std::string> out;
  while (std::getline(in, line))
  {
    std::vector<std::string> cells;
    std::stringstream s(line);
    std::string cell;
    while (std::getline(s, cell, '\t'))
      cells.push_back(cell);
    if (header.empty())
    {
      header = cells;
      continue;
    }
    std::map<std::string, std::string> row;
    for (size_t c = 0; c < cells.size() && c < header.size(); ++c)
      row[header[c]] = cells[c];
    out[row["Name"]] = row[column];
  }
  return out;
}

} // namespace

// ---- 1. Slicer's own colour tables

// --threads N (N > 0) becomes ITK's default thread count for the filters the tools create without
// a count of their own (the label statistics behind a label map's extents): with 1, they run as
// one work unit. 0 keeps ITK's default.
TEST(InputThreads, ToolThreadsBecomeTheThreadsOfITKFilters)
{
  using Labels = itk::Image<short, 3>;
  const itk::ThreadIdType before = itk::MultiThreaderBase::GetGlobalDefaultNumberOfThreads();
  ComboSegLimitITKThreads(0);
  EXPECT_EQ(itk::MultiThreaderBase::GetGlobalDefaultNumberOfThreads(), before);
  using Statistics = itk::LabelStatisticsImageFilter<Labels, Labels>;
  ComboSegLimitITKThreads(1);
  EXPECT_EQ(itk::MultiThreaderBase::GetGlobalDefaultNumberOfThreads(), 1u);
  EXPECT_EQ(Statistics::New()->GetNumberOfWorkUnits(), 1u) << "one thread: one work unit";
  itk::MultiThreaderBase::SetGlobalDefaultNumberOfThreads(before);
}

TEST(InputNames, EvaluateReadsSlicer5CsvColourTables)
{
  slicer::TempDir tmp;
  auto labels = NewImage<LabelImage>(12, 10, 8);
  for (long i = 0; i < 40; ++i)
    labels->GetBufferPointer()[i] = 1;
  for (long i = 100; i < 160; ++i)
    labels->GetBufferPointer()[i] = 2;
  const std::string map = tmp.Path() + "/labels.nrrd";
  Write(labels.GetPointer(), map);
  const std::string names = tmp.Path() + "/tumour.labels.csv";
  std::ofstream(names)
      << "LabelValue,Name,Color_R,Color_G,Color_B,Color_A,Category_CodingScheme,Category_CodeValue,"
         "Category_CodeMeaning,Type_CodingScheme,Type_CodeValue,Type_CodeMeaning,TypeModifier_CodingScheme,"
         "TypeModifier_CodeValue,TypeModifier_CodeMeaning,Region_CodingScheme,Region_CodeValue,Region_CodeMeaning,"
         "RegionModifier_CodingScheme,RegionModifier_CodeValue,RegionModifier_CodeMeaning\n"
         "1,necrosis,255,0,0,255,,,,,,,,,,,,,,,\n2,oedema,0,255,0,255,,,,,,,,,,,,,,,\n";
  const std::string table = tmp.Path() + "/table.tsv";
  const slicer::RunResult r =
      slicer::Run({slicer::ModulePath("ComboSegEvaluate"), "--names", names, "--outputTable", table, map, map}, 120);
  ASSERT_EQ(r.exitCode, 0) << r.err;
  const auto dice = ColumnByName(table, "Dice");
  EXPECT_EQ(dice.count("necrosis"), 1u) << "names: " << [&] {
    std::string all;
    for (const auto &d : dice)
      all += "'" + d.first + "' ";
    return all;
  }();
  EXPECT_EQ(dice.count("oedema"), 1u);
}

TEST(InputNames, EvaluateRefusesAnUnreadableNamesFormat)
{
  slicer::TempDir tmp;
  auto labels = NewImage<LabelImage>(8, 8, 8);
  labels->GetBufferPointer()[0] = 1;
  const std::string map = tmp.Path() + "/labels.nrrd", names = tmp.Path() + "/names.json";
  Write(labels.GetPointer(), map);
  std::ofstream(names) << "{\"1\": \"liver\"}\n";
  const slicer::RunResult r = slicer::Run({slicer::ModulePath("ComboSegEvaluate"), "--names", names, map, map}, 60);
  EXPECT_NE(r.exitCode, 0);
  EXPECT_TRUE(Contains(r.err, "names.json") && Contains(r.err, "LabelValue,Name") && Contains(r.err, ".ctbl")) << r.err;
}

// ---- 2. Channels in the right order

TEST(InputChannels, SegmentXmlNamesTheBundledModelsChannels)
{
  const slicer::RunResult r = slicer::Run({slicer::ModulePath("ComboSegSegment"), "--xml"}, 30);
  ASSERT_EQ(r.exitCode, 0);
  const ComboSegModuleDescription d = ComboSegModuleDescription::Parse(r.out);
  const ComboSegParameterDescription *first = d.Find("inputVolume"), *second = d.Find("inputVolume2");
  ASSERT_TRUE(first && second);
  EXPECT_TRUE(Contains(first->label + first->description, "FLAIR")) << first->label << ": " << first->description;
  EXPECT_TRUE(Contains(first->description, "brain-tumor-flair-t1c")) << first->description;
  EXPECT_TRUE(Contains(second->label + second->description, "T1c")) << second->description;
  EXPECT_FALSE(Contains(second->description, "FLAIR")) << "the tumour model's FLAIR is its first channel";
  ASSERT_TRUE(d.Find("ignoreModalityMismatch"));
  EXPECT_EQ(d.Find("ignoreModalityMismatch")->tag, "boolean");
  EXPECT_EQ(d.Find("ignoreModalityMismatch")->defaultValue, "false");
}

TEST(InputChannels, SegmentPrintsEachChannelsNameAgainstItsFile)
{
  slicer::TempDir tmp;
  const std::string model = tmp.Path() + "/blobs.safetensors";
  cstest::MakeTestModel(model, 2);
  const std::string input = BlobFile(tmp, "scan.nrrd");
  const slicer::RunResult r =
      slicer::Run({slicer::ModulePath("ComboSegSegment"), "--modelFile", model, input, tmp.Path() + "/out.nrrd"}, 120);
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "channel 1 T1: " + input)) << r.out;
}

TEST(InputChannels, SegmentRefusesASecondChannelElsewhereInSpace)
{
  CS_REQUIRE_DATA("brats2013/brats_2013_pat0003_1/Flair_subtrMeanDivStd.nii.gz");
  CS_REQUIRE_DATA("ct-abdomen/totalseg/example_ct_sm.nii.gz");
  slicer::TempDir tmp;
  const std::string flair = cstest::DataPath("brats2013/brats_2013_pat0003_1/Flair_subtrMeanDivStd.nii.gz");
  const std::string ct = cstest::DataPath("ct-abdomen/totalseg/example_ct_sm.nii.gz");
  const std::string output = tmp.Path() + "/out.nrrd";
  const slicer::RunResult r = slicer::Run(
      {slicer::ModulePath("ComboSegSegment"), "--model", "brain-tumor-flair-t1c", "--inputVolume2", ct, flair, output},
      300);
  EXPECT_NE(r.exitCode, 0) << r.out;
  // The CT's box happens to cover 29 % of the FLAIR's: refused as covering too little of it.
  EXPECT_TRUE(Contains(r.err, "example_ct_sm.nii.gz") && Contains(r.err, "% of channel 1")) << r.err;
  EXPECT_TRUE(Contains(r.out, "channel 1 FLAIR") && Contains(r.out, "channel 2 T1c")) << r.out;
  EXPECT_FALSE(slicer::Exists(output));
}

// ---- 3. Modality

TEST(InputModality, SegmentRefusesACTSeriesForTheT1Model)
{
  CS_REQUIRE_DATA("ct-abdomen/dicom-series");
  const std::string series = cstest::DataPath("ct-abdomen/dicom-series");
  slicer::TempDir tmp;
  const slicer::RunResult r =
      slicer::Run({slicer::ModulePath("ComboSegSegment"), series, tmp.Path() + "/out.nrrd"}, 300);
  EXPECT_NE(r.exitCode, 0) << r.out;
  for (const char *part : {"dicom-series", "DICOM Modality", "CT", "MR", "--ignoreModalityMismatch"})
    EXPECT_TRUE(Contains(r.err, part)) << part << " missing from: " << r.err;
}

TEST(InputModality, SegmentRefusesHounsfieldUnitsForTheT1Model)
{
  CS_REQUIRE_DATA("ct-abdomen/totalseg/example_ct_sm.nii.gz");
  const std::string ct = cstest::DataPath("ct-abdomen/totalseg/example_ct_sm.nii.gz");
  slicer::TempDir tmp;
  const slicer::RunResult r = slicer::Run({slicer::ModulePath("ComboSegSegment"), ct, tmp.Path() + "/out.nrrd"}, 300);
  EXPECT_NE(r.exitCode, 0) << r.out;
  for (const char *part : {"example_ct_sm.nii.gz", "Hounsfield", "--ignoreModalityMismatch"})
    EXPECT_TRUE(Contains(r.err, part)) << part << " missing from: " << r.err;
}

TEST(InputModality, IgnoreModalityMismatchGoesAhead)
{
  slicer::TempDir tmp;
  const std::string model = MRTestModel(tmp);
  const std::string ctLike = BlobFile(tmp, "ct-like.nrrd", -1000.0f);
  const std::string output = tmp.Path() + "/out.nrrd";
  const slicer::RunResult refused =
      slicer::Run({slicer::ModulePath("ComboSegSegment"), "--modelFile", model, ctLike, output}, 120);
  EXPECT_NE(refused.exitCode, 0);
  EXPECT_TRUE(Contains(refused.err, "ct-like.nrrd") && Contains(refused.err, "Hounsfield")) << refused.err;
  EXPECT_FALSE(slicer::Exists(output));
  const slicer::RunResult r = slicer::Run(
      {slicer::ModulePath("ComboSegSegment"), "--modelFile", model, "--ignoreModalityMismatch", ctLike, output}, 120);
  EXPECT_EQ(r.exitCode, 0) << r.err;
  EXPECT_TRUE(slicer::Exists(output));
}

// ---- 12. Smaller

TEST(InputShape, SegmentRefusesA2DImageForA3DModel)
{
  slicer::TempDir tmp;
  const std::string model = tmp.Path() + "/blobs.safetensors";
  cstest::MakeTestModel(model, 2);
  auto slice = itk::Image<float, 2>::New();
  itk::Image<float, 2>::RegionType region;
  region.SetSize({{32, 32}});
  slice->SetRegions(region);
  slice->Allocate();
  slice->FillBuffer(1.0f);
  const std::string input = tmp.Path() + "/slice.nrrd";
  Write(slice.GetPointer(), input);
  const slicer::RunResult r =
      slicer::Run({slicer::ModulePath("ComboSegSegment"), "--modelFile", model, input, tmp.Path() + "/out.nrrd"}, 120);
  EXPECT_NE(r.exitCode, 0) << r.out;
  EXPECT_TRUE(Contains(r.err, "slice.nrrd") && Contains(r.err, "2D") && Contains(r.err, "3D")) << r.err;
}

TEST(InputShape, TrainRefusesAPlotNameThatIsNotPng)
{
  const std::string exe = slicer::ModulePath("ComboSegTrain");
  if (!slicer::Exists(exe))
    GTEST_SKIP() << "ComboSegTrain is not built in this tree";
  slicer::TempDir tmp;
  const std::string model = tmp.Path() + "/model.safetensors";
  const slicer::RunResult r = slicer::Run({exe, "--outputModel", model, "--plotImage", tmp.Path() + "/curves.jpg"}, 60);
  EXPECT_NE(r.exitCode, 0);
  EXPECT_TRUE(Contains(r.err, "curves.jpg") && Contains(r.err, ".png")) << r.err;
  EXPECT_FALSE(slicer::Exists(model));
}

TEST(InputShape, EvaluateWarnsOfAnIntensityImageGivenAsLabelMap)
{
  slicer::TempDir tmp;
  auto reference = NewImage<LabelImage>(12, 10, 8);
  reference->GetBufferPointer()[5] = 1;
  auto scan = NewImage<FloatImage>(12, 10, 8);
  for (size_t i = 0; i < scan->GetPixelContainer()->Size(); ++i)
    scan->GetBufferPointer()[i] = float(i % 300) + 0.5f * float(i % 2);
  const std::string refFile = tmp.Path() + "/reference.nrrd", scanFile = tmp.Path() + "/scan.nrrd";
  Write(reference.GetPointer(), refFile);
  Write(scan.GetPointer(), scanFile);
  const slicer::RunResult r = slicer::Run({slicer::ModulePath("ComboSegEvaluate"), refFile, scanFile}, 300);
  EXPECT_EQ(r.exitCode, 0) << r.err;
  EXPECT_TRUE(Contains(r.err, "scan.nrrd") && Contains(r.err, "intensity image")) << r.err;
  EXPECT_FALSE(Contains(r.err, "reference.nrrd looks like")) << r.err;
}

TEST(InputShape, EvaluateWarnsOfMapsThatDoNotOverlap)
{
  slicer::TempDir tmp;
  auto reference = NewImage<LabelImage>(12, 10, 8);
  auto elsewhere = NewImage<LabelImage>(12, 10, 8, 500.0);
  reference->GetBufferPointer()[5] = 1;
  elsewhere->GetBufferPointer()[5] = 1;
  const std::string refFile = tmp.Path() + "/reference.nrrd", otherFile = tmp.Path() + "/elsewhere.nrrd";
  Write(reference.GetPointer(), refFile);
  Write(elsewhere.GetPointer(), otherFile);
  const slicer::RunResult r = slicer::Run({slicer::ModulePath("ComboSegEvaluate"), refFile, otherFile}, 120);
  EXPECT_EQ(r.exitCode, 0) << r.err;
  EXPECT_TRUE(Contains(r.err, "do not overlap")) << r.err;
  const slicer::RunResult same = slicer::Run({slicer::ModulePath("ComboSegEvaluate"), refFile, refFile}, 120);
  EXPECT_FALSE(Contains(same.err, "warning")) << same.err;
}

// The preview shows what Slicer's views show whatever the storage order: the same physical
// scene stored LPS, RAS (NIfTI's usual order, as ch2) or with permuted axes gives one picture,
// with the anterior-left marker at the top right of the axial panel.
namespace
{

// A 25 (x) x 21 (y) x 17 (z) mm box centred on the origin (odd sizes: one middle slice whatever
// the storage order), with a bright marker in its anterior (LPS y < -4), left (x > 4), superior
// (z > -3) corner on a background that varies along every axis, stored with the given axis order
// and signs.
FloatImage::Pointer Scene(const int axisOf[3], const int sign[3])
{
  const long extent[3] = {25, 21, 17};
  auto image = FloatImage::New();
  FloatImage::RegionType region;
  FloatImage::SizeType size;
  FloatImage::DirectionType direction;
  direction.Fill(0.0);
  FloatImage::PointType origin;
  for (int d = 0; d < 3; ++d) // voxel axis d runs along LPS axis axisOf[d]
  {
    size[d] = size_t(extent[axisOf[d]]);
    direction(axisOf[d], d) = sign[d];
  }
  for (int a = 0; a < 3; ++a)
    origin[a] = 0.0;
  for (int d = 0; d < 3; ++d)
    origin[axisOf[d]] = -sign[d] * (extent[axisOf[d]] - 1) / 2.0;
  region.SetSize(size);
  image->SetRegions(region);
  image->SetDirection(direction);
  image->SetOrigin(origin);
  image->Allocate();
  itk::ImageRegionIteratorWithIndex<FloatImage> it(image, region);
  for (it.GoToBegin(); !it.IsAtEnd(); ++it)
  {
    FloatImage::PointType p;
    image->TransformIndexToPhysicalPoint(it.GetIndex(), p);
    it.Set(p[0] > 4 && p[1] < -4 && p[2] > -3 ? 200.0f : float(20.0 + p[0] + 2.0 * p[1] + 3.0 * p[2]));
  }
  return image;
}

RGBImage::Pointer Preview(const FloatImage *image, const std::string &path)
{
  auto labels = ComboSegLabelImage::New();
  labels->CopyInformation(image);
  labels->SetRegions(image->GetLargestPossibleRegion());
  labels->Allocate();
  labels->FillBuffer(0);
  ComboSegWritePreview(path, image, labels, {});
  auto reader = itk::ImageFileReader<RGBImage>::New();
  reader->SetImageIO(itk::PNGImageIO::New());
  reader->SetFileName(path);
  reader->Update();
  return reader->GetOutput();
}

} // namespace

TEST(PreviewOrientation, SameSceneSamePictureWhateverTheStorageOrder)
{
  slicer::TempDir tmp;
  const int lps[3] = {0, 1, 2}, plus[3] = {1, 1, 1};
  const int ras[3] = {-1, -1, 1};
  const int permuted[3] = {2, 0, 1}, mixed[3] = {-1, 1, -1};
  const RGBImage::Pointer reference = Preview(Scene(lps, plus), tmp.Path() + "/lps.png");
  const auto size = reference->GetLargestPossibleRegion().GetSize();
  // Axial panel (the first, 25 mm wide for 21 mm high): the marker at the top right.
  const long axialWidth = std::lround(256.0 * 25 / 21);
  auto grey = [&](const RGBImage *image, long x, long y) { return int(image->GetPixel({{x, y}})[0]); };
  EXPECT_GT(grey(reference, axialWidth - 10, 10), 200) << "anterior-left marker at the top right";
  EXPECT_LT(grey(reference, 10, 245), 200) << "posterior-right is not the marker";
  for (const auto &order : {std::make_pair(lps, ras), std::make_pair(permuted, mixed), std::make_pair(permuted, plus)})
  {
    const RGBImage::Pointer other = Preview(Scene(order.first, order.second), tmp.Path() + "/other.png");
    ASSERT_EQ(other->GetLargestPossibleRegion().GetSize(), size);
    long differing = 0;
    for (long y = 0; y < long(size[1]); ++y)
      for (long x = 0; x < long(size[0]); ++x)
        differing += std::abs(grey(reference, x, y) - grey(other, x, y)) > 2;
    EXPECT_EQ(differing, 0) << "storage axes " << order.first[0] << order.first[1] << order.first[2] << " signs "
                            << order.second[0] << order.second[1] << order.second[2];
  }
}

TEST(PreviewOrientation, Ch2AxialSliceIsAnteriorUp)
{
  const std::string ch2 = "/usr/share/mricron/templates/ch2.nii.gz";
  if (!cstest::PathExists(ch2))
    GTEST_SKIP() << ch2 << " not found (Debian package mricron-data)";
  slicer::TempDir tmp;
  FloatImage::Pointer stored = itk::ReadScan<FloatImage>(ch2);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      if (i != j && std::fabs(stored->GetDirection()(i, j)) > 1e-6)
        GTEST_SKIP() << ch2 << " is stored obliquely: this test flips axes only";
  // The same scan stored LPS (voxel axes along +x, +y, +z): the picture must not change.
  const auto size = stored->GetLargestPossibleRegion().GetSize();
  auto lps = FloatImage::New();
  lps->SetRegions(stored->GetLargestPossibleRegion());
  lps->SetSpacing(stored->GetSpacing());
  lps->Allocate();
  FloatImage::PointType origin;
  itk::ImageRegionIteratorWithIndex<FloatImage> it(lps, lps->GetLargestPossibleRegion());
  bool first = true;
  for (it.GoToBegin(); !it.IsAtEnd(); ++it)
  {
    FloatImage::IndexType source = it.GetIndex();
    for (int d = 0; d < 3; ++d)
      if (stored->GetDirection()(d, d) < 0)
        source[d] = long(size[d]) - 1 - source[d];
    if (first)
    {
      stored->TransformIndexToPhysicalPoint(source, origin);
      first = false;
    }
    it.Set(stored->GetPixel(source));
  }
  lps->SetOrigin(origin);
  ASSERT_LT(stored->GetDirection()(1, 1), 0) << "ch2 is stored RAS, the case that was upside down";
  const RGBImage::Pointer a = Preview(stored, tmp.Path() + "/stored.png");
  const RGBImage::Pointer b = Preview(lps, tmp.Path() + "/lps.png");
  ASSERT_EQ(a->GetLargestPossibleRegion().GetSize(), b->GetLargestPossibleRegion().GetSize());
  // The grey window comes from a sample of voxels that depends on the storage order: a few levels.
  long differing = 0;
  const auto pictureSize = a->GetLargestPossibleRegion().GetSize();
  for (long y = 0; y < long(pictureSize[1]); ++y)
    for (long x = 0; x < long(pictureSize[0]); ++x)
      differing += std::abs(int(a->GetPixel({{x, y}})[0]) - int(b->GetPixel({{x, y}})[0])) > 8;
  EXPECT_EQ(differing, 0);
}
