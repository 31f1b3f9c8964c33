// Tests of scan and data-set reading: the real CT DICOM series and its label map, the
// TotalSegmentator CT with its 41-structure label map as a training pair, Slicer label maps
// mapped to classes by name, MSD / nnU-Net folders and case lists, and bad files named in
// exceptions. Real-data tests skip when ../shared/data is absent. The last test times the
// whole pipeline on the real CT series.
#include "itkComboSegDataSet.h"
#include "itkComboSegIO.h"
#include "itkComboSegImageFilter.h"
#include "itkComboSegProcessing.h"
#include "itkComboSegTestUtilities.h"

#include "cs_test_data.h"
#include "itkCommand.h"
#include "itkImageFileReader.h"
#include "itkImageFileWriter.h"
#include "itkImageRegionConstIterator.h"
#include "itkImageRegionConstIteratorWithIndex.h"
#include "itkRegionOfInterestImageFilter.h"
#include "itkMetaDataObject.h"
#include "itkNiftiImageIO.h"
#include "itkNrrdImageIO.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <type_traits>

namespace
{

using FloatImage = itk::Image<float, 3>;
using ShortImage = itk::Image<short, 3>;
using IntImage = itk::Image<int, 3>;
using LabelImage = itk::Image<unsigned char, 3>;

::testing::AssertionResult
ThrowsWith(const std::function<void()> & action, const std::vector<std::string> & words)
{
  try
  {
    action();
  }
  catch (const itk::ExceptionObject & e)
  {
    const std::string message = e.GetDescription();
    for (const std::string & word : words)
      if (message.find(word) == std::string::npos)
        return ::testing::AssertionFailure() << "message lacks '" << word << "': " << message;
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "no exception";
}

template <typename TImage>
void
Write(const TImage * image, const std::string & path)
{
  itk::ComboSegRegisterImageIO(); // each test may run alone: the writer needs the IO factories
  auto writer = itk::ImageFileWriter<TImage>::New();
  writer->SetInput(image);
  writer->SetFileName(path);
  writer->UseCompressionOn();
  writer->Update();
}

void
WriteText(const std::string & path, const std::string & text)
{
  std::ofstream out(path);
  out << text;
}

template <typename TImage>
std::map<int, int64_t>
Histogram(const TImage * image)
{
  std::map<int, int64_t>                counts;
  itk::ImageRegionConstIterator<TImage> it(image, image->GetLargestPossibleRegion());
  for (it.GoToBegin(); !it.IsAtEnd(); ++it)
    ++counts[static_cast<int>(it.Get())];
  return counts;
}

std::map<int, int64_t>
Histogram(const std::vector<int32_t> & labels)
{
  std::map<int, int64_t> counts;
  for (int32_t v : labels)
    ++counts[v];
  return counts;
}

// A one-channel CT model whose classes carry the given values and names.
cs_model_info
CtModelInfo(const std::vector<std::pair<int, std::string>> & classes, double spacing[3], int32_t base = 4,
            int32_t levels = 2)
{
  cs_unet_config arch = cs_unet_config_default();
  arch.in_channels = 1;
  arch.num_classes = static_cast<int32_t>(classes.size());
  arch.base_filters = base;
  arch.levels = levels;
  cs_model_info info;
  EXPECT_EQ(cs_model_info_init(&info, &arch), CS_OK);
  std::snprintf(info.name, sizeof(info.name), "test-ct");
  std::snprintf(info.channels[0].name, sizeof(info.channels[0].name), "CT");
  info.channels[0].modality = CS_MODALITY_CT;
  info.channels[0].norm = CS_NORM_CLIP_SCALE;
  info.channels[0].clip_low = -1000.0f;
  info.channels[0].clip_high = 1000.0f;
  info.channels[0].mean = 0.0f;
  info.channels[0].std = 500.0f;
  for (size_t k = 0; k < classes.size(); ++k)
  {
    info.classes[k].value = classes[k].first;
    std::snprintf(info.classes[k].name, sizeof(info.classes[k].name), "%s", classes[k].second.c_str());
  }
  for (int d = 0; d < 3; ++d)
    info.spacing[d] = spacing[d];
  return info;
}

// ------------------------------------------------------------------------------------------
// Real scans

TEST(ComboSegRealData, DicomSeriesReadsWithItsGeometry)
{
  CS_REQUIRE_DATA("ct-abdomen/dicom-series");
  CS_REQUIRE_DATA("ct-abdomen/totalseg/example_seg_dicom.nii.gz");
  ShortImage::Pointer ct = itk::ReadScan<ShortImage>(cstest::DataPath("ct-abdomen/dicom-series"));
  const auto          size = ct->GetLargestPossibleRegion().GetSize();
  EXPECT_EQ(size[0], 512u);
  EXPECT_EQ(size[1], 512u);
  EXPECT_EQ(size[2], 20u);
  EXPECT_NEAR(ct->GetSpacing()[0], 0.977, 0.005);
  EXPECT_NEAR(ct->GetSpacing()[1], 0.977, 0.005);
  EXPECT_NEAR(ct->GetSpacing()[2], 2.0, 1e-3) << "slices sorted by position, 2 mm apart";
  EXPECT_NEAR(std::fabs(vnl_determinant(ct->GetDirection().GetVnlMatrix())), 1.0, 1e-6);

  // Its label map (y flipped relative to the DICOM) covers exactly the same voxels, and organs
  // land on soft tissue, not air: the slices are in the right order.
  IntImage::Pointer labels = itk::ReadScan<IntImage>(cstest::DataPath("ct-abdomen/totalseg/example_seg_dicom.nii.gz"));
  const itk::ComboSegGrid ctGrid = itk::ComboSegGridOf(ct.GetPointer());
  const itk::ComboSegGrid labelGrid = itk::ComboSegGridOf(labels.GetPointer());
  EXPECT_TRUE(itk::ComboSegSameLattice(ctGrid, labelGrid)) << itk::ComboSegGridToString(ctGrid) << "\n"
                                                           << itk::ComboSegGridToString(labelGrid);
  std::vector<int32_t> onCt(static_cast<size_t>(ctGrid.NumberOfVoxels()));
  itk::ComboSegResampleNearest(onCt.data(), ctGrid, labels->GetBufferPointer(), labelGrid, -1);
  EXPECT_EQ(std::count(onCt.begin(), onCt.end(), -1), 0);
  double        liverSum = 0.0, outsideSum = 0.0;
  int64_t       liverCount = 0, outsideCount = 0;
  const short * hu = ct->GetBufferPointer();
  for (size_t i = 0; i < onCt.size(); ++i)
  {
    if (onCt[i] == 5) // liver
    {
      liverSum += hu[i];
      ++liverCount;
    }
    else if (onCt[i] == 0)
    {
      outsideSum += hu[i];
      ++outsideCount;
    }
  }
  ASSERT_GT(liverCount, 1000);
  const double liverMean = liverSum / liverCount;
  EXPECT_GT(liverMean, 0.0) << "liver is soft tissue";
  EXPECT_LT(liverMean, 250.0);
  EXPECT_LT(outsideSum / outsideCount, liverMean - 200.0) << "unlabelled voxels include air";
}

TEST(ComboSegRealData, TotalSegmentatorCtAndLabelsAreATrainingPairWith41Classes)
{
  CS_REQUIRE_DATA("ct-abdomen/totalseg/example_ct_sm.nii.gz");
  CS_REQUIRE_DATA("ct-abdomen/totalseg/example_seg.nii.gz");
  itk::ComboSegCaseFiles files;
  files.id = "example";
  files.channels = { cstest::DataPath("ct-abdomen/totalseg/example_ct_sm.nii.gz") };
  files.labels = cstest::DataPath("ct-abdomen/totalseg/example_seg.nii.gz");
  const auto                               fileCounts = Histogram(itk::ReadScan<IntImage>(files.labels).GetPointer());
  std::vector<std::pair<int, std::string>> classes;
  for (const auto & entry : fileCounts)
    classes.emplace_back(entry.first, entry.first == 0 ? "background" : "structure " + std::to_string(entry.first));
  ASSERT_EQ(classes.size(), 42u) << "background and 41 structures";
  double              spacing[3] = { 3.0, 3.0, 3.0 };
  const cs_model_info info = CtModelInfo(classes, spacing);

  const itk::ComboSegPreparedCase prepared = itk::PrepareCase(files, info, {});
  EXPECT_EQ(prepared.id, "example");
  EXPECT_EQ(prepared.size[0] * prepared.size[1] * prepared.size[2], 122 * 101 * 30);
  ASSERT_EQ(prepared.image.size(), prepared.labels.size());
  // On the 3 mm model grid every voxel of every structure survives, mapped to its class index.
  const auto preparedCounts = Histogram(prepared.labels);
  ASSERT_EQ(preparedCounts.size(), 42u);
  for (size_t k = 0; k < classes.size(); ++k)
    EXPECT_EQ(preparedCounts.at(static_cast<int>(k)), fileCounts.at(classes[k].first)) << classes[k].second;
  // CT recipe: clipped to [-1000, 1000] HU, divided by 500.
  const auto range = std::minmax_element(prepared.image.begin(), prepared.image.end());
  EXPECT_GE(*range.first, -2.0f - 1e-5f);
  EXPECT_LE(*range.second, 2.0f + 1e-5f);
  EXPECT_LT(*range.first, -1.5f) << "air is there";
}

// A Slicer-style segmentation NRRD (Segment keys) and a plain label NRRD with a colour table.
class ComboSegSlicerLabels : public ::testing::Test
{
protected:
  void
  SetUp() override
  {
    CS_REQUIRE_DATA("slicer-seg/liver_spine_seg.nrrd");
    plain = cstest::DataPath("slicer-seg/liver_spine_seg.nrrd");
    labels = itk::ReadScan<ShortImage>(plain);
    counts = Histogram(labels.GetPointer());
    // The channel: a float image on the label map's grid.
    auto image = FloatImage::New();
    image->CopyInformation(labels);
    image->SetRegions(labels->GetLargestPossibleRegion());
    image->Allocate();
    image->FillBuffer(40.0f);
    channel = dir.path + "/ct.nrrd";
    Write(image.GetPointer(), channel);
    double spacing[3];
    for (int d = 0; d < 3; ++d)
      spacing[d] = labels->GetSpacing()[d];
    // Model values differ from the file's, so that only names can match them.
    info = CtModelInfo({ { 0, "background" }, { 10, "Liver" }, { 20, "spine" } }, spacing);
  }

  cstest::TempDir        dir;
  std::string            plain, channel;
  ShortImage::Pointer    labels;
  std::map<int, int64_t> counts;
  cs_model_info          info{};
};

TEST_F(ComboSegSlicerLabels, SegmentationNrrdMapsByItsSegmentNames)
{
  ASSERT_EQ(counts.size(), 3u) << "background, liver (1), spine (2)";
  auto copy = ShortImage::New();
  copy->Graft(labels);
  itk::MetaDataDictionary dictionary;
  itk::EncapsulateMetaData<std::string>(dictionary, "Segment0_Name", "spine");
  itk::EncapsulateMetaData<std::string>(dictionary, "Segment0_LabelValue", "2");
  itk::EncapsulateMetaData<std::string>(dictionary, "Segment0_Color", "0.9 0.9 0.8");
  itk::EncapsulateMetaData<std::string>(dictionary, "Segment1_Name", "liver");
  itk::EncapsulateMetaData<std::string>(dictionary, "Segment1_LabelValue", "1");
  itk::EncapsulateMetaData<std::string>(dictionary, "Segment1_Color", "0.8 0.4 0.2");
  copy->SetMetaDataDictionary(dictionary);
  const std::string segmentation = dir.path + "/case.seg.nrrd";
  Write(copy.GetPointer(), segmentation);

  const std::vector<itk::LabelName> names = itk::ReadLabelNames(segmentation);
  ASSERT_EQ(names.size(), 2u);
  EXPECT_EQ(names[0].value, 1);
  EXPECT_EQ(names[0].name, "liver");
  EXPECT_TRUE(names[0].hasColor);
  EXPECT_EQ(names[0].rgb[0], 204);
  EXPECT_EQ(names[1].name, "spine");

  itk::ComboSegCaseFiles files{ "case", { channel }, segmentation };
  const auto             prepared = itk::PrepareCase(files, info, {});
  const auto             preparedCounts = Histogram(prepared.labels);
  EXPECT_EQ(preparedCounts.at(1), counts.at(1)) << "liver";
  EXPECT_EQ(preparedCounts.at(2), counts.at(2)) << "spine";
}

TEST_F(ComboSegSlicerLabels, PlainNrrdMapsByNameFromAColourTable)
{
  EXPECT_TRUE(itk::ReadLabelNames(plain).empty()) << "the plain label map has no Segment keys";
  const std::string table = dir.path + "/names.ctbl";
  WriteText(table, "# Slicer colour table\n0 background 0 0 0 0\n1 liver 200 100 50 255\n2 spine 240 240 200 255\n");
  const auto names = itk::ReadLabelNames(table);
  ASSERT_EQ(names.size(), 3u);
  EXPECT_EQ(names[2].rgb[2], 200);

  itk::ComboSegCaseFiles files{ "case", { channel }, plain };
  const auto             prepared = itk::PrepareCase(files, info, names);
  const auto             preparedCounts = Histogram(prepared.labels);
  EXPECT_EQ(preparedCounts.at(1), counts.at(1));
  EXPECT_EQ(preparedCounts.at(2), counts.at(2));

  // Without names, values 1 and 2 are not the model's values 10 and 20.
  EXPECT_TRUE(ThrowsWith([&] { itk::PrepareCase(files, info, {}); }, { "liver_spine_seg.nrrd", "1, 2" }));
  // An unknown name, and a model class the names lack.
  WriteText(table, "1 liver\n2 kidney\n");
  EXPECT_TRUE(
    ThrowsWith([&] { itk::PrepareCase(files, info, itk::ReadLabelNames(table)); }, { "'kidney'", "not classes" }));
  // A value the names lack (model classes the names lack are allowed: partial labels).
  WriteText(table, "1 liver\n");
  EXPECT_TRUE(
    ThrowsWith([&] { itk::PrepareCase(files, info, itk::ReadLabelNames(table)); }, { "value(s) 2", "no name" }));
}

// Issue 17 item 9 on Slicer's files: the liver and spine label map cropped to its structures
// trains with the 3-slice CT series it was drawn on, as the full map does.
TEST_F(ComboSegSlicerLabels, LabelMapCroppedToItsStructuresTrainsWithItsScan)
{
  CS_REQUIRE_DATA("slicer-seg/ct-3slice");
  LabelImage::IndexType low, high;
  for (int d = 0; d < 3; ++d)
    low[d] = 100000, high[d] = -1;
  itk::ImageRegionConstIteratorWithIndex<ShortImage> it(labels, labels->GetLargestPossibleRegion());
  for (; !it.IsAtEnd(); ++it)
    if (it.Get() != 0)
      for (int d = 0; d < 3; ++d)
        low[d] = std::min(low[d], it.GetIndex()[d]), high[d] = std::max(high[d], it.GetIndex()[d]);
  ShortImage::RegionType box;
  box.SetIndex(low);
  for (int d = 0; d < 3; ++d)
    box.SetSize(d, static_cast<itk::SizeValueType>(high[d] - low[d] + 1));
  auto crop = itk::RegionOfInterestImageFilter<ShortImage, ShortImage>::New();
  crop->SetInput(labels);
  crop->SetRegionOfInterest(box);
  crop->Update();
  const std::string cropped = dir.path + "/liver_spine_cropped.nrrd";
  Write(crop->GetOutput(), cropped);

  const auto        names = std::vector<itk::LabelName>{ { 1, "liver", {}, false }, { 2, "spine", {}, false } };
  const std::string scan = cstest::DataPath("slicer-seg/ct-3slice");
  const auto        full = itk::PrepareCase({ "full", { scan }, plain }, info, names);
  const auto        fromCrop = itk::PrepareCase({ "cropped", { scan }, cropped }, info, names);
  EXPECT_EQ(fromCrop.labels, full.labels);
  const auto preparedCounts = Histogram(fromCrop.labels);
  EXPECT_EQ(preparedCounts.at(1), counts.at(1)) << "liver";
  EXPECT_EQ(preparedCounts.at(2), counts.at(2)) << "spine";
}

TEST(ComboSegRealData, LabelNamesFromCsv)
{
  CS_REQUIRE_DATA("brain-structures/colin27/label-names.csv");
  const auto names = itk::ReadLabelNames(cstest::DataPath("brain-structures/colin27/label-names.csv"));
  ASSERT_GE(names.size(), 26u);
  EXPECT_EQ(names.front().value, 1);
  EXPECT_EQ(names.front().name, "L_striatum");
  const auto right = std::find_if(names.begin(), names.end(), [](const itk::LabelName & n) { return n.value == 85; });
  ASSERT_NE(right, names.end());
  EXPECT_EQ(right->name, "R_striatum");
}

// ------------------------------------------------------------------------------------------
// Data-set layouts (synthetic files)

struct SyntheticCase
{
  std::string image, labels;
};

// Writes the synthetic organs and their labels (values 1 and 2) on a 2 mm LPS grid.
void
WriteOrganCase(const std::string & image, const std::string & labels,
               std::array<unsigned long, 3> size = { { 24, 22, 20 } })
{
  itk::Matrix<double, 3, 3> identity;
  identity.SetIdentity();
  FloatImage::Pointer scan = cstest::MakeOrganImage(size, { { 2.0, 2.0, 2.0 } }, identity);
  Write(scan.GetPointer(), image);
  auto map = LabelImage::New();
  map->CopyInformation(scan);
  map->SetRegions(scan->GetLargestPossibleRegion());
  map->Allocate();
  itk::ImageRegionConstIterator<FloatImage> in(scan, scan->GetLargestPossibleRegion());
  itk::ImageRegionIterator<LabelImage>      out(map, map->GetLargestPossibleRegion());
  for (; !in.IsAtEnd(); ++in, ++out)
    out.Set(in.Get() > 150.0f ? 2 : in.Get() > 50.0f ? 1 : 0);
  Write(map.GetPointer(), labels);
}

TEST(ComboSegDataSet, ReadsMedicalSegmentationDecathlonFolder)
{
  cstest::TempDir dir;
  std::filesystem::create_directories(dir.path + "/imagesTr");
  std::filesystem::create_directories(dir.path + "/labelsTr");
  for (const char * id : { "organs_001", "organs_002" })
    WriteOrganCase(dir.path + "/imagesTr/" + id + "_0000.nii.gz", dir.path + "/labelsTr/" + id + ".nii.gz");
  WriteText(dir.path + "/dataset.json", R"({
    "name": "Organs", "modality": {"0": "CT"},
    "labels": {"0": "background", "1": "organ one", "2": "organ_two"},
    "numTraining": 2,
    "training": [{"image": "./imagesTr/organs_001.nii.gz", "label": "./labelsTr/organs_001.nii.gz"},
                 {"image": "./imagesTr/organs_002.nii.gz", "label": "./labelsTr/organs_002.nii.gz"}]
  })");
  const itk::ComboSegDataSetDescription description = itk::ReadMSDDataSet(dir.path);
  ASSERT_EQ(description.cases.size(), 2u);
  EXPECT_EQ(description.channelNames, std::vector<std::string>{ "CT" });
  ASSERT_EQ(description.labelNames.size(), 3u);
  EXPECT_EQ(description.labelNames[2].name, "organ_two");
  EXPECT_EQ(description.cases[1].id, "organs_002");
  ASSERT_EQ(description.cases[1].channels.size(), 1u);
  EXPECT_EQ(description.cases[1].channels[0], dir.path + "/imagesTr/organs_002_0000.nii.gz");

  // Names map the data set's values 1, 2 to the model's classes (values 3, 7).
  const cs_model_info             info = cstest::OrganModelInfo();
  const itk::ComboSegPreparedCase prepared = itk::PrepareCase(description.cases[0], info, description.labelNames);
  const auto                      counts = Histogram(prepared.labels);
  EXPECT_GT(counts.at(1), 100);
  EXPECT_GT(counts.at(2), 30);
  EXPECT_EQ(counts.size(), 3u);
  // The organs' intensities after the CT recipe: (100 - 100) / 100 and (220 - 100) / 100.
  const int64_t m = prepared.size[0] * prepared.size[1] * prepared.size[2];
  ASSERT_EQ(static_cast<int64_t>(prepared.image.size()), m);
  for (int64_t i = 0; i < m; ++i)
    if (prepared.labels[i] == 2)
      EXPECT_NEAR(prepared.image[i], 1.2f, 0.6f);

  // The nnU-Net v2 form: names to values, cases found in labelsTr.
  WriteText(dir.path + "/dataset.json", R"({"channel_names": {"0": "CT"},
    "labels": {"background": 0, "organ one": 1, "organ two": 2}, "numTraining": 2, "file_ending": ".nii.gz"})");
  const auto v2 = itk::ReadMSDDataSet(dir.path);
  ASSERT_EQ(v2.cases.size(), 2u);
  EXPECT_EQ(v2.cases[0].id, "organs_001");
  EXPECT_EQ(v2.labelNames[1].name, "organ one");
  EXPECT_EQ(v2.labelNames[1].value, 1);

