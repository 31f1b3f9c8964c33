// ComboSegTrainHardeningTest.cxx - ComboSegTrain under hostile conditions, run as a shell or
// Slicer runs it.
//
// KillResume: killed with SIGKILL at random moments, 20 times, and started again with the same
// command each time: nothing written may ever fail to load, no finished epoch may be lost, and
// the last run completes the requested epochs. The kill moments come from a seeded generator
// and are spread over three phases: startup (reading the cases, before the first step),
// training (between checkpoints) and writing (the moment a temporary file of the model or the
// checkpoint appears, i.e. mid-write). After each kill the output model is loaded with
// cs_model_load and the checkpoint with a trainer of its own settings
// (cs_trainer_load_checkpoint), as the resumed run will.
//
// BadTrainingData: bad numbers in training cases (NaN voxels, constant images, empty label
// maps, labels out of range, a class absent from every case): a clear error naming the file,
// or a documented behaviour; never a silent NaN model.
#include "cs_synthetic_case.h"
#include "itkImageFileReader.h"

#include "comboseg/comboseg.h"
#include "internal.h"
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

namespace
{

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

const std::string Exe = std::string(COMBOSEG_BINARY_DIR) + "/cli-modules/ComboSegTrain";
constexpr int Kills = 20;
constexpr int Epochs = 16;
constexpr int StepsPerEpoch = 4;

std::string ReadFile(const std::string &path)
{
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// Starts ComboSegTrain with stdout and stderr going to files; returns its pid.
pid_t Spawn(const std::vector<std::string> &args, const std::string &out, const std::string &err)
{
    const pid_t pid = fork();
    if (pid == 0) {
        const int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        const int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(o, 1);
        dup2(e, 2);
        std::vector<char *> argv;
        argv.push_back(const_cast<char *>(Exe.c_str()));
        for (const auto &a : args) argv.push_back(const_cast<char *>(a.c_str()));
        argv.push_back(nullptr);
        execv(Exe.c_str(), argv.data());
        _exit(127);
    }
    return pid;
}

// A temporary file of a save by process pid in progress ("<file>.tmp-<pid>") in dir.
bool WriteInProgress(const std::string &dir, pid_t pid)
{
    const std::string tag = ".tmp-" + std::to_string(pid);
    std::error_code ec;
    for (const auto &e : fs::directory_iterator(dir, ec)) {
        const std::string name = e.path().filename().string();
        if (name.size() > tag.size() &&
            name.compare(name.size() - tag.size(), tag.size(), tag) == 0)
            return true;
    }
    return false;
}

size_t TemporaryFiles(const std::string &dir)
{
    size_t n = 0;
    std::error_code ec;
    for (const auto &e : fs::directory_iterator(dir, ec))
        n += e.path().filename().string().find(".tmp-") != std::string::npos;
    return n;
}

// Loads a checkpoint as a resumed run does: a model of the file's architecture and a trainer
// with the file's training settings; returns the status and the checkpoint's step.
cs_status LoadCheckpoint(const std::string &path, int64_t *step, std::string *message)
{
    cs_context_t ctx = nullptr;
    if (cs_context_init(&ctx) != CS_OK) return CS_ERR_OUT_OF_MEMORY;
    cs_context_set_threads(ctx, 1);
    cs_st_file *file = nullptr;
    cs_model_t model = nullptr;
    cs_trainer_t trainer = nullptr;
    cs_model_info info;
    cs_status st = cs_st_read(ctx, path.c_str(), &file);
    if (st == CS_OK) st = cs_model_info_read(ctx, file, path.c_str(), &info);
    if (st == CS_OK) st = cs_model_create(ctx, &info, 1, &model);
    if (st == CS_OK) {
        cs_train_config config = cs_train_config_default();
        const char *settings = cs_st_metadata(file, "checkpoint.train_config");
        cJSON *json = settings ? cJSON_Parse(settings) : nullptr;
        if (!json) st = cs_fail(ctx, CS_ERR_FORMAT, "no training settings in the checkpoint");
        else {
            auto number = [&](const char *key) {
                const cJSON *item = cJSON_GetObjectItemCaseSensitive(json, key);
                return cJSON_IsNumber(item) ? static_cast<int32_t>(item->valuedouble) : 0;
            };
            config.batch_size = number("batch_size");
            config.patch_size[0] = number("patch_x");
            config.patch_size[1] = number("patch_y");
            config.patch_size[2] = number("patch_z");
            const cJSON *optimizer = cJSON_GetObjectItemCaseSensitive(json, "optimizer");
            config.optimizer = cJSON_IsString(optimizer) &&
                                       std::string(optimizer->valuestring) == "adam"
                                   ? CS_OPTIMIZER_ADAM
                                   : CS_OPTIMIZER_ADAMW;
            const cJSON *loss = cJSON_GetObjectItemCaseSensitive(json, "loss");
            if (!cJSON_IsString(loss) ||
                cs_loss_kind_from_name(loss->valuestring, &config.loss.kind) != CS_OK)
                st = cs_fail(ctx, CS_ERR_FORMAT, "bad loss in the checkpoint's settings");
            cJSON_Delete(json);
        }
        if (st == CS_OK) st = cs_trainer_init(ctx, model, &config, &trainer);
        if (st == CS_OK) st = cs_trainer_load_checkpoint(trainer, path.c_str());
        if (st == CS_OK) *step = cs_trainer_steps_done(trainer);
    }
    *message = cs_context_last_error(ctx);
    cs_trainer_free(trainer);
    cs_model_free(model);
    cs_st_free(file);
    cs_context_free(ctx);
    return st;
}

cs_status LoadModel(const std::string &path, std::string *message)
{
    cs_context_t ctx = nullptr;
    if (cs_context_init(&ctx) != CS_OK) return CS_ERR_OUT_OF_MEMORY;
    cs_model_t model = nullptr;
    const cs_status st = cs_model_load(ctx, path.c_str(), &model);
    *message = cs_context_last_error(ctx);
    cs_model_free(model);
    cs_context_free(ctx);
    return st;
}

// The epoch a sidecar records ("epoch N" line), or 0.
int SidecarEpoch(const std::string &path)
{
    std::smatch m;
    const std::string text = ReadFile(path);
    return std::regex_search(text, m, std::regex("\nepoch ([0-9]+)\n")) ? std::stoi(m[1].str()) : 0;
}

class KillResume : public ::testing::Test
{
  protected:
    void SetUp() override
    {
        char pattern[] = "/tmp/comboseg-kill-resume-XXXXXX";
        ASSERT_NE(mkdtemp(pattern), nullptr);
        m_Dir = pattern;
        std::ofstream list(m_Dir + "/cases.txt");
        list << "# label\timage\n";
        for (int i = 1; i <= 2; ++i) {
            const cstest::SyntheticCaseFiles f = cstest::WriteSyntheticCase(
                m_Dir, "case" + std::to_string(i), i);
            list << f.labels << '\t' << f.image << '\n';
        }
        std::ofstream names(m_Dir + "/names.csv");
        names << "1,ball\n2,box\n";
    }
    void TearDown() override
    {
        if (!HasFailure()) fs::remove_all(m_Dir);
        else std::printf("kept %s for inspection\n", m_Dir.c_str());
    }

    std::vector<std::string> Args() const
    {
        return {"--caseList",
                m_Dir + "/cases.txt",
                "--labelNames",
                m_Dir + "/names.csv",
                "--validationShare",
                "0.5",
                "--baseModel",
                "new",
                "--epochs",
                std::to_string(Epochs),
                "--stepsPerEpoch",
                std::to_string(StepsPerEpoch),
                "--patchSize",
                "16,16,16",
                "--batchSize",
                "1",
                "--levels",
                "2",
                "--baseFilters",
                "4",
                "--threads",
                "1",
                "--normalization",
                "zscore",
                "--modality",
                "other",
                "--outputModel",
                Model(),
                "--historyTable",
                m_Dir + "/history.tsv",
                "--returnparameterfile",
                m_Dir + "/return.txt"};
    }
    std::string Model() const { return m_Dir + "/model.safetensors"; }
    std::string Checkpoint() const { return Model() + ".checkpoint"; }

    std::string m_Dir;
};

TEST_F(KillResume, TwentyRandomKillsLoseNothing)
{
    cs_rng rng;
    cs_rng_seed(&rng, 20261126);
    const std::vector<std::string> args = Args();
    int phaseCount[3] = {0, 0, 0}, midWriteKills = 0, finishedBeforeKill = 0;
    int64_t lastStep = 0;
    int lastEpoch = 0;
    for (int k = 0; k < Kills; ++k) {
        // 0: startup, 0-150 ms after the start; 1: training, 0-40 ms after this run finished an
        // epoch (so that every such run makes progress); 2: writing, as soon as a temporary file of
        // a save appears. Any phase kills after 30 s at the latest.
        const int phase = k % 3;
        const double delay = phase == 0   ? 0.15 * cs_rng_uniform(&rng)
                             : phase == 1 ? 0.04 * cs_rng_uniform(&rng)
                                          : 0.0;
        ++phaseCount[phase];
        const int epochAtStart = SidecarEpoch(Checkpoint() + ".session");
        const pid_t pid = Spawn(args, m_Dir + "/stdout.txt", m_Dir + "/stderr.txt");
        const auto start = Clock::now();
        auto armed = phase == 0 ? start : Clock::time_point::max();
        int status = 0;
        bool midWrite = false;
        for (;;) {
            if (waitpid(pid, &status, WNOHANG) == pid) break;
            const auto now = Clock::now();
            if (armed == Clock::time_point::max() &&
                (phase == 1 ? SidecarEpoch(Checkpoint() + ".session") > epochAtStart
                            : WriteInProgress(m_Dir, pid)))
                armed = now;
            const bool late = now - start > std::chrono::seconds(30);
            if (late || (armed != Clock::time_point::max() &&
                         now - armed >= std::chrono::duration<double>(delay))) {
                midWrite = WriteInProgress(m_Dir, pid);
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                break;
            }
            std::this_thread::sleep_for(std::chrono::microseconds(phase == 2 ? 100 : 1000));
        }
        if (!WIFSIGNALED(status)) {
            // the run ended on its own first: it must have succeeded (then the next resumes a
            // finished run, which is allowed)
            ++finishedBeforeKill;
            ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
                << "kill " << k << ": the run failed on its own:\n"
                << ReadFile(m_Dir + "/stderr.txt");
        }
        midWriteKills += midWrite;

        // Whatever is on disk now must load.
        std::string message;
        if (fs::exists(Model())) {
            EXPECT_EQ(LoadModel(Model(), &message), CS_OK)
                << "kill " << k << ": the model fails to load: " << message;
        }
        if (fs::exists(Checkpoint())) {
            int64_t step = -1;
            ASSERT_EQ(LoadCheckpoint(Checkpoint(), &step, &message), CS_OK)
                << "kill " << k << ": the checkpoint fails to load: " << message;
            EXPECT_GE(step, lastStep)
                << "kill " << k << ": the checkpoint went back (a finished epoch was lost)";
            EXPECT_EQ(step % StepsPerEpoch, 0)
                << "kill " << k << ": the checkpoint is not at an epoch's end";
            lastStep = step;
        } else {
            EXPECT_EQ(lastStep, 0) << "kill " << k << ": the checkpoint disappeared";
        }
        const int epoch = SidecarEpoch(Checkpoint() + ".session");
        // the sidecar is written first and may be one epoch ahead of the checkpoint (resuming drops it)
        EXPECT_GE(epoch + 1, lastEpoch) << "kill " << k << ": the session went back";
        lastEpoch = std::max(lastEpoch, epoch);
        std::printf(
            "[ kill %2d ] phase %d after %.3f s%s: checkpoint step %lld, session epoch %d\n", k,
            phase, std::chrono::duration<double>(Clock::now() - start).count(),
            midWrite ? " (mid-write)" : "", static_cast<long long>(lastStep), epoch);
    }

    // The last run goes to the end.
    const pid_t pid = Spawn(args, m_Dir + "/stdout.txt", m_Dir + "/stderr.txt");
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << ReadFile(m_Dir + "/stderr.txt");
    const std::string out = ReadFile(m_Dir + "/stdout.txt");
    if (lastStep > 0 && lastStep < Epochs * StepsPerEpoch) {
        EXPECT_TRUE(std::regex_search(out, std::regex("resuming after epoch [0-9]+"))) << out;
    }
    std::string message;
    ASSERT_EQ(LoadModel(Model(), &message), CS_OK) << message;
    int64_t step = -1;
    ASSERT_EQ(LoadCheckpoint(Checkpoint(), &step, &message), CS_OK) << message;
    EXPECT_EQ(step, Epochs * StepsPerEpoch) << "the run did not train every step";
    EXPECT_TRUE(std::regex_search(ReadFile(m_Dir + "/return.txt"),
                                  std::regex("epochsDone = " + std::to_string(Epochs))))
        << ReadFile(m_Dir + "/return.txt");
    // one history row per epoch, in order
    std::istringstream history(ReadFile(m_Dir + "/history.tsv"));
    std::string line;
    int rows = 0;
    while (std::getline(history, line))
        if (!line.empty() && line.rfind("epoch", 0) != 0) {
            EXPECT_EQ(line.substr(0, line.find('\t')), std::to_string(++rows));
        }
    EXPECT_EQ(rows, Epochs);

    const size_t stale = TemporaryFiles(m_Dir);
    std::printf(
        "[ kill-resume ] %d kills (startup %d, training %d, writing %d; %d mid-write, %d runs "
        "finished first), 0 losses, %zu stale temporary files\n",
        Kills, phaseCount[0], phaseCount[1], phaseCount[2], midWriteKills, finishedBeforeKill,
        stale);
    // each save removes what killed saves of its file left behind (cs_remove_stale_temporaries)
    EXPECT_EQ(stale, 0u) << "temporary files of killed saves remain in " << m_Dir;
    RecordProperty("kills", Kills);
    RecordProperty("mid_write_kills", midWriteKills);
}

// ---- bad numbers in training cases, through the CLI ---------------------------------------

struct RunResult {
    int code = -1;
    std::string out, err;
};

class BadTrainingData : public ::testing::Test
{
  protected:
    void SetUp() override
    {
        char pattern[] = "/tmp/comboseg-bad-training-XXXXXX";
        ASSERT_NE(mkdtemp(pattern), nullptr);
        m_Dir = pattern;
        for (int i = 1; i <= 2; ++i)
            m_Cases.push_back(cstest::WriteSyntheticCase(m_Dir, "case" + std::to_string(i), i));
        WriteNames("1,ball\n2,box\n");
    }
    void TearDown() override { fs::remove_all(m_Dir); }

    void WriteNames(const std::string &text) { std::ofstream(m_Dir + "/names.csv") << text; }

    // Rewrites a case's file (read, changed voxel by voxel, written again).
    template <typename TImage>
    void Change(const std::string &path, const std::function<void(TImage *)> &change)
    {
        auto reader = itk::ImageFileReader<TImage>::New();
        reader->SetImageIO(itk::NrrdImageIO::New());
        reader->SetFileName(path);
        reader->Update();
        typename TImage::Pointer image = reader->GetOutput();
        image->DisconnectPipeline();
        change(image.GetPointer());
        cstest::WriteNrrd(image.GetPointer(), path);
    }

    // Two epochs of two steps on both cases (no validation split: every case trains).
    RunResult Train()
    {
        std::ofstream list(m_Dir + "/cases.txt");
        list << "# label\timage\n";
        for (const auto &c : m_Cases) list << c.labels << '\t' << c.image << '\n';
        list.close();
        const std::vector<std::string> args = {"--caseList",        m_Dir + "/cases.txt",
                                               "--labelNames",      m_Dir + "/names.csv",
                                               "--validationShare", "0",
                                               "--baseModel",       "new",
                                               "--epochs",          "2",
                                               "--stepsPerEpoch",   "2",
                                               "--patchSize",       "16,16,16",
                                               "--batchSize",       "1",
                                               "--levels",          "2",
                                               "--baseFilters",     "4",
                                               "--threads",         "1",
                                               "--normalization",   "zscore",
                                               "--modality",        "other",
                                               "--outputModel",     m_Dir + "/model.safetensors",
                                               "--restart"};
        const pid_t pid = Spawn(args, m_Dir + "/stdout.txt", m_Dir + "/stderr.txt");
        int status = 0;
        waitpid(pid, &status, 0);
        RunResult r;
        r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        r.out = ReadFile(m_Dir + "/stdout.txt");
        r.err = ReadFile(m_Dir + "/stderr.txt");
        return r;
    }

    // The trained model: loads (cs_model_load refuses non-finite weights) and has k classes.
    void ExpectFiniteModel(int classes)
    {
        cs_context_t ctx = nullptr;
        ASSERT_EQ(cs_context_init(&ctx), CS_OK);
        cs_model_t model = nullptr;
        EXPECT_EQ(cs_model_load(ctx, (m_Dir + "/model.safetensors").c_str(), &model), CS_OK)
            << cs_context_last_error(ctx);
        if (model) {
            EXPECT_EQ(model->info.arch.num_classes, classes);
        }
        cs_model_free(model);
        cs_context_free(ctx);
    }

    std::string m_Dir;
    std::vector<cstest::SyntheticCaseFiles> m_Cases;
};

using Scan = cstest::SyntheticImage;
using LabelMap = cstest::SyntheticLabels;

TEST_F(BadTrainingData, NonFiniteVoxelsAreRefusedNamingTheFileCountAndFirstIndex)
{
    for (float bad :
         {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
        m_Cases[1] = cstest::WriteSyntheticCase(m_Dir, "case2", 2); // a fresh copy each time
        Change<Scan>(m_Cases[1].image, [&](Scan *image) {
            image->SetPixel({{3, 4, 5}}, bad);
            image->SetPixel({{9, 9, 9}}, bad);
        });
        const RunResult r = Train();
        EXPECT_NE(r.code, 0);
        EXPECT_NE(r.err.find(m_Cases[1].image), std::string::npos) << r.err;
        EXPECT_NE(r.err.find("2 NaN or infinite voxel(s), the first at index [3, 4, 5]"),
                  std::string::npos)
            << r.err;
        EXPECT_FALSE(fs::exists(m_Dir + "/model.safetensors"))
            << "a model was written from bad data";
        std::printf("[ bad input ] CLI training, %g voxels: exit %d: %s", bad, r.code,
                    r.err.c_str());
    }
}

TEST_F(BadTrainingData, LabelsOutOfRangeAreRefusedNamingTheFile)
{
    Change<LabelMap>(m_Cases[0].labels, [](LabelMap *labels) { labels->SetPixel({{1, 2, 3}}, 7); });
    const RunResult r = Train();
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find(m_Cases[0].labels), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("7"), std::string::npos) << r.err;
    std::printf("[ bad input ] CLI training, label 7 with 2 named classes: exit %d: %s", r.code,
                r.err.c_str());
}

TEST_F(BadTrainingData, ConstantImageTrainsWithZScoreOfStdZero)
{
    for (const auto &c : m_Cases)
        Change<Scan>(c.image, [](Scan *image) { image->FillBuffer(42.0f); });
    const RunResult r = Train();
    ASSERT_EQ(r.code, 0) << r.err;
    ExpectFiniteModel(3);
}

// A label map with no structure teaches only background (every structure absent): refused,
// naming the file, before anything is written.
TEST_F(BadTrainingData, EmptyLabelMapIsRefused)
{
    Change<LabelMap>(m_Cases[0].labels, [](LabelMap *labels) { labels->FillBuffer(0); });
    const RunResult r = Train();
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_NE(r.err.find("holds no structure"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(m_Cases[0].labels), std::string::npos) << r.err;
    EXPECT_FALSE(std::filesystem::exists(m_Dir + "/model.safetensors"));
}

TEST_F(BadTrainingData, ClassAbsentFromEveryCaseTrains)
{
    WriteNames("1,ball\n2,box\n3,vessel\n"); // no case holds a vessel
    const RunResult r = Train();
    ASSERT_EQ(r.code, 0) << r.err;
    ExpectFiniteModel(4);
    std::printf("[ bad input ] CLI training, class absent from every case: exit %d\n%s", r.code,
                r.err.c_str());
}

} // namespace
