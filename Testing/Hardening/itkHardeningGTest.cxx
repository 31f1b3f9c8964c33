// itkHardeningGTest.cxx - hostile data-set descriptions and label-name files for the ITK layer:
// each must give an itk::ExceptionObject naming the problem, never a crash. The regressions of
// what fuzzing (Testing/Fuzz) found; each case runs in a child process so that a crash fails
// the test instead of ending the suite.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <sys/stat.h>

#include "hardening_util.h"
#include "itkComboSegDataSet.h"
#include "itkComboSegIO.h"

using namespace cs_hardening;

namespace
{

enum Outcome {
    kRead = 0,
    kException = 1,
    kOtherException = 2
};

// A data-set folder with two cases whose (empty) files exist, and the given dataset.json.
int ReadDataSet(const TempDir &dir, const std::string &json)
{
    const std::string root = dir.File("Task");
    mkdir(root.c_str(), 0700);
    mkdir((root + "/imagesTr").c_str(), 0700);
    mkdir((root + "/labelsTr").c_str(), 0700);
    for (const char *f : {"/imagesTr/a_0000.nii.gz", "/labelsTr/a.nii.gz"})
        std::ofstream(root + f).put('\0');
    std::ofstream(root + "/dataset.json") << json;
    return InChild([&] {
        try {
            itk::ReadMSDDataSet(root);
            return static_cast<int>(kRead);
        } catch (const itk::ExceptionObject &) {
            return static_cast<int>(kException);
        } catch (...) {
            return static_cast<int>(kOtherException);
        }
    });
}

int ReadNames(const TempDir &dir, const std::string &text)
{
    const std::string path = dir.File("names.txt");
    std::ofstream(path) << text;
    return InChild([&] {
        try {
            itk::ReadLabelNames(path);
            return static_cast<int>(kRead);
        } catch (const itk::ExceptionObject &) {
            return static_cast<int>(kException);
        } catch (...) {
            return static_cast<int>(kOtherException);
        }
    });
}

TEST(ITKHardening, ValidDataSetStillReads)
{
    TempDir dir;
    EXPECT_EQ(
        ReadDataSet(dir,
                    R"({"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}})"),
        kRead);
}

TEST(ITKHardening, DataSetNotAnObjectOrTruncated)
{
    TempDir dir;
    for (const char *json : {"", "[]", "\"text\"", "{", "{\"labels\": {\"0\": \"bg\"", "null"})
        EXPECT_EQ(ReadDataSet(dir, json), kException) << json;
}

TEST(ITKHardening, DataSetWrongTypesGiveExceptions)
{
    TempDir dir;
    for (const char *json :
         {R"({"labels": {"1": null}})", R"({"labels": {"liver": "x"}})", R"({"training": ["a"]})",
          R"({"training": [{"label": 3}]})", R"({"training": [{"label": "labelsTr/b.nii.gz"}]})",
          R"({"channel_names": {"zero": "CT"}})", R"({"channel_names": {"0": 5}})",
          R"({"file_ending": ".nrrd"})"})
        EXPECT_EQ(ReadDataSet(dir, json), kException) << json;
}

// KNOWN BUG (itkComboSegDataSet.cxx, IndexedStrings and the "labels" loop of ReadMSDDataSet):
// array items have no key, and item->string (NULL) goes to std::strtol: SIGSEGV on
// {"channel_names": ["CT"]}, {"modality": ["CT"]} and {"labels": ["background", "liver"]}.
// Enable once the keys are checked.
TEST(ITKHardening, DataSetArraysInsteadOfObjects)
{
    TempDir dir;
    for (const char *json : {R"({"channel_names": ["CT"]})", R"({"modality": ["CT"]})",
                             R"({"labels": ["background", "liver"]})"}) {
        const int outcome = ReadDataSet(dir, json);
        EXPECT_EQ(outcome, kException) << json << ": outcome " << outcome << " (negative: a crash)";
    }
}

TEST(ITKHardening, LabelNameFiles)
{
    TempDir dir;
    EXPECT_EQ(ReadNames(dir, "0 background 0 0 0 0\n1 liver 221 130 101 255\n"), kRead);
    EXPECT_EQ(ReadNames(dir, "value,name\n1,liver\n2,spleen\n"), kRead);
    EXPECT_EQ(ReadNames(dir, ""), kRead); // no names: labels map by value
    for (const char *text : {"1\n", "liver 1\n", "1,liver\n1,spleen\n", "x,y\nx,y\n"})
        EXPECT_EQ(ReadNames(dir, text), kException) << text;
    // odd but harmless: huge values, long lines, colours out of range, binary bytes
    for (const std::string text :
         {std::string("99999999999999999999 big\n"), std::string(100000, 'a') + "\n",
          std::string("1 a -5 300 2 0\n"), std::string("1 \x01\x02\xff\n", 6)}) {
        const int outcome = ReadNames(dir, text);
        EXPECT_TRUE(outcome == kRead || outcome == kException) << "outcome " << outcome;
    }
}

} // namespace