  // A missing channel file is named.
  std::filesystem::remove(dir.path + "/imagesTr/organs_002_0000.nii.gz");
  EXPECT_TRUE(ThrowsWith([&] { itk::ReadMSDDataSet(dir.path); }, { "organs_002", "CT", "not found" }));
  WriteText(dir.path + "/dataset.json", "{ not json");
  EXPECT_TRUE(ThrowsWith([&] { itk::ReadMSDDataSet(dir.path); }, { "dataset.json", "not a valid JSON" }));
}

TEST(ComboSegDataSet, ReadsCaseLists)
{
  cstest::TempDir dir;
  WriteText(dir.path + "/cases.txt",
            "# label<TAB>channels\n"
            "a_labels.nrrd\ta_t1.nrrd\ta_flair.nrrd\n"
            "\n"
            "/data/b_labels.nii.gz\t/data/b_t1.nii.gz\tsub/b_flair.nii.gz  # absolute and relative\n"
            "\tc_t1.nrrd\tc_flair.nrrd\n");
  const auto list = itk::ReadCaseList(dir.path + "/cases.txt");
  ASSERT_EQ(list.cases.size(), 3u);
  EXPECT_EQ(list.cases[0].id, "a_labels");
  EXPECT_EQ(list.cases[0].labels, dir.path + "/a_labels.nrrd");
  EXPECT_EQ(list.cases[0].channels, (std::vector<std::string>{ dir.path + "/a_t1.nrrd", dir.path + "/a_flair.nrrd" }));
  EXPECT_EQ(list.cases[1].labels, "/data/b_labels.nii.gz");
  EXPECT_EQ(list.cases[1].channels[1], dir.path + "/sub/b_flair.nii.gz");
  EXPECT_TRUE(list.cases[2].labels.empty());
  EXPECT_EQ(list.cases[2].id, "c_t1");

  WriteText(dir.path + "/bad.txt", "a_labels.nrrd\ta_t1.nrrd\nb_labels.nrrd\tb_t1.nrrd\tb_flair.nrrd\n");
  EXPECT_TRUE(ThrowsWith([&] { itk::ReadCaseList(dir.path + "/bad.txt"); }, { "bad.txt line 2", "2 channel" }));
  EXPECT_TRUE(ThrowsWith([&] { itk::ReadCaseList(dir.path + "/none.txt"); }, { "none.txt" }));
}

