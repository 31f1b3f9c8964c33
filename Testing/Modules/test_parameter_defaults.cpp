// One source of truth for parameters: each default (and range) a module's XML shows Slicer is the
// one the libraries use when the parameter is not given. The XMLs are read from the source tree
// with the modules' own parser (expat).
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "ComboSegCLI.h"
#include "comboseg/parameters.h"
#include "itkComboSegImageFilter.h"
#include "itkComboSegTrainingSession.h"
#include "vtkComboSegLogic.h"
#include <vtkNew.h>

namespace
{

ComboSegModuleDescription ModuleXML(const std::string &module)
{
  const std::string path = std::string(COMBOSEG_SOURCE_DIR) + "/ComboSegModule/" + module + "/" + module + ".xml";
  std::ifstream in(path);
  EXPECT_TRUE(in) << "cannot read " << path;
  std::stringstream text;
  text << in.rdbuf();
  return ComboSegModuleDescription::Parse(text.str());
}

const ComboSegParameterDescription &Parameter(const ComboSegModuleDescription &xml, const std::string &name)
{
  const ComboSegParameterDescription *p = xml.Find(name);
  if (!p)
    throw std::runtime_error("no parameter " + name + " in " + xml.title);
  return *p;
}

double Number(const std::string &text)
{
  return std::stod(text);
}

using FilterType = itk::ComboSegImageFilter<itk::Image<float, 3>, itk::Image<short, 3>>;

} // namespace

TEST(ParameterDefaults, SegmentOverlapHasOneDefaultAndOneRangeInEveryLayer)
{
  const ComboSegModuleDescription segment = ModuleXML("ComboSegSegment");
  const ComboSegParameterDescription &overlap = Parameter(segment, "overlap");
  EXPECT_DOUBLE_EQ(Number(overlap.defaultValue), CS_OVERLAP_DEFAULT);
  EXPECT_DOUBLE_EQ(Number(overlap.minimum), CS_OVERLAP_MIN);
  EXPECT_DOUBLE_EQ(Number(overlap.maximum), CS_OVERLAP_MAX);
  EXPECT_FLOAT_EQ(cs_infer_options_default().overlap, float(CS_OVERLAP_DEFAULT));
  EXPECT_DOUBLE_EQ(FilterType::New()->GetOverlap(), CS_OVERLAP_DEFAULT);
  vtkNew<vtkComboSegLogic> logic;
  EXPECT_DOUBLE_EQ(logic->GetOverlap(), CS_OVERLAP_DEFAULT);
}

TEST(ParameterDefaults, OverlapOutsideItsRangeIsAnErrorNamingIt)
{
  auto filter = FilterType::New();
  for (double bad : {-0.1, CS_OVERLAP_MAX + 0.01, 0.95, 1.0})
  {
    try
    {
      filter->SetOverlap(bad);
      ADD_FAILURE() << bad << " was accepted";
    }
    catch (const itk::ExceptionObject &e)
    {
      EXPECT_NE(std::string(e.GetDescription()).find("Overlap"), std::string::npos) << e.GetDescription();
    }
  }
  EXPECT_DOUBLE_EQ(filter->GetOverlap(), CS_OVERLAP_DEFAULT) << "nothing clamped, nothing changed";
  filter->SetOverlap(CS_OVERLAP_MAX);
  EXPECT_DOUBLE_EQ(filter->GetOverlap(), CS_OVERLAP_MAX);
}

