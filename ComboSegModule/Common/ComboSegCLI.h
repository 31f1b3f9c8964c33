// ComboSegCLI.h - the shared layer of the ComboSeg Slicer command-line modules.
//
// Each module's XML description is the single source of truth: it is embedded in the executable
// at build time, printed by --xml, turned into --help, and used to parse and type-check the
// command line the way Slicer builds it (docs/design.md, "The command-line protocol"):
//   exe [--longflag value | -f value | --booleanflag]... [--returnparameterfile file] index0 index1...
//
// A module's main is one line:
//   int main(int argc, char **argv) { return ComboSegMain(argc, argv, MyModuleXML, &Run); }
// with
//   int Run(ComboSegArguments &args, ComboSegProgress &progress);
// Errors are thrown (std::exception, itk::ExceptionObject included): ComboSegMain prints them on
// stderr and returns 1.
#pragma once

#include "itkComboSegFiles.h"

#include <functional>
#include <map>
#include <string>
#include <vector>

// One parameter of the XML description.
struct ComboSegParameterDescription
{
  std::string tag; // integer, float, double, boolean, string, *-vector, *-enumeration,
                   // image, file, directory, geometry, table, transform, point, ...
  std::string name;
  std::string flag;     // without the leading '-'
  std::string longflag; // without the leading "--"
  std::string label;
  std::string description;
  std::string defaultValue;
  std::string channel;   // "input", "output" or empty
  std::string type;      // attribute type= (image, geometry, table, transform)
  std::string group;     // label of the enclosing <parameters>
  int index = -1;        // <index>, -1 when flagged
  bool multiple = false; // attribute multiple="true"
  bool hasDefault = false;
  std::vector<std::string> elements;       // enumerations
  std::vector<std::string> fileExtensions; // attribute fileExtensions=
  std::string minimum, maximum, step;      // <constraints>

  bool IsIndexed() const { return index >= 0; }
  bool IsVector() const; // *-vector tags: one comma-separated value
  // A simple (non-file) output written to the return-parameter file.
  bool IsReturnParameter() const;
};

// The parsed <executable> description.
class ComboSegModuleDescription
{
public:
  // Parses the XML text (expat); throws std::runtime_error naming the problem.
  static ComboSegModuleDescription Parse(const std::string &xml);

  std::string category, title, description, version, documentationUrl, license, contributor, acknowledgements;
  std::vector<std::string> groups;                      // labels of the <parameters> groups, in order
  std::vector<ComboSegParameterDescription> parameters; // in XML order

  const ComboSegParameterDescription *Find(const std::string &name) const;
  // --help text generated from the description.
  std::string Help(const std::string &programName) const;
};

// The command line parsed and type-checked against a description.
class ComboSegArguments
{
public:
  // Throws std::runtime_error naming the argument for unknown flags, missing values, values of the
  // wrong type or out of their constraints, unknown enumeration elements, missing indexed args.
  ComboSegArguments(const ComboSegModuleDescription &description, const std::vector<std::string> &args);

  const ComboSegModuleDescription &Description() const { return m_Description; }
  bool IsSet(const std::string &name) const;                          // given on the command line
  std::string GetString(const std::string &name) const;               // value, else the default, else ""
  std::vector<std::string> GetStrings(const std::string &name) const; // multiple, or vector items
  long GetInt(const std::string &name) const;
  double GetDouble(const std::string &name) const;
  bool GetBool(const std::string &name) const;
  std::vector<double> GetDoubles(const std::string &name) const;

  // Return parameters (channel="output" scalars), written as `name = value` lines.
  void SetReturn(const std::string &name, const std::string &value);
  void SetReturn(const std::string &name, double value);
  const std::string &ReturnParameterFile() const { return m_ReturnParameterFile; }
  void WriteReturnParameters() const; // no-op without --returnparameterfile

private:
  const ComboSegParameterDescription &Get(const std::string &name) const;
  ComboSegModuleDescription m_Description;
  std::map<std::string, std::vector<std::string>> m_Values;
  std::vector<std::pair<std::string, std::string>> m_Returns;
  std::string m_ReturnParameterFile;
};

// Slicer's progress protocol on stdout, flushed each time:
// <filter-start><filter-name>..</filter-name><filter-comment>..</filter-comment></filter-start>,
// <filter-progress>0.42</filter-progress>, <filter-comment>..</filter-comment>,
// <filter-end>..<filter-time>..</filter-time></filter-end>. Progress values never decrease.
class ComboSegProgress
{
public:
  void Start(const std::string &name, const std::string &comment = "");
  void Progress(double fraction); // clamped to [0, 1], never below the last value printed
  void Comment(const std::string &text);
  void End();
  double Last() const { return m_Last; }
  // A sub-range: Progress(f) of the returned function maps to [from, to].
  std::function<void(double)> Range(double from, double to);

private:
  std::string m_Name;
  double m_Last = 0.0;
  double m_StartSeconds = 0.0;
  bool m_Started = false;
};

// Runs a module: --xml prints the embedded XML at once (nothing else is loaded), --help prints
// the generated help, else the arguments are parsed and run() is called. Returns the exit code.
using ComboSegModuleFunction = std::function<int(ComboSegArguments &, ComboSegProgress &)>;
int ComboSegMain(int argc, char **argv, const char *xml, const ComboSegModuleFunction &run);

// Helpers shared by the modules.
double ComboSegSeconds();                  // monotonic clock
std::string ComboSegExecutableDirectory(); // folder of the running executable
// Full path of a bundled model <name>.safetensors, looked up relative to the executable (build
// tree, then install tree); throws naming every path tried when none exists.
std::string ComboSegFindBundledModel(const std::string &name);
// Atomic writes and temporary names: the ITK layer's one utility (itkComboSegFiles.h, which
// includes no ITK header).
using itk::ComboSegCommitFile;
using itk::ComboSegTemporaryPath;
using itk::ComboSegWriteFileAtomically;
