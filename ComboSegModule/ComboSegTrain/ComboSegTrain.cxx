/* ComboSegTrain - the Slicer module (and shell command) that fine-tunes or trains a ComboSeg model.

   From Slicer: the scan and label map of the scene are one training case. From a shell, e.g. a
   new model of the brain structures:
     ComboSegTrain --caseList colin.txt --validationCaseList icbm.txt --labelNames names.csv \
       --baseModel new --modality MR --normalization zscore_nonzero --targetSpacing 1,1,1 \
       --patchSize 64,64,64 --epochs 40 --outputModel brain-structures-t1.safetensors \
       --historyTable history.tsv --plotImage curves.png
   A killed run resumes from "<outputModel>.checkpoint" when started again with the same output.
   Built with -DCOMBOSEG_USE_MPI=ON, the same executable trains data-parallel under mpirun, e.g.
     mpirun --hostfile hosts -np 8 ComboSegTrain --caseList cases.txt --batchSize 16 ...
   (--batchSize is the global batch; rank 0 writes every file; see docs/scaling.md). */
#include "ComboSegCLI.h"
#include "ComboSegInputs.h"
#include "ComboSegRunOutputs.h"
#include "ComboSegTrainXML.h"

#include "comboseg/parameters.h"
#include "itkComboSegDataSet.h"
#include "itkComboSegIO.h"
#include "itkComboSegModel.h"
#include "itkComboSegTrainingSession.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef COMBOSEG_USE_MPI
#include "comboseg/comboseg_mpi.h"
#endif

