// cs_slicer_harness.h - plays 3D Slicer's part for the ComboSeg CLI modules in tests:
// runs executables the way Slicer does (--xml probe, command line built from the XML, progress
// parsing, return-parameter file), and checks module XML against Slicer's rules.
#pragma once

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <expat.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace slicer
{

// Folder of the build tree's cli-modules (where Slicer would find the executables).
inline std::string CliModulesDir()
{
  return COMBOSEG_CLI_DIR;
}
inline std::string ModulePath(const std::string &name)
{
  return CliModulesDir() + "/" + name;
}
inline bool Exists(const std::string &path)
{
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

// ---------------------------------------------------------------------------------------------
// Processes

struct RunResult
{
  int exitCode = -1; // -1 when killed by a signal
  int signal = 0;
  std::string out, err;
  double seconds = 0.0;
};

// Runs argv[0] with argv, collecting stdout and stderr. `onOutput` sees stdout as it grows and
// returns true to have the process killed (SIGKILL, as Slicer's Cancel does). Killed after
// timeoutSeconds.
inline RunResult Run(const std::vector<std::string> &argv, double timeoutSeconds = 600,
                     const std::function<bool(const std::string &)> &onOutput = nullptr)
{
  RunResult result;
  int outPipe[2], errPipe[2];
  if (pipe(outPipe) != 0 || pipe(errPipe) != 0)
    return result;
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = fork();
  if (pid == 0)
  {
    dup2(outPipe[1], 1);
    dup2(errPipe[1], 2);
    close(outPipe[0]);
    close(errPipe[0]);
    close(outPipe[1]);
    close(errPipe[1]);
    std::vector<char *> args;
    for (const std::string &a : argv)
      args.push_back(const_cast<char *>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    std::fprintf(stderr, "exec %s failed: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  close(outPipe[1]);
  close(errPipe[1]);
  bool outOpen = true, errOpen = true, killed = false;
  while (outOpen || errOpen)
  {
    pollfd fds[2] = {{outPipe[0], POLLIN, 0}, {errPipe[0], POLLIN, 0}};
    poll(fds, 2, 100);
    char buffer[4096];
    for (int f = 0; f < 2; ++f)
    {
      bool &open = f == 0 ? outOpen : errOpen;
      if (!open || !(fds[f].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      const ssize_t n = read(fds[f].fd, buffer, sizeof(buffer));
      if (n <= 0)
        open = false;
      else
        (f == 0 ? result.out : result.err).append(buffer, size_t(n));
    }
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!killed && ((onOutput && onOutput(result.out)) || elapsed > timeoutSeconds))
    {
      kill(pid, SIGKILL);
      killed = true;
    }
  }
  close(outPipe[0]);
  close(errPipe[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (WIFEXITED(status))
    result.exitCode = WEXITSTATUS(status);
  else if (WIFSIGNALED(status))
    result.signal = WTERMSIG(status);
  return result;
}

// Values of <filter-progress> tags, in order.
inline std::vector<double> ProgressValues(const std::string &out)
{
  std::vector<double> values;
  const std::regex tag("<filter-progress>([^<]*)</filter-progress>");
  for (auto it = std::sregex_iterator(out.begin(), out.end(), tag); it != std::sregex_iterator(); ++it)
    values.push_back(std::atof((*it)[1].str().c_str()));
  return values;
}

// `name = value` lines of a return-parameter file; throws on a malformed line.
inline std::map<std::string, std::string> ReadReturnParameters(const std::string &path)
{
  std::map<std::string, std::string> values;
  std::ifstream in(path);
  if (!in)
    throw std::runtime_error("no return-parameter file " + path);
  std::string line;
  while (std::getline(in, line))
  {
    if (line.empty())
      continue;
    const size_t eq = line.find(" = ");
    if (eq == std::string::npos || eq == 0)
      throw std::runtime_error("malformed return-parameter line: " + line);
    values[line.substr(0, eq)] = line.substr(eq + 3);
  }
  return values;
}

// ---------------------------------------------------------------------------------------------
// XML

struct Node
{
  std::string tag;
  std::map<std::string, std::string> attributes;
  std::vector<std::unique_ptr<Node>> children;
  std::string text;
  const Node *Child(const std::string &t) const
  {
    for (const auto &c : children)
      if (c->tag == t)
        return c.get();
    return nullptr;
  }
  std::string ChildText(const std::string &t) const
  {
    const Node *c = Child(t);
    return c ? c->text : std::string();
  }
};

// Parses XML with expat into a tree; returns nullptr and an error message when not well-formed.
inline std::unique_ptr<Node> ParseXml(const std::string &xml, std::string &error)
{
  struct State
  {
    std::unique_ptr<Node> root;
    std::vector<Node *> stack;
  } st;
  XML_Parser parser = XML_ParserCreate("UTF-8");
  XML_SetUserData(parser, &st);
  XML_SetElementHandler(
      parser,
      [](void *u, const XML_Char *name, const XML_Char **attrs) {
        State &s = *static_cast<State *>(u);
        auto node = std::make_unique<Node>();
        node->tag = name;
        for (int i = 0; attrs[i]; i += 2)
          node->attributes[attrs[i]] = attrs[i + 1];
        Node *raw = node.get();
        if (s.stack.empty())
          s.root = std::move(node);
        else
          s.stack.back()->children.push_back(std::move(node));
        s.stack.push_back(raw);
      },
      [](void *u, const XML_Char *) {
        State &s = *static_cast<State *>(u);
        std::string &t = s.stack.back()->text;
        const size_t b = t.find_first_not_of(" \t\r\n"), e = t.find_last_not_of(" \t\r\n");
        t = b == std::string::npos ? "" : t.substr(b, e - b + 1);
        s.stack.pop_back();
      });
  XML_SetCharacterDataHandler(parser, [](void *u, const XML_Char *s, int len) {
    State &st2 = *static_cast<State *>(u);
    if (!st2.stack.empty())
      st2.stack.back()->text.append(s, size_t(len));
  });
  if (XML_Parse(parser, xml.data(), int(xml.size()), 1) != XML_STATUS_OK)
  {
    error = std::string(XML_ErrorString(XML_GetErrorCode(parser))) + " at line " +
            std::to_string(XML_GetCurrentLineNumber(parser));
    XML_ParserFree(parser);
    return nullptr;
  }
  XML_ParserFree(parser);
  return std::move(st.root);
}

inline const std::set<std::string> &ParameterTags()
{
  static const std::set<std::string> tags = {"integer",
                                             "float",
                                             "double",
                                             "boolean",
                                             "string",
                                             "integer-vector",
                                             "float-vector",
                                             "double-vector",
                                             "string-vector",
                                             "integer-enumeration",
                                             "float-enumeration",
                                             "double-enumeration",
                                             "string-enumeration",
                                             "point",
                                             "pointfile",
                                             "region",
                                             "image",
                                             "file",
                                             "directory",
                                             "geometry",
                                             "table",
                                             "transform",
                                             "measurement"};
  return tags;
}

inline std::string StripDashes(std::string s)
{
  while (!s.empty() && s[0] == '-')
    s.erase(0, 1);
  return s;
}

// Checks a module's XML against Slicer's rules; returns the problems found (empty: valid).
inline std::vector<std::string> CheckModuleXml(const Node &root)
{
  std::vector<std::string> problems;
  auto fail = [&problems](const std::string &p) { problems.push_back(p); };
  if (root.tag != "executable")
    fail("root element is <" + root.tag + ">, not <executable>");
  static const std::set<std::string> top = {"category",          "title",   "description", "version",
                                            "documentation-url", "license", "contributor", "acknowledgements",
                                            "parameters"};
  static const std::set<std::string> inParam = {"name",    "flag",    "longflag", "label",   "description",
                                                "default", "channel", "index",    "element", "constraints"};
  static const std::set<std::string> imageTypes = {"scalar",
                                                   "label",
                                                   "vector",
                                                   "tensor",
                                                   "diffusion-weighted",
                                                   "signal",
                                                   "multichannel",
                                                   "dynamic-contrast-enhanced",
                                                   "any"};
  static const std::set<std::string> fileTags = {"image", "file",      "directory", "geometry",
                                                 "table", "transform", "pointfile", "measurement"};
  const std::regex identifier("[A-Za-z_][A-Za-z0-9_]*");
  for (const char *required : {"category", "title", "description", "version"})
    if (root.ChildText(required).empty())
      fail(std::string("missing <") + required + ">");
  std::set<std::string> names, flags, longflags;
  std::vector<int> indices;
  for (const auto &section : root.children)
  {
    if (!top.count(section->tag))
      fail("tag <" + section->tag + "> is not allowed in <executable>");
    if (section->tag != "parameters")
      continue;
    if (section->ChildText("label").empty())
      fail("a <parameters> group has no <label>");
    for (const auto &p : section->children)
    {
      if (p->tag == "label" || p->tag == "description")
        continue;
      if (!ParameterTags().count(p->tag))
      {
        fail("tag <" + p->tag + "> is not allowed in <parameters>");
        continue;
      }
      const std::string name = p->ChildText("name");
      const std::string where = "<" + p->tag + "> '" + name + "'";
      if (!std::regex_match(name, identifier))
        fail(where + ": name is not an identifier");
      if (!names.insert(name).second)
        fail(where + ": duplicate name");
      if (p->ChildText("label").empty())
        fail(where + ": no <label>");
      if (p->ChildText("description").empty())
        fail(where + ": no <description>");
      for (const auto &c : p->children)
      {
        if (!inParam.count(c->tag))
          fail(where + ": tag <" + c->tag + "> is not allowed");
        if (c->tag == "constraints")
          for (const auto &cc : c->children)
            if (cc->tag != "minimum" && cc->tag != "maximum" && cc->tag != "step")
              fail(where + ": tag <" + cc->tag + "> is not allowed in <constraints>");
      }
      const bool indexed = p->Child("index") != nullptr;
      const std::string flag = StripDashes(p->ChildText("flag"));
      const std::string longflag = StripDashes(p->ChildText("longflag"));
      const std::string channel = p->ChildText("channel");
      if (indexed)
      {
        if (p->Child("flag") || p->Child("longflag"))
          fail(where + ": an indexed parameter has a flag");
        indices.push_back(std::atoi(p->ChildText("index").c_str()));
      }
      else if (channel != "output" || fileTags.count(p->tag))
      {
        // Arguments (not return values) need a flag.
        if (flag.empty() && longflag.empty())
          fail(where + ": neither flag, longflag nor index");
      }
      if (p->Child("flag") && flag.size() != 1)
        fail(where + ": flag '" + flag + "' is not one character");
      if (p->Child("flag") && !flag.empty() && !flags.insert(flag).second)
        fail(where + ": duplicate flag");
      if (p->Child("longflag") && !std::regex_match(longflag, identifier))
        fail(where + ": longflag '" + longflag + "' does not match [A-Za-z_][A-Za-z0-9_]*");
      if (!longflag.empty() && !longflags.insert(longflag).second)
        fail(where + ": duplicate longflag");
      if (p->tag == "boolean" && p->Child("default") && p->ChildText("default") != "false")
        fail(where + ": boolean defaults to '" + p->ChildText("default") + "', not false");
      if (fileTags.count(p->tag) && channel != "input" && channel != "output")
        fail(where + ": channel must be input or output");
      if (p->tag == "image")
      {
        const auto t = p->attributes.find("type");
        if (t != p->attributes.end() && !imageTypes.count(t->second))
          fail(where + ": image type '" + t->second + "' is not one of Slicer's");
      }
      if (p->tag.find("-enumeration") != std::string::npos)
      {
        std::set<std::string> elements;
        for (const auto &c : p->children)
          if (c->tag == "element")
            elements.insert(c->text);
        if (elements.empty())
          fail(where + ": enumeration without elements");
        if (p->Child("default") && !elements.count(p->ChildText("default")))
          fail(where + ": default is not an element");
      }
    }
  }
  std::sort(indices.begin(), indices.end());
  for (size_t i = 0; i < indices.size(); ++i)
    if (indices[i] != int(i))
      fail("indices are not 0, 1, 2...");
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Command lines as Slicer builds them

// A temporary folder, removed with its files at destruction.
class TempDir
{
public:
  TempDir()
  {
    std::string pattern = "/tmp/comboseg-slicer-XXXXXX";
    char *made = mkdtemp(&pattern[0]);
    m_Path = made ? made : "/tmp";
  }
  ~TempDir()
  {
    if (m_Path != "/tmp" && std::getenv("COMBOSEG_KEEP_TEST_FILES") == nullptr)
      std::system(("rm -rf '" + m_Path + "'").c_str());
  }
  const std::string &Path() const { return m_Path; }
  // A file name like the ones Slicer gives its temporary node files.
  std::string NodeFile(const std::string &nodeId, const std::string &extension) const
  {
    static std::mt19937 rng(12345);
    std::string prefix;
    for (int i = 0; i < 5; ++i)
      prefix += char('A' + rng() % 26);
    return m_Path + "/" + prefix + "_" + nodeId + extension;
  }

private:
  std::string m_Path;
};

// Builds argv from the module XML and parameter values (name -> value; booleans "true"/"false"):
// flagged parameters in XML order as `--longflag value` (or `-f value`), booleans as a bare flag
// only when true, return-parameter file when the module has simple outputs, indexed ones last.
inline std::vector<std::string> BuildCommandLine(const std::string &executable, const Node &xml,
                                                 const std::map<std::string, std::string> &values,
                                                 const std::string &returnParameterFile)
{
  std::vector<std::string> argv = {executable};
  std::map<int, std::string> indexed;
  bool hasReturns = false;
  for (const auto &section : xml.children)
  {
    if (section->tag != "parameters")
      continue;
    for (const auto &p : section->children)
    {
      if (!ParameterTags().count(p->tag))
        continue;
      const std::string name = p->ChildText("name");
      const bool simpleOutput = p->ChildText("channel") == "output" && !p->Child("index") && p->tag != "image" &&
                                p->tag != "file" && p->tag != "directory" && p->tag != "geometry" &&
                                p->tag != "table" && p->tag != "transform";
      if (simpleOutput)
      {
        hasReturns = true;
        continue;
      }
      const auto v = values.find(name);
      if (v == values.end())
        continue;
      if (p->Child("index"))
      {
        indexed[std::atoi(p->ChildText("index").c_str())] = v->second;
        continue;
      }
      const std::string longflag = StripDashes(p->ChildText("longflag"));
      const std::string flag = longflag.empty() ? "-" + StripDashes(p->ChildText("flag")) : "--" + longflag;
      if (p->tag == "boolean")
      {
        if (v->second == "true")
          argv.push_back(flag);
        continue;
      }
      argv.push_back(flag);
      argv.push_back(v->second);
    }
  }
  if (hasReturns && !returnParameterFile.empty())
  {
    argv.insert(argv.begin() + 1, returnParameterFile);
    argv.insert(argv.begin() + 1, "--returnparameterfile");
  }
  for (const auto &i : indexed)
    argv.push_back(i.second);
  return argv;
}

// ---------------------------------------------------------------------------------------------
// How Slicer loads a label-image output (image type="label"), by the node the user chose:
// - "Create new Segmentation": Slicer hands the module a ".seg.nrrd" temporary path and reads the
//   segments from the NRRD header's Segment<i>_* keys (vtkMRMLSegmentationStorageNode): names,
//   colours, label values and layers reach the scene.
// - a LabelMap volume: the voxels only; the keys are ignored and names come from a colour table
//   node alone.

struct SegmentationSegment
{
  std::string id, name, extent;
  int labelValue = 0, layer = 0;
  double color[3] = {0, 0, 0};
};

// The key/value fields ("key:=value") of a NRRD header (the text before the first empty line).
inline std::map<std::string, std::string> NrrdKeyValues(const std::string &path)
{
  std::ifstream in(path, std::ios::binary);
  std::map<std::string, std::string> values;
  std::string line;
  while (std::getline(in, line) && !line.empty())
  {
    const size_t sep = line.find(":=");
    if (sep != std::string::npos)
      values[line.substr(0, sep)] = line.substr(sep + 2);
  }
  return values;
}

// The segments a Segmentation node gets from the file, read in index order as long as
// Segment<i>_ID exists; throws naming a key Slicer needs that is missing.
inline std::vector<SegmentationSegment> LoadAsSegmentationNode(const std::string &path)
{
  const std::map<std::string, std::string> keys = NrrdKeyValues(path);
  auto get = [&keys](const std::string &key) {
    const auto it = keys.find(key);
    if (it == keys.end())
      throw std::runtime_error("segmentation file lacks " + key);
    return it->second;
  };
  std::vector<SegmentationSegment> segments;
  for (int i = 0; keys.count("Segment" + std::to_string(i) + "_ID"); ++i)
  {
    const std::string prefix = "Segment" + std::to_string(i) + "_";
    SegmentationSegment s;
    s.id = get(prefix + "ID");
    s.name = get(prefix + "Name");
    s.extent = get(prefix + "Extent");
    s.labelValue = std::stoi(get(prefix + "LabelValue"));
    s.layer = std::stoi(get(prefix + "Layer"));
    std::istringstream color(get(prefix + "Color"));
    color >> s.color[0] >> s.color[1] >> s.color[2];
    if (!color)
      throw std::runtime_error(prefix + "Color is not three numbers");
    segments.push_back(s);
  }
  get("Segmentation_ContainedRepresentationNames");
  return segments;
}

// The names a LabelMap volume shows: those of the colour table node given with it (value -> name,
// from `value name R G B A` lines), none without one.
inline std::map<int, std::string> LabelMapNames(const std::string &colorTable)
{
  std::map<int, std::string> names;
  std::ifstream in(colorTable);
  std::string line;
  while (std::getline(in, line))
  {
    std::istringstream fields(line);
    int value;
    std::string name;
    if (line.empty() || line[0] == '#' || !(fields >> value >> name))
      continue;
    names[value] = name;
  }
  return names;
}

inline std::string Join(const std::vector<std::string> &argv)
{
  std::string s;
  for (const std::string &a : argv)
    s += (s.empty() ? "" : " ") + a;
  return s;
}

} // namespace slicer
