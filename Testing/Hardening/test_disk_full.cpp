// test_disk_full.cpp - a full disk while saving: the save returns an error, the previous model
// (or checkpoint) stays intact and loadable, and no temporary file is left behind.
//
// Two ways to fill the disk: a 64 KiB-ish tmpfs mounted for the test (needs root and mount
// permission; skipped with a message otherwise), and RLIMIT_FSIZE with SIGXFSZ ignored (any
// user: writes past the limit fail with EFBIG).
#include <gtest/gtest.h>

#include <dirent.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "comboseg/comboseg.h"
#include "hardening_util.h"
#include "internal.h"

using namespace cs_hardening;

namespace
{

std::vector<std::string> ListFolder(const std::string &folder)
{
    std::vector<std::string> names;
    if (DIR *d = opendir(folder.c_str())) {
        while (dirent *e = readdir(d))
            if (e->d_name[0] != '.') names.push_back(e->d_name);
        closedir(d);
    }
    return names;
}

class DiskFull : public ::testing::Test
{
  protected:
    void SetUp() override
    {
        ASSERT_EQ(cs_context_init(&ctx_), CS_OK);
        cs_context_set_threads(ctx_, 1);
        small_info_ = TinyInfo(3, 1, 3);
        cs_model_info big = TinyInfo(3, 1, 3);
        big.arch.base_filters = 8; // some hundred kilobytes: cannot fit beside the small one
        ASSERT_EQ(cs_model_create(ctx_, &small_info_, 1, &small_), CS_OK);
        ASSERT_EQ(cs_model_create(ctx_, &big, 2, &big_), CS_OK);
        // the sizes of both files, measured on a normal disk
        ASSERT_EQ(cs_model_save(ctx_, small_, scratch_.File("s").c_str()), CS_OK);
        ASSERT_EQ(cs_model_save(ctx_, big_, scratch_.File("b").c_str()), CS_OK);
        small_bytes_ = ReadBytes(scratch_.File("s")).size();
        big_bytes_ = ReadBytes(scratch_.File("b")).size();
        ASSERT_GT(big_bytes_, 4 * small_bytes_);
    }
    void TearDown() override
    {
        if (mounted_) umount2(mount_.Path().c_str(), MNT_DETACH);
        cs_model_free(small_);
        cs_model_free(big_);
        cs_context_free(ctx_);
    }

    // After a failed save over path: an error, the old file intact and loadable, nothing else.
    void ExpectPreviousModelIntact(cs_status st, const std::string &path,
                                   const std::vector<char> &before)
    {
        EXPECT_EQ(st, CS_ERR_IO) << cs_context_last_error(ctx_);
        EXPECT_NE(cs_context_last_error(ctx_)[0], '\0');
        std::printf("[ disk full ] save gave: %s: %s\n", cs_status_string(st),
                    cs_context_last_error(ctx_));
        EXPECT_EQ(ReadBytes(path), before) << "the previous model file changed";
        cs_model_t m = nullptr;
        ASSERT_EQ(cs_model_load(ctx_, path.c_str(), &m), CS_OK) << cs_context_last_error(ctx_);
        EXPECT_EQ(m->num_params, small_->num_params);
        EXPECT_EQ(0, std::memcmp(m->params, small_->params, sizeof(float) * small_->num_params));
        cs_model_free(m);
    }

