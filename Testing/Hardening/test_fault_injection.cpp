// test_fault_injection.cpp - allocation failure anywhere returns CS_ERR_OUT_OF_MEMORY cleanly.
//
// As SQLite tests its allocator: for n = 1, 2, ... the nth cs_alloc on the context fails (and,
// in the "repeat" sweeps, every one after it), until the call runs without meeting a fault.
// Each failing run must return CS_ERR_OUT_OF_MEMORY with a message, produce no object and leak
// nothing; a trainer step that fails must leave the weights as they were. cJSON's allocations
// (headers, metadata) are swept the same way through cJSON_InitHooks. Leaks: glibc's heap
// counter here, LeakSanitizer in the sanitiser build.
#include <gtest/gtest.h>

#include <cjson/cJSON.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <unistd.h>

#include "comboseg/comboseg.h"
#include "hardening_util.h"
#include "internal.h"

using namespace cs_hardening;

namespace
{

// cJSON allocations fail once a countdown reaches zero (0: never), the same scheme as the context.
uint64_t g_json_countdown = 0;
uint64_t g_json_hits = 0;

void *FailingJsonMalloc(size_t n)
{
    if (g_json_countdown > 0 && --g_json_countdown == 0) {
        g_json_hits++;
        return nullptr;
    }
    return std::malloc(n);
}

struct JsonFaults {
    JsonFaults()
    {
        cJSON_Hooks hooks = {FailingJsonMalloc, std::free};
        cJSON_InitHooks(&hooks);
    }
    ~JsonFaults() { cJSON_InitHooks(nullptr); }
};

// Points tried per sweep ("<what> | context", "<what> | context repeat", "<what> | cJSON"), over
// the tests run in this process: FaultInjectionSummary checks them against docs/hardening.md.
std::map<std::string, int> g_sweep_points;

void RecordSweep(const std::string &what, const char *kind, int points)
{
    g_sweep_points[what + " | " + kind] = points;
}

using Op = std::function<cs_status()>;

// Sweeps the context's allocations; returns the number of fault points tried.
int SweepContext(cs_context_t ctx, const char *what, const Op &op, bool repeat)
{
    const long long heap_before = HeapInUse();
    int points = 0;
    for (uint64_t n = 1; n < 100000; ++n) {
        cs_context_clear_error(ctx);
        cs_context_inject_alloc_fault(ctx, n, repeat);
        const cs_status st = op();
        const bool hit = ctx->fault_hits > 0;
        cs_context_inject_alloc_fault(ctx, 0, 0);
        if (!hit) {
            EXPECT_EQ(st, CS_OK) << what << ": with no fault met: " << cs_context_last_error(ctx);
            break;
        }
        ++points;
        EXPECT_EQ(st, CS_ERR_OUT_OF_MEMORY)
            << what << ", allocation " << n << " failing: " << cs_context_last_error(ctx);
        EXPECT_NE(std::strstr(cs_context_last_error(ctx), "out of memory"), nullptr)
            << what << ", allocation " << n << ": message '" << cs_context_last_error(ctx) << "'";
    }
    EXPECT_LE(HeapInUse() - heap_before, 4096) << what << ": heap grew over the sweep (a leak)";
    RecordSweep(what, repeat ? "context repeat" : "context", points);
    return points;
}

// Sweeps cJSON's allocations: any error status is clean, as long as nothing leaks or crashes.
int SweepJson(cs_context_t ctx, const char *what, const Op &op)
{
    JsonFaults hooks;
    const long long heap_before = HeapInUse();
    int points = 0;
    for (uint64_t n = 1; n < 100000; ++n) {
        g_json_hits = 0;
        g_json_countdown = n;
        const cs_status st = op();
        g_json_countdown = 0;
        if (g_json_hits == 0) {
            EXPECT_EQ(st, CS_OK) << what << ": with no fault met: " << cs_context_last_error(ctx);
            break;
        }
        ++points;
        EXPECT_NE(st, CS_OK) << what << ", cJSON allocation " << n << " failing went unnoticed";
        EXPECT_NE(cs_context_last_error(ctx)[0], '\0') << what << ", cJSON allocation " << n;
    }
    EXPECT_LE(HeapInUse() - heap_before, 4096) << what << ": heap grew over the sweep (a leak)";
    RecordSweep(what, "cJSON", points);
    return points;
}

// Both sweeps of the context: a single fault, then every allocation from the nth failing.
void SweepAll(cs_context_t ctx, const char *what, const Op &op)
{
    ASSERT_EQ(op(), CS_OK) << what << ": " << cs_context_last_error(ctx); // warm-up: lazy state
    const int single = SweepContext(ctx, what, op, false);
    const int repeat = SweepContext(ctx, what, op, true);
    EXPECT_GT(single, 0) << what << " allocates nothing: the sweep tested nothing";
    std::printf("[ fault points ] %-28s context %3d (repeat %3d)\n", what, single, repeat);
}

// The sweep of cJSON's allocations (a separate test: the library's cJSON use is its own area).
void SweepJsonAll(cs_context_t ctx, const char *what, const Op &op)
{
    ASSERT_EQ(op(), CS_OK) << what << ": " << cs_context_last_error(ctx);
    const int points = SweepJson(ctx, what, op);
    EXPECT_GT(points, 0) << what << " makes no cJSON allocation: the sweep tested nothing";
    std::printf("[ fault points ] %-28s cJSON %3d\n", what, points);
}

class FaultInjection : public ::testing::Test
{
  protected:
    void SetUp() override
    {
        ASSERT_EQ(cs_context_init(&ctx_), CS_OK);
        cs_context_set_threads(ctx_, 1);
        info_ = TinyInfo(3, 1, 3);
        ASSERT_EQ(cs_model_create(ctx_, &info_, 11, &model_), CS_OK);
        path_ = dir_.File("model.safetensors");
        ASSERT_EQ(cs_model_save(ctx_, model_, path_.c_str()), CS_OK);
    }
    void TearDown() override
    {
        cs_model_free(model_);
        cs_context_free(ctx_);
    }