// Issue 17 item 9: a label map on another grid (cropped to its structures as Slicer's crop to
// extent writes it) is resampled onto the scan; labelled voxels off the scan and overlapping
// segments are refused with messages that say so.
TEST(ComboSegDataSet, LabelMapOnAnotherGridIsResampledOntoItsScan)
{
  cstest::TempDir dir;
  WriteOrganCase(dir.path + "/image.nrrd", dir.path + "/labels.nrrd");
  const cs_model_info    info = cstest::OrganModelInfo();
  const auto             names = std::vector<itk::LabelName>{ { 0, "background", {}, false },
                                                              { 1, "organ one", {}, false },
                                                              { 2, "organ two", {}, false } };
  itk::ComboSegCaseFiles files{ "case", { dir.path + "/image.nrrd" }, dir.path + "/labels.nrrd" };
  const auto             full = itk::PrepareCase(files, info, names);
  auto                   labels = itk::ReadScan<LabelImage>(dir.path + "/labels.nrrd");

  // Cropped to the structures' bounding box: the same prepared labels.
  LabelImage::IndexType low, high;
  for (int d = 0; d < 3; ++d)
    low[d] = 1000, high[d] = -1;
  itk::ImageRegionConstIteratorWithIndex<LabelImage> it(labels, labels->GetLargestPossibleRegion());
  for (; !it.IsAtEnd(); ++it)
    if (it.Get() != 0)
      for (int d = 0; d < 3; ++d)
        low[d] = std::min(low[d], it.GetIndex()[d]), high[d] = std::max(high[d], it.GetIndex()[d]);
  LabelImage::RegionType box;
  box.SetIndex(low);
  for (int d = 0; d < 3; ++d)
    box.SetSize(d, static_cast<itk::SizeValueType>(high[d] - low[d] + 1));
  ASSERT_LT(box.GetNumberOfPixels(), labels->GetLargestPossibleRegion().GetNumberOfPixels()) << "a real crop";
  auto crop = itk::RegionOfInterestImageFilter<LabelImage, LabelImage>::New();
  crop->SetInput(labels);
  crop->SetRegionOfInterest(box);
  crop->Update();
  Write(crop->GetOutput(), dir.path + "/cropped.nrrd");
  files.labels = dir.path + "/cropped.nrrd";
  EXPECT_EQ(itk::PrepareCase(files, info, names).labels, full.labels);

  // Moved 100 mm away: its structures are not on the scan.
  auto moved = LabelImage::New();
  moved->Graft(crop->GetOutput());
  auto origin = moved->GetOrigin();
  origin[0] += 100.0;
  moved->SetOrigin(origin);
  Write(moved.GetPointer(), dir.path + "/moved.nrrd");
  files.labels = dir.path + "/moved.nrrd";
  EXPECT_TRUE(ThrowsWith([&] { itk::PrepareCase(files, info, names); },
                         { "moved.nrrd", "labelled voxel(s) lie outside its scan", "image.nrrd" }));

  // A segmentation with two layers (overlapping segments), as Slicer writes it: a 4D NRRD.
  const std::string layered = dir.path + "/overlap.seg.nrrd";
  {
    std::ofstream out(layered, std::ios::binary);
    out << "NRRD0004\ntype: unsigned char\ndimension: 4\nspace: left-posterior-superior\nsizes: 2 4 4 4\n"
           "space directions: none (2,0,0) (0,2,0) (0,0,2)\nkinds: list domain domain domain\nencoding: raw\n"
           "space origin: (0,0,0)\nSegment0_Layer:=0\nSegment1_Layer:=1\n\n";
    const std::string voxels(2 * 4 * 4 * 4, '\1');
    out.write(voxels.data(), static_cast<std::streamsize>(voxels.size()));
  }
  files.labels = layered;
  EXPECT_TRUE(ThrowsWith([&] { itk::PrepareCase(files, info, names); }, { "overlap.seg.nrrd", "2 layers", "overlap" }));
  files.labels = dir.path + "/labels.nrrd";

  // The same voxels with a flipped axis are fine.
  auto flipped = LabelImage::New();
  flipped->SetRegions(labels->GetLargestPossibleRegion());
  flipped->SetSpacing(labels->GetSpacing());
  auto direction = labels->GetDirection();
  direction(1, 1) = -1.0;
  flipped->SetDirection(direction);
  const auto size = labels->GetLargestPossibleRegion().GetSize();
  origin = labels->GetOrigin();
  origin[1] += (size[1] - 1) * labels->GetSpacing()[1];
  flipped->SetOrigin(origin);
  flipped->Allocate();
  for (unsigned z = 0; z < size[2]; ++z)
    for (unsigned y = 0; y < size[1]; ++y)
      for (unsigned x = 0; x < size[0]; ++x)
        flipped->SetPixel({ { x, static_cast<itk::IndexValueType>(size[1] - 1 - y), z } },
                          labels->GetPixel({ { x, y, z } }));
  Write(flipped.GetPointer(), dir.path + "/flipped.nrrd");
  files.labels = dir.path + "/flipped.nrrd";
  EXPECT_EQ(itk::PrepareCase(files, info, names).labels, full.labels);
}

