// itkComboSegTrainingState.cxx - the sidecar beside a training checkpoint, and the resume rule.
#include "itkComboSegTrainingState.h"

#include "itkComboSegFiles.h"
#include "itkComboSegTrainingParts.h"
#include "itkComboSegTrainingRun.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

namespace itk
{
namespace training
{
namespace
{

const char * const SidecarMagic = "comboseg-training-session 1";

const char *
NormalizationName(cs_norm_kind norm)
{
  switch (norm)
  {
    case CS_NORM_CLIP_SCALE: return "clip";
    case CS_NORM_ZSCORE_NONZERO: return "zscore-nonzero";
    case CS_NORM_ZSCORE_MASK: return "zscore-brain";
    case CS_NORM_ZSCORE: return "zscore";
    case CS_NORM_UPPER_PEAK: return "upper_peak";
    default: return "none";
  }
}

const char *
ModalityName(cs_modality modality)
{
  switch (modality)
  {
    case CS_MODALITY_CT: return "CT";
    case CS_MODALITY_MR: return "MR";
    case CS_MODALITY_PET: return "PET";
    case CS_MODALITY_US: return "US";
    default: return "other";
  }
}

// What a sidecar says where it cannot be read: its file and line, and the text found there.
struct SidecarReader
{
  const std::string & path;
  int                 line = 0;

