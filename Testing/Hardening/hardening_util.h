/* hardening_util.h - what the hardening suites share: a tiny model, scratch folders and a
 * leak check on the process heap. */
#ifndef COMBOSEG_HARDENING_UTIL_H
#define COMBOSEG_HARDENING_UTIL_H

#include <gtest/gtest.h>

#include <malloc.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "comboseg/comboseg.h"
#include "internal.h"

namespace cs_hardening
{

/* A small model (2 base filters, 2 levels, 8-voxel patches): every code path, little time. */
inline cs_model_info TinyInfo(int dims = 3, int channels = 1, int classes = 3)
{
    cs_unet_config arch = cs_unet_config_default();
    arch.spatial_dims = dims;
    arch.in_channels = channels;
    arch.num_classes = classes;
    arch.base_filters = 2;
    arch.levels = 2;
    cs_model_info info;
    EXPECT_EQ(cs_model_info_init(&info, &arch), CS_OK);
    info.patch_size[0] = info.patch_size[1] = 8;
    info.patch_size[2] = dims == 3 ? 8 : 1;
    return info;
}

/* A scratch folder, removed with its files when the object goes. */
class TempDir
{
  public:
    TempDir()
    {
        const char *base = std::getenv("TMPDIR");
        path_ = std::string(base && base[0] ? base : "/tmp") + "/cs-hardening-XXXXXX";
        if (!mkdtemp(&path_[0])) ADD_FAILURE() << "mkdtemp failed";
    }
    ~TempDir()
    {
        const std::string command = "rm -rf '" + path_ + "'";
        if (std::system(command.c_str()) != 0)
            std::fprintf(stderr, "could not remove %s\n", path_.c_str());
    }
    std::string File(const std::string &name) const { return path_ + "/" + name; }
    const std::string &Path() const { return path_; }

  private:
    std::string path_;
};

/* Bytes the process heap holds now (glibc; 0 under sanitisers, whose LeakSanitizer checks
 * instead). */
inline long long HeapInUse() { return static_cast<long long>(mallinfo2().uordblks); }

inline bool FileExists(const std::string &path)
{
    struct stat st;
    return stat(path.c_str(), &st) == 0;
}

inline std::vector<char> ReadBytes(const std::string &path)
{
    std::vector<char> bytes;
    FILE *f = std::fopen(path.c_str(), "rb");
    if (!f) return bytes;
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) bytes.insert(bytes.end(), buf, buf + n);
    std::fclose(f);
    return bytes;
}

inline bool WriteBytes(const std::string &path, const std::vector<char> &bytes)
{
    FILE *f = std::fopen(path.c_str(), "wb");
    if (!f) return false;
    const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
    return std::fclose(f) == 0 && ok;
}

/* The value fn returns (0 to 199), computed in a child process; -(signal) when the child was
 * killed, -1000 - code when it exited otherwise (a sanitiser's report exits with code 1). A
 * crash shows as a failed test, not as a dead suite. */
inline int InChild(const std::function<int()> &fn)
{
    constexpr int kBase = 50; // exit codes from kBase on are fn's results
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid == 0) _exit(kBase + fn());
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) return -2000;
    if (WIFSIGNALED(status)) return -WTERMSIG(status);
    const int code = WEXITSTATUS(status);
    return code >= kBase ? code - kBase : -1000 - code;
}

/* A smooth test image (C, nz, ny, nx) with values in about [-1, 1]. */
inline std::vector<float> TestImage(int channels, const int64_t size[3], float phase = 0.0f)
{
    std::vector<float> image(static_cast<size_t>(channels * size[0] * size[1] * size[2]));
    size_t i = 0;
    for (int c = 0; c < channels; ++c)
        for (int64_t z = 0; z < size[2]; ++z)
            for (int64_t y = 0; y < size[1]; ++y)
                for (int64_t x = 0; x < size[0]; ++x)
                    image[i++] = std::sin(0.7f * x + 0.3f * y * (c + 1) + 0.5f * z + phase);
    return image;
}

} // namespace cs_hardening

#endif
