// ComboSegCLI.cxx - XML description, argument parsing, progress and return parameters of the
// ComboSeg command-line modules. Deliberately free of ITK so that --xml answers at once.
#include "ComboSegCLI.h"


#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <sstream>
#include <stdexcept>

#include <expat.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#ifndef COMBOSEG_MODELS_BUILD_RELATIVE_DIR
#define COMBOSEG_MODELS_BUILD_RELATIVE_DIR "../Resources/Models"
#endif
#ifndef COMBOSEG_MODELS_INSTALL_RELATIVE_DIR
#define COMBOSEG_MODELS_INSTALL_RELATIVE_DIR "../../../share/ComboSeg/Models"
#endif

namespace
{

using itk::ComboSegTrim;

std::string StripDashes(const std::string &s)
{
  size_t i = 0;
  while (i < s.size() && s[i] == '-')
    ++i;
  return s.substr(i);
}

std::vector<std::string> Split(const std::string &s, char sep)
{
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(s);
  while (std::getline(in, item, sep))
    out.push_back(ComboSegTrim(item));
  if (!s.empty() && s.back() == sep)
    out.push_back("");
  return out;
}

bool ParseLong(const std::string &text, long &value)
{
  long long parsed = 0;
  if (!itk::ComboSegParseInt(text, parsed) || parsed < LONG_MIN || parsed > LONG_MAX)
    return false;
  value = static_cast<long>(parsed);
  return true;
}

// Parameters take finite numbers only.
bool ParseDouble(const std::string &text, double &value)
{
  return itk::ComboSegParseDouble(text, value) && std::isfinite(value);
}

// A value outside the XML's <constraints> is an error naming the parameter and its bound.
void CheckRange(const ComboSegParameterDescription &p, const std::string &where, const std::string &item, double v)
{
  double lo, hi;
  if (ParseDouble(p.minimum, lo) && v < lo)
    throw std::runtime_error(where + ": " + item + " is below the minimum " + p.minimum);
  if (ParseDouble(p.maximum, hi) && v > hi)
    throw std::runtime_error(where + ": " + item + " is above the maximum " + p.maximum);
}

const char *const kParameterTags[] = {"integer",
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

bool IsParameterTag(const std::string &tag)
{
  for (const char *t : kParameterTags)
    if (tag == t)
      return true;
  return false;
}

// Expat callbacks build the description while tracking the element path.
struct ParseState
{
  ComboSegModuleDescription *description = nullptr;
  std::vector<std::string> path;
  std::string text;
  ComboSegParameterDescription current;
  bool inParameter = false;
  std::string groupLabel;
  std::string error;
};

void XMLCALL OnStart(void *user, const XML_Char *name, const XML_Char **attributes)
{
  ParseState &st = *static_cast<ParseState *>(user);
  const std::string tag(name);
  st.text.clear();
  if (st.path.size() == 2 && st.path[1] == "parameters" && IsParameterTag(tag))
  {
    st.inParameter = true;
    st.current = ComboSegParameterDescription();
    st.current.tag = tag;
    st.current.group = st.groupLabel;
    for (int i = 0; attributes[i]; i += 2)
    {
      const std::string key(attributes[i]), value(attributes[i + 1]);
      if (key == "type")
        st.current.type = value;
      else if (key == "multiple")
        st.current.multiple = (value == "true");
      else if (key == "fileExtensions")
        st.current.fileExtensions = Split(value, ',');
    }
  }
  else if (st.path.size() == 1 && tag == "parameters")
  {
    st.groupLabel.clear();
  }
  st.path.push_back(tag);
}

void XMLCALL OnEnd(void *user, const XML_Char *name)
{
  ParseState &st = *static_cast<ParseState *>(user);
  const std::string tag(name);
  const std::string text = ComboSegTrim(st.text);
  st.text.clear();
  st.path.pop_back();
  ComboSegModuleDescription &d = *st.description;
  if (st.inParameter)
  {
    ComboSegParameterDescription &p = st.current;
    if (st.path.size() == 2) // closing the parameter itself
    {
      d.parameters.push_back(p);
      st.inParameter = false;
      return;
    }
    const std::string &parent = st.path.back();
    if (parent == "constraints")
    {
      if (tag == "minimum")
        p.minimum = text;
      else if (tag == "maximum")
        p.maximum = text;
      else if (tag == "step")
        p.step = text;
      return;
    }
    if (tag == "name")
      p.name = text;
    else if (tag == "flag")
      p.flag = StripDashes(text);
    else if (tag == "longflag")
      p.longflag = StripDashes(text);
    else if (tag == "label")
      p.label = text;
    else if (tag == "description")
      p.description = text;
    else if (tag == "default")
    {
      p.defaultValue = text;
      p.hasDefault = true;
    }
    else if (tag == "channel")
      p.channel = text;
    else if (tag == "element")
      p.elements.push_back(text);
    else if (tag == "index")
    {
      long v = -1;
      if (!ParseLong(text, v) || v < 0)
        st.error = "bad <index> '" + text + "'";
      p.index = static_cast<int>(v);
    }
    return;
  }
  if (st.path.size() == 2 && st.path[1] == "parameters")
  {
    if (tag == "label")
    {
      st.groupLabel = text;
      d.groups.push_back(text);
    }
    return;
  }
  if (st.path.size() == 1)
  {
    if (tag == "category")
      d.category = text;
    else if (tag == "title")
      d.title = text;
    else if (tag == "description")
      d.description = text;
    else if (tag == "version")
      d.version = text;
    else if (tag == "documentation-url")
      d.documentationUrl = text;
    else if (tag == "license")
      d.license = text;
    else if (tag == "contributor")
      d.contributor = text;
    else if (tag == "acknowledgements")
      d.acknowledgements = text;
  }
}

void XMLCALL OnText(void *user, const XML_Char *s, int len)
{
  static_cast<ParseState *>(user)->text.append(s, static_cast<size_t>(len));
}

std::string EscapeForTag(const std::string &text)
{
  // Slicer scans stdout for tags: keep angle brackets out of free text.
  std::string out;
  for (char c : text)
    out += (c == '<') ? '(' : (c == '>') ? ')' : (c == '\n') ? ' ' : c;
  return out;
}

} // namespace

bool ComboSegParameterDescription::IsVector() const
{
  return tag.size() > 7 && tag.compare(tag.size() - 7, 7, "-vector") == 0;
}

bool ComboSegParameterDescription::IsReturnParameter() const
{
  if (channel != "output")
    return false;
  return tag == "integer" || tag == "float" || tag == "double" || tag == "boolean" || tag == "string" || IsVector() ||
         tag.find("-enumeration") != std::string::npos;
}

ComboSegModuleDescription ComboSegModuleDescription::Parse(const std::string &xml)
{
  ComboSegModuleDescription d;
  ParseState st;
  st.description = &d;
  XML_Parser parser = XML_ParserCreate("UTF-8");
  if (!parser)
    throw std::runtime_error("cannot create an XML parser");
  XML_SetUserData(parser, &st);
  XML_SetElementHandler(parser, OnStart, OnEnd);
  XML_SetCharacterDataHandler(parser, OnText);
  const XML_Status status = XML_Parse(parser, xml.data(), static_cast<int>(xml.size()), 1);
  std::string error;
  if (status != XML_STATUS_OK)
  {
    error = std::string("module XML is not well-formed: ") + XML_ErrorString(XML_GetErrorCode(parser)) + " at line " +
            std::to_string(XML_GetCurrentLineNumber(parser));
  }
  XML_ParserFree(parser);
  if (!error.empty())
    throw std::runtime_error(error);
  if (!st.error.empty())
    throw std::runtime_error("module XML: " + st.error);
  for (const ComboSegParameterDescription &p : d.parameters)
    if (p.name.empty())
      throw std::runtime_error("module XML: a <" + p.tag + "> parameter has no <name>");
  return d;
}

const ComboSegParameterDescription *ComboSegModuleDescription::Find(const std::string &name) const
{
  for (const ComboSegParameterDescription &p : parameters)
    if (p.name == name)
      return &p;
  return nullptr;
}

std::string ComboSegModuleDescription::Help(const std::string &programName) const
{
  std::ostringstream out;
  out << title << " (" << version << ")\n\n" << description << "\n\nUsage: " << programName << " [options]";
  std::vector<const ComboSegParameterDescription *> indexed;
  for (const ComboSegParameterDescription &p : parameters)
    if (p.IsIndexed())
      indexed.push_back(&p);
  std::sort(indexed.begin(), indexed.end(), [](const auto *a, const auto *b) { return a->index < b->index; });
  for (const auto *p : indexed)
    out << " <" << p->name << ">";
  out << "\n";
  std::string group;
  for (const ComboSegParameterDescription &p : parameters)
  {
    if (p.IsReturnParameter())
      continue; // results, not arguments
    if (p.group != group)
    {
      group = p.group;
      out << "\n" << group << ":\n";
    }
    std::string flags;
    if (!p.flag.empty())
      flags += "-" + p.flag;
    if (!p.longflag.empty())
      flags += (flags.empty() ? "" : ", ") + std::string("--") + p.longflag;
    if (p.IsIndexed())
      flags = "<" + p.name + "> (argument " + std::to_string(p.index + 1) + ")";
    out << "  " << flags;
    if (p.tag != "boolean" && !p.IsIndexed())
      out << " <" << p.tag << ">";
    out << "\n      " << p.label << ": " << p.description;
    if (!p.elements.empty())
    {
      out << " One of:";
      for (const std::string &e : p.elements)
        out << " " << e;
      out << ".";
    }
    if (p.hasDefault && !p.defaultValue.empty())
      out << " (default: " << p.defaultValue << ")";
    if (p.multiple)
      out << " (may be repeated)";
    out << "\n";
  }
  out << "\n  --returnparameterfile <file>\n      File in which to write the simple return "
         "parameters (name = value lines).\n  --xml\n      Print the XML description and exit.\n"
         "  -h, --help\n      Print this help and exit.\n";
  return out.str();
}

ComboSegArguments::ComboSegArguments(const ComboSegModuleDescription &description, const std::vector<std::string> &args)
    : m_Description(description)
{
  std::vector<std::string> positional;
  for (size_t i = 0; i < args.size(); ++i)
  {
    const std::string &arg = args[i];
    const bool isLong = arg.size() > 2 && arg.compare(0, 2, "--") == 0;
    const bool isShort = !isLong && arg.size() == 2 && arg[0] == '-' && arg[1] != '-' &&
                         !std::isdigit(static_cast<unsigned char>(arg[1]));
    if (!isLong && !isShort)
    {
      positional.push_back(arg);
      continue;
    }
    std::string key = StripDashes(arg), inlineValue;
    bool hasInline = false;
    const size_t eq = key.find('=');
    if (isLong && eq != std::string::npos)
    {
      inlineValue = key.substr(eq + 1);
      key = key.substr(0, eq);
      hasInline = true;
    }
    if (isLong && key == "returnparameterfile")
    {
      if (!hasInline && i + 1 >= args.size())
        throw std::runtime_error("--returnparameterfile needs a file name");
      m_ReturnParameterFile = hasInline ? inlineValue : args[++i];
      continue;
    }
    const ComboSegParameterDescription *param = nullptr;
    for (const ComboSegParameterDescription &p : m_Description.parameters)
      if (!p.IsIndexed() && (isLong ? p.longflag == key : p.flag == key) && !key.empty())
        param = &p;
    if (!param)
      throw std::runtime_error("unknown option '" + arg + "' (see --help)");
    std::string value;
    if (param->tag == "boolean")
    {
      value = hasInline ? inlineValue : "true"; // Slicer passes booleans as bare flags
      if (value != "true" && value != "false")
        throw std::runtime_error("option " + arg + " takes no value or true/false, not '" + value + "'");
    }
    else if (hasInline)
      value = inlineValue;
    else if (i + 1 < args.size())
      value = args[++i];
    else
      throw std::runtime_error("option " + arg + " (" + param->label + ") needs a value");
    std::vector<std::string> &slot = m_Values[param->name];
    if (!param->multiple)
      slot.clear();
    slot.push_back(value);
  }

  std::vector<const ComboSegParameterDescription *> indexed;
  for (const ComboSegParameterDescription &p : m_Description.parameters)
    if (p.IsIndexed())
      indexed.push_back(&p);
  std::sort(indexed.begin(), indexed.end(), [](const auto *a, const auto *b) { return a->index < b->index; });
  if (positional.size() > indexed.size())
    throw std::runtime_error("unexpected argument '" + positional[indexed.size()] + "'");
  for (size_t k = 0; k < indexed.size(); ++k)
  {
    if (k >= positional.size())
      throw std::runtime_error("missing argument " + std::to_string(k + 1) + ": <" + indexed[k]->name + "> (" +
                               indexed[k]->label + ")");
    m_Values[indexed[k]->name] = {positional[k]};
  }

  // Type-check every value given against the XML.
  for (const auto &entry : m_Values)
  {
    const ComboSegParameterDescription &p = Get(entry.first);
    std::string base = p.tag;
    const size_t dash = base.find('-');
    if (dash != std::string::npos)
      base = base.substr(0, dash);
    for (const std::string &value : entry.second)
    {
      const std::vector<std::string> items = p.IsVector() ? Split(value, ',') : std::vector<std::string>{value};
      for (const std::string &item : items)
      {
        const std::string where = "parameter '" + p.name + "' (" + p.label + ")";
        if (base == "integer")
        {
          long v;
          if (!ParseLong(item, v))
            throw std::runtime_error(where + ": '" + item + "' is not an integer");
          CheckRange(p, where, item, static_cast<double>(v));
        }
        else if (base == "float" || base == "double")
        {
          double v;
          if (!ParseDouble(item, v))
            throw std::runtime_error(where + ": '" + item + "' is not a number");
          CheckRange(p, where, item, v);
        }
        if (p.tag.find("-enumeration") != std::string::npos &&
            std::find(p.elements.begin(), p.elements.end(), item) == p.elements.end())
        {
          std::string allowed;
          for (const std::string &e : p.elements)
            allowed += " " + e;
          throw std::runtime_error(where + ": '" + item + "' is not one of:" + allowed);
        }
      }
    }
  }
}

const ComboSegParameterDescription &ComboSegArguments::Get(const std::string &name) const
{
  const ComboSegParameterDescription *p = m_Description.Find(name);
  if (!p)
    throw std::logic_error("no parameter named '" + name + "' in the module XML");
  return *p;
}

bool ComboSegArguments::IsSet(const std::string &name) const
{
  Get(name);
  return m_Values.count(name) != 0;
}

std::string ComboSegArguments::GetString(const std::string &name) const
{
  const ComboSegParameterDescription &p = Get(name);
  const auto it = m_Values.find(name);
  if (it != m_Values.end() && !it->second.empty())
    return it->second.back();
  return p.tag == "boolean" && p.defaultValue.empty() ? "false" : p.defaultValue;
}

std::vector<std::string> ComboSegArguments::GetStrings(const std::string &name) const
{
  const ComboSegParameterDescription &p = Get(name);
  const auto it = m_Values.find(name);
  std::vector<std::string> values;
  if (it != m_Values.end())
    values = it->second;
  else if (p.hasDefault && !p.defaultValue.empty())
    values = {p.defaultValue};
  if (!p.IsVector())
    return values;
  std::vector<std::string> items;
  for (const std::string &v : values)
    for (const std::string &item : Split(v, ','))
      items.push_back(item);
  return items;
}

long ComboSegArguments::GetInt(const std::string &name) const
{
  long v = 0;
  const std::string s = GetString(name);
  if (!ParseLong(s, v))
    throw std::runtime_error("parameter '" + name + "': '" + s + "' is not an integer");
  return v;
}

double ComboSegArguments::GetDouble(const std::string &name) const
{
  double v = 0;
  const std::string s = GetString(name);
  if (!ParseDouble(s, v))
    throw std::runtime_error("parameter '" + name + "': '" + s + "' is not a number");
  return v;
}

bool ComboSegArguments::GetBool(const std::string &name) const
{
  return GetString(name) == "true";
}

std::vector<double> ComboSegArguments::GetDoubles(const std::string &name) const
{
  std::vector<double> out;
  for (const std::string &s : GetStrings(name))
  {
    double v;
    if (!ParseDouble(s, v))
      throw std::runtime_error("parameter '" + name + "': '" + s + "' is not a number");
    out.push_back(v);
  }
  return out;
}

void ComboSegArguments::SetReturn(const std::string &name, const std::string &value)
{
  if (!Get(name).IsReturnParameter())
    throw std::logic_error("'" + name + "' is not an output scalar parameter in the module XML");
  for (auto &r : m_Returns)
    if (r.first == name)
    {
      r.second = value;
      return;
    }
  m_Returns.emplace_back(name, value);
}

void ComboSegArguments::SetReturn(const std::string &name, double value)
{
  std::ostringstream s;
  s.precision(10);
  s << value;
  SetReturn(name, s.str());
}

void ComboSegArguments::WriteReturnParameters() const
{
  if (m_ReturnParameterFile.empty())
    return;
  std::string text;
  for (const auto &r : m_Returns)
  {
    std::string value = r.second;
    std::replace(value.begin(), value.end(), '\n', ' ');
    text += r.first + " = " + value + "\n";
  }
  ComboSegWriteFileAtomically(m_ReturnParameterFile, text);
}

void ComboSegProgress::Start(const std::string &name, const std::string &comment)
{
  m_Name = EscapeForTag(name);
  m_StartSeconds = ComboSegSeconds();
  m_Started = true;
  m_Last = 0.0;
  std::printf("<filter-start>\n<filter-name>%s</filter-name>\n<filter-comment>%s</filter-comment>\n"
              "</filter-start>\n",
              m_Name.c_str(), EscapeForTag(comment).c_str());
  std::printf("<filter-progress>0</filter-progress>\n");
  std::fflush(stdout);
}

void ComboSegProgress::Progress(double fraction)
{
  if (!(fraction >= m_Last)) // also catches NaN
    return;
  // Per-window events can come by the thousand: print steps of at least 0.1%, and 1 itself.
  const double value = std::min(1.0, fraction);
  if (value < 1.0 && value - m_Last < 0.001 && m_Last > 0.0)
    return;
  m_Last = value;
  std::printf("<filter-progress>%.4f</filter-progress>\n", m_Last);
  std::fflush(stdout);
}

void ComboSegProgress::Comment(const std::string &text)
{
  std::printf("<filter-comment>%s</filter-comment>\n", EscapeForTag(text).c_str());
  std::fflush(stdout);
}

void ComboSegProgress::End()
{
  if (!m_Started)
    return;
  if (m_Last < 1.0)
    Progress(1.0);
  std::printf("<filter-end>\n<filter-name>%s</filter-name>\n<filter-time>%.3f</filter-time>\n"
              "</filter-end>\n",
              m_Name.c_str(), ComboSegSeconds() - m_StartSeconds);
  std::fflush(stdout);
  m_Started = false;
}

std::function<void(double)> ComboSegProgress::Range(double from, double to)
{
  return [this, from, to](double f) { Progress(from + (to - from) * std::min(1.0, std::max(0.0, f))); };
}

namespace
{
// Volumes up to 32 MB (a 1 mm head's) come from the heap and stay there once freed, for the next
// volume to reuse: glibc would map each afresh and unmap it on free, and every first touch of a
// page costs a fault (about 10 us each on the virtual machines measured; ch2's Segment run 19.6k
// faults -> 8.9k). The tools are short-lived processes: nothing is held back for long.
void KeepFreedVolumesForReuse()
{
#ifdef __GLIBC__
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}
} // namespace

int ComboSegMain(int argc, char **argv, const char *xml, const ComboSegModuleFunction &run)
{
  KeepFreedVolumesForReuse();
  // --xml first and alone: Slicer probes every executable of cli-modules with it at start-up.
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--xml") == 0)
    {
      std::fputs(xml, stdout);
      std::fflush(stdout);
      return 0;
    }
  ComboSegModuleDescription description;
  try
  {
    description = ComboSegModuleDescription::Parse(xml);
  }
  catch (const std::exception &e)
  {
    std::fprintf(stderr, "internal error: %s\n", e.what());
    return 2;
  }
  const std::string program = argc > 0 ? argv[0] : description.title;
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0)
    {
      std::fputs(description.Help(program).c_str(), stdout);
      return 0;
    }
    else if (std::strcmp(argv[i], "--version") == 0)
    {
      std::printf("%s %s\n", description.title.c_str(), description.version.c_str());
      return 0;
    }
  try
  {
    ComboSegArguments args(description, std::vector<std::string>(argv + 1, argv + argc));
    ComboSegProgress progress;
    const int code = run(args, progress);
    if (code == 0)
      args.WriteReturnParameters();
    return code;
  }
  catch (const std::exception &e)
  {
    std::fflush(stdout);
    // the message alone (no source file and line), its bytes made printable
    std::fprintf(stderr, "%s error: %s\n", description.title.c_str(), itk::ComboSegUserMessage(e).c_str());
    return 1;
  }
}

double ComboSegSeconds()
{
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

std::string ComboSegExecutableDirectory()
{
  const std::string path = itk::ComboSegExecutablePath();
  const size_t slash = path.find_last_of(itk::ComboSegPathSeparators());
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

std::string ComboSegFindBundledModel(const std::string &name)
{
  if (name.empty() || name.find_first_of(itk::ComboSegPathSeparators()) != std::string::npos ||
      name.find("..") != std::string::npos)
    throw std::runtime_error("bad bundled model name '" + name + "'");
  const std::string dir = ComboSegExecutableDirectory();
  const std::string candidates[] = {dir + "/" + COMBOSEG_MODELS_BUILD_RELATIVE_DIR + "/" + name + ".safetensors",
                                    dir + "/" + COMBOSEG_MODELS_INSTALL_RELATIVE_DIR + "/" + name + ".safetensors"};
  std::string tried;
  for (const std::string &c : candidates)
  {
    if (itk::ComboSegCanRead(c))
      return c;
    tried += "\n  " + c;
  }
  throw std::runtime_error("bundled model '" + name + "' not found; looked for:" + tried +
                           "\n(choose a model file with --modelFile)");
}
