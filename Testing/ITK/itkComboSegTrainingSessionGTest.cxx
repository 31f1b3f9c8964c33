// Tests of itk::ComboSegTrainingSession: a tiny model learns synthetic cases, an interrupted run
// resumes where it stopped, and fine-tuning with a new structure keeps the old ones.
#include "itkComboSegTrainingSession.h"

#include "cs_synthetic_case.h"
#include "cs_test_data.h"
#include "itkComboSegImageFilter.h"
#include "itkComboSegProcessing.h"
#include "itkImageFileReader.h"
#include "itkImageRegionConstIterator.h"
#include "itkImageRegionIterator.h"
#include "itkPNGImageIO.h"
#include "itkRGBPixel.h"

#include <algorithm>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <unistd.h>

namespace
{

itk::ComboSegCaseFiles
WriteSyntheticCase(const std::string & dir, const std::string & id, uint64_t seed)
{
  const cstest::SyntheticCaseFiles f = cstest::WriteSyntheticCase(dir, id, seed);
  itk::ComboSegCaseFiles           files;
  files.id = id;
  files.channels = { f.image };
  files.labels = f.labels;
  return files;
}

using cstest::WriteNrrd;

itk::LabelName
Name(int value, const std::string & name)
{
  itk::LabelName n;
  n.value = value;
  n.name = name;
  return n;
}

std::vector<std::string>
ReadLines(const std::string & path)
{
  std::ifstream            in(path);
  std::vector<std::string> lines;
  std::string              line;
  while (std::getline(in, line))
    lines.push_back(line);
  return lines;
}

class ComboSegTrainingSessionTest : public ::testing::Test
{
protected:
  void
  SetUp() override
  {
    char pattern[] = "/tmp/comboseg-session-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    m_Dir = pattern;
    m_Train = { WriteSyntheticCase(m_Dir, "train1", 1), WriteSyntheticCase(m_Dir, "train2", 2) };
    m_Valid = { WriteSyntheticCase(m_Dir, "valid1", 3) };
    m_Names = { Name(1, "ball"), Name(2, "box") };
  }
  void
  TearDown() override
  {
    std::filesystem::remove_all(m_Dir);
  }

  // A tiny 2-level network on 16^3 patches: seconds per epoch. The high learning rate suits
  // its few steps.
  void
  ConfigureNew(itk::ComboSegTrainingSession & s, const std::string & out, int64_t epochs)
  {
    cs_unet_config arch = cs_unet_config_default();
    arch.levels = 2;
    arch.base_filters = 8;
    cs_channel_info ch{};
    std::snprintf(ch.name, sizeof ch.name, "image");
    ch.modality = CS_MODALITY_OTHER;
    ch.norm = CS_NORM_ZSCORE;
    s.SetNewModel(arch, { ch });
    s.SetTrainingCases(m_Train);
    s.SetValidationCases(m_Valid);
    s.SetLabelNames(m_Names);
    cs_train_config config = cs_train_config_default();
    config.patch_size[0] = config.patch_size[1] = config.patch_size[2] = 16;
    config.batch_size = 2;
    config.learning_rate = 0.03f;
    config.seed = 7;
    s.SetTrainConfig(config);
    cs_sampling_options sampling = cs_sampling_options_default();
    sampling.foreground_fraction = 0.6f;
    s.SetSamplingOptions(sampling);
    s.SetEpochs(epochs);
    s.SetStepsPerEpoch(10);
    s.SetNumberOfThreads(2);
    s.SetProgressInterval(0.0); // every step: the tests stop runs mid-epoch
    s.SetValidationOverlap(0.0f);
    s.SetOutputModelFileName(out);
    s.SetHistoryFileName(out + ".tsv");
    s.SetPlotFileName(out + ".png");
  }