// ------------------------------------------------------------------------------------------
// Pixel types

// A scan of TPixel values (negative where the type has them, beyond 2^24 for int, fractions for
// double) on an oblique grid, with a tag, written as NRRD.
template <typename TPixel>
std::string
WriteTypedScan(const std::string & folder, const char * name)
{
  using Scan = itk::Image<TPixel, 3>;
  auto scan = cstest::MakeOrganImage<Scan>({ { 70, 50, 40 } }, { { 0.8, 1.1, 2.5 } }, cstest::Rotation(20, 10));
  const int64_t n = static_cast<int64_t>(scan->GetPixelContainer()->Size());
  TPixel *      v = scan->GetBufferPointer();
  for (int64_t i = 0; i < n; ++i)
  {
    const double ramp = static_cast<double>(i % 251) - (std::numeric_limits<TPixel>::is_signed ? 125.0 : 0.0);
    v[i] = static_cast<TPixel>(std::is_floating_point<TPixel>::value ? ramp * 0.37
                                                                     : ramp * (sizeof(TPixel) >= 4 ? 131071.0 : 1.0));
  }
  itk::EncapsulateMetaData<std::string>(scan->GetMetaDataDictionary(), "Modality", "MR");
  const std::string path = folder + "/" + name + ".nrrd";
  Write(scan.GetPointer(), path);
  return path;
}

