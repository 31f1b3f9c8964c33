// ComboSegRunOutputs.cxx - outputs checked before the work, staged beside their names, committed
// together.
#include "ComboSegRunOutputs.h"
#include "ComboSegOutput.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <stdexcept>

namespace
{

const char kStagingName[] = ".comboseg-outputs";

// Parameter tags whose value is a file the module writes.
bool IsFileTag(const std::string &tag)
{
  static const std::set<std::string> tags = {"image",     "file",      "table",      "geometry",
                                             "transform", "pointfile", "measurement"};
  return tags.count(tag) != 0;
}

// How messages name a parameter: its label as the panel shows it and its flag.
std::string Describe(const ComboSegParameterDescription &p)
{
  std::string what = p.label.empty() ? p.name : p.label;
  what[0] = char(std::tolower(static_cast<unsigned char>(what[0])));
  return p.longflag.empty() ? what : what + " (--" + p.longflag + ")";
}

using itk::ComboSegFileExists;
using itk::ComboSegIsFolder;

// Folder and last name of a path ("a/b/" is folder "a", name "b").
void SplitPath(std::string path, std::string &folder, std::string &base)
{
  while (path.size() > 1 && path.back() == '/')
    path.pop_back();
  const size_t slash = path.find_last_of('/');
  folder = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  base = slash == std::string::npos ? path : path.substr(slash + 1);
}

using itk::ComboSegFolderEntries;

void CheckWritableFolder(const std::string &what, const std::string &path, const std::string &folder)
{
  const std::string problem = "cannot write the " + what + " '" + path + "': ";
  if (!ComboSegFileExists(folder))
    throw std::invalid_argument(problem + "the folder '" + folder + "' does not exist");
  if (!ComboSegIsFolder(folder))
    throw std::invalid_argument(problem + "'" + folder + "' is not a folder");
  if (!itk::ComboSegCanWriteInFolder(folder))
    throw std::invalid_argument(problem + "the folder '" + folder + "' cannot be written (" + std::strerror(errno) +
                                ")");
}

// One spelling per folder ("out", "./out" and "/home/me/out" are one folder), so that outputs in
// one folder share one staging folder; the folder exists (checked before).
std::string CanonicalFolder(const std::string &folder)
{
  char *resolved = realpath(folder.c_str(), nullptr);
  if (!resolved)
    return folder;
  const std::string canonical(resolved);
  std::free(resolved);
  return canonical;
}

// Each folder's staging folder is "<folder>/.comboseg-outputs.tmp-<pid>" (itkComboSegFiles.h's
// temporary naming rule, so that a later run removes one a killed run left).
std::string StagingName(const std::string &folder)
{
  return folder + "/" + kStagingName;
}

} // namespace

ComboSegRunOutputs::ComboSegRunOutputs(const ComboSegArguments &args,
                                       const std::map<std::string, std::vector<std::string>> &formats)
{
  for (const ComboSegParameterDescription &p : args.Description().parameters)
  {
    const bool folder = p.tag == "directory";
    if (p.channel != "output" || !(folder || IsFileTag(p.tag)) || !args.IsSet(p.name))
      continue;
    Output o;
    o.name = p.name;
    o.path = args.GetString(p.name);
    o.isFolder = folder;
    const std::string what = Describe(p);
    if (o.path.empty())
      throw std::invalid_argument("no file name given for the " + what);
    SplitPath(o.path, o.folder, o.base);
    if (o.base.empty() || o.base == "." || o.base == "..")
      throw std::invalid_argument("cannot write the " + what + " '" + o.path + "': no file name");
    if (folder)
    {
      if (ComboSegFileExists(o.path) && !ComboSegIsFolder(o.path))
        throw std::invalid_argument("cannot write the " + what + " '" + o.path + "': it is a file, not a folder");
      // An existing folder (Slicer's folder parameters name one) is staged inside itself.
      o.stagingParent = ComboSegIsFolder(o.path) ? o.path : o.folder;
      CheckWritableFolder(what, o.path, o.stagingParent);
    }
    else
    {
      if (ComboSegIsFolder(o.path))
        throw std::invalid_argument("cannot write the " + what + " '" + o.path + "': it is a folder");
      const auto f = formats.find(p.name);
      const std::vector<std::string> &extensions = f != formats.end() ? f->second : p.fileExtensions;
      if (!extensions.empty())
        ComboSegCheckExtension(what, o.path, extensions);
      o.stagingParent = o.folder;
      CheckWritableFolder(what, o.path, o.folder);
    }
    o.folder = CanonicalFolder(o.folder);
    o.stagingParent = CanonicalFolder(o.stagingParent);
    for (const Output &other : m_Outputs)
      if (other.folder == o.folder && other.base == o.base)
        throw std::invalid_argument("the " + what + " and --" + other.name + " name the same file '" + o.path + "'");
    m_Outputs.push_back(o);
  }
}

