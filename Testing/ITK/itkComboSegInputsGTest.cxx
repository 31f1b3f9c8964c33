// itkComboSegInputsGTest - what a Slicer user gives the modules (issue 17, input side): Slicer's
// colour tables, the modality of a scan, channels that lie elsewhere in space, 2D images for 3D
// models, intensity images given as label maps. Real files from the shared data where the
// problems were found on them (skipped without it), small generated ones otherwise.
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cs_test_data.h"
#include "itkComboSegTestUtilities.h"

#include "itkComboSegDataSet.h"
#include "itkComboSegIO.h"
#include "itkComboSegImageFilter.h"
#include "itkComboSegInputChecks.h"
#include "itkComboSegProcessing.h"

namespace
{

using FloatImage = itk::Image<float, 3>;
using LabelImage = itk::Image<short, 3>;

void
WriteText(const std::string & path, const std::string & text)
{
  std::ofstream(path) << text;
}

// The message of the itk::ExceptionObject `f` throws ("" when it throws none).
std::string
ErrorOf(const std::function<void()> & f)
{
  try
  {
    f();
  }
  catch (const itk::ExceptionObject & e)
  {
    return e.GetDescription();
  }
  return "";
}

// Slicer 5's CSV colour table header: the colour, then the terminology of each entry.
const char * kSlicerCsvHeader =
  "LabelValue,Name,Color_R,Color_G,Color_B,Color_A,Category_CodingScheme,Category_CodeValue,"
  "Category_CodeMeaning,Type_CodingScheme,Type_CodeValue,Type_CodeMeaning,TypeModifier_CodingScheme,"
  "TypeModifier_CodeValue,TypeModifier_CodeMeaning,Region_CodingScheme,Region_CodeValue,Region_CodeMeaning,"
  "RegionModifier_CodingScheme,RegionModifier_CodeValue,RegionModifier_CodeMeaning\n";

// The grid of a scan file, its values as floats and its dictionary.
struct Scan
{
  FloatImage::Pointer image;
  const float *
  Values() const
  {
    return image->GetBufferPointer();
  }
  int64_t
  Count() const
  {
    return static_cast<int64_t>(image->GetPixelContainer()->Size());
  }
  itk::ComboSegGrid
  Grid() const
  {
    return itk::ComboSegGridOf(image.GetPointer());
  }
};

Scan
ReadData(const std::string & relative)
{
  return Scan{ itk::ReadScan<FloatImage>(cstest::DataPath(relative)) };
}

// An MR model's metadata (the organ model with its channel declared MR).
cs_model_info
MRModelInfo()
{
  cs_model_info info = cstest::OrganModelInfo();
  std::snprintf(info.channels[0].name, sizeof(info.channels[0].name), "T1");
  info.channels[0].modality = CS_MODALITY_MR;
  info.channels[0].norm = CS_NORM_ZSCORE;
  return info;
}

} // namespace

// ---- 1. Slicer's own colour tables

TEST(ComboSegLabelNameFiles, Slicer5CsvIsReadByItsHeader)
{
  cstest::TempDir   dir;
  const std::string path = dir.path + "/tumour.labels.csv";
  WriteText(path, std::string(kSlicerCsvHeader) +
                    "1,necrosis,255,0,0,255,SCT,49755003,Morphologically Altered Structure,SCT,6574001,Necrosis,,,,"
                    ",,,,,\n"
                    "2,oedema,0,255,0,255,,,,,,,,,,,,,,,\n"
                    "4,\"tumour, enhancing\",10,20,30,255,,,,,,,,,,,,,,,\n"
                    "7,,1,2,3,255,SCT,123037004,Anatomical Structure,SCT,64033007,Kidney,SCT,7771000,Left,,,,,,\n");
  const std::vector<itk::LabelName> names = itk::ReadLabelNames(path);
  ASSERT_EQ(names.size(), 4u);
  EXPECT_EQ(names[0].value, 1);
  EXPECT_EQ(names[0].name, "necrosis") << "the colour must not be glued into the name";
  EXPECT_TRUE(names[0].hasColor);
  EXPECT_EQ(names[0].rgb[0], 255);
  EXPECT_EQ(names[0].rgb[1], 0);
  EXPECT_EQ(names[1].name, "oedema");
  EXPECT_EQ(names[1].rgb[1], 255);
  EXPECT_EQ(names[2].value, 4);
  EXPECT_EQ(names[2].name, "tumour, enhancing") << "a quoted value keeps its comma";
  EXPECT_EQ(names[2].rgb[2], 30);
  EXPECT_EQ(names[3].name, "Left Kidney") << "an entry without a name is named by its terminology";
}