namespace
{

std::atomic<bool> g_Stop{false};

#ifdef COMBOSEG_USE_MPI
cs_mpi_t g_Mpi = nullptr; // this process's place in an MPI job (rank 0 of 1 when run alone)

// The session's collective hooks, through ComboSegMPI.
itk::ComboSegTrainingSession::Peers MpiPeers()
{
  itk::ComboSegTrainingSession::Peers peers;
  peers.rank = cs_mpi_rank(g_Mpi);
  peers.size = cs_mpi_size(g_Mpi);
  peers.Attach = [](cs_trainer_t trainer, std::string &message) {
    const cs_status st = cs_mpi_attach_trainer(g_Mpi, trainer);
    if (st != CS_OK)
      message = cs_mpi_last_error(g_Mpi);
    return st;
  };
  peers.StepEnd = [](cs_status local, std::string &message) {
    const cs_status st = cs_mpi_step_end(g_Mpi, local, message.c_str());
    if (st != CS_OK)
      message = cs_mpi_last_error(g_Mpi);
    return st;
  };
  peers.AnyOf = [](bool flag) { return cs_mpi_agree(g_Mpi, flag ? CS_ERR_CANCELLED : CS_OK, "stop") != CS_OK; };
  return peers;
}
#endif

void OnSignal(int)
{
  g_Stop = true;
}

// The recipe of --normalization (the engine's names; "auto" is handled before).
cs_norm_kind NormFromName(const std::string &name)
{
  cs_norm_kind norm = CS_NORM_NONE;
  if (cs_norm_kind_from_name(name.c_str(), &norm) != CS_OK)
    throw std::runtime_error("--normalization: unknown recipe '" + name + "'");
  return norm;
}

cs_modality ModalityFromName(const std::string &name)
{
  if (name == "CT")
    return CS_MODALITY_CT;
  if (name == "MR")
    return CS_MODALITY_MR;
  if (name == "PET")
    return CS_MODALITY_PET;
  if (name == "US")
    return CS_MODALITY_US;
  return CS_MODALITY_OTHER;
}

std::string Basename(const std::string &path)
{
  const size_t slash = path.find_last_of('/');
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  const size_t dot = base.find('.');
  return dot == std::string::npos || dot == 0 ? base : base.substr(0, dot);
}

// Appends a data set's cases; its names are used when none were given.
void AddDataSet(const itk::ComboSegDataSetDescription &d, std::vector<itk::ComboSegCaseFiles> &cases,
                std::vector<itk::LabelName> &names, std::vector<std::string> &channelNames)
{
  cases.insert(cases.end(), d.cases.begin(), d.cases.end());
  if (names.empty())
    names = d.labelNames;
  if (channelNames.empty())
    channelNames = d.channelNames;
}

// The training cases (the scene's, a data set folder, case lists) and their label names.
struct Cases
{
  std::vector<itk::ComboSegCaseFiles> training, validation;
  std::vector<itk::LabelName> names;
  std::vector<std::string> channelNames;
};

Cases ReadCases(const ComboSegArguments &args)
{
  Cases cases;
  std::vector<itk::ComboSegCaseFiles> &training = cases.training, &validation = cases.validation;
  std::vector<itk::LabelName> &names = cases.names;
  std::vector<std::string> &channelNames = cases.channelNames;
  if (args.IsSet("labelNames"))
    names = itk::ReadLabelNames(args.GetString("labelNames"));
  for (const char *suffix : {"", "Case2"}) // the scene's cases: a scan (one or two channels) and its labels
  {
    const std::string scan = std::string("inputVolume") + suffix, second = std::string("inputVolume2") + suffix,
                      labels = std::string("inputLabelMap") + suffix;
    if (!args.IsSet(scan) && !args.IsSet(second) && !args.IsSet(labels))
      continue;
    if (!args.IsSet(scan) || !args.IsSet(labels))
      throw std::runtime_error("a scene case needs both a scan (--" + scan + ") and its label map (--" + labels + ")");
    itk::ComboSegCaseFiles scene;
    scene.id = *suffix ? "scene2" : "scene";
    scene.channels = {args.GetString(scan)};
    if (args.IsSet(second))
      scene.channels.push_back(args.GetString(second));
    if (!training.empty() && training[0].channels.size() != scene.channels.size())
      throw std::runtime_error("the scene's second case has " + std::to_string(scene.channels.size()) +
                               " channel(s) where the first has " + std::to_string(training[0].channels.size()));
    scene.labels = args.GetString(labels);
    training.push_back(scene);
    // A label map saved from a segmentation (NRRD) carries its names; a plain one has none. A
    // NRRD whose names cannot be read is an error here, before training starts.
    if (names.empty() &&
        (itk::ComboSegEndsWithNoCase(scene.labels, ".nrrd") || itk::ComboSegEndsWithNoCase(scene.labels, ".nhdr")))
      names = itk::ReadLabelNames(scene.labels);
  }
  if (args.IsSet("dataFolder"))
    AddDataSet(itk::ReadMSDDataSet(args.GetString("dataFolder")), training, names, channelNames);
  if (args.IsSet("caseList"))
    AddDataSet(itk::ReadCaseList(args.GetString("caseList")), training, names, channelNames);
  if (args.IsSet("validationCaseList"))
  {
    std::vector<std::string> ignored;
    AddDataSet(itk::ReadCaseList(args.GetString("validationCaseList")), validation, names, ignored);
  }
  if (training.empty())
    throw std::runtime_error("no training cases: select a scan and its label map, a folder of cases (--dataFolder) "
                             "or a case list (--caseList)");
  return cases;
}

// A new model's architecture and channels from the arguments, with the settings left at "auto"
// chosen from the training cases; returns the patch size so chosen (0,0,0: the arguments').
std::array<int32_t, 3> ConfigureNewModel(ComboSegArguments &args, const std::vector<itk::ComboSegCaseFiles> &training,
                                         std::vector<std::string> channelNames, const std::string &output,
                                         itk::ComboSegTrainingSession &session)
{
  cs_unet_config arch = cs_unet_config_default();
  arch.spatial_dims = static_cast<int32_t>(args.GetInt("spatialDims"));
  arch.levels = static_cast<int32_t>(args.GetInt("levels"));
  arch.base_filters = static_cast<int32_t>(args.GetInt("baseFilters"));
  arch.in_channels = static_cast<int32_t>(args.GetInt("inputChannels"));
  if (!args.IsSet("inputChannels"))
    arch.in_channels = static_cast<int32_t>(training[0].channels.size());
  if (args.IsSet("channelNames"))
    channelNames = args.GetStrings("channelNames");
  if (!channelNames.empty() && static_cast<int32_t>(channelNames.size()) != arch.in_channels)
  {
    if (args.IsSet("inputChannels") || args.IsSet("channelNames"))
      throw std::runtime_error(std::to_string(channelNames.size()) + " channel names for " +
                               std::to_string(arch.in_channels) + " input channel(s)");
    arch.in_channels = static_cast<int32_t>(channelNames.size()); // the data set's channels
  }
  const std::vector<double> range = args.GetDoubles("intensityRange");
  if (range.size() != 2 || !(range[1] > range[0]))
    throw std::runtime_error("--intensityRange takes two increasing values, e.g. -1000,1000");
  const std::vector<double> spacing = args.GetDoubles("targetSpacing");
  const std::vector<double> patchSize = args.GetDoubles("patchSize");
  const bool autoModality = args.GetString("modality") == "auto";
  const bool autoNorm = args.GetString("normalization") == "auto";
  const bool autoSpacing = spacing == std::vector<double>{0, 0, 0};
  const bool autoPatch = patchSize == std::vector<double>{0, 0, 0};
  if (!autoSpacing && (spacing.size() != 3 || spacing[0] <= 0 || spacing[1] <= 0 || spacing[2] <= 0))
    throw std::runtime_error("--targetSpacing takes three positive values in mm, e.g. 1,1,1 (0,0,0: from the data)");
  // Settings left at "auto" are chosen from the training cases, and said why.
  itk::ComboSegDataConfiguration chosen;
  if (autoModality || autoNorm || autoSpacing || autoPatch)
  {
    chosen = itk::ComboSegTrainingSession::ChooseConfiguration(training, arch.levels, arch.spatial_dims);
    std::printf("configured from the %zu training case(s):\n", training.size());
    if (autoModality)
      std::printf("  modality: %s\n", chosen.modalityReason.c_str());
    if (autoNorm)
      std::printf("  normalisation: %s\n", chosen.normalizationReason.c_str());
    if (autoSpacing)
      std::printf("  target spacing: %s\n", chosen.spacingReason.c_str());
    if (autoPatch)
      std::printf("  patch size: %s\n", chosen.patchReason.c_str());
    std::fflush(stdout);
  }
  std::vector<cs_channel_info> channels(static_cast<size_t>(arch.in_channels));
  for (int32_t c = 0; c < arch.in_channels; ++c)
  {
    cs_channel_info &ch = channels[static_cast<size_t>(c)];
    std::memset(&ch, 0, sizeof ch);
    const std::string name = c < static_cast<int32_t>(channelNames.size()) ? channelNames[static_cast<size_t>(c)]
                             : arch.in_channels == 1                       ? std::string("image")
                                                                           : "image" + std::to_string(c + 1);
    ch.norm = NormFromName(args.GetString("normalization"));
    ch.clip_low = static_cast<float>(range[0]);
    ch.clip_high = static_cast<float>(range[1]);
    ch.mean = static_cast<float>((range[0] + range[1]) / 2); // maps the range to -1..1
    ch.std = static_cast<float>((range[1] - range[0]) / 2);
    const bool fromData = static_cast<size_t>(c) < chosen.channels.size();
    if (autoNorm && fromData)
      ch = chosen.channels[static_cast<size_t>(c)]; // recipe and its values
    ch.modality = autoModality && fromData ? chosen.channels[static_cast<size_t>(c)].modality
                                           : ModalityFromName(args.GetString("modality"));
    std::snprintf(ch.name, sizeof ch.name, "%s", name.c_str());
  }
  session.SetNewModel(arch, channels);
  const std::array<double, 3> target = autoSpacing ? chosen.spacing
                                                   : std::array<double, 3>{{spacing[0], spacing[1], spacing[2]}};
  session.SetTargetSpacing(target);
  if (!args.IsSet("modelName"))
    session.SetModelName(Basename(output));
  return autoPatch ? chosen.patchSize : std::array<int32_t, 3>{{0, 0, 0}};
}

// The model to start from: a model file, a new model, or a bundled model; and its metadata.
// Whether the run fine-tunes a base model (a file or a bundled one) rather than training a new one.
bool StartsFromBaseModel(ComboSegArguments &args)
{
  return args.IsSet("baseModelFile") || args.GetString("baseModel") != "new";
}

std::array<int32_t, 3> ConfigureModel(ComboSegArguments &args, const Cases &cases, const std::string &output,
                                      itk::ComboSegTrainingSession &session)
{
  std::array<int32_t, 3> newPatch{{0, 0, 0}};
  if (args.IsSet("baseModelFile"))
    session.SetBaseModelFileName(args.GetString("baseModelFile"));
  else if (!StartsFromBaseModel(args))
    newPatch = ConfigureNewModel(args, cases.training, cases.channelNames, output, session);
  else
    session.SetBaseModelFileName(ComboSegFindBundledModel(args.GetString("baseModel")));
  session.SetAddMissingClasses(!args.GetBool("strictStructures"));
  if (args.IsSet("modelName"))
    session.SetModelName(args.GetString("modelName"));
  if (args.IsSet("modelDescription"))
    session.SetModelDescription(args.GetString("modelDescription"));
  if (args.IsSet("trainingData"))
    session.SetTrainingDataDescription(args.GetString("trainingData"));
  if (args.IsSet("licence"))
    session.SetLicence(args.GetString("licence"));
  if (args.GetBool("recommendTestTimeAugmentation"))
    session.SetRecommendedTestTimeMirrorAxes(1); // x: left-right, as ComboSegSegment's flag
  const std::string cleanUp = args.GetString("recommendedCleanUp");
  if (cleanUp != "automatic")
    session.SetRecommendedLargestComponent(cleanUp == "largest-component" ? 1 : 0);
  return newPatch;
}

// Sampling and augmentation as given, automatic values (below 0, "auto") left at -1 / 0.
cs_sampling_options SamplingAsGiven(ComboSegArguments &args)
{
  cs_sampling_options sampling = cs_sampling_options_default();
  sampling.foreground_fraction = static_cast<float>(args.GetDouble("foregroundFraction"));
  sampling.zoom = static_cast<float>(args.GetDouble("zoomAugmentation"));
  sampling.gamma = static_cast<float>(args.GetDouble("gammaAugmentation"));
  sampling.channel_dropout = static_cast<float>(args.GetDouble("channelDropout"));
  const std::vector<double> rotation = args.GetDoubles("rotationAugmentation");
  if (rotation.size() != 1 && rotation.size() != 3)
    throw std::runtime_error("parameter 'rotationAugmentation' takes one angle in degrees for every axis or three "
                             "(x,y,z), or -1 (automatic)");
  for (size_t i = 0; i < 3; ++i)
    sampling.rotation[i] = static_cast<float>(rotation[rotation.size() == 3 ? i : 0]);
  const std::string mirror = args.GetString("mirrorAugmentation");
  for (int axis = 0; axis < 3; ++axis)
    if (mirror.find("xyz"[axis]) != std::string::npos)
      sampling.flip_axes |= 1 << axis;
  return sampling;
}

int32_t BaseModelLevels(ComboSegArguments &args)
{
  auto model = itk::ComboSegModel::New();
  model->Load(args.IsSet("baseModelFile") ? args.GetString("baseModelFile")
                                          : ComboSegFindBundledModel(args.GetString("baseModel")));
  return model->GetInfo().arch.levels;
}

// Fills in the parameters left at their automatic values (learning rate 0, epochs 0 without a time
// budget, foreground fraction or rotation -1, mirroring "auto") with the recipe for a new model or
// for fine-tuning (comboseg/parameters.h), and says which it chose.
void ApplyAutomaticRecipe(ComboSegArguments &args, bool fineTuning, cs_train_config &config,
                          cs_sampling_options &sampling, int64_t &epochs)
{
  const cs_training_recipe recipe = cs_training_recipe_automatic(fineTuning);
  std::ostringstream chosen;
  if (config.learning_rate <= 0.0f)
  {
    config.learning_rate = recipe.learning_rate;
    chosen << " learning rate " << recipe.learning_rate << ";";
  }
  if (epochs == 0 && args.GetDouble("timeBudget") <= 0.0)
  {
    epochs = recipe.epochs;
    chosen << " " << epochs << " epochs;";
  }
  if (sampling.foreground_fraction < 0.0f)
  {
    sampling.foreground_fraction = recipe.foreground_fraction;
    chosen << " " << recipe.foreground_fraction << " of patches on structures;";
  }
  if (sampling.rotation[0] < 0.0f || sampling.rotation[1] < 0.0f || sampling.rotation[2] < 0.0f)
  {
    for (float &angle : sampling.rotation)
      angle = recipe.rotation;
    chosen << " rotations up to " << recipe.rotation << " degrees;";
  }
  if (args.GetString("mirrorAugmentation") == "auto")
  {
    sampling.flip_axes = recipe.flip_axes;
    chosen << " mirroring " << (recipe.flip_axes & 1 ? "x" : "none") << ";";
  }
  if (config.frozen_encoder_levels < 0)
  {
    config.frozen_encoder_levels = recipe.frozen_encoder_levels;
    if (fineTuning)
    {
      // never the bottom of a shallower base model's encoder
      config.frozen_encoder_levels = std::min(config.frozen_encoder_levels, BaseModelLevels(args) - 1);
      chosen << " " << config.frozen_encoder_levels << " frozen encoder level(s);";
    }
  }
  std::string text = chosen.str();
  if (text.empty())
    return;
  text.pop_back();
  std::printf("automatic values for %s:%s\n", fineTuning ? "fine-tuning a base model" : "a new model", text.c_str());
}

// How it learns: optimiser, loss, sampling and augmentation, epochs and budgets.
void ConfigureLearning(ComboSegArguments &args, const std::array<int32_t, 3> &newPatch,
                       itk::ComboSegTrainingSession &session)
{
  cs_train_config config = cs_train_config_default();
  config.batch_size = static_cast<int32_t>(args.GetInt("batchSize"));
  const std::vector<double> patch = args.GetDoubles("patchSize");
  if (patch.size() != 3)
    throw std::runtime_error("--patchSize takes three values x,y,z (0,0,0: the model's)");
  for (int i = 0; i < 3; ++i)
    config.patch_size[i] = static_cast<int32_t>(patch[static_cast<size_t>(i)]);
  if (newPatch[0] > 0) // a new model's patch size chosen from the data
    for (int i = 0; i < 3; ++i)
      config.patch_size[i] = newPatch[static_cast<size_t>(i)];
  config.learning_rate = static_cast<float>(args.GetDouble("learningRate"));
  config.frozen_encoder_levels = static_cast<int32_t>(args.GetInt("freezeEncoderLevels"));
  if (config.frozen_encoder_levels > 0 && !StartsFromBaseModel(args))
    throw std::runtime_error("--freezeEncoderLevels keeps layers a base model learnt: a new model (--baseModel new) "
                             "has none to keep; leave it at -1 or 0");
  if (cs_loss_kind_from_name(args.GetString("loss").c_str(), &config.loss.kind) != CS_OK)
    throw std::runtime_error("unknown loss '" + args.GetString("loss") + "'");
  config.loss.alpha = static_cast<float>(args.GetDouble("alpha"));
  config.loss.beta = static_cast<float>(args.GetDouble("beta"));
  const std::vector<double> tversky = args.GetDoubles("tverskyWeights");
  if (tversky.size() != 2 || !(tversky[0] >= 0 && tversky[0] <= 1) || !(tversky[1] >= 0 && tversky[1] <= 1) ||
      !(tversky[0] + tversky[1] > 0))
    throw std::runtime_error("--tverskyWeights takes two values in 0..1, not both 0 (false positives, false "
                             "negatives), e.g. 0.3,0.7");
  config.loss.tversky_alpha = static_cast<float>(tversky[0]);
  config.loss.tversky_beta = static_cast<float>(tversky[1]);
  config.curriculum = args.GetBool("curriculum") ? 1 : 0;
  config.loss.batch_dice = args.GetBool("batchDice") ? 1 : 0;
  config.seed = static_cast<uint64_t>(args.GetInt("seed"));
  cs_sampling_options sampling = SamplingAsGiven(args);
  int64_t epochs = args.GetInt("epochs");
  ApplyAutomaticRecipe(args, StartsFromBaseModel(args), config, sampling, epochs);
  session.SetTrainConfig(config);
  session.SetSamplingOptions(sampling);
  session.SetEpochs(epochs);
  session.SetStepsPerEpoch(args.GetInt("stepsPerEpoch"));
  session.SetTimeBudget(args.GetDouble("timeBudget") * 60.0);
  session.SetNumberOfThreads(static_cast<int>(args.GetInt("threads")));
  session.SetMemoryBudget(static_cast<uint64_t>(args.GetInt("memoryBudget")) << 20);
}

// What the run did, for the user and Slicer's return parameters.
void ReportResult(ComboSegArguments &args, const std::string &output, const itk::ComboSegTrainingResult &result)
{
  std::string added;
  for (const std::string &name : result.addedClasses)
    added += (added.empty() ? "" : ", ") + name;
  args.SetReturn("bestDice", result.bestMeanDice);
  args.SetReturn("epochsDone", static_cast<double>(result.epochs));
  args.SetReturn("addedStructures", added);
  // What "best" means: the highest mean validation Dice, or without validation the last epoch.
  if (result.validationCases > 0)
    std::printf("model: %s (epoch %lld, the best mean validation Dice: %.4f; %lld steps, %.1f s, %lld training and "
                "%lld validation case(s))\n",
                output.c_str(), static_cast<long long>(result.bestEpoch), result.bestMeanDice,
                static_cast<long long>(result.steps), result.seconds, static_cast<long long>(result.trainingCases),
                static_cast<long long>(result.validationCases));
  else
    std::printf("model: %s (epoch %lld, the last: without validation cases nothing tells a better one; %lld steps, "
                "%.1f s, %lld training case(s))\n",
                output.c_str(), static_cast<long long>(result.bestEpoch), static_cast<long long>(result.steps),
                result.seconds, static_cast<long long>(result.trainingCases));
  if (!added.empty())
    std::printf("added structures: %s\n", added.c_str());
  if (!result.keptClasses.empty())
  {
    // Partial labels: say which structures learnt from the site's labels and which were kept.
    auto join = [](const std::vector<std::string> &names) {
      std::string text;
      for (const std::string &n : names)
        text += (text.empty() ? "" : ", ") + n;
      return text.empty() ? std::string("none") : text;
    };
    std::printf("trained (labelled): %s\nnot labelled, taught as the base model segmented them on the training "
                "scans (docs/partial-labels.md): %s\n",
                join(result.trainedClasses).c_str(), join(result.keptClasses).c_str());
  }
  std::fflush(stdout);
}

int Run(ComboSegArguments &args, ComboSegProgress &progress)
{
  ComboSegLimitITKThreads(static_cast<int>(args.GetInt("threads"))); // before ITK's pool exists
  const std::string output = args.GetString("outputModel");
  if (output.empty())
    throw std::runtime_error("no output model file given (--outputModel)");
  // Every output is checked before the cases are read (the checkpoint's name is free).
  ComboSegRunOutputs outputs(args, {{"checkpointFile", {}}});
  const Cases cases = ReadCases(args);
  const std::vector<itk::ComboSegCaseFiles> &training = cases.training;

  itk::ComboSegTrainingSession session;
  session.SetTrainingCases(training);
  session.SetValidationCases(cases.validation);
  session.SetLabelNames(cases.names);
  session.SetValidationFraction(args.GetDouble("validationShare"));

  ConfigureLearning(args, ConfigureModel(args, cases, output, session), session);

  // ---- files: the best model so far stays beside the checkpoint ("<checkpoint>.best"), which a
  // resumed run starts from; the reports are staged; all reach their names together at the end.
  bool writesFiles = true; // rank 0 alone writes files
#ifdef COMBOSEG_USE_MPI
  writesFiles = cs_mpi_rank(g_Mpi) == 0;
#endif
  const std::string checkpoint = args.IsSet("checkpointFile") ? args.GetString("checkpointFile")
                                                              : output + ".checkpoint";
  const std::string bestModel = checkpoint + ".best";
  session.SetOutputModelFileName(bestModel);
  session.SetCheckpointFileName(checkpoint);
  session.SetResume(!args.GetBool("restart"));
  if (writesFiles && outputs.Has("historyTable"))
    session.SetHistoryFileName(outputs.Staged("historyTable"));
  if (writesFiles && outputs.Has("plotImage"))
    session.SetPlotFileName(outputs.Staged("plotImage"));

  // Ctrl-C or a polite kill stops after the current step; the last epoch's checkpoint stays.
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  session.SetCancelFlag(&g_Stop);
  bool report = true; // rank 0 alone reports progress and results
#ifdef COMBOSEG_USE_MPI
  if (cs_mpi_size(g_Mpi) > 1)
    session.SetPeers(MpiPeers());
  report = cs_mpi_rank(g_Mpi) == 0;
#endif
  std::string lastComment;
  if (report)
    session.SetProgressCallback([&](double fraction, const std::string &comment) {
      progress.Progress(fraction);
      if (comment != lastComment)
        progress.Comment(comment);
      lastComment = comment;
    });

  if (report)
    progress.Start("ComboSeg Train", "training on " + std::to_string(training.size()) + " case(s)");
  const itk::ComboSegTrainingResult result = session.Run();
  if (!report)
    return result.cancelled ? 1 : 0;
  if (result.cancelled)
  {
    std::fprintf(stderr, "training stopped after epoch %lld; run again with the same output model to resume\n",
                 static_cast<long long>(result.epochs));
    return 1;
  }
  std::error_code copied;
  std::filesystem::copy_file(bestModel, outputs.Staged("outputModel"),
                             std::filesystem::copy_options::overwrite_existing, copied);
  if (copied)
    throw std::runtime_error("cannot write the model " + output + ": " + copied.message());
  outputs.Commit();
  progress.End();

  ReportResult(args, output, result);
  return 0;
}

// The old spellings of three recipes, which Resources/Models/train_*.sh (the recipes of the
// bundled models) and scripts/ still pass: read as the engine's names before the XML's
// enumeration checks the value.
std::vector<std::string> WithEngineRecipeNames(int argc, char **argv)
{
  static const std::map<std::string, std::string> oldSpellings = {
      {"zscore-nonzero", "zscore_nonzero"}, {"zscore-brain", "zscore_mask"}, {"clip", "clip_scale"}};
  std::vector<std::string> args(argv, argv + argc);
  for (size_t i = 1; i + 1 < args.size(); ++i)
    if (args[i] == "--normalization" && oldSpellings.count(args[i + 1]))
      args[i + 1] = oldSpellings.at(args[i + 1]);
  return args;
}

int RunModule(int argc, char **argv)
{
  std::vector<std::string> args = WithEngineRecipeNames(argc, argv);
  std::vector<char *> pointers;
  for (std::string &a : args)
    pointers.push_back(&a[0]);
  pointers.push_back(nullptr);
  return ComboSegMain(argc, pointers.data(), ComboSegTrainXML, &Run);
}

} // namespace

#ifdef COMBOSEG_USE_MPI
int main(int argc, char **argv)
{
  // MPI starts only under mpirun: `--xml` and lone runs never touch it
  if (cs_mpi_init(&argc, &argv, &g_Mpi) != CS_OK)
  {
    std::fprintf(stderr, "error: %s\n", cs_mpi_last_error(g_Mpi));
    return 1;
  }
  const int code = RunModule(argc, argv);
  // A rank that failed outside the agreed steps (e.g. reading its cases) must not wait in
  // MPI_Finalize for ranks that wait for it: end the whole job with its exit code.
  if (code != 0 && cs_mpi_size(g_Mpi) > 1)
    cs_mpi_abort(g_Mpi, code);
  cs_mpi_free(g_Mpi);
  return code;
}
#else
int main(int argc, char **argv)
{
  return RunModule(argc, argv);
}
#endif
