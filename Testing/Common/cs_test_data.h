// cs_test_data.h - where tests find the real data sets, and how they skip without them.
#pragma once

#include <cstdlib>
#include <string>
#include <sys/stat.h>

#include <gtest/gtest.h>

namespace cstest
{

// The folder of real scans: $COMBOSEG_DATA_DIR, else the path configured at build time.
inline std::string DataDir()
{
  const char *env = std::getenv("COMBOSEG_DATA_DIR");
  return (env && *env) ? std::string(env) : std::string(COMBOSEG_DATA_DIR_DEFAULT);
}

inline bool PathExists(const std::string &path)
{
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

// Full path of a file in the data folder.
inline std::string DataPath(const std::string &relative)
{
  return DataDir() + "/" + relative;
}

} // namespace cstest

// Skips the current test, saying which file is missing, when the real data is absent.
#define CS_REQUIRE_DATA(relative)                                                                                      \
  do                                                                                                                   \
  {                                                                                                                    \
    const std::string cs_required_path_ = cstest::DataPath(relative);                                                  \
    if (!cstest::PathExists(cs_required_path_))                                                                        \
      GTEST_SKIP() << "real data not found: " << cs_required_path_                                                     \
                   << " (set COMBOSEG_DATA_DIR to the shared data folder)";                                            \
  } while (0)