  [[noreturn]] void
  Fail(const std::string & problem) const
  {
    itkGenericExceptionMacro("cannot resume: " << path << " line " << line << ": " << problem
                                               << " (start over to ignore the checkpoint)");
  }
  int64_t
  Integer(const std::string & name, const std::string & text) const
  {
    long long value = 0;
    if (!ComboSegParseInt(text, value))
      this->Fail(name + " '" + ComboSegPrintable(text) + "' is not an integer");
    return value;
  }
  double
  Number(const std::string & name, const std::string & text) const // "nan" included
  {
    double value = 0.0;
    if (!ComboSegParseDouble(text, value))
      this->Fail(name + " '" + ComboSegPrintable(text) + "' is not a number");
    return value;
  }
};

std::vector<std::string>
SplitTabs(const std::string & line)
{
  std::vector<std::string> fields;
  std::string              field;
  std::istringstream       in(line);
  while (std::getline(in, field, '\t'))
    fields.push_back(field);
  return fields;
}

} // namespace

RunSettingList
RunSettings(const cs_model_info & info, const cs_train_config & config, int32_t globalBatch)
{
  std::string modality, normalization, range, spacing, patch;
  for (int32_t c = 0; c < info.arch.in_channels; ++c)
  {
    const cs_channel_info & ch = info.channels[c];
    const std::string       sep = c ? "," : "";
    modality += sep + ModalityName(ch.modality);
    normalization += sep + NormalizationName(ch.norm);
    if (ch.norm == CS_NORM_CLIP_SCALE)
      range += sep + FormatDouble(ch.clip_low) + ".." + FormatDouble(ch.clip_high);
  }
  for (int i = 0; i < 3; ++i)
  {
    spacing += (i ? "," : "") + FormatDouble(info.spacing[i]);
    patch += (i ? "," : "") + std::to_string(config.patch_size[i]);
  }
  RunSettingList settings = {
    { "modality", modality },
    { "normalization", normalization },
    { "target_spacing", spacing },
    { "learning_rate", FormatDouble(config.learning_rate) },
    { "loss", cs_loss_kind_name(config.loss.kind) },
    { "patch_size", patch },
    { "batch_size", std::to_string(globalBatch) },
  };
  if (!range.empty())
    settings.insert(settings.begin() + 2, { "intensity_range", range });
  return settings;
}

void
CheckResumeSettings(const std::string & checkpoint, const RunSettingList & saved, const RunSettingList & now)
{
  if (saved.empty())
    return; // a sidecar from before settings were recorded
  const std::map<std::string, std::string> before(saved.begin(), saved.end());
  std::ostringstream                       differences;
  for (const auto & setting : now)
  {
    const auto found = before.find(setting.first);
    if (found == before.end() || found->second == setting.second)
      continue;
    differences << (differences.tellp() > 0 ? "; " : "") << setting.first << " " << found->second << " then, "
                << setting.second << " now";
  }
  if (differences.tellp() > 0)
    itkGenericExceptionMacro("cannot resume from " << checkpoint << ": its settings differ from this run's ("
                                                   << differences.str()
                                                   << "). Start over (ComboSegTrain --restart), or run again with "
                                                      "the checkpoint's settings to continue it");
}

void
WriteSidecar(const std::string & path, const Sidecar & s)
{
  std::ostringstream out;
  out << SidecarMagic << "\n"
      << "epoch " << s.epoch << "\nstep " << s.step << "\nsteps_per_epoch " << s.stepsPerEpoch << "\nclasses "
      << s.classes << "\nseconds " << FormatDouble(s.seconds, 10) << "\nbest_epoch " << s.bestEpoch << "\nbest_dice "
      << FormatDouble(s.bestDice, 10) << "\n";
  for (const auto & setting : s.settings)
    out << "setting " << setting.first << " " << setting.second << "\n";
  out << "history\n";
  for (const auto & r : s.history)
  {
    out << r.epoch << '\t' << r.step << '\t' << FormatDouble(r.seconds, 10) << '\t' << FormatDouble(r.trainLoss, 9)
        << '\t' << FormatDouble(r.learningRate, 9) << '\t' << FormatDouble(r.meanDice, 9);
    for (double d : r.dice)
      out << '\t' << FormatDouble(d, 9);
    out << '\n';
  }
  ComboSegWriteFileAtomically(path, out.str());
}

namespace
{

// One "key value" line of the sidecar's head.
void
ReadSidecarKey(const SidecarReader & reader, const std::string & text, Sidecar & s)
{
  std::istringstream kv(text);
  std::string        key, value;
  kv >> key >> value;
  if (key == "epoch")
    s.epoch = reader.Integer(key, value);
  else if (key == "step")
    s.step = reader.Integer(key, value);
  else if (key == "steps_per_epoch")
    s.stepsPerEpoch = reader.Integer(key, value);
  else if (key == "classes")
    s.classes = static_cast<int32_t>(reader.Integer(key, value));
  else if (key == "seconds")
    s.seconds = reader.Number(key, value);
  else if (key == "best_epoch")
    s.bestEpoch = reader.Integer(key, value);
  else if (key == "best_dice")
    s.bestDice = reader.Number(key, value);
  else if (key == "setting")
  {
    std::string settingValue;
    kv >> settingValue;
    s.settings.emplace_back(value, settingValue);
  }
}

// One history row: epoch step seconds loss lr mean dice_0 .. dice_K-1.
ComboSegTrainingRecord
ReadHistoryRow(const SidecarReader & reader, const std::string & text, int32_t classes)
{
  const std::vector<std::string> f = SplitTabs(text);
  if (classes < 0 || f.size() < 6 + static_cast<size_t>(classes))
    reader.Fail("a truncated history row");
  ComboSegTrainingRecord r;
  r.epoch = reader.Integer("epoch", f[0]);
  r.step = reader.Integer("step", f[1]);
  r.seconds = reader.Number("seconds", f[2]);
  r.trainLoss = reader.Number("loss", f[3]);
  r.learningRate = reader.Number("learning rate", f[4]);
  r.meanDice = reader.Number("mean Dice", f[5]);
  for (int32_t k = 0; k < classes; ++k)
    r.dice.push_back(reader.Number("Dice", f[6 + k]));
  return r;
}

} // namespace

bool
ReadSidecar(const std::string & path, Sidecar & s)
{
  std::ifstream in(path);
  if (!in)
    return false;
  SidecarReader reader{ path };
  std::string   line;
  ++reader.line;
  if (!std::getline(in, line) || line != SidecarMagic)
    itkGenericExceptionMacro("cannot resume: " << path << " is not a training-session file");
  while (++reader.line, std::getline(in, line) && line != "history")
    ReadSidecarKey(reader, line, s);
  while (++reader.line, std::getline(in, line))
    s.history.push_back(ReadHistoryRow(reader, line, s.classes));
  return true;
}

Sidecar
ResumedState(Sidecar fresh, const Sidecar & saved, bool haveSidecar, int64_t steps)
{
  const int64_t stepsPerEpoch = fresh.stepsPerEpoch;
  Sidecar       state = fresh;
  if (haveSidecar && saved.step >= steps)
  {
    // The sidecar is written before the checkpoint: a run killed between the two left it one
    // epoch ahead, so the epochs after the checkpoint are dropped and trained again.
    state = saved;
    state.history.clear();
    state.bestDice = NaN;
    state.bestEpoch = 0;
    state.epoch = 0;
    state.seconds = 0.0;
    for (const ComboSegTrainingRecord & r : saved.history)
    {
      if (r.step > steps)
        break;
      state.history.push_back(r);
      state.epoch = r.epoch;
      state.seconds = r.seconds;
      if (std::isnan(state.bestDice) || r.meanDice > state.bestDice)
        state.bestDice = r.meanDice, state.bestEpoch = r.epoch;
    }
  }
  else
  {
    // No sidecar (or an older one): the checkpoint's step tells the epoch; the history is lost.
    state.history = saved.history;
    state.bestDice = saved.bestDice;
    state.bestEpoch = saved.bestEpoch;
    state.seconds = saved.seconds;
    state.stepsPerEpoch = haveSidecar && saved.stepsPerEpoch > 0 ? saved.stepsPerEpoch : stepsPerEpoch;
    state.epoch = steps / state.stepsPerEpoch;
  }
  state.step = steps;
  state.stepsPerEpoch = stepsPerEpoch;
  state.settings = fresh.settings;
  return state;
}

} // namespace training
} // namespace itk