    cs_context_t ctx_ = nullptr;
    cs_model_info small_info_;
    cs_model_t small_ = nullptr, big_ = nullptr;
    size_t small_bytes_ = 0, big_bytes_ = 0;
    TempDir scratch_, mount_;
    bool mounted_ = false;
};

TEST_F(DiskFull, SmallTmpfs)
{
    // room for the small model and a little more, not for the big one beside it
    const size_t bytes = (small_bytes_ + big_bytes_ / 3 + 4095) / 4096 * 4096;
    const std::string options = "size=" + std::to_string(bytes);
    if (mount("tmpfs", mount_.Path().c_str(), "tmpfs", 0, options.c_str()) != 0)
        GTEST_SKIP() << "cannot mount a tmpfs (" << std::strerror(errno)
                     << "): needs root; RlimitFsize covers the same ground";
    mounted_ = true;
    const std::string path = mount_.File("model.safetensors");
    ASSERT_EQ(cs_model_save(ctx_, small_, path.c_str()), CS_OK) << cs_context_last_error(ctx_);
    const std::vector<char> before = ReadBytes(path);

    ExpectPreviousModelIntact(cs_model_save(ctx_, big_, path.c_str()), path, before);
    ExpectPreviousModelIntact(cs_model_save_f16(ctx_, big_, path.c_str()), path, before);
    EXPECT_EQ(ListFolder(mount_.Path()), std::vector<std::string>{"model.safetensors"})
        << "a temporary file was left on the full disk";

    // a checkpoint of the big model's trainer fails the same way
    cs_train_config config = cs_train_config_default();
    config.batch_size = 1;
    cs_trainer_t t = nullptr;
    ASSERT_EQ(cs_trainer_init(ctx_, big_, &config, &t), CS_OK);
    EXPECT_EQ(cs_trainer_save_checkpoint(t, mount_.File("run.ckpt").c_str()), CS_ERR_IO);
    cs_trainer_free(t);
    EXPECT_EQ(ListFolder(mount_.Path()), std::vector<std::string>{"model.safetensors"});
}

TEST_F(DiskFull, RlimitFsize)
{
    const std::string path = scratch_.File("model.safetensors");
    ASSERT_EQ(cs_model_save(ctx_, small_, path.c_str()), CS_OK);
    const std::vector<char> before = ReadBytes(path);

    struct rlimit old_limit;
    ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old_limit), 0);
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit limit = old_limit;
    limit.rlim_cur = big_bytes_ / 3;
    ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &limit), 0);
    const cs_status st = cs_model_save(ctx_, big_, path.c_str());
    const cs_status st16 = cs_model_save_f16(ctx_, big_, path.c_str());
    setrlimit(RLIMIT_FSIZE, &old_limit);
    signal(SIGXFSZ, old_handler);

    ExpectPreviousModelIntact(st, path, before);
    ExpectPreviousModelIntact(st16, path, before);
    std::vector<std::string> names = ListFolder(scratch_.Path());
    std::sort(names.begin(), names.end());
    EXPECT_EQ(names, (std::vector<std::string>{"b", "model.safetensors", "s"}))
        << "a temporary file was left behind";
}

TEST_F(DiskFull, MissingFolderAndReadOnlyTarget)
{
    EXPECT_EQ(cs_model_save(ctx_, small_, scratch_.File("no/such/folder/m.safetensors").c_str()),
              CS_ERR_IO);
    EXPECT_NE(std::strstr(cs_context_last_error(ctx_), "no/such/folder"), nullptr)
        << "the message names the file: " << cs_context_last_error(ctx_);
    cs_model_t m = nullptr;
    EXPECT_EQ(cs_model_load(ctx_, scratch_.File("absent.safetensors").c_str(), &m), CS_ERR_IO);
    EXPECT_EQ(cs_model_load(ctx_, scratch_.Path().c_str(), &m), CS_ERR_IO) << "a folder";
    EXPECT_EQ(m, nullptr);
}

// A save killed between writing its temporary file and renaming it leaves "<path>.tmp-<pid>";
// the next save of that path removes such files of dead processes, and only those.
TEST_F(DiskFull, ASaveRemovesTheTemporaryFilesOfKilledSaves)
{
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) _exit(0);
    ASSERT_EQ(waitpid(child, nullptr, 0), child); // its pid now names no process
    const std::string path = scratch_.File("m.safetensors");
    const std::string dead = path + ".tmp-" + std::to_string(child);
    const std::string dead_png = scratch_.File("m.png.tmp-") + std::to_string(child) + ".png";
    const std::string alive = path + ".tmp-" + std::to_string(getppid());
    const std::string other = path + ".tmp-notapid";
    for (const std::string &f : {dead, dead_png, alive, other}) WriteBytes(f, {'x'});

    ASSERT_EQ(cs_model_save(ctx_, small_, path.c_str()), CS_OK) << cs_context_last_error(ctx_);
    EXPECT_FALSE(FileExists(dead)) << "left by a dead process: removed";
    EXPECT_TRUE(FileExists(alive)) << "a running process may still be writing it";
    EXPECT_TRUE(FileExists(other)) << "not a temporary file of ours";
    EXPECT_TRUE(FileExists(dead_png)) << "another file's temporary: not this save's business";
    EXPECT_EQ(cs_remove_stale_temporaries(scratch_.File("m.png").c_str()), 1);
    EXPECT_FALSE(FileExists(dead_png));
    EXPECT_EQ(cs_remove_stale_temporaries(nullptr), 0);
}

} // namespace