TEST(ComboSegLabelNameFiles, Slicer5CsvNamesMapOntoTheModelsClasses)
{
  // What ComboSegTrain --labelNames does with the names: map a label map onto the model's classes.
  cstest::TempDir   dir;
  const std::string path = dir.path + "/organs.csv";
  WriteText(path, std::string(kSlicerCsvHeader) + "1,organ one,200,10,10,255,,,,,,,,,,,,,,,\n" +
                    "2,organ two,10,200,10,255,,,,,,,,,,,,,,,\n");
  const cs_model_info info = cstest::OrganModelInfo();
  const auto          mapping = itk::ComboSegMapLabelValues(itk::ReadLabelNames(path), info, path);
  ASSERT_EQ(mapping.size(), 3u) << "background, organ one, organ two";
  EXPECT_EQ(mapping[1], std::make_pair(1, 1));
  EXPECT_EQ(mapping[2], std::make_pair(2, 2));
}

TEST(ComboSegLabelNameFiles, ValueNameCsvWithOrWithoutHeaderAndColourTables)
{
  cstest::TempDir   dir;
  const std::string withHeader = dir.path + "/a.csv", plain = dir.path + "/b.csv", table = dir.path + "/c.ctbl";
  WriteText(withHeader, "value,name\n1,liver\n2,left kidney\n");
  WriteText(plain, "1,liver\n2,left kidney,10,20,30\n");
  WriteText(table, "# Color table file\n0 Background 0 0 0 0\n1 liver 221 130 101 255\n2 left_kidney 1 2 3 255\n");
  for (const std::string & path : { withHeader, plain })
  {
    const auto names = itk::ReadLabelNames(path);
    ASSERT_EQ(names.size(), 2u) << path;
    EXPECT_EQ(names[0].name, "liver") << path;
    EXPECT_EQ(names[1].name, "left kidney") << path;
  }
  EXPECT_EQ(itk::ReadLabelNames(plain)[1].rgb[2], 30);
  const auto names = itk::ReadLabelNames(table);
  ASSERT_EQ(names.size(), 3u);
  EXPECT_EQ(names[1].name, "liver");
  EXPECT_EQ(names[1].rgb[0], 221);
  EXPECT_EQ(names[2].name, "left_kidney");
}

TEST(ComboSegLabelNameFiles, OtherFormatsAreRefusedWithTheFormatsRead)
{
  cstest::TempDir   dir;
  const std::string path = dir.path + "/names.json";
  WriteText(path, "{\"1\": \"liver\"}\n");
  const std::string message = ErrorOf([&] { itk::ReadLabelNames(path); });
  EXPECT_NE(message.find("names.json"), std::string::npos) << message;
  for (const char * format : { ".csv", "LabelValue,Name", ".ctbl", ".seg.nrrd", ".safetensors" })
    EXPECT_NE(message.find(format), std::string::npos) << format << " missing from: " << message;
  // A CSV whose header has no name column says what it needs.
  const std::string noName = dir.path + "/colours.csv";
  WriteText(noName, "LabelValue,Color_R,Color_G,Color_B\n1,1,2,3\n");
  EXPECT_NE(ErrorOf([&] { itk::ReadLabelNames(noName); }).find("name"), std::string::npos);
}

TEST(ComboSegLabelNameFiles, ModelFileGivesItsClasses)
{
  cstest::TempDir   dir;
  const std::string path = dir.path + "/organs.safetensors";
  cstest::MakeModel(cstest::OrganModelInfo())->Save(path);
  const auto names = itk::ReadLabelNames(path);
  ASSERT_EQ(names.size(), 2u);
  EXPECT_EQ(names[0].value, 3);
  EXPECT_EQ(names[0].name, "organ one");
  EXPECT_EQ(names[1].value, 7);
}

TEST(ComboSegLabelNameFiles, BundledAndRealValueNameFilesStillRead)
{
  const auto bundled =
    itk::ReadLabelNames(std::string(COMBOSEG_SOURCE_DIR) + "/Resources/Models/brain-tumor-flair-t1c.labels.csv");
  ASSERT_EQ(bundled.size(), 4u);
  EXPECT_EQ(bundled[0].name, "necrosis");
  EXPECT_EQ(bundled[3].name, "enhancing tumour");
  CS_REQUIRE_DATA("brain-structures/colin27/label-names.csv");
  const auto colin = itk::ReadLabelNames(cstest::DataPath("brain-structures/colin27/label-names.csv"));
  ASSERT_EQ(colin.size(), 26u);
  EXPECT_EQ(colin[0].name, "L_striatum");
}

// ---- 2. Channels that lie elsewhere in space