// Files of each pixel type read as float (cast over the threads, 1 and 2) equal ITK's own cast,
// voxel for voxel, with the file's grid and tags.
TEST(ComboSegIO, ScansOfEveryPixelTypeReadAsFloatAsITKCastsThem)
{
  cstest::TempDir                dir;
  const std::vector<std::string> files = {
    WriteTypedScan<unsigned char>(dir.path, "uchar"),   WriteTypedScan<signed char>(dir.path, "char"),
    WriteTypedScan<unsigned short>(dir.path, "ushort"), WriteTypedScan<short>(dir.path, "short"),
    WriteTypedScan<unsigned int>(dir.path, "uint"),     WriteTypedScan<int>(dir.path, "int"),
    WriteTypedScan<double>(dir.path, "double"),         WriteTypedScan<float>(dir.path, "float")
  };
  for (const std::string & file : files)
    for (int threads : { 1, 2 })
    {
      auto itkReader = itk::ImageFileReader<FloatImage>::New();
      itkReader->SetFileName(file);
      itkReader->Update();
      const FloatImage *        expected = itkReader->GetOutput();
      const FloatImage::Pointer read = itk::ReadScan<FloatImage>(file, threads);
      ASSERT_EQ(read->GetLargestPossibleRegion(), expected->GetLargestPossibleRegion()) << file;
      EXPECT_EQ(read->GetOrigin(), expected->GetOrigin()) << file;
      EXPECT_EQ(read->GetSpacing(), expected->GetSpacing()) << file;
      EXPECT_EQ(read->GetDirection(), expected->GetDirection()) << file;
      std::string modality;
      EXPECT_TRUE(itk::ExposeMetaData<std::string>(read->GetMetaDataDictionary(), "Modality", modality)) << file;
      EXPECT_EQ(modality, "MR") << file;
      const size_t n = expected->GetPixelContainer()->Size();
      EXPECT_TRUE(std::equal(expected->GetBufferPointer(), expected->GetBufferPointer() + n, read->GetBufferPointer()))
        << file << ", " << threads << " threads";
    }
}