// The modules refuse a value outside the XML's constraints, naming the parameter and the bound,
// and take the automatic values (-1, 0) that the constraints allow.
TEST(ParameterDefaults, ModuleArgumentsOutsideTheXmlConstraintsAreErrorsNamingThem)
{
  const ComboSegModuleDescription train = ModuleXML("ComboSegTrain");
  const std::vector<std::pair<std::vector<std::string>, std::string>> bad = {
      {{"--foregroundFraction", "1.5"},
       "parameter 'foregroundFraction' (Share of patches on structures): 1.5 is above the maximum 1"},
      {{"--foregroundFraction", "-2"}, "-2 is below the minimum -1"},
      {{"--batchSize", "0"}, "parameter 'batchSize' (Batch size): 0 is below the minimum 1"},
      {{"--rotationAugmentation", "10,200,10"}, "200 is above the maximum 180"}};
  for (const auto &[args, message] : bad)
  {
    try
    {
      ComboSegArguments parsed(train, args);
      ADD_FAILURE() << args[0] << " " << args[1] << " was accepted";
    }
    catch (const std::runtime_error &e)
    {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
  }
  const ComboSegArguments automatic(train, {"--foregroundFraction", "-1", "--learningRate", "0", "--epochs", "0"});
  EXPECT_DOUBLE_EQ(automatic.GetDouble("foregroundFraction"), -1.0);
}

TEST(ParameterDefaults, SegmentOptionsMatchTheFilter)
{
  const ComboSegModuleDescription xml = ModuleXML("ComboSegSegment");
  const auto filter = FilterType::New();
  EXPECT_EQ(Parameter(xml, "largestComponent").defaultValue == "true", filter->GetLargestComponent());
  EXPECT_EQ(Parameter(xml, "fillHoles").defaultValue == "true", filter->GetFillHoles());
  EXPECT_EQ(Parameter(xml, "rawOutput").defaultValue == "true", !filter->GetUseModelRecommendations());
  EXPECT_EQ(Parameter(xml, "ignoreModalityMismatch").defaultValue == "true", filter->GetIgnoreModalityMismatch());
  EXPECT_EQ(Parameter(xml, "testTimeAugmentation").defaultValue == "true", filter->GetTestTimeMirrorAxes() != 0);
  EXPECT_EQ(Number(Parameter(xml, "threads").defaultValue), filter->GetNumberOfThreads());
  EXPECT_EQ(Parameter(xml, "precision").defaultValue == "bfloat16", filter->GetBFloat16());
  vtkNew<vtkComboSegLogic> logic;
  EXPECT_EQ(Number(Parameter(xml, "threads").defaultValue), logic->GetNumberOfThreads());
  EXPECT_EQ(logic->GetLargestComponent(), filter->GetLargestComponent());
  EXPECT_EQ(logic->GetFillHoles(), filter->GetFillHoles());
}

TEST(ParameterDefaults, TrainDefaultsMatchTheEngineAndTheSession)
{
  const ComboSegModuleDescription xml = ModuleXML("ComboSegTrain");
  const cs_train_config config = cs_train_config_default();
  const cs_sampling_options sampling = cs_sampling_options_default();
  // Left at their automatic values, a new model's recipe is the engine's defaults.
  const cs_training_recipe automatic = cs_training_recipe_automatic(0);
  EXPECT_EQ(Number(Parameter(xml, "learningRate").defaultValue), 0.0);
  EXPECT_FLOAT_EQ(automatic.learning_rate, config.learning_rate);
  EXPECT_EQ(Number(Parameter(xml, "epochs").defaultValue), 0.0);
  EXPECT_EQ(Number(Parameter(xml, "stepsPerEpoch").defaultValue), CS_TRAINING_STEPS_PER_EPOCH_DEFAULT);
  EXPECT_EQ(int64_t(automatic.epochs) * CS_TRAINING_STEPS_PER_EPOCH_DEFAULT, config.total_steps);
  EXPECT_EQ(Number(Parameter(xml, "batchSize").defaultValue), config.batch_size);
  EXPECT_EQ(Parameter(xml, "loss").defaultValue, cs_loss_kind_name(config.loss.kind));
  EXPECT_FLOAT_EQ(float(Number(Parameter(xml, "alpha").defaultValue)), config.loss.alpha);
  EXPECT_FLOAT_EQ(float(Number(Parameter(xml, "beta").defaultValue)), config.loss.beta);
  std::ostringstream tversky;
  tversky << config.loss.tversky_alpha << "," << config.loss.tversky_beta;
  EXPECT_EQ(Parameter(xml, "tverskyWeights").defaultValue, tversky.str());
  EXPECT_EQ(Parameter(xml, "curriculum").defaultValue == "true", config.curriculum != 0);
  EXPECT_EQ(Parameter(xml, "batchDice").defaultValue == "true", config.loss.batch_dice != 0);
  EXPECT_EQ(Number(Parameter(xml, "foregroundFraction").defaultValue), -1.0);
  EXPECT_FLOAT_EQ(automatic.foreground_fraction, sampling.foreground_fraction);
  EXPECT_FLOAT_EQ(float(Number(Parameter(xml, "zoomAugmentation").defaultValue)), sampling.zoom);
  EXPECT_FLOAT_EQ(float(Number(Parameter(xml, "gammaAugmentation").defaultValue)), sampling.gamma);
  EXPECT_EQ(Number(Parameter(xml, "rotationAugmentation").defaultValue), -1.0);
  EXPECT_FLOAT_EQ(automatic.rotation, sampling.rotation[0]);
  EXPECT_EQ(Parameter(xml, "mirrorAugmentation").defaultValue, "auto");
  EXPECT_EQ(automatic.flip_axes, sampling.flip_axes);
  const itk::ComboSegTrainingSession session;
  EXPECT_DOUBLE_EQ(Number(Parameter(xml, "validationShare").defaultValue), session.GetValidationFraction());
}

TEST(ParameterDefaults, NormalisationRecipesHaveTheEngineSpellingOnly)
{
  // The XML's recipes are the engine's names (plus "auto"), and every recipe is offered.
  const ComboSegModuleDescription train = ModuleXML("ComboSegTrain");
  const ComboSegParameterDescription &normalization = Parameter(train, "normalization");
  std::vector<std::string> expected = {"auto"};
  for (cs_norm_kind kind : {CS_NORM_ZSCORE_NONZERO, CS_NORM_ZSCORE_MASK, CS_NORM_ZSCORE, CS_NORM_UPPER_PEAK,
                            CS_NORM_CLIP_SCALE, CS_NORM_NONE})
    expected.push_back(cs_norm_kind_name(kind));
  EXPECT_EQ(normalization.elements, expected);
  for (const std::string &name : normalization.elements)
  {
    cs_norm_kind kind = CS_NORM_NONE;
    if (name != "auto")
      EXPECT_EQ(cs_norm_kind_from_name(name.c_str(), &kind), CS_OK) << name;
  }
  // An unknown name is an error, not "none".
  cs_norm_kind kind = CS_NORM_ZSCORE;
  EXPECT_EQ(cs_norm_kind_from_name("zscore-brain", &kind), CS_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(kind, CS_NORM_ZSCORE);
}