    cs_context_t ctx_ = nullptr;
    cs_model_info info_;
    cs_model_t model_ = nullptr;
    TempDir dir_;
    std::string path_;
};

TEST_F(FaultInjection, ModelCreate)
{
    SweepAll(ctx_, "cs_model_create", [&] {
        cs_model_t m = reinterpret_cast<cs_model_t>(1);
        const cs_status st = cs_model_create(ctx_, &info_, 3, &m);
        if (st != CS_OK) EXPECT_EQ(m, nullptr);
        else cs_model_free(m);
        return st;
    });
}

TEST_F(FaultInjection, ModelSaveKeepsThePreviousFile)
{
    cs_model_t other = nullptr;
    ASSERT_EQ(cs_model_create(ctx_, &info_, 12, &other), CS_OK);
    // Each save writes the model the file does not hold, so a failed save that touched the file
    // would show; the file must then still be the previous model, byte for byte.
    cs_model_t in_file = model_;
    Op save = [&] {
        const std::vector<char> before = ReadBytes(path_);
        cs_model_t next = in_file == model_ ? other : model_;
        const cs_status st = cs_model_save(ctx_, next, path_.c_str());
        if (st == CS_OK) in_file = next;
        else EXPECT_EQ(ReadBytes(path_), before) << "a failed save changed the file";
        return st;
    };
    SweepAll(ctx_, "cs_model_save", save);
    SweepAll(ctx_, "cs_model_save_f16", [&] {
        const cs_status st = cs_model_save_f16(ctx_, other, dir_.File("half.safetensors").c_str());
        if (st != CS_OK) EXPECT_FALSE(FileExists(dir_.File("half.safetensors")));
        else std::remove(dir_.File("half.safetensors").c_str());
        return st;
    });
    cs_model_free(other);
    // no temporary file left behind by any of the failed saves
    const std::string list = "ls -A '" + dir_.Path() + "' | grep -q tmp";
    EXPECT_NE(std::system(list.c_str()), 0) << "temporary files left in " << dir_.Path();
}

TEST_F(FaultInjection, ModelLoad)
{
    SweepAll(ctx_, "cs_model_load", [&] {
        cs_model_t m = reinterpret_cast<cs_model_t>(1);
        const cs_status st = cs_model_load(ctx_, path_.c_str(), &m);
        if (st != CS_OK) EXPECT_EQ(m, nullptr);
        else cs_model_free(m);
        return st;
    });
}

TEST_F(FaultInjection, ModelAddClasses)
{
    cs_class_info extra = {7, "new structure", {200, 10, 10}};
    SweepAll(ctx_, "cs_model_add_classes", [&] {
        cs_model_t m = reinterpret_cast<cs_model_t>(1);
        const cs_status st = cs_model_add_classes(ctx_, model_, &extra, 1, &m);
        if (st != CS_OK) EXPECT_EQ(m, nullptr);
        else cs_model_free(m);
        return st;
    });
}

class TrainerFaults : public FaultInjection
{
  protected:
    void SetUp() override
    {
        FaultInjection::SetUp();
        config_ = cs_train_config_default();
        config_.batch_size = 2;
        const int64_t size[3] = {8, 8, 8};
        images_ = TestImage(2, size); // two batch items of one channel
        labels_.resize(images_.size());
        for (size_t i = 0; i < labels_.size(); ++i)
            labels_[i] = images_[i] > 0.5f ? 1 : images_[i] < -0.5f ? 2 : 0;
    }
    cs_train_config config_;
    std::vector<float> images_;
    std::vector<int32_t> labels_;
};

TEST_F(TrainerFaults, TrainerInit)
{
    SweepAll(ctx_, "cs_trainer_init", [&] {
        cs_trainer_t t = reinterpret_cast<cs_trainer_t>(1);
        const cs_status st = cs_trainer_init(ctx_, model_, &config_, &t);
        if (st != CS_OK) EXPECT_EQ(t, nullptr);
        else cs_trainer_free(t);
        return st;
    });
}

TEST_F(TrainerFaults, FirstStepKeepsTheWeights)
{
    // Each run makes a fresh trainer (no faults) and takes its first step (faults): a failed step
    // must leave the weights and the step count unchanged. Later steps allocate nothing.
    cs_trainer_t t = nullptr;
    Op first_step = [&] {
        const uint64_t countdown = ctx_->fault_countdown;
        const int32_t repeat = ctx_->fault_repeat;
        cs_context_inject_alloc_fault(ctx_, 0, 0);
        EXPECT_EQ(cs_trainer_init(ctx_, model_, &config_, &t), CS_OK);
        cs_context_inject_alloc_fault(ctx_, countdown, repeat);
        const std::vector<float> before(model_->params, model_->params + model_->num_params);
        cs_step_result r;
        const cs_status st = cs_trainer_step(t, images_.data(), labels_.data(), &r);
        if (st != CS_OK) {
            EXPECT_EQ(cs_trainer_steps_done(t), 0);
            EXPECT_EQ(0, std::memcmp(before.data(), model_->params, before.size() * sizeof(float)))
                << "a failed step changed the weights";
        }
        cs_trainer_free(t);
        return st;
    };
    ASSERT_EQ(first_step(), CS_OK) << cs_context_last_error(ctx_);
    const int single = SweepContext(ctx_, "first cs_trainer_step", first_step, false);
    std::printf("[ fault points ] %-28s context %3d\n", "first cs_trainer_step", single);
    // and the promise of the header: after the first step, a step allocates nothing
    ASSERT_EQ(cs_trainer_init(ctx_, model_, &config_, &t), CS_OK);
    cs_step_result r;
    ASSERT_EQ(cs_trainer_step(t, images_.data(), labels_.data(), &r), CS_OK);
    const uint64_t count = ctx_->alloc_count;
    ASSERT_EQ(cs_trainer_step(t, images_.data(), labels_.data(), &r), CS_OK);
    EXPECT_EQ(ctx_->alloc_count, count) << "a second step allocated through the context";
    cs_trainer_free(t);
}

TEST_F(TrainerFaults, Checkpoints)
{
    cs_trainer_t t = nullptr;
    ASSERT_EQ(cs_trainer_init(ctx_, model_, &config_, &t), CS_OK);
    cs_step_result r;
    ASSERT_EQ(cs_trainer_step(t, images_.data(), labels_.data(), &r), CS_OK);
    const std::string ckpt = dir_.File("run.ckpt");
    ASSERT_EQ(cs_trainer_save_checkpoint(t, ckpt.c_str()), CS_OK);
    const std::vector<char> saved = ReadBytes(ckpt);
    SweepAll(ctx_, "cs_trainer_save_checkpoint", [&] {
        const cs_status st = cs_trainer_save_checkpoint(t, ckpt.c_str());
        if (st != CS_OK)
            EXPECT_EQ(ReadBytes(ckpt), saved) << "a failed save changed the checkpoint";
        return st;
    });
    SweepAll(ctx_, "cs_trainer_load_checkpoint", [&] {
        const cs_status st = cs_trainer_load_checkpoint(t, ckpt.c_str());
        if (st != CS_OK) EXPECT_EQ(cs_trainer_steps_done(t), 1);
        return st;
    });
    cs_trainer_free(t);
}

TEST_F(FaultInjection, PredictVolume)
{
    const int64_t size[3] = {13, 10, 9}; // several overlapping windows, padding on every axis
    const std::vector<float> image = TestImage(1, size);
    std::vector<int32_t> labels(static_cast<size_t>(size[0] * size[1] * size[2]));
    std::vector<float> probabilities(labels.size() * 3);
    std::vector<int32_t> reference(labels.size());
    cs_infer_options opt = cs_infer_options_default();
    ASSERT_EQ(cs_predict_volume(ctx_, model_, image.data(), size, &opt, nullptr, reference.data()),
              CS_OK);
    SweepAll(ctx_, "cs_predict_volume", [&] {
        // the context keeps its workspace between calls: give it back, so that each attempt
        // allocates one again and its failure is swept too
        cs_context_release_memory(ctx_);
        const cs_status st = cs_predict_volume(ctx_, model_, image.data(), size, &opt,
                                               probabilities.data(), labels.data());
        if (st == CS_OK) EXPECT_EQ(labels, reference) << "results changed after failed runs";
        return st;
    });
}

// The loss's partial sums come from the context when the caller gives no scratch (the trainer
// gives its own, allocated in cs_trainer_init): a failure is an error, the outputs untouched.
TEST(LossFaults, LossThroughTheContext)
{
    cs_context_t ctx = nullptr;
    ASSERT_EQ(cs_context_init(&ctx), CS_OK);
    const int64_t batch = 2, n = 5000; // two chunks per item
    const int32_t k = 3;
    std::vector<float> logits(static_cast<size_t>(batch * k * n));
    std::vector<int32_t> labels(static_cast<size_t>(batch * n));
    for (size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(0.37f * static_cast<float>(i));
    for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<int32_t>(i % 7 % 3);
    for (int kind = 0; kind < 2; ++kind) {
        cs_loss_options o = cs_loss_options_default();
        o.batch_dice = kind;
        std::vector<float> grad(logits.size(), 7.0f);
        float loss = 7.0f;
        SweepAll(ctx, kind ? "cs_loss (batch Dice)" : "cs_loss", [&] {
            const cs_status st = cs_loss_run(ctx, &o, logits.data(), labels.data(), batch, n, k,
                                             &loss, grad.data(), nullptr);
            if (st != CS_OK) EXPECT_EQ(loss, 7.0f) << "a failed loss wrote its output";
            loss = 7.0f;
            return st;
        });
        // and the same result from the caller's scratch, with no allocation at all
        float with_scratch = 0.0f, without = 0.0f;
        std::vector<double> scratch(cs_loss_scratch_size(batch, n, k, kind) / sizeof(double),
                                    1e300);
        const uint64_t count = ctx->alloc_count;
        ASSERT_EQ(cs_loss_run(ctx, &o, logits.data(), labels.data(), batch, n, k, &with_scratch,
                              grad.data(), scratch.data()),
                  CS_OK);
        EXPECT_EQ(ctx->alloc_count, count);
        ASSERT_EQ(cs_loss(&o, logits.data(), labels.data(), batch, n, k, &without, nullptr), CS_OK);
        EXPECT_EQ(with_scratch, without) << "the scratch's old contents leaked into the sums";
    }
    cs_context_free(ctx);
}

// cJSON's allocations: headers and metadata are built and parsed with cJSON.
TEST_F(FaultInjection, JsonModelLoad)
{
    SweepJsonAll(ctx_, "cs_model_load", [&] {
        cs_model_t m = reinterpret_cast<cs_model_t>(1);
        const cs_status st = cs_model_load(ctx_, path_.c_str(), &m);
        if (st != CS_OK) EXPECT_EQ(m, nullptr);
        else cs_model_free(m);
        return st;
    });
}

// Regression (model_io.c, meta_float_text): when cJSON could not allocate the number it prints,
// "null" was written as leaky_slope / norm_epsilon and the save reported success, leaving a file
// that fails to load; the class colour array leaked when its key could not be copied. Now every
// failure is an error, the file at the path stays the previous model byte for byte, and the
// saves that succeed load back.
TEST_F(FaultInjection, JsonModelSave)
{
    cs_model_t other = nullptr;
    ASSERT_EQ(cs_model_create(ctx_, &info_, 12, &other), CS_OK);
    cs_model_t in_file = model_;
    SweepJsonAll(ctx_, "cs_model_save", [&] {
        const std::vector<char> before = ReadBytes(path_);
        cs_model_t next = in_file == model_ ? other : model_;
        const cs_status st = cs_model_save(ctx_, next, path_.c_str());
        if (st == CS_OK) in_file = next;
        else EXPECT_EQ(ReadBytes(path_), before) << "a failed save changed the file";
        return st;
    });
    cs_model_free(other);
    cs_model_t loaded = nullptr;
    ASSERT_EQ(cs_model_load(ctx_, path_.c_str(), &loaded), CS_OK) << cs_context_last_error(ctx_);
    EXPECT_FLOAT_EQ(loaded->info.arch.leaky_slope, info_.arch.leaky_slope);
    EXPECT_FLOAT_EQ(loaded->info.arch.norm_epsilon, info_.arch.norm_epsilon);
    cs_model_free(loaded);
    const std::string list = "ls -A '" + dir_.Path() + "' | grep -q tmp";
    EXPECT_NE(std::system(list.c_str()), 0) << "temporary files left in " << dir_.Path();
}

// Regression (train.c, config_json): the results of cJSON_Add*ToObject were not checked, so an
// allocation failure wrote a checkpoint whose training settings lacked fields, the save reported
// success and resuming from it failed ("other training settings"). Now: an error, the previous
// checkpoint intact, and every checkpoint that was written resumes.
TEST_F(TrainerFaults, JsonCheckpointSave)
{
    cs_trainer_t t = nullptr;
    ASSERT_EQ(cs_trainer_init(ctx_, model_, &config_, &t), CS_OK);
    const std::string ckpt = dir_.File("run.ckpt");
    ASSERT_EQ(cs_trainer_save_checkpoint(t, ckpt.c_str()), CS_OK);
    cs_step_result r;
    ASSERT_EQ(cs_trainer_step(t, images_.data(), labels_.data(), &r), CS_OK);
    SweepJsonAll(ctx_, "cs_trainer_save_checkpoint", [&] {
        const std::vector<char> before = ReadBytes(ckpt);
        const cs_status st = cs_trainer_save_checkpoint(t, ckpt.c_str());
        if (st != CS_OK)
            EXPECT_EQ(ReadBytes(ckpt), before) << "a failed save changed the checkpoint";
        return st;
    });
    ASSERT_EQ(cs_trainer_load_checkpoint(t, ckpt.c_str()), CS_OK) << cs_context_last_error(ctx_);
    EXPECT_EQ(cs_trainer_steps_done(t), 1);
    cs_trainer_free(t);
}

TEST_F(TrainerFaults, JsonCheckpointLoad)
{
    cs_trainer_t t = nullptr;
    ASSERT_EQ(cs_trainer_init(ctx_, model_, &config_, &t), CS_OK);
    const std::string ckpt = dir_.File("run.ckpt");
    ASSERT_EQ(cs_trainer_save_checkpoint(t, ckpt.c_str()), CS_OK);
    SweepJsonAll(ctx_, "cs_trainer_load_checkpoint",
                 [&] { return cs_trainer_load_checkpoint(t, ckpt.c_str()); });
    cs_trainer_free(t);
}

// The sweeps' lines "[ fault points ] <what>  context N (repeat M)" or "... cJSON N" read back
// into the keys of g_sweep_points.
std::map<std::string, int> ParseSweepLines(const std::string &output)
{
    std::map<std::string, int> points;
    const std::string tag = "[ fault points ] ";
    size_t start = 0;
    while ((start = output.find(tag, start)) != std::string::npos) {
        const size_t end = output.find('\n', start);
        const std::string line = output.substr(start + tag.size(), end - start - tag.size());
        start = end;
        for (const char *kind : {" context ", " cJSON "}) {
            const size_t at = line.rfind(kind);
            if (at == std::string::npos) continue;
            std::string what = line.substr(0, at);
            what.erase(what.find_last_not_of(' ') + 1);
            int first = -1, repeat = -1;
            const int read = std::sscanf(line.c_str() + at + std::strlen(kind), "%d (repeat %d)",
                                         &first, &repeat);
            const std::string name = std::string(kind).substr(1, std::strlen(kind) - 2);
            if (read >= 1) points[what + " | " + name] = first;
            if (read == 2) points[what + " | " + name + " repeat"] = repeat;
            break;
        }
    }
    return points;
}

// This executable run again without the summary: ctest runs each test in a process of its own,
// where no sweep has run before the summary.
std::map<std::string, int> SweepPointsOfAFullRun()
{
    char self[4096];
    const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        ADD_FAILURE() << "cannot find this test executable to run its sweeps";
        return {};
    }
    self[n] = '\0';
    const std::string command = "'" + std::string(self) +
                                "' --gtest_filter=-FaultInjectionSummary.* 2>&1";
    FILE *pipe = popen(command.c_str(), "r");
    if (!pipe) {
        ADD_FAILURE() << "cannot run " << command;
        return {};
    }
    std::string output;
    char buffer[4096];
    size_t got;
    while ((got = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, got);
    EXPECT_EQ(pclose(pipe), 0) << "the sweeps failed:\n" << output;
    return ParseSweepLines(output);
}

// The points every sweep tries, as docs/hardening.md lists them: a change in an API's allocations
// shows here, and the table there must follow.
TEST(FaultInjectionSummary, PointsTried)
{
    const std::map<std::string, int> expected = {
        {"cs_model_create | context", 2},
        {"cs_model_create | context repeat", 2},
        {"cs_model_save | context", 5},
        {"cs_model_save | context repeat", 5},
        {"cs_model_save | cJSON", 542},
        {"cs_model_save_f16 | context", 5},
        {"cs_model_save_f16 | context repeat", 5},
        {"cs_model_load | context", 84},
        {"cs_model_load | context repeat", 84},
        {"cs_model_load | cJSON", 667},
        {"cs_model_add_classes | context", 2},
        {"cs_model_add_classes | context repeat", 2},
        {"cs_predict_volume | context", 3},
        {"cs_predict_volume | context repeat", 3},
        {"cs_trainer_init | context", 10},
        {"cs_trainer_init | context repeat", 10},
        {"first cs_trainer_step | context", 0},
        {"cs_trainer_save_checkpoint | context", 6},
        {"cs_trainer_save_checkpoint | context repeat", 6},
        {"cs_trainer_save_checkpoint | cJSON", 589},
        {"cs_trainer_load_checkpoint | context", 87},
        {"cs_trainer_load_checkpoint | context repeat", 87},
        {"cs_trainer_load_checkpoint | cJSON", 720},
        {"cs_loss | context", 1},
        {"cs_loss | context repeat", 1},
        {"cs_loss (batch Dice) | context", 1},
        {"cs_loss (batch Dice) | context repeat", 1}};
    // Declared last, so a whole run of this executable has made every sweep already.
    const std::map<std::string, int> tried = g_sweep_points.size() == expected.size()
                                                 ? g_sweep_points
                                                 : SweepPointsOfAFullRun();
    int total = 0, expected_total = 0;
    for (const auto &e : expected) {
        expected_total += e.second;
        const auto it = tried.find(e.first);
        if (it == tried.end()) {
            ADD_FAILURE() << "no sweep of " << e.first << " ran";
            continue;
        }
        EXPECT_EQ(it->second, e.second)
            << e.first
            << ": fault points tried changed; update docs/hardening.md's table and this one";
    }
    for (const auto &t : tried) {
        total += t.second;
        EXPECT_TRUE(expected.count(t.first))
            << "sweep " << t.first << " is not in the expected table";
    }
    EXPECT_EQ(total, expected_total);
    std::printf("[ fault points ] total %d\n", total);
    RecordProperty("fault_points", total);
}

} // namespace
