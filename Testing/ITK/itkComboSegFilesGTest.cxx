// itkComboSegFilesGTest.cxx - the C++ layers' one way to replace files, name temporaries, parse
// numbers and show messages (itkComboSegFiles.h).
#include "itkComboSegFiles.h"

#include "itkMacro.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

namespace
{

class ComboSegFilesTest : public ::testing::Test
{
protected:
  void
  SetUp() override
  {
    char pattern[] = "/tmp/comboseg-files-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    m_Dir = pattern;
  }
  void
  TearDown() override
  {
    std::filesystem::remove_all(m_Dir);
  }
  std::string m_Dir;
};

// A process id that no process holds now: a child that has exited and been reaped.
pid_t
DeadProcess()
{
  const pid_t child = fork();
  if (child == 0)
    _exit(0);
  waitpid(child, nullptr, 0);
  return child;
}

TEST(ComboSegFiles, OneTemporaryNameRule)
{
  const std::string pid = std::to_string(getpid());
  EXPECT_EQ(itk::ComboSegTemporaryPath("a/b.nrrd"), "a/b.nrrd.tmp-" + pid);
  EXPECT_EQ(itk::ComboSegTemporaryPath("b.png", ".png"), "b.png.tmp-" + pid + ".png");
}

// Issue 16 item 5: a number with anything after it is no number (it was read as its prefix, or 0).
TEST(ComboSegFiles, NumbersAreWholeOrRefused)
{
  double v = -1.0;
  EXPECT_TRUE(itk::ComboSegParseDouble("0.25", v));
  EXPECT_EQ(v, 0.25);
  EXPECT_TRUE(itk::ComboSegParseDouble("nan", v));
  EXPECT_TRUE(std::isnan(v));
  for (const char * bad : { "", "abc", "0.5x", "1e999", "0.5 " })
    EXPECT_FALSE(itk::ComboSegParseDouble(bad, v)) << bad;
  long long i = 0;
  EXPECT_TRUE(itk::ComboSegParseInt("-12", i));
  EXPECT_EQ(i, -12);
  for (const char * bad : { "", "x1", "1.5", "99999999999999999999" })
    EXPECT_FALSE(itk::ComboSegParseInt(bad, i)) << bad;
  EXPECT_EQ(itk::ComboSegTrim(" \t a b \r\n"), "a b");
  EXPECT_TRUE(itk::ComboSegEndsWithNoCase("Scan.NRRD", ".nrrd"));
  EXPECT_FALSE(itk::ComboSegEndsWith("Scan.NRRD", ".nrrd"));
}

// Issue 16 item 5: bytes that are not printable reach a terminal escaped; UTF-8 letters stay.
TEST(ComboSegFiles, MessagesArePrintable)
{
  EXPECT_EQ(itk::ComboSegPrintable("a\x1b[31mb"), "a\\x1B[31mb");
  EXPECT_EQ(itk::ComboSegPrintable("f\xc3\xa9mur"), "f\xc3\xa9mur");
  EXPECT_EQ(itk::ComboSegPrintable("bad \xff\xc3"), "bad \\xFF\\xC3");
  EXPECT_EQ(itk::ComboSegPrintable(std::string("nul\0end", 7)), "nul\\x00end");
}

// Issue 16 item 5: what a user reads of an ITK exception leads with the problem, not with the
// source file and line.
TEST(ComboSegFiles, UserMessageHasNoSourceLocation)
{
  try
  {
    itkGenericExceptionMacro("cannot read /data/scan.nrrd: field '\x07'");
  }
  catch (const std::exception & e)
  {
    const std::string message = itk::ComboSegUserMessage(e);
    EXPECT_EQ(message, "cannot read /data/scan.nrrd: field '\\x07'");
    EXPECT_NE(std::string(e.what()).find(".cxx:"), std::string::npos) << "ITK's what() has the location";
  }
}

// Issue 16 item 2: the temporaries of killed writers, files and folders alike, go when the file
// is written next; those of a running process stay.
TEST_F(ComboSegFilesTest, AtomicWriteRemovesStaleTemporariesFilesAndFolders)
{
  const std::string path = m_Dir + "/labels.nii.gz";
  const std::string staleFile = path + ".tmp-" + std::to_string(DeadProcess());
  const std::string staleFolder = path + ".tmp-" + std::to_string(DeadProcess());
  const std::string live = path + ".tmp-" + std::to_string(getppid());
  std::ofstream(staleFile) << "partial";
  std::filesystem::create_directories(staleFolder + "/inner");
  std::ofstream(staleFolder + "/labels.nii.gz") << "partial";
  std::ofstream(live) << "partial";
  itk::ComboSegWriteFileAtomically(path, "done");
  std::ifstream in(path);
  std::string   text;
  std::getline(in, text);
  EXPECT_EQ(text, "done");
  EXPECT_FALSE(std::filesystem::exists(staleFile));
  EXPECT_FALSE(std::filesystem::exists(staleFolder));
  EXPECT_TRUE(std::filesystem::exists(live));
  EXPECT_FALSE(std::filesystem::exists(itk::ComboSegTemporaryPath(path)));
}

TEST_F(ComboSegFilesTest, FailedWriteNamesTheFileAndLeavesNothing)
{
  const std::string path = m_Dir + "/no-such-folder/table.tsv";
  try
  {
    itk::ComboSegWriteFileAtomically(path, "x");
    FAIL() << "wrote into a missing folder";
  }
  catch (const itk::ExceptionObject & e)
  {
    EXPECT_NE(std::string(e.GetDescription()).find(path), std::string::npos) << e.GetDescription();
  }
  const std::string folder = itk::ComboSegMakeTemporaryFolder(m_Dir + "/out.mha");
  EXPECT_EQ(folder, itk::ComboSegTemporaryPath(m_Dir + "/out.mha"));
  EXPECT_TRUE(itk::ComboSegIsFolder(folder));
  itk::ComboSegRemoveTree(folder);
  EXPECT_FALSE(itk::ComboSegFileExists(folder));
}


// The system calls the ITK and CLI layers make through itkComboSegFiles.h.
TEST_F(ComboSegFilesTest, FolderAndPermissionHelpers)
{
  std::vector<std::string> names{ "stale" };
  EXPECT_FALSE(itk::ComboSegListFolder(m_Dir + "/missing", names));
  EXPECT_TRUE(names.empty());
  const std::string sub = m_Dir + "/sub";
  ASSERT_TRUE(itk::ComboSegMakeFolder(sub));
  EXPECT_TRUE(itk::ComboSegMakeFolder(sub)) << "an existing folder is fine";
  EXPECT_FALSE(itk::ComboSegMakeFolder(m_Dir + "/missing/sub"));
  std::ofstream(sub + "/b.txt") << "b";
  std::ofstream(m_Dir + "/a.txt") << "a";
  ASSERT_TRUE(itk::ComboSegListFolder(m_Dir, names));
  EXPECT_EQ(names, (std::vector<std::string>{ "a.txt", "sub" }));
  EXPECT_TRUE(itk::ComboSegCanRead(m_Dir + "/a.txt"));
  EXPECT_FALSE(itk::ComboSegCanRead(m_Dir + "/missing.txt"));
  EXPECT_TRUE(itk::ComboSegCanWriteInFolder(sub));
  EXPECT_FALSE(itk::ComboSegCanWriteInFolder(m_Dir + "/missing"));
  FILE * f = std::fopen((m_Dir + "/c.txt").c_str(), "wb");
  ASSERT_NE(f, nullptr);
  std::fputs("c", f);
  EXPECT_TRUE(itk::ComboSegFlushToDisk(f));
  std::fclose(f);
  EXPECT_TRUE(std::filesystem::equivalent(itk::ComboSegExecutablePath(), "/proc/self/exe"));
}

} // namespace