// ------------------------------------------------------------------------------------------
// Bad files

TEST(ComboSegIO, BadFilesAreNamed)
{
  cstest::TempDir dir;
  EXPECT_TRUE(
    ThrowsWith([&] { itk::ReadScan<FloatImage>(dir.path + "/missing.nii.gz"); }, { "missing.nii.gz", "no such file" }));
  WriteText(dir.path + "/garbage.nii.gz", "definitely not an image");
  EXPECT_TRUE(
    ThrowsWith([&] { itk::ReadScan<FloatImage>(dir.path + "/garbage.nii.gz"); }, { "cannot read", "garbage.nii.gz" }));
  // A 4D NRRD (2x2x2x3) for a 3D scan.
  {
    std::ofstream out(dir.path + "/four.nrrd", std::ios::binary);
    out << "NRRD0004\ntype: float\ndimension: 4\nsizes: 2 2 2 3\nencoding: raw\nendian: little\n\n";
    const std::vector<float> data(24, 1.0f);
    out.write(reinterpret_cast<const char *>(data.data()), data.size() * sizeof(float));
  }
  EXPECT_TRUE(ThrowsWith([&] { itk::ReadScan<FloatImage>(dir.path + "/four.nrrd"); }, { "four.nrrd", "4D" }));
  std::filesystem::create_directories(dir.path + "/empty-folder");
  EXPECT_TRUE(
    ThrowsWith([&] { itk::ReadScan<FloatImage>(dir.path + "/empty-folder"); }, { "no DICOM series", "empty-folder" }));
  EXPECT_TRUE(ThrowsWith([&] { itk::ReadLabelNames(dir.path + "/none.ctbl"); }, { "none.ctbl" }));
  WriteText(dir.path + "/bad.ctbl", "1 liver\nliver 2\n");
  EXPECT_TRUE(ThrowsWith([&] { itk::ReadLabelNames(dir.path + "/bad.ctbl"); }, { "bad.ctbl line 2" }));
}

