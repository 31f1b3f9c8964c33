/*
 * itkComboSegTrainingRun.h - one Run() of a training session: its state and its parts (private
 * to the library). The parts are defined beside what they work on:
 *   itkComboSegTrainingSession.cxx  the loop: epochs, steps, stopping, validation, the result
 *   itkComboSegTrainingModel.cxx    SetUpModel: a new model, or a base model with grown classes; metadata
 *   itkComboSegCaseStore.cxx        PrepareCases: the case stores, MPI shards, partial labels
 *   itkComboSegTrainingState.cxx    ResumeOrStartOver, SaveEpoch: checkpoint, sidecar, best model
 *   itkComboSegTrainingReports.cxx  WriteReports: history table and plot
 */
#ifndef itkComboSegTrainingRun_h
#define itkComboSegTrainingRun_h

#include "itkComboSegCaseStore.h"
#include "itkComboSegTrainingParts.h"
#include "itkComboSegTrainingSession.h"
#include "itkComboSegTrainingState.h"

#include <chrono>
#include <memory>

namespace itk
{

struct ComboSegTrainingSession::Impl
{
  using Clock = std::chrono::steady_clock;

  explicit Impl(ComboSegTrainingSession & session);

  // The parts, in the order Run() calls them.
  void
  SplitCases();
  void
  SetUpModel();
  void
  PrepareCases();
  void
  SetUpTrainer();
  void
  ResumeOrStartOver();
  bool
  MoreEpochs();
  bool
  TrainEpoch(ComboSegTrainingRecord & record); // false when cancelled
  bool
  Validate(ComboSegTrainingRecord & record); // false when cancelled
  void
  SaveEpoch(const ComboSegTrainingRecord & record);
  ComboSegTrainingResult
  Finish();

  // SetUpModel's parts.
  void
  CreateNewModel();
  void
  LoadBaseModel();
  void
  AddMissingClasses();
  void
  WriteMetadata();
  // PrepareCases' parts.
  std::vector<ComboSegCaseFiles>
  TrainingShard() const;
  void
  KeepUnlabelledClasses();
  // The loop's parts.
  cs_status
  SampleBatch(cs_rng & rng, std::string & message);
  cs_status
  Step(cs_rng & rng, cs_step_result & step);
  void
  FitScheduleToBudget();
  void
  ReportStep(int64_t epoch, int64_t s, double lossSum, int64_t lossCount);
  void
  SaveBest();
  void
  WriteReports();
  double
  Elapsed() const;
  double
  Fraction(int64_t stepsDone) const;
  bool
  CancelledHere() const;
  bool
  BudgetUsedHere() const;
  bool
  Cancelled() const;
  bool
  BudgetUsed() const;

  ComboSegTrainingSession & s;
  const Clock::time_point   started = Clock::now();
  const int64_t             epochs; // 0: until the time budget
  const bool                parallel;
  training::Context         context;
  cs_context_t              ctx;
  ComboSegTrainingResult    result;

  std::vector<ComboSegCaseFiles> trainingCases, validationCases;
  std::vector<LabelName>         siteNames; // the structures the cases name

  training::ModelOwner     model;
  std::string              provenance; // "fine-tuned from <base>; " or empty
  cs_model_info            info{};
  int32_t                  K = 0, C = 0;
  std::vector<std::string> classNames;
  std::vector<int32_t>     mirrorClasses;
  cs_sampling_options      sampling{};

  std::unique_ptr<training::CaseStore> trainStore, validStore;
  cs_infer_options                     inferOptions{};
  std::vector<uint8_t>                 labelled;   // per class: 1 trained on the site's labels, 0 kept from the base
  training::ModelOwner                 frozenBase; // the base model as it was, for pseudo-labels of streamed cases

  cs_train_config        config{};
  training::TrainerOwner trainer;
  std::vector<float>     images; // one batch of patches
  std::vector<int32_t>   labels;
  int64_t                patchVoxels = 0;
  int64_t                rotateEvery = 1;

  std::string          checkpoint, sidecarPath;
  training::Sidecar    state;
  double               secondsBefore = 0.0; // training time of earlier runs
  int64_t              stepsAtStart = 0;
  double               secondsAtStart = 0.0;
  bool                 agreedCancel = false, agreedBudget = false; // data-parallel: stops agreed after each step
  Clock::time_point    lastReport = Clock::now();
  training::ModelOwner best; // best model so far: in memory for GetModel(), on disk at the output path
};

} // namespace itk

#endif