// ------------------------------------------------------------------------------------------
// The run's checkpoint: resumed from, or removed when starting over; written after each epoch.

namespace itk
{
using namespace training;

void
ComboSegTrainingSession::Impl::ResumeOrStartOver()
{
  checkpoint = s.GetCheckpointFileName();
  sidecarPath = checkpoint + ".session";
  state.stepsPerEpoch = s.m_StepsPerEpoch;
  state.classes = K;
  state.settings = RunSettings(info, config, s.m_TrainConfig.batch_size);
  if (!s.m_Resume)
  {
    // Starting over: a stale checkpoint must not pair with this run's sidecar after a kill.
    std::remove(checkpoint.c_str());
    std::remove(sidecarPath.c_str());
  }
  else if (ComboSegFileExists(checkpoint))
  {
    Sidecar    saved;
    const bool haveSidecar = ReadSidecar(sidecarPath, saved);
    if (haveSidecar && saved.classes != K)
      itkGenericExceptionMacro("cannot resume from " << checkpoint << ": it was trained for " << saved.classes
                                                     << " classes, this run has " << K << " (start over)");
    if (haveSidecar)
      CheckResumeSettings(checkpoint, saved.settings, state.settings);
    const cs_status st = cs_trainer_load_checkpoint(trainer.trainer, checkpoint.c_str());
    if (st != CS_OK)
      ComboSegThrowEngineError(__FILE__, __LINE__,
                               ("cannot resume from " + checkpoint + " (start over to ignore it)").c_str(), st, ctx);
    state = ResumedState(state, saved, haveSidecar, cs_trainer_steps_done(trainer.trainer));
    result.resumed = true;
  }
  if (parallel)
  {
    // every rank must start from the same step (the same checkpoint); rank 0's weights go to all
    std::string message;
    if (s.m_Peers.Attach(trainer.trainer, message) != CS_OK)
      itkGenericExceptionMacro("cannot start data-parallel training: " << message);
  }
  s.m_History = state.history;
  secondsBefore = state.seconds;
  stepsAtStart = cs_trainer_steps_done(trainer.trainer);
  secondsAtStart = this->Elapsed();
  lastReport = Clock::now();
  if (result.resumed && s.m_Progress)
    s.m_Progress(this->Fraction(state.step),
                 "resuming after epoch " + std::to_string(state.epoch) + " (step " + std::to_string(state.step) + ")");
}

void
ComboSegTrainingSession::Impl::SaveBest()
{
  if (s.m_Peers.rank == 0) // data-parallel: every rank holds the same weights, rank 0 writes
    Check(cs_model_save(ctx, model.model, s.m_OutputModelFileName.c_str()), ctx,
          "cannot write the model " + s.m_OutputModelFileName);
  best.Reset(CloneModel(ctx, model.model));
}

// The best model, the checkpoint and its sidecar, the reports.
void
ComboSegTrainingSession::Impl::SaveEpoch(const ComboSegTrainingRecord & record)
{
  s.m_History.push_back(record);
  const bool improved = validStore->Size() == 0 || std::isnan(state.bestDice) ||
                        (!std::isnan(record.meanDice) && record.meanDice > state.bestDice);
  if (improved)
  {
    this->SaveBest();
    state.bestDice = record.meanDice;
    state.bestEpoch = record.epoch;
  }
  // Sidecar first, then the checkpoint: a kill between the two leaves the sidecar ahead,
  // which resuming can undo (the reverse could not be).
  state.epoch = record.epoch;
  state.step = record.step;
  state.seconds = record.seconds;
  state.history = s.m_History;
  if (s.m_Peers.rank == 0)
  {
    WriteSidecar(sidecarPath, state);
    Check(cs_trainer_save_checkpoint(trainer.trainer, checkpoint.c_str()), ctx,
          "cannot write the checkpoint " + checkpoint);
  }
  this->WriteReports();
  if (s.m_Progress)
    s.m_Progress(this->Fraction(record.step), EpochComment(record.epoch, epochs, record.trainLoss, record.meanDice,
                                                           UnfoundStructures(classNames, record.dice)));
}

} // namespace itk