  // Mean foreground Dice of a model on a case (the validation case by default).
  double
  ValidationDice(cs_model_t model, bool mirrorAsRecommended = true)
  {
    return ValidationDice(model, m_Valid[0], m_Names, mirrorAsRecommended);
  }
  double
  ValidationDice(cs_model_t model, const itk::ComboSegCaseFiles & files, const std::vector<itk::LabelName> & names,
                 bool mirrorAsRecommended = true)
  {
    const std::vector<float> dice = DicePerClass(model, files, names, mirrorAsRecommended);
    double                   sum = 0;
    int                      count = 0;
    for (size_t i = 1; i < dice.size(); ++i)
      if (!std::isnan(dice[i]))
        sum += dice[i], ++count;
    return count ? sum / count : 0.0;
  }
  // Dice per class of the output users get: the network's labels in the filter's default
  // arithmetic (averaged with the x-mirrored scan's, mirrored back, when the model recommends it
  // and mirrorAsRecommended), then the model's recommended clean-up.
  std::vector<float>
  DicePerClass(cs_model_t model, const itk::ComboSegCaseFiles & files, const std::vector<itk::LabelName> & names,
               bool mirrorAsRecommended = true)
  {
    const itk::ComboSegPreparedCase c = itk::PrepareCase(files, *cs_model_get_info(model), names);
    const int64_t                   n = c.size[0] * c.size[1] * c.size[2];
    const int32_t                   k = cs_model_get_info(model)->arch.num_classes;
    const bool         mirror = mirrorAsRecommended && cs_model_get_info(model)->test_time_mirror_axes == 1;
    std::vector<float> probabilities(static_cast<size_t>(n * k)), mirrored(probabilities.size());
    cs_context_t       ctx;
    EXPECT_EQ(cs_context_init(&ctx), CS_OK);
    cs_context_set_inference_precision(ctx, CS_PRECISION_BFLOAT16); // the filter's default
    cs_infer_options opt = cs_infer_options_default();
    opt.overlap = 0.0f;
    EXPECT_EQ(cs_predict_volume(ctx, model, c.image.data(), c.size, &opt, probabilities.data(), nullptr), CS_OK)
      << cs_context_last_error(ctx);
    if (mirror) // along x only: the image's rows reversed (one channel), then the output's
    {
      itk::ComboSegVolume image(c.image);
      for (int64_t row = 0; row < n / c.size[0]; ++row)
        std::reverse(image.begin() + row * c.size[0], image.begin() + (row + 1) * c.size[0]);
      EXPECT_EQ(cs_predict_volume(ctx, model, image.data(), c.size, &opt, mirrored.data(), nullptr), CS_OK);
      for (int64_t row = 0; row < n * k / c.size[0]; ++row)
        std::reverse(mirrored.begin() + row * c.size[0], mirrored.begin() + (row + 1) * c.size[0]);
      for (size_t i = 0; i < probabilities.size(); ++i)
        probabilities[i] += mirrored[i];
    }
    cs_context_free(ctx);
    std::vector<int32_t> predicted(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      for (int32_t j = 1; j < k; ++j)
        if (probabilities[j * n + i] > probabilities[predicted[i] * n + i])
          predicted[i] = j;
    // The clean-up the model recommends, as users get it (new models: the largest component).
    const cs_postprocessing &    clean = cs_model_get_info(model)->postprocessing;
    const std::array<int64_t, 3> size{ { c.size[0], c.size[1], c.size[2] } };
    if (clean.largest_component)
      itk::ComboSegKeepLargestComponents(predicted.data(), size);
    if (clean.fill_holes)
      itk::ComboSegFillHoles(predicted.data(), size);
    std::vector<float> dice(static_cast<size_t>(k));
    cs_dice_per_class(predicted.data(), c.labels.data(), n, k, dice.data());
    return dice;
  }

  // The case with its box erased from the label map (value 2 becomes 0).
  static itk::ComboSegCaseFiles
  BallOnly(const itk::ComboSegCaseFiles & c)
  {
    itk::ComboSegCaseFiles b = c;
    b.labels = c.labels + ".ball.nrrd";
    auto labels = itk::ReadScan<itk::Image<unsigned char, 3>>(c.labels);
    itk::ImageRegionIterator<itk::Image<unsigned char, 3>> it(labels, labels->GetLargestPossibleRegion());
    for (; !it.IsAtEnd(); ++it)
      if (it.Get() == 2)
        it.Set(0);
    WriteNrrd(labels.GetPointer(), b.labels);
    return b;
  }

  std::string                         m_Dir;
  std::vector<itk::ComboSegCaseFiles> m_Train, m_Valid;
  std::vector<itk::LabelName>         m_Names;
};

TEST_F(ComboSegTrainingSessionTest, NewModelLearnsAndValidationDiceRises)
{
  const std::string            out = m_Dir + "/model.safetensors";
  itk::ComboSegTrainingSession session;
  ConfigureNew(session, out, 6);
  session.SetRecommendedTestTimeMirrorAxes(1);
  std::vector<double>      fractions;
  std::vector<std::string> comments;
  session.SetProgressCallback([&](double f, const std::string & c) {
    fractions.push_back(f);
    comments.push_back(c);
  });
  const itk::ComboSegTrainingResult result = session.Run();

  EXPECT_TRUE(result.completed);
  EXPECT_FALSE(result.resumed);
  EXPECT_EQ(result.epochs, 6);
  EXPECT_EQ(result.steps, 6 * 10);
  ASSERT_EQ(session.GetHistory().size(), 6u);
  for (size_t i = 0; i < 6; ++i)
  {
    EXPECT_EQ(session.GetHistory()[i].epoch, static_cast<int64_t>(i + 1));
    EXPECT_EQ(session.GetHistory()[i].step, static_cast<int64_t>(10 * (i + 1)));
    EXPECT_TRUE(std::isfinite(session.GetHistory()[i].trainLoss));
    ASSERT_EQ(session.GetHistory()[i].dice.size(), 3u);
  }

  // The untrained network of the same seed against the best epoch's model.
  itk::ComboSegModel::Pointer trained = session.GetModel();
  ASSERT_TRUE(trained);
  cs_model_info info = trained->GetInfo();
  cs_context_t  ctx;
  ASSERT_EQ(cs_context_init(&ctx), CS_OK);
  cs_model_t untrained = nullptr;
  ASSERT_EQ(cs_model_create(ctx, &info, 7, &untrained), CS_OK);
  const double before = ValidationDice(untrained);
  const double after = ValidationDice(trained->GetModel());
  cs_model_free(untrained);
  cs_context_free(ctx);
  // The history's Dice is what users get from the model: with the mirror it recommends, which
  // moves this model's labels.
  const double onePass = ValidationDice(trained->GetModel(), false);
  EXPECT_NEAR(after, result.bestMeanDice, 1e-4) << "in one pass the model gives " << onePass;
  EXPECT_GT(std::fabs(after - onePass), 0.01) << "the case must show the mirror";
  EXPECT_GT(after, before + 0.3) << "untrained " << before << ", trained " << after;
  EXPECT_GT(after, 0.5);

  // The model file holds the classes, names and the loss it was trained with.
  auto loaded = itk::ComboSegModel::New();
  loaded->Load(out);
  ASSERT_EQ(loaded->GetInfo().arch.num_classes, 3);
  EXPECT_STREQ(loaded->GetInfo().classes[1].name, "ball");
  EXPECT_EQ(loaded->GetInfo().classes[2].value, 2);
  EXPECT_EQ(loaded->GetInfo().loss.kind, CS_LOSS_COMBO_TVERSKY);
  EXPECT_EQ(loaded->GetInfo().test_time_mirror_axes, 1); // as the session was asked to record
  EXPECT_NE(std::string(loaded->GetInfo().training_data).find("train1"), std::string::npos);

  // History table: header and one row per epoch; the plot is a PNG.
  const std::vector<std::string> lines = ReadLines(out + ".tsv");
  ASSERT_EQ(lines.size(), 7u);
  EXPECT_EQ(lines[0], "epoch\tstep\tseconds\ttrain_loss\tlearning_rate\tdice ball\tdice box\tmean_dice");
  std::ifstream png(out + ".png", std::ios::binary);
  char          magic[8] = {};
  png.read(magic, 8);
  EXPECT_EQ(std::string(magic + 1, 3), "PNG");

  // Progress rises to 1 and reports each epoch's loss and Dice.
  ASSERT_FALSE(fractions.empty());
  for (size_t i = 1; i < fractions.size(); ++i)
    EXPECT_GE(fractions[i] + 1e-9, fractions[i - 1]);
  EXPECT_DOUBLE_EQ(fractions.back(), 1.0);
  bool sawEpoch = false;
  for (const auto & c : comments)
    sawEpoch = sawEpoch || c.rfind("epoch 6/6 loss ", 0) == 0;
  EXPECT_TRUE(sawEpoch);

  // Each epoch's comment names the structures with validation Dice 0, and only those.
  const char * names[3] = { "", "ball", "box" };
  for (const itk::ComboSegTrainingRecord & record : session.GetHistory())
  {
    const std::string prefix = "epoch " + std::to_string(record.epoch) + "/6 loss ";
    const auto        comment =
      std::find_if(comments.begin(), comments.end(), [&](const std::string & c) { return c.rfind(prefix, 0) == 0; });
    ASSERT_NE(comment, comments.end()) << prefix;
    std::string unfound;
    for (int k = 1; k < 3; ++k)
      if (record.dice[k] == 0.0)
        unfound += std::string(unfound.empty() ? "" : ", ") + names[k];
    const size_t at = comment->find("; not found yet (Dice 0): ");
    if (unfound.empty())
      EXPECT_EQ(at, std::string::npos) << *comment;
    else
      EXPECT_EQ(comment->substr(at == std::string::npos ? 0 : at + 26), unfound) << *comment;
  }
}

TEST_F(ComboSegTrainingSessionTest, InterruptedRunResumesFromTheCheckpoint)
{
  // An uninterrupted run of 4 epochs, for comparison.
  const std::string            whole = m_Dir + "/whole.safetensors";
  itk::ComboSegTrainingSession reference;
  ConfigureNew(reference, whole, 4);
  ASSERT_TRUE(reference.Run().completed);

  // The same run stopped during epoch 3 ...
  const std::string out = m_Dir + "/resumed.safetensors";
  {
    itk::ComboSegTrainingSession first;
    ConfigureNew(first, out, 4);
    // Stopped in the middle of epoch 3, as a user would.
    first.SetProgressCallback([&first](double, const std::string & comment) {
      if (comment.rfind("epoch 3/4 step 5/", 0) == 0)
        first.Cancel();
    });
    const itk::ComboSegTrainingResult r = first.Run();
    EXPECT_TRUE(r.cancelled);
    EXPECT_FALSE(r.completed);
    EXPECT_EQ(r.epochs, 2);
    ASSERT_EQ(first.GetHistory().size(), 2u);
    EXPECT_TRUE(std::filesystem::exists(out)) << "the best model so far is kept";
    EXPECT_TRUE(std::filesystem::exists(out + ".checkpoint"));
  }
  // ... and started again: it continues from the end of epoch 2.
  itk::ComboSegTrainingSession second;
  ConfigureNew(second, out, 4);
  const itk::ComboSegTrainingResult r = second.Run();
  EXPECT_TRUE(r.resumed);
  EXPECT_TRUE(r.completed);
  EXPECT_EQ(r.epochs, 4);
  EXPECT_EQ(r.steps, 4 * 10);
  const auto & h = second.GetHistory();
  const auto & ref = reference.GetHistory();
  ASSERT_EQ(h.size(), 4u);
  for (size_t i = 0; i < 4; ++i)
  {
    EXPECT_EQ(h[i].epoch, static_cast<int64_t>(i + 1));
    EXPECT_EQ(h[i].step, static_cast<int64_t>(10 * (i + 1)));
    // Same seeds per epoch and the optimiser state restored: the same training as without the stop.
    EXPECT_NEAR(h[i].trainLoss, ref[i].trainLoss, 1e-3 * std::max(1.0, std::fabs(ref[i].trainLoss)))
      << "epoch " << i + 1;
  }
  EXPECT_GT(h[3].seconds, h[1].seconds);
  EXPECT_EQ(ReadLines(out + ".tsv").size(), 5u);

  // Starting over ignores the checkpoint.
  itk::ComboSegTrainingSession again;
  ConfigureNew(again, out, 1);
  again.SetResume(false);
  const itk::ComboSegTrainingResult r2 = again.Run();
  EXPECT_FALSE(r2.resumed);
  EXPECT_EQ(r2.steps, 10);
}

// Issue 14 item 6: under a time budget the learning rate ends with the budget, not at the
// schedule's default 1000 steps (before: lr 0 from step 1000 of a long budget, or far from 0 at
// the end of a short one).
TEST_F(ComboSegTrainingSessionTest, ScheduleEndsWithTheTimeBudget)
{
  for (const int64_t epochs : { int64_t(0), int64_t(100000) }) // until the budget; budget before the epochs
  {
    SCOPED_TRACE("epochs " + std::to_string(epochs));
    const std::string            out = m_Dir + "/budget" + std::to_string(epochs) + ".safetensors";
    itk::ComboSegTrainingSession session;
    ConfigureNew(session, out, epochs);
    cs_train_config config = session.GetTrainConfig();
    config.patch_size[0] = config.patch_size[1] = config.patch_size[2] = 8; // short steps
    session.SetTrainConfig(config);
    session.SetValidationCases({});
    session.SetValidationFraction(0.0);
    session.SetStepsPerEpoch(3);
    session.SetTimeBudget(5.0);
    const itk::ComboSegTrainingResult result = session.Run();
    EXPECT_TRUE(result.completed);
    const auto & h = session.GetHistory();
    ASSERT_FALSE(h.empty());
    // Timing on a shared machine varies (the pace estimate lags when the load changes, seen at
    // 0.37-0.42 of the peak under a load of 10 on 2 cores): the bounds leave room for it. The
    // fixed 1000-step schedule fails one or the other: about 0.98 of its peak at the end of a
    // short run, 0 inside a long one.
    const double peak = config.learning_rate;
    for (size_t i = 0; i + 1 < h.size(); ++i)
      EXPECT_GT(h[i].learningRate, 0.0) << "the rate reached 0 before the budget's end, epoch " << h[i].epoch;
    EXPECT_LT(h.back().learningRate, 0.6 * peak) << "the rate at the budget's end (step " << h.back().step << ")";
  }
}

// Issue 17 item 8: a resume with other settings than the checkpoint's is refused, naming each
// difference; starting over is allowed.
TEST_F(ComboSegTrainingSessionTest, ResumeWithOtherSettingsIsRefused)
{
  const std::string out = m_Dir + "/settings.safetensors";
  auto              configure = [&](itk::ComboSegTrainingSession & s) {
    ConfigureNew(s, out, 2);
    s.SetStepsPerEpoch(2);
    s.SetValidationCases({});
    s.SetValidationFraction(0.0);
  };
  {
    itk::ComboSegTrainingSession first;
    configure(first);
    first.SetEpochs(1);
    ASSERT_TRUE(first.Run().completed);
  }
  itk::ComboSegTrainingSession changed;
  configure(changed);
  cs_unet_config arch = cs_unet_config_default();
  arch.levels = 2;
  arch.base_filters = 8;
  cs_channel_info ch{};
  std::snprintf(ch.name, sizeof ch.name, "image");
  ch.modality = CS_MODALITY_MR;
  ch.norm = CS_NORM_ZSCORE_NONZERO;
  changed.SetNewModel(arch, { ch });
  changed.SetTargetSpacing({ { 2.0, 2.0, 2.0 } });
  cs_train_config config = changed.GetTrainConfig();
  config.learning_rate = 0.01f;
  changed.SetTrainConfig(config);
  try
  {
    changed.Run();
    FAIL() << "a resume with other settings ran";
  }
  catch (const itk::ExceptionObject & e)
  {
    const std::string message = e.GetDescription();
    for (const char * expected :
         { "modality other then, MR now", "normalization zscore then, zscore-nonzero now",
           "target_spacing 1,1,1 then, 2,2,2 now", "learning_rate 0.03 then, 0.01 now", "--restart" })
      EXPECT_NE(message.find(expected), std::string::npos) << expected << " not in: " << message;
    EXPECT_EQ(message.find("patch_size"), std::string::npos) << message;
  }
  // The same settings resume; starting over takes the new ones.
  {
    itk::ComboSegTrainingSession same;
    configure(same);
    const itk::ComboSegTrainingResult r = same.Run();
    EXPECT_TRUE(r.resumed);
    EXPECT_EQ(r.epochs, 2);
  }
  changed.SetResume(false);
  changed.SetEpochs(1);
  const itk::ComboSegTrainingResult r = changed.Run();
  EXPECT_FALSE(r.resumed);
  EXPECT_EQ(r.steps, 2);
}

// Issue 16 item 5: a sidecar whose numbers cannot be read stops the resume with an
// itk::ExceptionObject that names the file, the line and the text found there (std::stoll let
// std::invalid_argument escape without a file name; a garbage number was read as 0).
TEST_F(ComboSegTrainingSessionTest, CorruptSidecarIsRefusedNamingFileAndLine)
{
  const std::string out = m_Dir + "/sidecar.safetensors", sidecar = out + ".checkpoint.session";
  auto              configure = [&](itk::ComboSegTrainingSession & s) {
    ConfigureNew(s, out, 1);
    s.SetStepsPerEpoch(2);
    s.SetValidationCases({});
    s.SetValidationFraction(0.0);
  };
  {
    itk::ComboSegTrainingSession first;
    configure(first);
    ASSERT_TRUE(first.Run().completed);
  }
  std::vector<std::string> lines;
  {
    std::ifstream in(sidecar);
    for (std::string line; std::getline(in, line);)
      lines.push_back(line);
  }
  ASSERT_GT(lines.size(), 8u);
  auto lineOf = [&](const std::string & start) {
    for (size_t i = 0; i < lines.size(); ++i)
      if (lines[i].rfind(start, 0) == 0)
        return i;
    return lines.size();
  };
  const size_t epochLine = lineOf("epoch "), diceLine = lineOf("best_dice "), rowLine = lineOf("history") + 1;
  ASSERT_LT(rowLine, lines.size());
  std::string  row = lines[rowLine]; // epoch step seconds ...: the seconds replaced
  const size_t secondsAt = row.find('\t', row.find('\t') + 1) + 1;
  row.replace(secondsAt, row.find('\t', secondsAt) - secondsAt, "soon");
  struct Corruption
  {
    size_t      line;
    std::string text, expected;
  };
  const std::vector<Corruption> corruptions = {
    { epochLine, "epoch x1", "epoch 'x1' is not an integer" },
    { diceLine, "best_dice 0.5garbage", "best_dice '0.5garbage' is not a number" },
    { rowLine, row, "seconds 'soon' is not a number" },
  };
  for (const Corruption & c : corruptions)
  {
    std::vector<std::string> corrupt = lines;
    corrupt[c.line] = c.text;
    {
      std::ofstream outFile(sidecar, std::ios::trunc);
      for (const std::string & line : corrupt)
        outFile << line << "\n";
    }
    itk::ComboSegTrainingSession resumed;
    configure(resumed);
    resumed.SetEpochs(2);
    try
    {
      resumed.Run();
      ADD_FAILURE() << "a corrupt sidecar was read: " << c.text;
    }
    catch (const itk::ExceptionObject & e)
    {
      const std::string message = e.GetDescription();
      EXPECT_NE(message.find(sidecar + " line " + std::to_string(c.line + 1)), std::string::npos) << message;
      EXPECT_NE(message.find(c.expected), std::string::npos) << message;
    }
    catch (const std::exception & e)
    {
      ADD_FAILURE() << "not an itk::ExceptionObject naming the file: " << e.what();
    }
  }
}

// Mean foreground Dice of a label map of class indices against a case's labels, as the history
// computes it.
double
MeanDice(const std::vector<int32_t> & predicted, const std::vector<int32_t> & truth, int32_t classes)
{
  std::vector<float> dice(static_cast<size_t>(classes));
  cs_dice_per_class(predicted.data(), truth.data(), static_cast<int64_t>(truth.size()), classes, dice.data());
  double sum = 0.0;
  int    count = 0;
  for (int32_t k = 1; k < classes; ++k)
    if (!std::isnan(dice[k]))
      sum += dice[k], ++count;
  return count ? sum / count : NAN;
}

// Issue 14 item 7: the validation Dice is that of the output ComboSegSegment gives (its
// background rule: voxels holding no data for the model are background).
TEST_F(ComboSegTrainingSessionTest, ValidationAppliesTheSegmentationsBackgroundRule)
{
  // Two channels: the first z-scored over its non-zero voxels (a recipe with a body), the second
  // over the whole scan. The validation case's first channel holds no data (exactly zero) in
  // its left part, where the second still varies and its labels hold no structure: the network,
  // as created (a learning rate too small to change it), marks structures at random there,
  // which the segmentation's rule makes background. The model's recommended clean-up (largest
  // component, on for new models) is part of what users get too.
  cs_unet_config arch = cs_unet_config_default();
  arch.levels = 2;
  arch.base_filters = 8;
  arch.in_channels = 2;
  std::vector<cs_channel_info> channels(2);
  std::memset(channels.data(), 0, sizeof(cs_channel_info) * 2);
  std::snprintf(channels[0].name, sizeof channels[0].name, "with body");
  channels[0].norm = CS_NORM_ZSCORE_NONZERO;
  std::snprintf(channels[1].name, sizeof channels[1].name, "whole");
  channels[1].norm = CS_NORM_ZSCORE;
  std::vector<itk::ComboSegCaseFiles> training = m_Train;
  for (auto & c : training)
    c.channels = { c.channels[0], c.channels[0] };
  using FloatImage = itk::Image<float, 3>;
  auto image = itk::ReadScan<FloatImage>(m_Valid[0].channels[0]);
  auto emptyLeft = FloatImage::New();
  emptyLeft->Graft(itk::ReadScan<FloatImage>(m_Valid[0].channels[0]));
  for (itk::ImageRegionIterator<FloatImage> it(emptyLeft, emptyLeft->GetLargestPossibleRegion()); !it.IsAtEnd(); ++it)
    if (it.GetIndex()[0] < 20)
      it.Set(0.0f);
  itk::ComboSegCaseFiles valid = m_Valid[0];
  valid.channels = { m_Dir + "/empty_left.nrrd", m_Valid[0].channels[0] };
  WriteNrrd(emptyLeft.GetPointer(), valid.channels[0]);
  auto validLabels = itk::ReadScan<itk::Image<unsigned char, 3>>(m_Valid[0].labels);
  for (itk::ImageRegionIterator<itk::Image<unsigned char, 3>> it(validLabels, validLabels->GetLargestPossibleRegion());
       !it.IsAtEnd(); ++it)
    if (it.GetIndex()[0] < 20)
      it.Set(0);
  valid.labels = m_Dir + "/right_labels.nrrd";
  WriteNrrd(validLabels.GetPointer(), valid.labels);

  const std::string            out = m_Dir + "/rule.safetensors";
  itk::ComboSegTrainingSession session;
  ConfigureNew(session, out, 1);
  session.SetNewModel(arch, channels);
  session.SetTrainingCases(training);
  session.SetValidationCases({ valid });
  session.SetStepsPerEpoch(1);
  cs_train_config config = session.GetTrainConfig();
  config.learning_rate = 1e-7f;
  session.SetTrainConfig(config);
  ASSERT_TRUE(session.Run().completed);
  ASSERT_EQ(session.GetHistory().size(), 1u);
  const double historyDice = session.GetHistory()[0].meanDice;

  // What ComboSegSegment's filter gives users, with and without the rule, scored on the scan's
  // grid (the model grid holds the same voxels, in another order).
  auto                       truthImage = itk::ReadScan<itk::Image<int, 3>>(valid.labels);
  const std::vector<int32_t> truth(truthImage->GetBufferPointer(),
                                   truthImage->GetBufferPointer() +
                                     truthImage->GetLargestPossibleRegion().GetNumberOfPixels());
  auto                       segment = [&](bool rule) {
    using Filter = itk::ComboSegImageFilter<itk::Image<float, 3>, itk::Image<int, 3>>;
    auto filter = Filter::New();
    filter->SetModel(session.GetModel());
    filter->SetInput(0, emptyLeft);
    filter->SetInput(1, image);
    filter->SetOverlap(0.0);
    filter->SetOutputLabelValues(false);
    filter->SetBackgroundOutsideBody(rule);
    filter->Update();
    const int * v = filter->GetOutput()->GetBufferPointer();
    return MeanDice(std::vector<int32_t>(v, v + truth.size()), truth, 3);
  };
  const double users = segment(true), withoutRule = segment(false);
  EXPECT_GT(std::fabs(users - withoutRule), 0.01) << "the case must show the rule: " << users << " " << withoutRule;
  EXPECT_NEAR(historyDice, users, 1e-4) << "without the rule the filter gives " << withoutRule;
}

// Issue 17 item 4: a site that labels only the ball fine-tunes a ball-and-box model without
// erasing the box; labelling the box as absent (the old behaviour) erases it.
TEST_F(ComboSegTrainingSessionTest, PartialLabelsKeepTheStructuresNotLabelled)
{
  const std::string baseFile = m_Dir + "/both.safetensors";
  {
    itk::ComboSegTrainingSession s;
    ConfigureNew(s, baseFile, 6);
    ASSERT_TRUE(s.Run().completed);
  }
  auto base = itk::ComboSegModel::New();
  base->Load(baseFile);
  const float baseBox = DicePerClass(base->GetModel(), m_Valid[0], m_Names)[2];
  ASSERT_GT(baseBox, 0.4) << "the base model finds the box";
  std::printf("box Dice: base %.3f\n", baseBox);

  std::vector<itk::ComboSegCaseFiles> ballOnly;
  for (const auto & c : m_Train)
    ballOnly.push_back(BallOnly(c));
  auto fineTune = [&](const std::vector<itk::LabelName> & names, const std::string & out, int64_t epochs) {
    itk::ComboSegTrainingSession t;
    t.SetBaseModelFileName(baseFile);
    t.SetTrainingCases(ballOnly);
    t.SetValidationCases({ BallOnly(m_Valid[0]) });
    t.SetLabelNames(names);
    cs_train_config config = cs_train_config_default();
    config.learning_rate = 0.01f;
    config.seed = 9;
    t.SetTrainConfig(config);
    cs_sampling_options sampling = cs_sampling_options_default();
    sampling.foreground_fraction = 0.6f;
    t.SetSamplingOptions(sampling);
    t.SetEpochs(epochs);
    t.SetStepsPerEpoch(10);
    t.SetNumberOfThreads(2);
    t.SetValidationOverlap(0.0f);
    t.SetOutputModelFileName(m_Dir + "/" + out);
    std::vector<std::string> comments;
    t.SetProgressCallback([&](double, const std::string & c) { comments.push_back(c); });
    const itk::ComboSegTrainingResult r = t.Run();
    EXPECT_TRUE(r.completed);
    // The validation Dice leaves the kept box out: the site's maps do not show it.
    if (!r.keptClasses.empty())
      for (const auto & h : t.GetHistory())
        EXPECT_TRUE(std::isnan(h.dice[2])) << "epoch " << h.epoch;
    return std::make_pair(r, DicePerClass(t.GetModel()->GetModel(), m_Valid[0], m_Names));
  };

  // Only the ball named: the box is kept, and the run says so.
  const auto partial = fineTune({ Name(1, "ball") }, "partial.safetensors", 5);
  EXPECT_EQ(partial.first.trainedClasses, std::vector<std::string>{ "ball" });
  EXPECT_EQ(partial.first.keptClasses, std::vector<std::string>{ "box" });
  std::printf("ball Dice: partial labels %.3f\n", partial.second[1]);
  EXPECT_GT(partial.second[1], 0.5) << "the ball is still learnt";
  // The kept box is taught as the base model segments it (pseudo-labels): 0.746 -> 0.728 here;
  // with the marginal loss alone it drifted to 0.00, as when taught as absent (below).
  EXPECT_GT(partial.second[2], 0.85 * baseBox) << "the box was not kept (base " << baseBox << ")";

  // Both named, the box drawn nowhere: it is learnt as absent.
  const auto full = fineTune(m_Names, "full.safetensors", 5);
  EXPECT_TRUE(full.first.keptClasses.empty());
  std::printf("box Dice: partial labels %.3f, box labelled absent %.3f\n", partial.second[2], full.second[2]);
  EXPECT_LT(full.second[2], partial.second[2] - 0.2) << "the contrast this test rests on";

  // Without names, by value: the box's value is in no label map, so it is kept too.
  itk::ComboSegTrainingSession byValue;
  byValue.SetBaseModelFileName(baseFile);
  byValue.SetTrainingCases(ballOnly);
  byValue.SetValidationFraction(0.0);
  byValue.SetEpochs(1);
  byValue.SetStepsPerEpoch(1);
  byValue.SetOutputModelFileName(m_Dir + "/byvalue.safetensors");
  EXPECT_EQ(byValue.Run().keptClasses, std::vector<std::string>{ "box" });
}

TEST_F(ComboSegTrainingSessionTest, AllZeroLabelMapIsRefused)
{
  itk::ComboSegCaseFiles empty = m_Train[0];
  empty.labels = m_Dir + "/empty_labels.nrrd";
  auto labels = itk::ReadScan<itk::Image<unsigned char, 3>>(m_Train[0].labels);
  labels->FillBuffer(0);
  WriteNrrd(labels.GetPointer(), empty.labels);
  itk::ComboSegTrainingSession session;
  ConfigureNew(session, m_Dir + "/never.safetensors", 1);
  session.SetTrainingCases({ m_Train[1], empty });
  try
  {
    session.Run();
    FAIL() << "an all-zero label map was trained on";
  }
  catch (const itk::ExceptionObject & e)
  {
    const std::string message = e.GetDescription();
    EXPECT_NE(message.find("empty_labels.nrrd"), std::string::npos) << message;
    EXPECT_NE(message.find("holds no structure"), std::string::npos) << message;
  }
  EXPECT_FALSE(std::filesystem::exists(m_Dir + "/never.safetensors"));
}

// Issue 17 item 5: a new model's settings chosen from its training cases. On the
// TotalSegmentator CT: CT, clip (percentiles of the labelled voxels) and z-score, 3 mm.
TEST(ComboSegTrainingSessionConfiguration, ChoosesCtClipAnd3mmForTheAbdominalCt)
{
  CS_REQUIRE_DATA("ct-abdomen/totalseg/example_ct_sm.nii.gz");
  CS_REQUIRE_DATA("ct-abdomen/totalseg/example_seg.nii.gz");
  itk::ComboSegCaseFiles               ct{ "ct",
                             { cstest::DataPath("ct-abdomen/totalseg/example_ct_sm.nii.gz") },
                             cstest::DataPath("ct-abdomen/totalseg/example_seg.nii.gz") };
  const itk::ComboSegDataConfiguration c = itk::ComboSegTrainingSession::ChooseConfiguration({ ct }, 4, 3);
  ASSERT_EQ(c.channels.size(), 1u);
  EXPECT_EQ(c.channels[0].modality, CS_MODALITY_CT) << c.modalityReason;
  EXPECT_EQ(c.channels[0].norm, CS_NORM_CLIP_SCALE) << c.normalizationReason;
  EXPECT_LT(c.channels[0].clip_low, -500.0f) << "air inside the labelled organs (lungs, bowel)";
  EXPECT_GT(c.channels[0].clip_high, 200.0f);
  EXPECT_LT(c.channels[0].clip_high, 2000.0f);
  EXPECT_GT(c.channels[0].std, 10.0f);
  for (int a = 0; a < 3; ++a)
    EXPECT_NEAR(c.spacing[a], 3.0, 0.05) << c.spacingReason;
  EXPECT_EQ(c.patchSize[0], 64) << c.patchReason; // 122 voxels, capped
  EXPECT_EQ(c.patchSize[1], 64);
  EXPECT_EQ(c.patchSize[2], 32); // 30 voxels, rounded up to a multiple of 8
  EXPECT_NE(c.modalityReason.find("CT"), std::string::npos);
  EXPECT_NE(c.normalizationReason.find("percentiles"), std::string::npos);
}

// An MR-like case (non-negative intensities, a zero background around the body, 1 mm voxels):
// MR, z-score over the non-zero voxels, 1 mm.
TEST_F(ComboSegTrainingSessionTest, ChoosesMrZscoreNonzeroAnd1mmForAnMrLikeCase)
{
  using FloatImage = itk::Image<float, 3>;
  auto image = itk::ReadScan<FloatImage>(m_Train[0].channels[0]);
  for (itk::ImageRegionIterator<FloatImage> it(image, image->GetLargestPossibleRegion()); !it.IsAtEnd(); ++it)
  {
    const auto i = it.GetIndex();
    const bool body = i[0] > 1 && i[0] < 30 && i[1] > 1 && i[1] < 30;
    it.Set(body ? std::max(1.0f, it.Get() + 300.0f) : 0.0f);
  }
  itk::ComboSegCaseFiles mr = m_Train[0];
  mr.channels = { m_Dir + "/mr_like.nrrd" };
  WriteNrrd(image.GetPointer(), mr.channels[0]);
  const itk::ComboSegDataConfiguration c = itk::ComboSegTrainingSession::ChooseConfiguration({ mr, mr }, 2, 3);
  ASSERT_EQ(c.channels.size(), 1u);
  EXPECT_EQ(c.channels[0].modality, CS_MODALITY_MR) << c.modalityReason;
  EXPECT_EQ(c.channels[0].norm, CS_NORM_ZSCORE_NONZERO) << c.normalizationReason;
  for (int a = 0; a < 3; ++a)
    EXPECT_NEAR(c.spacing[a], 1.0, 1e-6) << c.spacingReason;
  EXPECT_EQ(c.patchSize[0], 32) << c.patchReason;
  EXPECT_EQ(c.patchSize[1], 32);
  EXPECT_EQ(c.patchSize[2], 24);
}

TEST_F(ComboSegTrainingSessionTest, GrowingTheHeadKeepsOldPredictions)
{
  cs_context_t ctx;
  ASSERT_EQ(cs_context_init(&ctx), CS_OK);
  cs_unet_config arch = cs_unet_config_default();
  arch.levels = 2;
  arch.base_filters = 4;
  arch.num_classes = 3;
  cs_model_info info;
  ASSERT_EQ(cs_model_info_init(&info, &arch), CS_OK);
  info.patch_size[0] = info.patch_size[1] = info.patch_size[2] = 16;
  cs_model_t base = nullptr;
  ASSERT_EQ(cs_model_create(ctx, &info, 11, &base), CS_OK);

  cs_class_info added[2] = {};
  added[0].value = 7;
  std::snprintf(added[0].name, sizeof added[0].name, "new one");
  added[1].value = 9;
  std::snprintf(added[1].name, sizeof added[1].name, "new two");
  cs_model_t grown = nullptr;
  ASSERT_EQ(cs_model_add_classes(ctx, base, added, 2, &grown), CS_OK) << cs_context_last_error(ctx);
  const cs_model_info * g = cs_model_get_info(grown);
  ASSERT_EQ(g->arch.num_classes, 5);
  for (int k = 0; k < 3; ++k)
    EXPECT_STREQ(g->classes[k].name, info.classes[k].name);
  EXPECT_STREQ(g->classes[3].name, "new one");
  EXPECT_EQ(g->classes[4].value, 9);
  EXPECT_EQ(cs_model_num_parameters(grown), cs_model_num_parameters(base) + 2 * (arch.base_filters + 1));

  // A random image: the old classes' labels are unchanged and their probabilities nearly so.
  const int64_t      size[3] = { 20, 18, 16 }, n = 20 * 18 * 16;
  std::vector<float> image(static_cast<size_t>(n));
  cs_rng             rng;
  cs_rng_seed(&rng, 5);
  for (float & v : image)
    v = cs_rng_normal(&rng);
  std::vector<float>   p0(static_cast<size_t>(3 * n)), p1(static_cast<size_t>(5 * n));
  std::vector<int32_t> l0(static_cast<size_t>(n)), l1(static_cast<size_t>(n));
  cs_infer_options     opt = cs_infer_options_default();
  ASSERT_EQ(cs_predict_volume(ctx, base, image.data(), size, &opt, p0.data(), l0.data()), CS_OK);
  ASSERT_EQ(cs_predict_volume(ctx, grown, image.data(), size, &opt, p1.data(), l1.data()), CS_OK);
  EXPECT_EQ(l0, l1);
  // Each new class holds a small fixed share of background's probability, taken from the old
  // classes' and nothing more.
  const double share = p1[3 * n] / p1[0];
  EXPECT_LT(share, 0.05);
  for (int64_t i = 0; i < n; ++i)
  {
    ASSERT_NEAR(p1[3 * n + i], share * p1[i], 1e-4 + 1e-3 * p1[i]) << "voxel " << i;
    ASSERT_NEAR(p1[4 * n + i], p1[3 * n + i], 1e-6);
    const double taken = p1[3 * n + i] + p1[4 * n + i];
    for (int k = 0; k < 3; ++k)
      ASSERT_LE(std::fabs(p0[k * n + i] - p1[k * n + i]), taken + 1e-5) << "voxel " << i << " class " << k;
  }
  cs_model_free(grown);
  cs_model_free(base);
  cs_context_free(ctx);
}

TEST_F(ComboSegTrainingSessionTest, FineTuningAddsAStructureTheBaseModelLacks)
{
  // A base model that knows only the ball (the box is background to it).
  const std::string baseFile = m_Dir + "/base.safetensors";
  {
    itk::ComboSegTrainingSession s;
    ConfigureNew(s, baseFile, 3);
    std::vector<itk::ComboSegCaseFiles> ballOnly;
    for (const auto & c : m_Train)
      ballOnly.push_back(BallOnly(c));
    s.SetTrainingCases(ballOnly);
    s.SetValidationCases({});
    s.SetValidationFraction(0.0);
    s.SetLabelNames({ Name(1, "ball") });
    ASSERT_TRUE(s.Run().completed);
  }
  auto base = itk::ComboSegModel::New();
  base->Load(baseFile);
  ASSERT_EQ(base->GetInfo().arch.num_classes, 2);
  // A new model recommends keeping the largest component and no test-time mirroring; this base
  // is changed to recommend filling holes only and mirroring along x, which fine-tuning must keep.
  EXPECT_EQ(base->GetInfo().postprocessing.largest_component, 1);
  EXPECT_EQ(base->GetInfo().test_time_mirror_axes, 0);
  cs_model_info recommends = base->GetInfo();
  recommends.postprocessing = cs_postprocessing{ 0, 1 };
  recommends.test_time_mirror_axes = 1;
  ASSERT_EQ(cs_model_set_info(nullptr, base->GetModel(), &recommends), CS_OK);
  base->Save(baseFile);
  // Over ball and box, the base model scores its ball Dice and 0 for the box it never predicts
  // (the grown model predicts exactly what it predicts).
  const double baseDice = ValidationDice(base->GetModel(), BallOnly(m_Valid[0]), { Name(1, "ball") }) / 2.0;

  // Fine-tuned with both names: the box is added after the ball.
  itk::ComboSegTrainingSession t;
  t.SetBaseModelFileName(baseFile);
  t.SetTrainingCases(m_Train);
  t.SetValidationCases(m_Valid);
  t.SetLabelNames(m_Names);
  cs_train_config config = cs_train_config_default();
  config.batch_size = 2;
  config.learning_rate = 0.03f;
  config.seed = 7;
  t.SetTrainConfig(config); // patch size 0: the base model's
  cs_sampling_options sampling = cs_sampling_options_default();
  sampling.foreground_fraction = 0.6f;
  t.SetSamplingOptions(sampling);
  t.SetEpochs(4);
  t.SetStepsPerEpoch(10);
  t.SetNumberOfThreads(2);
  t.SetValidationOverlap(0.0f);
  t.SetOutputModelFileName(m_Dir + "/tuned.safetensors");
  const itk::ComboSegTrainingResult r = t.Run();
  ASSERT_EQ(r.addedClasses, std::vector<std::string>{ "box" });
  auto out = itk::ComboSegModel::New();
  out->Load(m_Dir + "/tuned.safetensors");
  ASSERT_EQ(out->GetInfo().arch.num_classes, 3);
  EXPECT_STREQ(out->GetInfo().classes[1].name, "ball");
  EXPECT_STREQ(out->GetInfo().classes[2].name, "box");
  EXPECT_EQ(out->GetInfo().classes[2].value, 2);
  EXPECT_NE(std::string(out->GetInfo().training_data).find("fine-tuned from"), std::string::npos);
  EXPECT_EQ(out->GetInfo().postprocessing.largest_component, 0);
  EXPECT_EQ(out->GetInfo().postprocessing.fill_holes, 1);
  EXPECT_EQ(out->GetInfo().test_time_mirror_axes, 1);
  EXPECT_GT(r.bestMeanDice, baseDice);
  // The new structure is learnt, not only kept out of the way.
  double boxDice = 0.0;
  for (const auto & h : t.GetHistory())
    boxDice = std::max(boxDice, h.dice[2]);
  EXPECT_GT(boxDice, 0.1);
}

TEST(ComboSegTrainingSessionSplit, SeededShuffleKeepsEveryCaseOnce)
{
  std::vector<itk::ComboSegCaseFiles> cases(10);
  for (int i = 0; i < 10; ++i)
    cases[i].id = "case" + std::to_string(i);
  std::vector<itk::ComboSegCaseFiles> t1, v1, t2, v2, t3, v3;
  itk::ComboSegTrainingSession::SplitCases(cases, 0.2, 42, t1, v1);
  itk::ComboSegTrainingSession::SplitCases(cases, 0.2, 42, t2, v2);
  itk::ComboSegTrainingSession::SplitCases(cases, 0.2, 43, t3, v3);
  ASSERT_EQ(v1.size(), 2u);
  ASSERT_EQ(t1.size(), 8u);
  std::set<std::string> all;
  for (const auto & c : t1)
    all.insert(c.id);
  for (const auto & c : v1)
    all.insert(c.id);
  EXPECT_EQ(all.size(), 10u);
  EXPECT_EQ(v1[0].id, v2[0].id);
  EXPECT_EQ(v1[1].id, v2[1].id);
  // One case, or a zero share, validates on nothing; a large share keeps one for training.
  itk::ComboSegTrainingSession::SplitCases({ cases[0] }, 0.5, 1, t1, v1);
  EXPECT_EQ(t1.size(), 1u);
  EXPECT_TRUE(v1.empty());
  itk::ComboSegTrainingSession::SplitCases(cases, 0.0, 1, t1, v1);
  EXPECT_TRUE(v1.empty());
  itk::ComboSegTrainingSession::SplitCases({ cases[0], cases[1] }, 0.9, 1, t1, v1);
  EXPECT_EQ(t1.size(), 1u);
  EXPECT_EQ(v1.size(), 1u);
}

TEST(ComboSegTrainingSessionReports, TableAndPlotAreWritten)
{
  char pattern[] = "/tmp/comboseg-report-XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  const std::string                        dir = pattern;
  std::vector<itk::ComboSegTrainingRecord> history(3);
  for (int i = 0; i < 3; ++i)
  {
    history[i].epoch = i + 1;
    history[i].step = 10 * (i + 1);
    history[i].trainLoss = 1.0 - 0.2 * i;
    history[i].dice = { 0.99, 0.5 + 0.1 * i, std::nan("") };
    history[i].meanDice = 0.5 + 0.1 * i;
  }
  itk::ComboSegTrainingSession::WriteHistoryTable(dir + "/h.tsv", { "background", "liver", "spleen" }, history);
  const std::vector<std::string> lines = ReadLines(dir + "/h.tsv");
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0], "epoch\tstep\tseconds\ttrain_loss\tlearning_rate\tdice liver\tdice spleen\tmean_dice");
  EXPECT_EQ(lines[3].substr(0, 3), "3\t3");
  EXPECT_NE(lines[3].find("\t0.7\tnan\t0.7"), std::string::npos) << lines[3];

