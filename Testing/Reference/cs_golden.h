// cs_golden.h - reads the golden "named arrays" files written by gen_loss_golden.py (format in
// that script's docstring). Every array is returned as doubles; float32 and int32 values convert
// exactly, so tests may cast them back.
#ifndef CS_GOLDEN_H
#define CS_GOLDEN_H

#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

class GoldenFile
{
public:
  // Loads path; returns false (with a reason in error) if it is missing or malformed.
  bool Load(const std::string &path, std::string *error)
  {
    std::ifstream in(path, std::ios::binary);
    if (!in)
      return Fail(error, "cannot open " + path);
    char magic[8];
    if (!in.read(magic, 8) || std::memcmp(magic, "CSGOLD01", 8) != 0)
      return Fail(error, "bad magic in " + path);
    for (;;)
    {
      uint32_t nameLength = 0;
      if (!in.read(reinterpret_cast<char *>(&nameLength), 4))
        break; // end of file
      std::string name(nameLength, '\0');
      uint32_t dtype = 0;
      uint64_t count = 0;
      if (!in.read(&name[0], nameLength) || !in.read(reinterpret_cast<char *>(&dtype), 4) ||
          !in.read(reinterpret_cast<char *>(&count), 8) || dtype > 2 || count > (1u << 26))
        return Fail(error, "truncated record in " + path);
      std::vector<double> values(count);
      for (uint64_t i = 0; i < count; i++)
      {
        bool ok = true;
        if (dtype == 0)
        {
          float f;
          ok = static_cast<bool>(in.read(reinterpret_cast<char *>(&f), 4));
          values[i] = f;
        }
        else if (dtype == 1)
        {
          int32_t v;
          ok = static_cast<bool>(in.read(reinterpret_cast<char *>(&v), 4));
          values[i] = v;
        }
        else
        {
          ok = static_cast<bool>(in.read(reinterpret_cast<char *>(&values[i]), 8));
        }
        if (!ok)
          return Fail(error, "truncated data of " + name);
      }
      m_Arrays[name] = std::move(values);
    }
    return true;
  }

  bool Has(const std::string &name) const { return m_Arrays.count(name) != 0; }

  const std::vector<double> &Get(const std::string &name) const
  {
    auto it = m_Arrays.find(name);
    if (it == m_Arrays.end())
      throw std::runtime_error("golden array missing: " + name);
    return it->second;
  }

  std::vector<float> GetFloat(const std::string &name) const
  {
    const auto &v = Get(name);
    return std::vector<float>(v.begin(), v.end());
  }

  std::vector<int32_t> GetInt(const std::string &name) const
  {
    const auto &v = Get(name);
    std::vector<int32_t> out(v.size());
    for (size_t i = 0; i < v.size(); i++)
      out[i] = static_cast<int32_t>(v[i]);
    return out;
  }

private:
  static bool Fail(std::string *error, const std::string &why)
  {
    if (error)
      *error = why;
    return false;
  }

  std::map<std::string, std::vector<double>> m_Arrays;
};

#endif