// Times the filter's stages from its progress: pre-processing ends at 0.1, inference at 0.9.
class StageClock : public itk::Command
{
public:
  ITK_DISALLOW_COPY_AND_MOVE(StageClock);
  using Self = StageClock;
  using Pointer = itk::SmartPointer<Self>;
  itkNewMacro(Self);
  using Clock = std::chrono::steady_clock;

  void
  Execute(itk::Object * caller, const itk::EventObject & event) override
  {
    Execute(static_cast<const itk::Object *>(caller), event);
  }
  void
  Execute(const itk::Object * caller, const itk::EventObject &) override
  {
    const float progress = static_cast<const itk::ProcessObject *>(caller)->GetProgress();
    const auto  now = Clock::now();
    if (progress <= 0.0f)
      start = now;
    if (progress >= 0.1f && preprocessed == Clock::time_point())
      preprocessed = now;
    if (progress >= 0.9f && inferred == Clock::time_point())
      inferred = now;
    if (progress >= 1.0f)
      finished = now;
  }
  static double
  Seconds(Clock::time_point a, Clock::time_point b)
  {
    return std::chrono::duration<double>(b - a).count();
  }
  Clock::time_point start{}, preprocessed{}, inferred{}, finished{};

protected:
  StageClock() = default;
};

// ------------------------------------------------------------------------------------------
// End to end on the real CT series: read, pre-process, infer with a small model, post-process,
// write. Prints the time it took.