TEST(ComboSegChannelOverlap, SharedAndDisjointGrids)
{
  itk::ComboSegGrid a;
  a.size = { { 10, 10, 10 } };
  itk::ComboSegGrid b = a;
  EXPECT_DOUBLE_EQ(itk::ComboSegPhysicalOverlap(a, b), 1.0);
  b.origin = { { 5.0, 0.0, 0.0 } }; // half of a along x
  EXPECT_NEAR(itk::ComboSegPhysicalOverlap(a, b), 0.5, 1e-9);
  b.origin = { { 0.0, 0.0, 100.0 } };
  EXPECT_DOUBLE_EQ(itk::ComboSegPhysicalOverlap(a, b), 0.0);
  // Mirrored storage of the same box overlaps it fully.
  b.direction = { { -1, 0, 0, 0, -1, 0, 0, 0, 1 } };
  b.origin = { { 9.0, 9.0, 0.0 } };
  EXPECT_DOUBLE_EQ(itk::ComboSegPhysicalOverlap(a, b), 1.0);
}

TEST(ComboSegChannelOverlap, AbdominalCTCoversLittleOfTheBratsFlair)
{
  CS_REQUIRE_DATA("brats2013/brats_2013_pat0003_1/Flair_subtrMeanDivStd.nii.gz");
  CS_REQUIRE_DATA("ct-abdomen/totalseg/example_ct_sm.nii.gz");
  const Scan flair = ReadData("brats2013/brats_2013_pat0003_1/Flair_subtrMeanDivStd.nii.gz");
  const Scan t1c = ReadData("brats2013/brats_2013_pat0003_1/T1c_subtrMeanDivStd.nii.gz");
  const Scan ct = ReadData("ct-abdomen/totalseg/example_ct_sm.nii.gz");
  EXPECT_DOUBLE_EQ(itk::ComboSegPhysicalOverlap(flair.Grid(), t1c.Grid()), 1.0);
  // Both lie near the origin: the CT's box covers 29 % of the FLAIR's, well below the half that the
  // modules require of a channel.
  EXPECT_LT(itk::ComboSegPhysicalOverlap(flair.Grid(), ct.Grid()), 0.5);
}

// ---- 3. Modality

TEST(ComboSegModality, CTSignatureOnRealScans)
{
  CS_REQUIRE_DATA("ct-abdomen/totalseg/example_ct_sm.nii.gz");
  CS_REQUIRE_DATA("brats2013/brats_2013_pat0003_1/Flair_subtrMeanDivStd.nii.gz");
  const Scan  ct = ReadData("ct-abdomen/totalseg/example_ct_sm.nii.gz");
  std::string evidence;
  EXPECT_TRUE(itk::ComboSegLooksLikeCT(ct.Values(), ct.Count(), &evidence));
  EXPECT_NE(evidence.find("Hounsfield"), std::string::npos) << evidence;
  for (const char * mr : { "brats2013/brats_2013_pat0003_1/Flair_subtrMeanDivStd.nii.gz",
                           "brats2013/brats_2013_pat0003_1/T1c_subtrMeanDivStd.nii.gz",
                           "brain-structures/icbm152/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz" })
  {
    if (!cstest::PathExists(cstest::DataPath(mr)))
      continue;
    const Scan scan = ReadData(mr);
    EXPECT_FALSE(itk::ComboSegLooksLikeCT(scan.Values(), scan.Count())) << mr;
  }
  const std::string ch2 = "/usr/share/mricron/templates/ch2.nii.gz";
  if (cstest::PathExists(ch2))
  {
    const auto image = itk::ReadScan<FloatImage>(ch2);
    EXPECT_FALSE(itk::ComboSegLooksLikeCT(image->GetBufferPointer(), int64_t(image->GetPixelContainer()->Size())));
  }
}

// Over the threads in chunks of 64 Ki voxels: the same answer and evidence for 1, 2 and 3 threads,
// with the air (-1000) in the last chunk only, at 5 % (CT) and just below (not CT).
TEST(ComboSegModality, CTSignatureDoesNotDependOnTheThreadCount)
{
  const int64_t      n = 3 * 65536 + 4000;
  std::vector<float> scan(static_cast<size_t>(n), 40.0f);
  const int64_t      air = n / 20; // 5 %, rounded down
  std::fill(scan.end() - air - 1, scan.end(), -1000.0f);
  std::vector<float> fewer(scan);
  std::fill(fewer.end() - air - 1, fewer.end() - air + 400, 40.0f);
  std::string serial;
  ASSERT_TRUE(itk::ComboSegLooksLikeCT(scan.data(), n, &serial, 1));
  for (int threads : { 1, 2, 3 })
  {
    std::string evidence;
    EXPECT_TRUE(itk::ComboSegLooksLikeCT(scan.data(), n, &evidence, threads)) << threads << " threads";
    EXPECT_EQ(evidence, serial) << threads << " threads";
    EXPECT_FALSE(itk::ComboSegLooksLikeCT(fewer.data(), n, nullptr, threads)) << threads << " threads";
  }
}

