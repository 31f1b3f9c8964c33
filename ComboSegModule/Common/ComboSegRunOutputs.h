// ComboSegRunOutputs.h - the output files and folders of one module run, all or nothing.
//
// Made at the start of a run, before any work, it checks every output the command line names
// (the module's XML parameters with channel "output" and a file tag): the folder exists and can
// be written, the path is not a folder, the name asks for a format the module writes. The module
// then writes each output to Staged(name), a hidden folder beside the output
// (".comboseg-outputs.tmp-<pid>"), and Commit() renames them all to their names at the end. A run
// that fails before Commit leaves none of them (the destructor removes what was staged); a
// rename that fails within Commit removes the outputs already renamed. A run killed outright
// leaves its hidden folder, which the next Commit in that folder removes.
//
//   ComboSegRunOutputs outputs(args, {{"outputLabelMap", {".nrrd", ".nii.gz"}}});
//   ... the work ...
//   ComboSegWriteLabelMap(labels, segments, outputs.Staged("outputLabelMap"));
//   outputs.Commit();
#pragma once

#include <map>
#include <string>
#include <vector>

#include "ComboSegCLI.h"

class ComboSegRunOutputs
{
public:
  // Throws std::invalid_argument naming the parameter, the path and the problem. `formats` gives
  // the file name extensions a parameter's writer handles (lower case, e.g. ".nii.gz"); without
  // an entry, those of the XML's fileExtensions; an empty list accepts any name.
  ComboSegRunOutputs(const ComboSegArguments &args,
                     const std::map<std::string, std::vector<std::string>> &formats = {});
  ~ComboSegRunOutputs();
  ComboSegRunOutputs(const ComboSegRunOutputs &) = delete;
  ComboSegRunOutputs &operator=(const ComboSegRunOutputs &) = delete;

  // True when the command line names output `name`.
  bool Has(const std::string &name) const;
  // The final path of output `name`.
  const std::string &Final(const std::string &name) const;
  // Where to write output `name` now: its file (or folder) name in the hidden staging folder.
  std::string Staged(const std::string &name);
  // Renames every staged output to its final name (the files beside a header first, e.g. an
  // .mhd's data file); throws std::runtime_error when one cannot be, after removing the others.
  void Commit();

private:
  struct Output
  {
    std::string name, path, folder, base;
    std::string stagingParent; // the folder that holds its staging folder
    bool isFolder = false;
    bool staged = false;
  };
  const Output &Get(const std::string &name) const;
  Output &Get(const std::string &name);
  std::string StagingFolder(const std::string &folder) const;
  void CommitStaged(std::vector<std::string> &committed);
  void Discard();

  std::vector<Output> m_Outputs;
  std::vector<std::string> m_StagingFolders; // made so far
};

using itk::ComboSegRemoveTree; // a file or a folder with everything in it (itkComboSegFiles.h)