ComboSegRunOutputs::~ComboSegRunOutputs()
{
  Discard();
}

bool ComboSegRunOutputs::Has(const std::string &name) const
{
  return std::any_of(m_Outputs.begin(), m_Outputs.end(), [&](const Output &o) { return o.name == name; });
}

ComboSegRunOutputs::Output &ComboSegRunOutputs::Get(const std::string &name)
{
  for (Output &o : m_Outputs)
    if (o.name == name)
      return o;
  throw std::logic_error("output '" + name + "' was not given");
}

const ComboSegRunOutputs::Output &ComboSegRunOutputs::Get(const std::string &name) const
{
  return const_cast<ComboSegRunOutputs *>(this)->Get(name);
}

const std::string &ComboSegRunOutputs::Final(const std::string &name) const
{
  return Get(name).path;
}

std::string ComboSegRunOutputs::StagingFolder(const std::string &folder) const
{
  return itk::ComboSegTemporaryPath(StagingName(folder));
}

std::string ComboSegRunOutputs::Staged(const std::string &name)
{
  Output &o = Get(name);
  const std::string staging = StagingFolder(o.stagingParent);
  if (std::find(m_StagingFolders.begin(), m_StagingFolders.end(), staging) == m_StagingFolders.end())
  {
    try
    {
      itk::ComboSegMakeTemporaryFolder(StagingName(o.stagingParent));
    }
    catch (const std::exception &e)
    {
      throw std::runtime_error("cannot write the output '" + o.path + "': " + itk::ComboSegUserMessage(e));
    }
    m_StagingFolders.push_back(staging);
  }
  o.staged = true;
  return staging + "/" + o.base;
}

void ComboSegRunOutputs::CommitStaged(std::vector<std::string> &committed)
{
  // Files a writer put beside a staged output (an .mhd header's data file) go first.
  for (const std::string &staging : m_StagingFolders)
  {
    const std::string folder = staging.substr(0, staging.find_last_of('/'));
    for (const std::string &entry : ComboSegFolderEntries(staging))
    {
      const bool isOutput = std::any_of(m_Outputs.begin(), m_Outputs.end(), [&](const Output &o) {
        return o.staged && o.stagingParent == folder && o.base == entry;
      });
      if (isOutput)
        continue;
      ComboSegCommitFile(staging + "/" + entry, folder + "/" + entry);
      committed.push_back(folder + "/" + entry);
    }
  }
  for (const Output &o : m_Outputs)
  {
    if (!o.staged)
      continue;
    const std::string source = StagingFolder(o.stagingParent) + "/" + o.base;
    if (!ComboSegFileExists(source))
      throw std::runtime_error("the " + o.name + " output '" + o.path + "' was not written");
    if (!o.isFolder)
    {
      ComboSegCommitFile(source, o.path);
      committed.push_back(o.path);
    }
    else if (!ComboSegFileExists(o.path))
    {
      if (std::rename(source.c_str(), o.path.c_str()) != 0)
        throw std::runtime_error("cannot write " + o.path + ": " + std::strerror(errno));
      committed.push_back(o.path);
    }
    else
    {
      // An existing folder receives the files.
      for (const std::string &entry : ComboSegFolderEntries(source))
      {
        ComboSegCommitFile(source + "/" + entry, o.path + "/" + entry);
        committed.push_back(o.path + "/" + entry);
      }
    }
  }
}

void ComboSegRunOutputs::Commit()
{
  std::vector<std::string> committed;
  try
  {
    CommitStaged(committed);
  }
  catch (const std::exception &e)
  {
    for (auto it = committed.rbegin(); it != committed.rend(); ++it)
      ComboSegRemoveTree(*it);
    Discard();
    throw std::runtime_error(itk::ComboSegUserMessage(e) + " (no output of this run was kept)");
  }
  Discard();
  std::set<std::string> folders;
  for (const Output &o : m_Outputs)
    folders.insert(o.stagingParent);
  for (const std::string &folder : folders)
    itk::ComboSegRemoveStaleTemporaries(StagingName(folder));
}

void ComboSegRunOutputs::Discard()
{
  for (const std::string &staging : m_StagingFolders)
    ComboSegRemoveTree(staging);
  m_StagingFolders.clear();
  for (Output &o : m_Outputs)
    o.staged = false;
}