TEST(ComboSegModality, DicomModalityTagIsRead)
{
  CS_REQUIRE_DATA("ct-abdomen/dicom-series");
  const Scan                          ct = ReadData("ct-abdomen/dicom-series");
  const itk::ComboSegModalityEvidence found =
    itk::ComboSegScanModality(ct.Values(), ct.Count(), ct.image->GetMetaDataDictionary());
  EXPECT_EQ(found.modality, CS_MODALITY_CT);
  EXPECT_NE(found.evidence.find("DICOM Modality"), std::string::npos) << found.evidence;
  const std::string message = ErrorOf([&] {
    itk::ComboSegCheckModality(ct.Values(), ct.Count(), ct.image->GetMetaDataDictionary(), MRModelInfo(), 0,
                               "the CT series", "add --ignoreModalityMismatch to go ahead anyway");
  });
  for (const char * part : { "the CT series", "CT", "MR", "--ignoreModalityMismatch", "T1" })
    EXPECT_NE(message.find(part), std::string::npos) << part << " missing from: " << message;
}

TEST(ComboSegModality, FilterRefusesCTForAnMRModelUnlessTold)
{
  // The synthetic organs in air (-1000 HU), the CT signature, given to an MR model.
  auto    image = cstest::MakeOrganImage({ { 24, 24, 12 } }, { { 2.0, 2.0, 2.0 } }, cstest::Rotation(0, 0));
  float * v = image->GetBufferPointer();
  for (size_t i = 0; i < image->GetPixelContainer()->Size(); ++i)
    if (v[i] < 0.0f)
      v[i] = -1000.0f;
  auto filter = itk::ComboSegImageFilter<FloatImage, LabelImage>::New();
  filter->SetModel(cstest::MakeModel(MRModelInfo()));
  filter->SetInput(image);
  const std::string message = ErrorOf([&] { filter->Update(); });
  EXPECT_NE(message.find("CT"), std::string::npos) << message;
  EXPECT_NE(message.find("IgnoreModalityMismatch"), std::string::npos) << message;
  filter->IgnoreModalityMismatchOn();
  EXPECT_EQ(ErrorOf([&] { filter->Update(); }), "");
  // The same scan for a CT model is what it expects.
  auto ctFilter = itk::ComboSegImageFilter<FloatImage, LabelImage>::New();
  ctFilter->SetModel(cstest::MakeModel(cstest::OrganModelInfo()));
  ctFilter->SetInput(image);
  EXPECT_EQ(ErrorOf([&] { ctFilter->Update(); }), "");
}

// ---- 12. A 2D image for a 3D model; an intensity image given as a label map

TEST(ComboSegDimensions, SingleSliceGivenToA3DModelIsRefused)
{
  auto image = cstest::MakeOrganImage({ { 24, 24, 1 } }, { { 2.0, 2.0, 2.0 } }, cstest::Rotation(0, 0));
  auto filter = itk::ComboSegImageFilter<FloatImage, LabelImage>::New();
  filter->SetModel(cstest::MakeModel(cstest::OrganModelInfo()));
  filter->SetInput(image);
  const std::string message = ErrorOf([&] { filter->Update(); });
  EXPECT_NE(message.find("2D"), std::string::npos) << message;
  EXPECT_NE(message.find("3D"), std::string::npos) << message;
  EXPECT_NE(message.find("synthetic-organs"), std::string::npos) << message;
}

TEST(ComboSegLabelMapSigns, IntensityImagesAreTold)
{
  std::vector<float> labels = { 0, 0, 1, 2, 2, 85, 0 };
  EXPECT_EQ(itk::ComboSegIntensityImageSigns(labels.data(), int64_t(labels.size())), "");
  std::vector<float> fractional = labels;
  fractional[3] = 0.25f;
  EXPECT_NE(itk::ComboSegIntensityImageSigns(fractional.data(), int64_t(fractional.size())).find("not integers"),
            std::string::npos);
  std::vector<float> ramp(1000);
  for (size_t i = 0; i < ramp.size(); ++i)
    ramp[i] = float(i);
  EXPECT_NE(itk::ComboSegIntensityImageSigns(ramp.data(), int64_t(ramp.size())).find("1000 distinct"),
            std::string::npos);
}
