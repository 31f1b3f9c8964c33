/* fuzz_util.h - what the fuzz targets share: a private scratch folder per process and writing
 * the fuzz input to a file there (the loaders under test read files, not memory). */
#ifndef COMBOSEG_FUZZ_UTIL_H
#define COMBOSEG_FUZZ_UTIL_H

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <unistd.h>

namespace cs_fuzz
{

/* The scratch folder, made once (under $TMPDIR or /tmp) and removed at exit. */
inline const std::string &
ScratchFolder()
{
  static std::string folder = [] {
    const char * base = std::getenv("TMPDIR");
    std::string  pattern = std::string(base && base[0] ? base : "/tmp") + "/cs-fuzz-XXXXXX";
    if (!mkdtemp(&pattern[0]))
    {
      std::perror("mkdtemp");
      std::abort(); // a harness failure, not a finding
    }
    return pattern;
  }();
  return folder;
}

/* Writes size bytes to path; aborts on failure (the harness cannot go on without it). */
inline void
WriteFile(const std::string & path, const uint8_t * data, size_t size)
{
  FILE * f = std::fopen(path.c_str(), "wb");
  if (!f || (size && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0)
  {
    std::perror(path.c_str());
    std::abort();
  }
}

} // namespace cs_fuzz

#endif
