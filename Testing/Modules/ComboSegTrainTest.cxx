// ComboSegTrain run the way Slicer (or a shell) runs it: --xml, a short training run and its
// outputs, a hard kill mid-run and the resumed run, and fine-tuning on a real CT.
#include "ComboSegCLI.h"
#include "cs_synthetic_case.h"
#include "cs_test_data.h"
#include "itkComboSegIO.h"
#include "itkComboSegModel.h"
#include "itkImageRegionIterator.h"

#include <cjson/cJSON.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

namespace
{

const std::string Exe = std::string(COMBOSEG_BINARY_DIR) + "/cli-modules/ComboSegTrain";

std::string ReadFile(const std::string &path)
{
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The stored bytes of one tensor of a safetensors model file ("" when it has none of that name).
std::string TensorBytes(const std::string &path, const std::string &name)
{
  const std::string file = ReadFile(path);
  if (file.size() < 8)
    return "";
  uint64_t headerSize = 0;
  for (int i = 7; i >= 0; --i)
    headerSize = headerSize << 8 | static_cast<unsigned char>(file[static_cast<size_t>(i)]);
  cJSON *header = cJSON_ParseWithLength(file.data() + 8, std::min<size_t>(headerSize, file.size() - 8));
  const cJSON *tensor = cJSON_GetObjectItemCaseSensitive(header, name.c_str());
  const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(tensor, "data_offsets");
  std::string bytes;
  if (cJSON_GetArraySize(offsets) == 2)
  {
    const size_t begin = static_cast<size_t>(cJSON_GetArrayItem(offsets, 0)->valuedouble);
    const size_t end = static_cast<size_t>(cJSON_GetArrayItem(offsets, 1)->valuedouble);
    bytes = file.substr(8 + headerSize + begin, end - begin);
  }
  cJSON_Delete(header);
  return bytes;
}

std::vector<std::string> Lines(const std::string &text)
{
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty())
      lines.push_back(line);
  return lines;
}

// Starts the module with stdout and stderr going to files; returns its pid.
pid_t Spawn(const std::vector<std::string> &args, const std::string &out, const std::string &err)
{
  const pid_t pid = fork();
  if (pid == 0)
  {
    const int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(o, 1);
    dup2(e, 2);
    std::vector<char *> argv;
    argv.push_back(const_cast<char *>(Exe.c_str()));
    for (const auto &a : args)
      argv.push_back(const_cast<char *>(a.c_str()));
    argv.push_back(nullptr);
    execv(Exe.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

struct RunResult
{
  int code = -1;
  std::string out, err;
  double seconds = 0;
};

RunResult RunModule(const std::vector<std::string> &args, const std::string &dir)
{
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = Spawn(args, dir + "/stdout.txt", dir + "/stderr.txt");
  int status = 0;
  waitpid(pid, &status, 0);
  RunResult r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ReadFile(dir + "/stdout.txt");
  r.err = ReadFile(dir + "/stderr.txt");
  return r;
}

// The values of <filter-progress> in order.
std::vector<double> Progress(const std::string &out)
{
  std::vector<double> values;
  const std::regex tag("<filter-progress>([^<]*)</filter-progress>");
  for (auto it = std::sregex_iterator(out.begin(), out.end(), tag); it != std::sregex_iterator(); ++it)
    values.push_back(std::stod((*it)[1].str()));
  return values;
}

// Data rows of a history table (the header dropped), split at tabs.
std::vector<std::vector<std::string>> TableRows(const std::string &path, std::vector<std::string> *header = nullptr)
{
  std::vector<std::vector<std::string>> rows;
  for (const std::string &line : Lines(ReadFile(path)))
  {
    std::vector<std::string> fields;
    std::istringstream in(line);
    std::string f;
    while (std::getline(in, f, '\t'))
      fields.push_back(f);
    if (header && header->empty())
      *header = fields;
    else if (fields.empty() || fields[0] != "epoch")
      rows.push_back(fields);
  }
  return rows;
}

size_t Column(const std::vector<std::string> &header, const std::string &name)
{
  for (size_t i = 0; i < header.size(); ++i)
    if (header[i] == name)
      return i;
  ADD_FAILURE() << "no column " << name;
  return 0;
}

class ComboSegTrainTest : public ::testing::Test
{
protected:
  void SetUp() override
  {
    char pattern[] = "/tmp/comboseg-train-cli-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    m_Dir = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(m_Dir); }

  // Three synthetic cases in a case list (label<TAB>image) and names for their labels.
  void WriteSyntheticData()
  {
    std::ofstream list(m_Dir + "/cases.txt");
    list << "# label\timage\n";
    for (int i = 1; i <= 3; ++i)
    {
      const cstest::SyntheticCaseFiles f = cstest::WriteSyntheticCase(m_Dir, "case" + std::to_string(i), i);
      list << f.labels << '\t' << f.image << '\n';
    }
    std::ofstream names(m_Dir + "/names.csv");
    names << "1,ball\n2,box\n";
  }

  // A new tiny model on the synthetic cases, as a shell user would train one.
  std::vector<std::string> SyntheticArgs(int epochs, int steps)
  {
    return {"--caseList",
            m_Dir + "/cases.txt",
            "--labelNames",
            m_Dir + "/names.csv",
            "--validationShare",
            "0.34",
            "--baseModel",
            "new",
            "--epochs",
            std::to_string(epochs),
            "--stepsPerEpoch",
            std::to_string(steps),
            "--patchSize",
            "16,16,16",
            "--learningRate",
            "0.03",
            "--threads",
            "2",
            "--levels",
            "2",
            "--baseFilters",
            "8",
            "--normalization",
            "zscore",
            "--modality",
            "other",
            "--outputModel",
            m_Dir + "/model.safetensors",
            "--historyTable",
            m_Dir + "/history.tsv",
            "--plotImage",
            m_Dir + "/curves.png",
            "--returnparameterfile",
            m_Dir + "/return.txt"};
  }

  std::string m_Dir;
};

TEST(ComboSegTrainXml, PrintsTheDescriptionAtOnce)
{
  char pattern[] = "/tmp/comboseg-train-xml-XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  const RunResult r = RunModule({"--xml"}, pattern);
  std::filesystem::remove_all(pattern);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_LT(r.seconds, 5.0);
  ASSERT_EQ(r.out.rfind("<?xml", 0), 0u);
  const ComboSegModuleDescription d = ComboSegModuleDescription::Parse(r.out);
  EXPECT_EQ(d.title, "ComboSeg Train");
  const std::regex longflag("[A-Za-z_][A-Za-z0-9_]*");
  for (const ComboSegParameterDescription &p : d.parameters)
  {
    EXPECT_FALSE(p.label.empty()) << p.name;
    EXPECT_FALSE(p.description.empty()) << p.name;
    if (!p.longflag.empty())
      EXPECT_TRUE(std::regex_match(p.longflag, longflag)) << p.longflag;
    if (p.tag == "boolean")
      EXPECT_EQ(p.defaultValue, "false") << p.name;
  }
  // What a clinician reads about beta says which way it trades the errors.
  const ComboSegParameterDescription *beta = d.Find("beta");
  ASSERT_NE(beta, nullptr);
  EXPECT_NE(beta->description.find("fewer missed voxels"), std::string::npos);
  EXPECT_NE(beta->description.find("fewer false alarms"), std::string::npos);
  ASSERT_NE(d.Find("historyTable"), nullptr);
  EXPECT_EQ(d.Find("historyTable")->tag, "table");
}

TEST_F(ComboSegTrainTest, ShortRunWritesModelTableAndPlot)
{
  WriteSyntheticData();
  const RunResult r = RunModule(SyntheticArgs(3, 6), m_Dir);
  ASSERT_EQ(r.code, 0) << r.err << r.out;

  // Progress: Slicer's tags, rising to 1, with the epoch, loss and Dice in the comments.
  const std::vector<double> p = Progress(r.out);
  ASSERT_FALSE(p.empty());
  for (size_t i = 1; i < p.size(); ++i)
    EXPECT_GE(p[i], p[i - 1]);
  EXPECT_DOUBLE_EQ(p.back(), 1.0);
  EXPECT_TRUE(
      std::regex_search(r.out, std::regex("<filter-comment>epoch 3/3 loss -?[0-9.]+ Dice [0-9.]+</filter-comment>")))
      << r.out;
  EXPECT_NE(r.out.find("<filter-end>"), std::string::npos);

  auto model = itk::ComboSegModel::New();
  model->Load(m_Dir + "/model.safetensors");
  ASSERT_EQ(model->GetInfo().arch.num_classes, 3);
  EXPECT_STREQ(model->GetInfo().classes[2].name, "box");
  EXPECT_STREQ(model->GetInfo().name, "model");
  EXPECT_EQ(model->GetInfo().postprocessing.largest_component, 1) << "a new model recommends its clean-up";

  std::vector<std::string> header;
  const auto rows = TableRows(m_Dir + "/history.tsv", &header);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(header.back(), "mean_dice");
  EXPECT_EQ(rows[2][Column(header, "step")], "18");
  EXPECT_EQ(ReadFile(m_Dir + "/curves.png").substr(1, 3), "PNG");

  const std::string ret = ReadFile(m_Dir + "/return.txt");
  EXPECT_TRUE(std::regex_search(ret, std::regex("bestDice = [0-9.]+"))) << ret;
  EXPECT_TRUE(std::regex_search(ret, std::regex("epochsDone = 3"))) << ret;
}

// Issue 14 item 5: left at their automatic values (the panel's defaults), fine-tuning a base model
// takes the gentle recipe of docs/fine-tuning-study.md (a new model's learning rate made the base
// model forget), while a new model keeps the engine's recipe; values a user types are kept.
TEST_F(ComboSegTrainTest, AutomaticValuesChooseTheFineTuningRecipeForABaseModel)
{
  WriteSyntheticData();
  std::vector<std::string> newArgs = SyntheticArgs(1, 2);
  const auto lr = std::find(newArgs.begin(), newArgs.end(), "--learningRate");
  newArgs.erase(lr, lr + 2); // automatic
  const RunResult base = RunModule(newArgs, m_Dir);
  ASSERT_EQ(base.code, 0) << base.err << base.out;
  EXPECT_NE(base.out.find("automatic values for a new model: learning rate 0.001; 0.33 of patches on structures; "
                          "rotations up to 0 degrees; mirroring none"),
            std::string::npos)
      << base.out;

  auto tuneArgs = [&](const std::vector<std::string> &extra) {
    std::vector<std::string> a = {"--caseList",        m_Dir + "/cases.txt",
                                  "--validationShare", "0",
                                  "--baseModelFile",   m_Dir + "/model.safetensors",
                                  "--stepsPerEpoch",   "1",
                                  "--threads",         "2",
                                  "--outputModel",     m_Dir + "/tuned.safetensors",
                                  "--historyTable",    m_Dir + "/tuned.tsv",
                                  "--restart"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  // The base model has 2 levels: the recipe's 2 frozen levels would leave its bottom none to learn.
  const RunResult tuned = RunModule(tuneArgs({}), m_Dir);
  ASSERT_EQ(tuned.code, 0) << tuned.err << tuned.out;
  EXPECT_NE(tuned.out.find("automatic values for fine-tuning a base model: learning rate 0.0002; 3 epochs; 0.6 of "
                           "patches on structures; rotations up to 10 degrees; mirroring x; 1 frozen encoder level(s)"),
            std::string::npos)
      << tuned.out;
  std::vector<std::string> header;
  auto rows = TableRows(m_Dir + "/tuned.tsv", &header);
  ASSERT_EQ(rows.size(), 3u) << "3 epochs of 1 step";
  EXPECT_LE(std::stod(rows[0][Column(header, "learning_rate")]), 2e-4 * 1.0001);
  EXPECT_GT(std::stod(rows[0][Column(header, "learning_rate")]), 1e-4);

  const RunResult typed =
      RunModule(tuneArgs({"--learningRate", "0.001", "--epochs", "2", "--foregroundFraction", "0.33",
                          "--rotationAugmentation", "0", "--mirrorAugmentation", "none", "--freezeEncoderLevels", "0"}),
                m_Dir);
  ASSERT_EQ(typed.code, 0) << typed.err << typed.out;
  EXPECT_EQ(typed.out.find("automatic values"), std::string::npos) << typed.out;
  rows = TableRows(m_Dir + "/tuned.tsv", &header);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_GT(std::stod(rows[0][Column(header, "learning_rate")]), 5e-4);
}

// Fine-tuning with the whole encoder frozen keeps every encoder weight of the base model bit for
// bit while the decoder and head learn; asking a new model to freeze layers is an error.
TEST_F(ComboSegTrainTest, FrozenEncoderLevelsKeepTheBaseModelsEncoder)
{
  WriteSyntheticData();
  const RunResult base = RunModule(SyntheticArgs(1, 2), m_Dir);
  ASSERT_EQ(base.code, 0) << base.err << base.out;
  const std::string baseModel = m_Dir + "/model.safetensors", tuned = m_Dir + "/tuned.safetensors";
  const RunResult run = RunModule({"--caseList", m_Dir + "/cases.txt", "--validationShare", "0", "--baseModelFile",
                                   baseModel, "--epochs", "2", "--stepsPerEpoch", "2", "--learningRate", "0.01",
                                   "--freezeEncoderLevels", "2", "--threads", "2", "--outputModel", tuned, "--restart"},
                                  m_Dir);
  ASSERT_EQ(run.code, 0) << run.err << run.out;
  for (const char *name : {"enc0.conv1.weight", "enc0.norm2.bias", "enc1.conv2.weight", "enc1.conv1.bias"})
  {
    const std::string before = TensorBytes(baseModel, name);
    ASSERT_FALSE(before.empty()) << name;
    EXPECT_EQ(before, TensorBytes(tuned, name)) << name << " changed";
  }
  for (const char *name : {"dec0.conv1.weight", "dec0.up.weight", "head.weight"})
  {
    const std::string before = TensorBytes(baseModel, name);
    ASSERT_FALSE(before.empty()) << name;
    EXPECT_NE(before, TensorBytes(tuned, name)) << name << " did not learn";
  }

  std::vector<std::string> newArgs = SyntheticArgs(1, 1);
  newArgs.insert(newArgs.end(), {"--freezeEncoderLevels", "1", "--outputModel", m_Dir + "/frozen-new.safetensors"});
  const RunResult fresh = RunModule(newArgs, m_Dir);
  EXPECT_EQ(fresh.code, 1) << fresh.out;
  EXPECT_NE(fresh.err.find("--freezeEncoderLevels"), std::string::npos) << fresh.err;
  EXPECT_FALSE(std::filesystem::exists(m_Dir + "/frozen-new.safetensors"));
}

// A model whose structures come in pieces (a tumour's sub-regions) is told not to recommend the
// largest-component clean-up; fine-tuning keeps a base's recommendation unless told otherwise.
TEST_F(ComboSegTrainTest, RecommendedCleanUpIsRecordedAndKeptByFineTuning)
{
  WriteSyntheticData();
  std::vector<std::string> args = SyntheticArgs(1, 1);
  args.insert(args.end(), {"--recommendedCleanUp", "none"});
  const RunResult none = RunModule(args, m_Dir);
  ASSERT_EQ(none.code, 0) << none.err << none.out;
  const std::string baseModel = m_Dir + "/model.safetensors";
  auto model = itk::ComboSegModel::New();
  model->Load(baseModel);
  EXPECT_EQ(model->GetInfo().postprocessing.largest_component, 0);

  auto fineTune = [&](const std::string &cleanUp, const std::string &out) {
    const RunResult run = RunModule({"--caseList", m_Dir + "/cases.txt", "--validationShare", "0", "--baseModelFile",
                                     baseModel, "--epochs", "1", "--stepsPerEpoch", "1", "--recommendedCleanUp",
                                     cleanUp, "--threads", "2", "--outputModel", out, "--restart"},
                                    m_Dir);
    EXPECT_EQ(run.code, 0) << run.err << run.out;
    auto tuned = itk::ComboSegModel::New();
    tuned->Load(out);
    return tuned->GetInfo().postprocessing.largest_component;
  };
  EXPECT_EQ(fineTune("automatic", m_Dir + "/kept.safetensors"), 0) << "the base model's recommendation is kept";
  EXPECT_EQ(fineTune("largest-component", m_Dir + "/largest.safetensors"), 1);

  args = SyntheticArgs(1, 1);
  args.insert(args.end(), {"--recommendedCleanUp", "holes", "--outputModel", m_Dir + "/refused.safetensors"});
  const RunResult refused = RunModule(args, m_Dir);
  EXPECT_NE(refused.code, 0) << refused.out;
  EXPECT_NE(refused.err.find("recommendedCleanUp"), std::string::npos) << refused.err;
  EXPECT_FALSE(std::filesystem::exists(m_Dir + "/refused.safetensors"));
}

// Issue 16 item 5: a scene label map whose segment names cannot be read is an error naming the
// file before training starts (the exception was swallowed and the run went on without names).
TEST_F(ComboSegTrainTest, UnreadableSceneLabelNamesAreAnErrorBeforeTraining)
{
  WriteSyntheticData();
  const std::string labels = m_Dir + "/case1_labels.nrrd", named = m_Dir + "/named_labels.nrrd";
  std::string nrrd = ReadFile(labels);
  const size_t firstLine = nrrd.find('\n') + 1;
  nrrd.insert(firstLine, "Segment0_Name:=liver\nSegment0_LabelValue:=one\n");
  std::ofstream(named, std::ios::binary) << nrrd;
  const RunResult r = RunModule({"--inputVolume", m_Dir + "/case1_image.nrrd", "--inputLabelMap", named, "--baseModel",
                                 "new", "--epochs", "1", "--stepsPerEpoch", "1", "--patchSize", "16,16,16", "--levels",
                                 "2", "--baseFilters", "4", "--outputModel", m_Dir + "/named.safetensors", "--restart"},
                                m_Dir);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.err.find(named), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("LabelValue 'one' is not an integer"), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find("<filter-start>"), std::string::npos) << "training started:\n" << r.out;
}

// Issue 17 item 7: training from the scene with two channels per case and a second case. With
// one case there is no validation: no Dice columns of nan, and the summary says which epoch
// was kept and why.
TEST_F(ComboSegTrainTest, SceneCasesWithTwoChannelsTrain)
{
  WriteSyntheticData();
  const std::string c1 = m_Dir + "/case1", c2 = m_Dir + "/case2";
  auto args = [&](bool secondCase) {
    std::vector<std::string> a = {"--inputVolume",     c1 + "_image.nrrd",
                                  "--inputVolume2",    c1 + "_image.nrrd",
                                  "--inputLabelMap",   c1 + "_labels.nrrd",
                                  "--labelNames",      m_Dir + "/names.csv",
                                  "--baseModel",       "new",
                                  "--epochs",          "2",
                                  "--stepsPerEpoch",   "2",
                                  "--patchSize",       "16,16,16",
                                  "--threads",         "2",
                                  "--levels",          "2",
                                  "--baseFilters",     "4",
                                  "--normalization",   "zscore",
                                  "--modality",        "other",
                                  "--validationShare", "0.5",
                                  "--outputModel",     m_Dir + "/scene.safetensors",
                                  "--historyTable",    m_Dir + "/scene.tsv",
                                  "--plotImage",       m_Dir + "/scene.png",
                                  "--restart"};
    if (secondCase)
      for (const std::string &extra :
           std::vector<std::string>{"--inputVolumeCase2", c2 + "_image.nrrd", "--inputVolume2Case2", c2 + "_image.nrrd",
                                    "--inputLabelMapCase2", c2 + "_labels.nrrd"})
        a.push_back(extra);
    return a;
  };

  RunResult r = RunModule(args(false), m_Dir);
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  auto model = itk::ComboSegModel::New();
  model->Load(m_Dir + "/scene.safetensors");
  EXPECT_EQ(model->GetInfo().arch.in_channels, 2) << "the scene's two channels";
  const std::string table = ReadFile(m_Dir + "/scene.tsv");
  EXPECT_EQ(table.find("nan"), std::string::npos) << table;
  EXPECT_EQ(Lines(table)[0], "epoch\tstep\tseconds\ttrain_loss\tlearning_rate");
  EXPECT_NE(r.out.find("epoch 2, the last: without validation cases"), std::string::npos) << r.out;

  // Two scene cases: one validates, and "best" is the best validation Dice.
  r = RunModule(args(true), m_Dir);
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("the best mean validation Dice"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1 training and 1 validation case(s)"), std::string::npos) << r.out;
  EXPECT_NE(Lines(ReadFile(m_Dir + "/scene.tsv"))[0].find("mean_dice"), std::string::npos);

  // A second case without its label map is named.
  std::vector<std::string> bad = args(false);
  bad.push_back("--inputVolumeCase2");
  bad.push_back(c2 + "_image.nrrd");
  r = RunModule(bad, m_Dir);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("--inputLabelMapCase2"), std::string::npos) << r.err;
}

// --tverskyWeights sets the Tversky losses' false-positive and false-negative weights (the loss
// study compares Tversky 0.3/0.7); the model records them, and bad pairs are refused.
TEST_F(ComboSegTrainTest, TverskyWeightsReachTheLossAndBadOnesAreRefused)
{
  WriteSyntheticData();
  std::vector<std::string> args = SyntheticArgs(1, 2);
  args.insert(args.end(), {"--loss", "tversky", "--tverskyWeights", "0.2,0.8"});
  const RunResult r = RunModule(args, m_Dir);
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  auto model = itk::ComboSegModel::New();
  model->Load(m_Dir + "/model.safetensors");
  EXPECT_EQ(model->GetInfo().loss.kind, CS_LOSS_TVERSKY);
  EXPECT_NEAR(model->GetInfo().loss.tversky_alpha, 0.2f, 1e-6);
  EXPECT_NEAR(model->GetInfo().loss.tversky_beta, 0.8f, 1e-6);

  for (const std::string bad : {"0.3", "1.5,0.7", "0,0"})
  {
    std::vector<std::string> refused = SyntheticArgs(1, 2);
    refused.insert(refused.end(), {"--loss", "tversky", "--tverskyWeights", bad, "--restart"});
    const RunResult b = RunModule(refused, m_Dir);
    EXPECT_NE(b.code, 0) << bad;
    EXPECT_NE(b.err.find("--tverskyWeights"), std::string::npos) << bad << ": " << b.err;
  }
}

// Zoom, gamma, rotation, mirror augmentation and channel dropout: a run with all of them trains; values outside
// the ranges of the XML description are refused, naming the parameter, before anything is written.
TEST_F(ComboSegTrainTest, AugmentationOptionsTrainAndBadOnesAreRefused)
{
  WriteSyntheticData();
  std::vector<std::string> args = SyntheticArgs(1, 2);
  args.insert(args.end(), {"--zoomAugmentation", "0.2", "--gammaAugmentation", "0.5", "--rotationAugmentation",
                           "5,5,15", "--mirrorAugmentation", "xz", "--channelDropout", "0.3"});
  const RunResult r = RunModule(args, m_Dir);
  ASSERT_EQ(r.code, 0) << r.err << r.out;

  const std::pair<std::string, std::string> bad[] = {
      {"--zoomAugmentation", "1"},       {"--zoomAugmentation", "-0.1"},    {"--gammaAugmentation", "-1"},
      {"--rotationAugmentation", "181"}, {"--rotationAugmentation", "5,5"}, {"--mirrorAugmentation", "w"},
      {"--channelDropout", "1.5"},       {"--channelDropout", "-0.1"}};
  for (const auto &[flag, value] : bad)
  {
    std::vector<std::string> refused = SyntheticArgs(1, 2);
    refused.insert(refused.end(), {flag, value});
    *(std::find(refused.begin(), refused.end(), "--outputModel") + 1) = m_Dir + "/refused.safetensors";
    const RunResult b = RunModule(refused, m_Dir);
    EXPECT_NE(b.code, 0) << flag << " " << value;
    EXPECT_NE(b.err.find("'" + flag.substr(2) + "'"), std::string::npos) << flag << " " << value << ": " << b.err;
    EXPECT_FALSE(std::ifstream(m_Dir + "/refused.safetensors").good());
  }
}

TEST_F(ComboSegTrainTest, KilledRunResumesFromTheCheckpoint)
{
  WriteSyntheticData();
  const std::vector<std::string> args = SyntheticArgs(4, 20);
  const std::string sidecar = m_Dir + "/model.safetensors.checkpoint.session";
  const pid_t pid = Spawn(args, m_Dir + "/stdout.txt", m_Dir + "/stderr.txt");
  // Wait for a checkpoint before the last epoch, then kill as Slicer cancels: SIGKILL.
  const auto start = std::chrono::steady_clock::now();
  bool epochDone = false;
  while (!epochDone && std::chrono::steady_clock::now() - start < std::chrono::seconds(300))
  {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    epochDone = std::regex_search(ReadFile(sidecar), std::regex("\nepoch [1-3]\n")) &&
                std::filesystem::exists(m_Dir + "/model.safetensors.checkpoint");
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid)
      FAIL() << "finished before it could be killed";
  }
  ASSERT_TRUE(epochDone);
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));

  // All or nothing: no output of the killed run under its name; the best model so far waits,
  // whole, beside the checkpoint for the resumed run.
  EXPECT_FALSE(std::filesystem::exists(m_Dir + "/model.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(m_Dir + "/history.tsv"));
  EXPECT_FALSE(std::filesystem::exists(m_Dir + "/curves.png"));
  auto model = itk::ComboSegModel::New();
  model->Load(m_Dir + "/model.safetensors.checkpoint.best");

  const RunResult r = RunModule(args, m_Dir);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("<filter-comment>resuming after epoch [1-3] "))) << r.out;
  std::vector<std::string> header;
  const auto rows = TableRows(m_Dir + "/history.tsv", &header);
  ASSERT_EQ(rows.size(), 4u);
  for (size_t i = 0; i < 4; ++i)
  {
    EXPECT_EQ(rows[i][0], std::to_string(i + 1));
    EXPECT_EQ(rows[i][Column(header, "step")], std::to_string(20 * (i + 1)));
  }
  EXPECT_TRUE(std::regex_search(ReadFile(m_Dir + "/return.txt"), std::regex("epochsDone = 4")));
}

// Every output location is checked before the cases are read, and a run that fails leaves no
// output: a missing folder for the model, the history or the plot, or a plot name asking for a
// format other than PNG.
TEST_F(ComboSegTrainTest, BadOutputsAreRefusedBeforeTrainingAndLeaveNothing)
{
  WriteSyntheticData();
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"--outputModel", m_Dir + "/nope/sub/model.safetensors"},
      {"--historyTable", m_Dir + "/nope/history.tsv"},
      {"--plotImage", m_Dir + "/nope/curves.png"},
      {"--plotImage", m_Dir + "/curves.jpg"},
      {"--historyTable", m_Dir},
  };
  for (const auto &[flag, value] : bad)
  {
    std::vector<std::string> args = SyntheticArgs(2, 50);
    *(std::find(args.begin(), args.end(), flag) + 1) = value;
    const RunResult r = RunModule(args, m_Dir);
    EXPECT_EQ(r.code, 1) << flag << " " << value;
    EXPECT_NE(r.err.find(flag), std::string::npos) << flag << " " << value << ": " << r.err;
    EXPECT_EQ(r.out.find("<filter-start>"), std::string::npos) << flag << ": the run started:\n" << r.out;
    for (const char *left : {"/model.safetensors", "/model.safetensors.checkpoint",
                             "/model.safetensors.checkpoint.best", "/history.tsv", "/curves.png", "/return.txt"})
      EXPECT_FALSE(std::filesystem::exists(m_Dir + left)) << flag << " " << value << " left " << left;
  }
}

// Fine-tuning on the TotalSegmentator example CT: even slices train, odd slices validate. A base
// model that knows liver and spleen learns the kidneys and the stomach as new structures.
TEST_F(ComboSegTrainTest, FineTuningOnRealCTRaisesValidationDice)
{
  CS_REQUIRE_DATA("ct-abdomen/totalseg/example_ct_sm.nii.gz");
  CS_REQUIRE_DATA("ct-abdomen/totalseg/example_seg.nii.gz");
  using CT = itk::Image<float, 3>;
  using Seg = itk::Image<unsigned char, 3>;
  const CT::Pointer ct = itk::ReadScan<CT>(cstest::DataPath("ct-abdomen/totalseg/example_ct_sm.nii.gz"));
  const Seg::Pointer seg = itk::ReadScan<Seg>(cstest::DataPath("ct-abdomen/totalseg/example_seg.nii.gz"));

  // Every other slice, with labels kept for `keep` and 0 elsewhere.
  auto slices = [&](int parity, const std::set<int> &keep, const std::string &id) {
    const auto size = ct->GetLargestPossibleRegion().GetSize();
    CT::RegionType region;
    region.SetSize({{size[0], size[1], size[2] / 2}});
    auto img = CT::New();
    auto lab = Seg::New();
    for (auto *im :
         {static_cast<itk::ImageBase<3> *>(img.GetPointer()), static_cast<itk::ImageBase<3> *>(lab.GetPointer())})
    {
      im->SetRegions(region);
      CT::SpacingType spacing = ct->GetSpacing();
      spacing[2] *= 2;
      im->SetSpacing(spacing);
      CT::PointType origin;
      ct->TransformIndexToPhysicalPoint({{0, 0, parity}}, origin);
      im->SetOrigin(origin);
      im->SetDirection(ct->GetDirection());
    }
    img->Allocate();
    lab->Allocate();
    for (itk::IndexValueType z = 0; z < static_cast<itk::IndexValueType>(size[2] / 2); ++z)
      for (itk::IndexValueType y = 0; y < static_cast<itk::IndexValueType>(size[1]); ++y)
        for (itk::IndexValueType x = 0; x < static_cast<itk::IndexValueType>(size[0]); ++x)
        {
          const CT::IndexType src = {{x, y, 2 * z + parity}}, dst = {{x, y, z}};
          img->SetPixel(dst, ct->GetPixel(src));
          const int v = seg->GetPixel(src);
          lab->SetPixel(dst, keep.count(v) ? static_cast<unsigned char>(v) : 0);
        }
    cstest::WriteNrrd(img.GetPointer(), m_Dir + "/" + id + "_ct.nrrd");
    cstest::WriteNrrd(lab.GetPointer(), m_Dir + "/" + id + "_seg.nrrd");
    std::ofstream(m_Dir + "/" + id + ".txt") << m_Dir + "/" + id + "_seg.nrrd\t" + m_Dir + "/" + id + "_ct.nrrd\n";
  };
  const std::set<int> baseOrgans = {1, 5}, allOrgans = {1, 2, 3, 5, 6};
  slices(0, baseOrgans, "base-train");
  slices(1, baseOrgans, "base-valid");
  slices(0, allOrgans, "train");
  slices(1, allOrgans, "valid");
  std::ofstream(m_Dir + "/base-names.csv") << "1,spleen\n5,liver\n";
  std::ofstream(m_Dir + "/names.csv") << "1,spleen\n2,kidney_right\n3,kidney_left\n5,liver\n6,stomach\n";

  const std::vector<std::string> common = {
      "--patchSize",    "48,48,8", "--batchSize",     "2", "--threads", "2", "--foregroundFraction", "0.7",
      "--learningRate", "0.003",   "--stepsPerEpoch", "8", "--epochs",  "3"};
  std::vector<std::string> base = {"--caseList",
                                   m_Dir + "/base-train.txt",
                                   "--validationCaseList",
                                   m_Dir + "/base-valid.txt",
                                   "--labelNames",
                                   m_Dir + "/base-names.csv",
                                   "--baseModel",
                                   "new",
                                   "--levels",
                                   "3",
                                   "--baseFilters",
                                   "8",
                                   "--modality",
                                   "CT",
                                   "--normalization",
                                   "clip",
                                   "--intensityRange",
                                   "-200,300",
                                   "--targetSpacing",
                                   "3,3,6",
                                   "--licence",
                                   "Apache-2.0",
                                   "--outputModel",
                                   m_Dir + "/base.safetensors",
                                   "--returnparameterfile",
                                   m_Dir + "/base-return.txt"};
  base.insert(base.end(), common.begin(), common.end());
  const RunResult b = RunModule(base, m_Dir);
  ASSERT_EQ(b.code, 0) << b.err;
  std::smatch m;
  const std::string baseReturn = ReadFile(m_Dir + "/base-return.txt");
  ASSERT_TRUE(std::regex_search(baseReturn, m, std::regex("bestDice = ([0-9.eE+-]+)"))) << baseReturn;
  // The base model predicts only spleen and liver: over the five structures its Dice is theirs
  // with 0 for the three it lacks (the grown model predicts exactly what it predicts).
  const double baseDice = 2.0 * std::stod(m[1].str()) / 5.0;

  std::vector<std::string> tune = {
      "--caseList",    m_Dir + "/train.txt",         "--validationCaseList",  m_Dir + "/valid.txt",
      "--labelNames",  m_Dir + "/names.csv",         "--baseModelFile",       m_Dir + "/base.safetensors",
      "--outputModel", m_Dir + "/tuned.safetensors", "--historyTable",        m_Dir + "/tuned.tsv",
      "--plotImage",   m_Dir + "/tuned.png",         "--returnparameterfile", m_Dir + "/return.txt"};
  tune.insert(tune.end(), common.begin(), common.end());
  const RunResult t = RunModule(tune, m_Dir);
  ASSERT_EQ(t.code, 0) << t.err;
  const std::string tuneReturn = ReadFile(m_Dir + "/return.txt");
  EXPECT_NE(tuneReturn.find("addedStructures = kidney_right, kidney_left, stomach"), std::string::npos) << tuneReturn;

  auto tuned = itk::ComboSegModel::New();
  tuned->Load(m_Dir + "/tuned.safetensors");
  ASSERT_EQ(tuned->GetInfo().arch.num_classes, 6);
  EXPECT_STREQ(tuned->GetInfo().classes[2].name, "liver"); // old classes keep their places
  EXPECT_STREQ(tuned->GetInfo().licence, "Apache-2.0");

  std::vector<std::string> header;
  const auto rows = TableRows(m_Dir + "/tuned.tsv", &header);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(header.size(), 5u + 5u + 1u);
  const size_t mean = Column(header, "mean_dice");
  double best = 0.0;
  for (const auto &row : rows)
    best = std::max(best, std::stod(row[mean]));
  EXPECT_GT(best, baseDice) << "fine-tuning did not raise the validation Dice";
  EXPECT_EQ(ReadFile(m_Dir + "/tuned.png").substr(1, 3), "PNG");
  std::printf("TotalSegmentator CT, odd slices: mean Dice over 5 structures %.3f (base model) -> %.3f (fine-tuned)\n",
              baseDice, best);
}

} // namespace