  itk::ComboSegTrainingSession::WriteHistoryPlot(dir + "/h.png", history);
  // PNG signature, then the IHDR chunk: width and height big-endian.
  std::ifstream png(dir + "/h.png", std::ios::binary);
  unsigned char header[24] = {};
  png.read(reinterpret_cast<char *>(header), 24);
  ASSERT_EQ(png.gcount(), 24);
  EXPECT_EQ(std::string(reinterpret_cast<char *>(header) + 1, 3), "PNG");
  const unsigned width = (header[16] << 24) | (header[17] << 16) | (header[18] << 8) | header[19];
  const unsigned height = (header[20] << 24) | (header[21] << 16) | (header[22] << 8) | header[23];
  EXPECT_EQ(width, 640u);
  EXPECT_EQ(height, 400u);
  for (const auto & entry : std::filesystem::directory_iterator(dir))
    EXPECT_EQ(entry.path().filename().string().find(".tmp-"), std::string::npos) << entry.path();
  // Both curves are drawn: pixels of the loss's orange and of the Dice's blue.
  {
    using RGB = itk::RGBPixel<unsigned char>;
    auto reader = itk::ImageFileReader<itk::Image<RGB, 2>>::New();
    reader->SetImageIO(itk::PNGImageIO::New()); // no IO factories are registered here
    reader->SetFileName(dir + "/h.png");
    reader->Update();
    size_t orange = 0, blue = 0;
    for (itk::ImageRegionConstIterator<itk::Image<RGB, 2>> it(reader->GetOutput(),
                                                              reader->GetOutput()->GetLargestPossibleRegion());
         !it.IsAtEnd(); ++it)
    {
      const RGB p = it.Get();
      orange += p[0] > 200 && p[1] > 90 && p[1] < 150 && p[2] < 60;
      blue += p[0] < 80 && p[1] > 60 && p[1] < 120 && p[2] > 170;
    }
    EXPECT_GT(orange, 200u);
    EXPECT_GT(blue, 200u);
  }

  // Without validation cases: no Dice columns (issue 17 item 7: no columns of nan).
  for (auto & h : history)
    h.dice.assign(3, std::nan("")), h.meanDice = std::nan("");
  itk::ComboSegTrainingSession::WriteHistoryTable(dir + "/n.tsv", { "background", "liver", "spleen" }, history);
  const std::vector<std::string> unvalidated = ReadLines(dir + "/n.tsv");
  ASSERT_EQ(unvalidated.size(), 4u);
  EXPECT_EQ(unvalidated[0], "epoch\tstep\tseconds\ttrain_loss\tlearning_rate");
  for (const std::string & line : unvalidated)
    EXPECT_EQ(line.find("nan"), std::string::npos) << line;
  std::filesystem::remove_all(dir);
}

} // namespace