TEST(ComboSegRealData, SegmentsTheCtSeriesEndToEnd)
{
  CS_REQUIRE_DATA("ct-abdomen/dicom-series");
  double                                   spacing[3] = { 2.0, 2.0, 2.0 };
  std::vector<std::pair<int, std::string>> classes{ { 0, "background" } };
  for (int k = 1; k < 8; ++k)
    classes.emplace_back(k, "structure " + std::to_string(k));
  cs_model_info info = CtModelInfo(classes, spacing, 8, 3);
  info.patch_size[0] = info.patch_size[1] = 64;
  info.patch_size[2] = 32;
  cstest::TempDir   dir;
  const std::string modelPath = dir.path + "/small.safetensors";
  cstest::MakeModel(info)->Save(modelPath);

  const std::string   output = dir.path + "/labels.nrrd";
  const auto          start = std::chrono::steady_clock::now();
  ShortImage::Pointer ct = itk::ReadScan<ShortImage>(cstest::DataPath("ct-abdomen/dicom-series"));
  const auto          read = std::chrono::steady_clock::now();
  auto                filter = itk::ComboSegImageFilter<ShortImage, LabelImage>::New();
  filter->SetModelFileName(modelPath);
  filter->SetInput(ct);
  auto clock = StageClock::New();
  filter->AddObserver(itk::ProgressEvent(), clock);
  auto writer = itk::ImageFileWriter<LabelImage>::New();
  writer->SetInput(filter->GetOutput());
  writer->SetFileName(output);
  writer->UseCompressionOn();
  ASSERT_NO_THROW(writer->Update());
  const auto   end = std::chrono::steady_clock::now();
  const double seconds = StageClock::Seconds(start, end);
  std::cout << "end-to-end segmentation of the 512x512x20 CT series: " << seconds << " s (read "
            << StageClock::Seconds(start, read) << ", pre-process "
            << StageClock::Seconds(clock->start, clock->preprocessed) << ", infer "
            << StageClock::Seconds(clock->preprocessed, clock->inferred) << ", post-process "
            << StageClock::Seconds(clock->inferred, clock->finished) << ", write "
            << StageClock::Seconds(clock->finished, end) << ")" << std::endl;
  RecordProperty("seconds", std::to_string(seconds));

  LabelImage::Pointer written = itk::ReadScan<LabelImage>(output);
  EXPECT_EQ(written->GetLargestPossibleRegion().GetSize(), ct->GetLargestPossibleRegion().GetSize());
  for (int d = 0; d < 3; ++d)
  {
    EXPECT_NEAR(written->GetSpacing()[d], ct->GetSpacing()[d], 1e-5);
    EXPECT_NEAR(written->GetOrigin()[d], ct->GetOrigin()[d], 1e-3);
  }
  EXPECT_TRUE(itk::ComboSegSameGrid(itk::ComboSegGridOf(written.GetPointer()), itk::ComboSegGridOf(ct.GetPointer())));
}

} // namespace
