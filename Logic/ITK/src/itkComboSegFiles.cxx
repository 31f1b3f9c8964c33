// itkComboSegFiles.cxx - atomic file replacement, temporary names, small text helpers. The one
// file of the ITK and CLI layers that includes POSIX headers; _WIN32 takes the CRT's equivalents
// as the engine's model_io.c does.
#include "itkComboSegFiles.h"

#include "comboseg/comboseg.h"
#include "itkMacro.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <sys/stat.h>

#ifdef _WIN32
#define NOMINMAX
#define WIN32_LEAN_AND_MEAN
#include <direct.h>
#include <io.h>
#include <process.h>
#include <windows.h>
#ifndef S_ISDIR
#define S_ISDIR(m) (((m)&S_IFMT) == S_IFDIR)
#endif
#else
#include <dirent.h>
#include <unistd.h>
#if defined(__APPLE__)
#include <mach-o/dyld.h>
#endif
#endif

namespace itk
{

namespace
{
// The session's contract is itk::ExceptionObject; its description is the plain message.
[[noreturn]] void
ThrowFileError(const std::string & message)
{
  throw ExceptionObject(__FILE__, __LINE__, message, "ComboSeg");
}
} // namespace

std::string
ComboSegTemporaryPath(const std::string & path, const std::string & suffix)
{
#ifdef _WIN32
  const long pid = static_cast<long>(_getpid());
#else
  const long pid = static_cast<long>(getpid());
#endif
  return path + ".tmp-" + std::to_string(pid) + suffix;
}

void
ComboSegCommitFile(const std::string & tmp, const std::string & path)
{
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
  {
    const std::string reason = std::strerror(errno);
    ComboSegRemoveTree(tmp);
    ThrowFileError("cannot write " + path + ": " + reason);
  }
  ComboSegRemoveStaleTemporaries(path);
}

void
ComboSegRemoveStaleTemporaries(const std::string & path)
{
  cs_remove_stale_temporaries(path.c_str());
}

void
ComboSegWriteFileAtomically(const std::string & path, const std::string & text)
{
  const std::string tmp = ComboSegTemporaryPath(path);
  FILE *            f = std::fopen(tmp.c_str(), "wb");
  if (!f)
    ThrowFileError("cannot write " + path + ": " + std::strerror(errno));
  errno = 0;
  const bool written = std::fwrite(text.data(), 1, text.size(), f) == text.size() && ComboSegFlushToDisk(f);
  const int  err = errno;
  const bool closed = std::fclose(f) == 0;
  if (!written || !closed)
  {
    std::remove(tmp.c_str());
    ThrowFileError("cannot write " + path + ": " + (err ? std::strerror(err) : "disk full?"));
  }
  ComboSegCommitFile(tmp, path);
}

std::string
ComboSegMakeTemporaryFolder(const std::string & path)
{
  const std::string folder = ComboSegTemporaryPath(path);
  if (!ComboSegMakeFolder(folder))
    ThrowFileError("cannot write " + path + ": " + std::strerror(errno));
  return folder;
}

void
ComboSegRemoveTree(const std::string & path)
{
  if (ComboSegIsFolder(path))
  {
    for (const std::string & name : ComboSegFolderEntries(path))
      ComboSegRemoveTree(path + "/" + name);
#ifdef _WIN32
    _rmdir(path.c_str());
#else
    rmdir(path.c_str());
#endif
  }
  else
    std::remove(path.c_str());
}

bool
ComboSegListFolder(const std::string & folder, std::vector<std::string> & names)
{
  names.clear();
#ifdef _WIN32
  WIN32_FIND_DATAA entry;
  const HANDLE     find = FindFirstFileA((folder + "/*").c_str(), &entry);
  if (find == INVALID_HANDLE_VALUE)
    return false;
  do
    if (std::strcmp(entry.cFileName, ".") != 0 && std::strcmp(entry.cFileName, "..") != 0)
      names.push_back(entry.cFileName);
  while (FindNextFileA(find, &entry));
  FindClose(find);
#else
  DIR * d = opendir(folder.c_str());
  if (!d)
    return false;
  while (const dirent * e = readdir(d))
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
      names.push_back(e->d_name);
  closedir(d);
#endif
  std::sort(names.begin(), names.end());
  return true;
}

std::vector<std::string>
ComboSegFolderEntries(const std::string & folder)
{
  std::vector<std::string> names;
  ComboSegListFolder(folder, names);
  return names;
}

bool
ComboSegFileExists(const std::string & path)
{
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

bool
ComboSegIsFolder(const std::string & path)
{
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool
ComboSegMakeFolder(const std::string & folder)
{
#ifdef _WIN32
  return _mkdir(folder.c_str()) == 0 || errno == EEXIST;
#else
  return mkdir(folder.c_str(), 0775) == 0 || errno == EEXIST;
#endif
}

bool
ComboSegCanRead(const std::string & path)
{
#ifdef _WIN32
  return _access(path.c_str(), 4) == 0;
#else
  return access(path.c_str(), R_OK) == 0;
#endif
}

bool
ComboSegCanWriteInFolder(const std::string & folder)
{
#ifdef _WIN32
  return _access(folder.c_str(), 2) == 0; // Windows folders have no search permission
#else
  return access(folder.c_str(), W_OK | X_OK) == 0;
#endif
}

bool
ComboSegFlushToDisk(FILE * f)
{
  if (std::fflush(f) != 0)
    return false;
#ifdef _WIN32
  return _commit(_fileno(f)) == 0;
#else
  return fsync(fileno(f)) == 0;
#endif
}

std::string
ComboSegExecutablePath()
{
  char buffer[4096];
#if defined(_WIN32)
  const DWORD n = GetModuleFileNameA(nullptr, buffer, sizeof(buffer));
  return n > 0 && n < sizeof(buffer) ? std::string(buffer, n) : std::string();
#elif defined(__APPLE__)
  uint32_t size = sizeof(buffer);
  return _NSGetExecutablePath(buffer, &size) == 0 ? std::string(buffer) : std::string();
#else
  const ssize_t n = readlink("/proc/self/exe", buffer, sizeof(buffer) - 1);
  return n > 0 ? std::string(buffer, static_cast<size_t>(n)) : std::string();
#endif
}

const char *
ComboSegPathSeparators()
{
#ifdef _WIN32
  return "/\\";
#else
  return "/";
#endif
}

std::string
ComboSegToLower(std::string text)
{
  for (char & c : text)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

bool
ComboSegEndsWith(const std::string & text, const std::string & suffix)
{
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool
ComboSegEndsWithNoCase(const std::string & text, const std::string & suffix)
{
  return text.size() >= suffix.size() &&
         ComboSegToLower(text.substr(text.size() - suffix.size())) == ComboSegToLower(suffix);
}

std::string
ComboSegTrim(const std::string & text)
{
  const char * blanks = " \t\r\n";
  const size_t first = text.find_first_not_of(blanks);
  if (first == std::string::npos)
    return std::string();
  return text.substr(first, text.find_last_not_of(blanks) - first + 1);
}

bool
ComboSegParseDouble(const std::string & text, double & value)
{
  if (text.empty())
    return false;
  char * end = nullptr;
  errno = 0;
  const double parsed = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size() || errno == ERANGE)
    return false;
  value = parsed;
  return true;
}

bool
ComboSegParseInt(const std::string & text, long long & value)
{
  if (text.empty())
    return false;
  char * end = nullptr;
  errno = 0;
  const long long parsed = std::strtoll(text.c_str(), &end, 10);
  if (end != text.c_str() + text.size() || errno == ERANGE)
    return false;
  value = parsed;
  return true;
}

namespace
{
// Length of the valid UTF-8 sequence of two to four bytes at s[i], or 0.
size_t
Utf8SequenceLength(const std::string & s, size_t i)
{
  const unsigned char lead = static_cast<unsigned char>(s[i]);
  const size_t        n = lead >= 0xC2 && lead <= 0xDF   ? 2
                          : lead >= 0xE0 && lead <= 0xEF ? 3
                          : lead >= 0xF0 && lead <= 0xF4 ? 4
                                                         : 0;
  if (n == 0 || i + n > s.size())
    return 0;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80)
      return 0;
  return n;
}
} // namespace

std::string
ComboSegPrintable(const std::string & text)
{
  std::string out;
  for (size_t i = 0; i < text.size();)
  {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    const size_t        n = c >= 0x80 ? Utf8SequenceLength(text, i) : 0;
    if (n > 0)
    {
      out.append(text, i, n);
      i += n;
      continue;
    }
    if ((c >= 0x20 && c < 0x7F) || c == '\n' || c == '\t')
      out += static_cast<char>(c);
    else
    {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02X", c);
      out += hex;
    }
    ++i;
  }
  return out;
}

std::string
ComboSegUserMessage(const std::exception & error)
{
  const auto * itkError = dynamic_cast<const ExceptionObject *>(&error);
  std::string  text = itkError ? itkError->GetDescription() : error.what();
  const char   prefix[] = "ITK ERROR: ";
  if (text.compare(0, sizeof prefix - 1, prefix) == 0)
    text.erase(0, sizeof prefix - 1);
  return ComboSegPrintable(text);
}

} // namespace itk
