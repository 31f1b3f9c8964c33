// itkComboSegTrainingSession.cxx - the training loop; its parts are listed in
// itkComboSegTrainingRun.h.
#include "itkComboSegTrainingSession.h"

#include "itkComboSegFiles.h"
#include "itkComboSegTrainingRun.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace itk
{
using namespace training;

namespace training
{

std::string
FormatDouble(double v, int precision)
{
  if (std::isnan(v))
    return "nan";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", precision, v);
  return buf;
}

double
MeanForeground(const std::vector<double> & dice)
{
  double sum = 0.0;
  int    n = 0;
  for (size_t k = 1; k < dice.size(); ++k)
    if (!std::isnan(dice[k]))
      sum += dice[k], ++n;
  return n ? sum / n : NaN;
}

bool
HasValidation(const std::vector<ComboSegTrainingRecord> & history)
{
  return std::any_of(history.begin(), history.end(), [](const auto & r) { return !std::isnan(r.meanDice); });
}

std::string
JoinNames(const std::vector<std::string> & names)
{
  std::string text;
  for (const std::string & n : names)
    text += (text.empty() ? "" : ", ") + n;
  return text.empty() ? "none" : text;
}

std::vector<std::string>
UnfoundStructures(const std::vector<std::string> & classNames, const std::vector<double> & dice)
{
  std::vector<std::string> unfound;
  for (size_t k = 1; k < dice.size() && k < classNames.size(); ++k)
    if (dice[k] == 0.0) // NaN (not measured) is not "unfound"
      unfound.push_back(classNames[k]);
  return unfound;
}

std::string
EpochComment(int64_t epoch, int64_t epochs, double loss, double dice, const std::vector<std::string> & unfound)
{
  std::ostringstream text;
  text << "epoch " << epoch;
  if (epochs > 0)
    text << "/" << epochs;
  char buf[64];
  std::snprintf(buf, sizeof buf, " loss %.3f", loss);
  text << buf;
  if (!std::isnan(dice))
  {
    std::snprintf(buf, sizeof buf, " Dice %.3f", dice);
    text << buf;
  }
  if (!unfound.empty())
    text << "; not found yet (Dice 0): " << JoinNames(unfound);
  return text.str();
}

} // namespace training

// ------------------------------------------------------------------------------------------

ComboSegTrainingSession::ComboSegTrainingSession()
  : m_TrainConfig(cs_train_config_default())
  , m_Sampling(cs_sampling_options_default())
{
}

ComboSegTrainingSession::~ComboSegTrainingSession() = default;

void
ComboSegTrainingSession::SetNewModel(const cs_unet_config & arch, const std::vector<cs_channel_info> & channels)
{
  m_NewModel = true;
  m_NewArch = arch;
  m_NewChannels = channels;
}

std::string
ComboSegTrainingSession::GetCheckpointFileName() const
{
  if (!m_CheckpointFileName.empty())
    return m_CheckpointFileName;
  return m_OutputModelFileName.empty() ? std::string() : m_OutputModelFileName + ".checkpoint";
}

void
ComboSegTrainingSession::SplitCases(const std::vector<ComboSegCaseFiles> & cases, double fraction, uint64_t seed,
                                    std::vector<ComboSegCaseFiles> & training,
                                    std::vector<ComboSegCaseFiles> & validation)
{
  training.clear();
  validation.clear();
  std::vector<size_t> order(cases.size());
  for (size_t i = 0; i < order.size(); ++i)
    order[i] = i;
  // Fisher-Yates with the engine's generator: the same split on every platform.
  cs_rng rng;
  cs_rng_seed(&rng, seed ^ 0x5EED5A1175ull);
  for (size_t i = order.size(); i > 1; --i)
    std::swap(order[i - 1], order[static_cast<size_t>(cs_rng_below(&rng, static_cast<int64_t>(i)))]);
  size_t nval = 0;
  if (fraction > 0.0 && cases.size() >= 2)
    nval = std::min(cases.size() - 1, std::max<size_t>(1, static_cast<size_t>(std::lround(fraction * cases.size()))));
  for (size_t i = 0; i < order.size(); ++i)
    (i < nval ? validation : training).push_back(cases[order[i]]);
}

ComboSegTrainingResult
ComboSegTrainingSession::Run()
{
  m_History.clear();
  m_ResultModel = nullptr;
  if (m_OutputModelFileName.empty())
    itkGenericExceptionMacro("no output model file was given");
  if (m_TrainingCases.empty())
    itkGenericExceptionMacro("no training cases were given");
  if (m_StepsPerEpoch <= 0)
    itkGenericExceptionMacro("steps per epoch must be positive");
  if (m_Epochs <= 0 && m_TimeBudget <= 0.0)
    itkGenericExceptionMacro("give a number of epochs or a time budget");

  Impl run(*this);
  run.SplitCases();
  run.SetUpModel();
  run.PrepareCases();
  run.SetUpTrainer();
  run.ResumeOrStartOver();
  while (run.MoreEpochs())
  {
    ComboSegTrainingRecord record;
    if (!run.TrainEpoch(record) || !run.Validate(record))
      break; // cancelled: the last checkpoint stays
    run.SaveEpoch(record);
  }
  return run.Finish();
}

// ------------------------------------------------------------------------------------------
// The run's parts

ComboSegTrainingSession::Impl::Impl(ComboSegTrainingSession & session)
  : s(session)
  , epochs(session.m_Epochs > 0 ? session.m_Epochs : 0)
  , parallel(session.m_Peers.size > 1)
  , ctx(context.ctx)
{
  cs_context_set_threads(ctx, s.m_NumberOfThreads);
  // Validation segments as users do: in the segmentation filter's default arithmetic (bfloat16
  // where the CPU has it); the training steps compute float32 whatever this says.
  cs_context_set_inference_precision(ctx, CS_PRECISION_BFLOAT16);
}

void
ComboSegTrainingSession::Impl::SplitCases()
{
  trainingCases = s.m_TrainingCases;
  validationCases = s.m_ValidationCases;
  if (validationCases.empty())
    ComboSegTrainingSession::SplitCases(s.m_TrainingCases, s.m_ValidationFraction, s.m_TrainConfig.seed, trainingCases,
                                        validationCases);
  result.trainingCases = static_cast<int64_t>(trainingCases.size());
  result.validationCases = static_cast<int64_t>(validationCases.size());
}

void
ComboSegTrainingSession::Impl::SetUpTrainer()
{
  config = s.m_TrainConfig;
  for (int i = 0; i < 3; ++i)
    config.patch_size[i] = info.patch_size[i];
  if (info.arch.spatial_dims == 2)
    config.patch_size[2] = 1;
  if (epochs > 0)
    config.total_steps = epochs * s.m_StepsPerEpoch;
  if (parallel)
  {
    if (config.batch_size % s.m_Peers.size != 0)
      itkGenericExceptionMacro("the batch size " << config.batch_size << " must be a multiple of the " << s.m_Peers.size
                                                 << " ranks (each takes an equal share)");
    config.batch_size /= s.m_Peers.size;
  }
  Check(cs_trainer_init(ctx, model.model, &config, &trainer.trainer), ctx, "cannot set up training");

  patchVoxels = int64_t(config.patch_size[0]) * config.patch_size[1] * config.patch_size[2];
  images.resize(static_cast<size_t>(config.batch_size) * C * patchVoxels);
  labels.resize(static_cast<size_t>(config.batch_size) * patchVoxels);
  const int64_t cases = static_cast<int64_t>(trainStore->Size());
  if (trainStore->StreamedCount())
    rotateEvery = std::max<int64_t>(1, s.m_StepsPerEpoch * config.batch_size / cases);
}

double
ComboSegTrainingSession::Impl::Elapsed() const
{
  return secondsBefore + std::chrono::duration<double>(Clock::now() - started).count();
}

bool
ComboSegTrainingSession::Impl::CancelledHere() const
{
  return s.m_Cancelled.load() || (s.m_CancelFlag && s.m_CancelFlag->load());
}

bool
ComboSegTrainingSession::Impl::BudgetUsedHere() const
{
  return s.m_TimeBudget > 0.0 && this->Elapsed() >= s.m_TimeBudget;
}

// Data-parallel: all ranks must stop at the same step, so both are agreed after each step.
bool
ComboSegTrainingSession::Impl::Cancelled() const
{
  return parallel ? agreedCancel : this->CancelledHere();
}
bool
ComboSegTrainingSession::Impl::BudgetUsed() const
{
  return parallel ? agreedBudget : this->BudgetUsedHere();
}

bool
ComboSegTrainingSession::Impl::MoreEpochs()
{
  return !this->Cancelled() && (epochs == 0 || state.epoch < epochs) && !this->BudgetUsed();
}

double
ComboSegTrainingSession::Impl::Fraction(int64_t stepsDone) const
{
  double f = 0.0;
  if (epochs > 0)
    f = double(stepsDone) / double(epochs * s.m_StepsPerEpoch);
  if (s.m_TimeBudget > 0.0)
    f = std::max(f, this->Elapsed() / s.m_TimeBudget);
  return std::min(1.0, f);
}

// Under a time budget the schedule (and the curriculum, which follows it) must end with the
// run: before each step its length becomes the steps done plus those the remaining time allows
// at this run's mean pace so far (validation included), never beyond the epochs. Data-parallel
// ranks measure different times, and their learning rates must agree: they keep the fixed length.
void
ComboSegTrainingSession::Impl::FitScheduleToBudget()
{
  const int64_t done = cs_trainer_steps_done(trainer.trainer);
  if (s.m_TimeBudget <= 0.0 || parallel)
    return;
  double secondsPerStep = 0.0; // this run's pace, else (resuming) the earlier runs'
  if (done > stepsAtStart)
    secondsPerStep = (this->Elapsed() - secondsAtStart) / double(done - stepsAtStart);
  else if (done > 0 && secondsAtStart > 0.0)
    secondsPerStep = secondsAtStart / double(done);
  else
    return; // the first step trains at the peak rate whatever the length
  const double remaining = std::max(0.0, s.m_TimeBudget - this->Elapsed());
  int64_t      total = done + std::max<int64_t>(1, std::llround(remaining / std::max(secondsPerStep, 1e-9)));
  if (epochs > 0)
    total = std::min(total, epochs * s.m_StepsPerEpoch);
  Check(cs_trainer_set_total_steps(trainer.trainer, total), ctx, "cannot set the schedule's length");
}

// One batch of patches from the training cases.
cs_status
ComboSegTrainingSession::Impl::SampleBatch(cs_rng & rng, std::string & message)
{
  try
  {
    for (int32_t b = 0; b < config.batch_size; ++b)
    {
      const size_t i = static_cast<size_t>(cs_rng_below(&rng, static_cast<int64_t>(trainStore->Size())));
      const ComboSegPreparedCase & c = trainStore->Draw(i, rotateEvery);
      Check(cs_sample_patch(ctx, &rng, c.image.data(), c.labels.data(), C, c.size, K, config.patch_size, &sampling,
                            images.data() + size_t(b) * C * patchVoxels, labels.data() + size_t(b) * patchVoxels),
            ctx, "cannot sample a patch of case " + trainStore->Files(i).id);
    }
  }
  catch (const std::exception & e)
  {
    if (!parallel)
      throw;
    message = e.what(); // a bad case: the other ranks must hear of it at this step's agreement
    return CS_ERR_IO;
  }
  return CS_OK;
}

// One optimiser step: CS_OK, or CS_ERR_NUMERIC for a skipped step (weights kept); other
// failures throw.
cs_status
ComboSegTrainingSession::Impl::Step(cs_rng & rng, cs_step_result & step)
{
  std::string message;
  cs_status   st = this->SampleBatch(rng, message);
  if (st == CS_OK)
  {
    this->FitScheduleToBudget();
    st = cs_trainer_step(trainer.trainer, images.data(), labels.data(), &step);
    if (st != CS_OK)
      message = cs_context_last_error(ctx);
  }
  if (parallel)
  {
    // the status all ranks agree on: any rank's failure stops all, with its message
    st = s.m_Peers.StepEnd(st, message);
    if (st != CS_OK && st != CS_ERR_NUMERIC)
      itkGenericExceptionMacro("training step failed: " << message);
    agreedCancel = s.m_Peers.AnyOf(this->CancelledHere());
    agreedBudget = s.m_Peers.AnyOf(this->BudgetUsedHere());
  }
  if (st != CS_ERR_NUMERIC)
    Check(st, ctx, "training step failed");
  return st;
}

void
ComboSegTrainingSession::Impl::ReportStep(int64_t epoch, int64_t step, double lossSum, int64_t lossCount)
{
  if (!s.m_Progress || std::chrono::duration<double>(Clock::now() - lastReport).count() < s.m_ProgressInterval)
    return;
  lastReport = Clock::now();
  char buf[128];
  std::snprintf(buf, sizeof buf, " step %lld/%lld loss %.3f", static_cast<long long>(step + 1),
                static_cast<long long>(s.m_StepsPerEpoch), lossCount ? lossSum / lossCount : NaN);
  s.m_Progress(this->Fraction(cs_trainer_steps_done(trainer.trainer)),
               "epoch " + std::to_string(epoch) + (epochs ? "/" + std::to_string(epochs) : "") + buf);
}

bool
ComboSegTrainingSession::Impl::TrainEpoch(ComboSegTrainingRecord & record)
{
  const int64_t epoch = state.epoch + 1;
  // One generator per epoch: a resumed run samples what an uninterrupted one would have.
  cs_rng rng;
  cs_rng_seed(&rng, config.seed + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(epoch) +
                      0xD1B54A32D192ED03ull * static_cast<uint64_t>(s.m_Peers.rank)); // own patches per rank
  double  lossSum = 0.0;
  int64_t lossCount = 0, skipped = 0;
  float   lr = 0.0f;
  for (int64_t step = 0; step < s.m_StepsPerEpoch && !this->Cancelled(); ++step)
  {
    cs_step_result outcome;
    if (this->Step(rng, outcome) == CS_ERR_NUMERIC)
      ++skipped; // a whole epoch of these is an error below
    else
      lossSum += outcome.loss, ++lossCount, lr = outcome.learning_rate;
    this->ReportStep(epoch, step, lossSum, lossCount);
    if (this->BudgetUsed())
      break;
  }
  if (this->Cancelled())
    return false;
  if (lossCount == 0)
    itkGenericExceptionMacro("epoch " << epoch << ": every step gave a non-finite loss (" << skipped
                                      << " steps); lower the learning rate");
  record.epoch = epoch;
  record.step = cs_trainer_steps_done(trainer.trainer);
  record.trainLoss = lossSum / lossCount;
  record.learningRate = lr;
  return true;
}

// Hard Dice per class on whole validation volumes, averaged over the cases, on the output users
// get (the best epoch is chosen on it).
bool
ComboSegTrainingSession::Impl::Validate(ComboSegTrainingRecord & record)
{
  record.dice.assign(K, NaN);
  if (validStore->Size() > 0)
  {
    std::vector<double> sum(K, 0.0);
    std::vector<int>    count(K, 0);
    std::vector<float>  dice(K);
    for (size_t v = 0; v < validStore->Size() && !this->Cancelled(); ++v)
    {
      const ComboSegPreparedCase & c = validStore->Get(v);
      const std::vector<int32_t>   predicted = SegmentPreparedCase(ctx, model.model, c, inferOptions);
      cs_dice_per_class(predicted.data(), c.labels.data(), c.size[0] * c.size[1] * c.size[2], K, dice.data());
      for (int32_t k = 0; k < K; ++k)
        if (!std::isnan(dice[k]))
          sum[k] += dice[k], ++count[k];
    }
    if (this->Cancelled())
      return false;
    // Kept classes are not in the site's labels: their Dice would only measure that.
    for (int32_t k = 0; k < K; ++k)
      record.dice[k] = count[k] && labelled[static_cast<size_t>(k)] ? sum[k] / count[k] : NaN;
  }
  record.meanDice = MeanForeground(record.dice);
  record.seconds = this->Elapsed();
  return true;
}

ComboSegTrainingResult
ComboSegTrainingSession::Impl::Finish()
{
  result.cancelled = this->Cancelled();
  const int64_t epoch = state.epoch; // epochs finished: a stopped one does not count
  result.completed = !result.cancelled && ((epochs > 0 && epoch >= epochs) || this->BudgetUsed());
  result.epochs = epoch;
  result.steps = cs_trainer_steps_done(trainer.trainer);
  result.seconds = this->Elapsed();
  result.bestEpoch = state.bestEpoch;
  result.bestMeanDice = state.bestDice;

  // The result model: the best of this run, else the one an earlier run wrote.
  const bool earlierModel = ComboSegFileExists(s.m_OutputModelFileName);
  if (!best.model && !earlierModel && !result.cancelled)
    this->SaveBest(); // no epoch finished (e.g. a time budget shorter than one step)
  if (best.model)
  {
    s.m_ResultModel = ComboSegModel::New();
    s.m_ResultModel->SetModel(best.Release());
  }
  else if (earlierModel)
  {
    s.m_ResultModel = ComboSegModel::New();
    s.m_ResultModel->Load(s.m_OutputModelFileName);
  }
  if (!result.cancelled)
    this->WriteReports();
  if (s.m_Progress && result.completed)
    s.m_Progress(1.0, "done: " + EpochComment(epoch, epochs, s.m_History.empty() ? NaN : s.m_History.back().trainLoss,
                                              state.bestDice, {}));
  return result;
}

} // namespace itk
