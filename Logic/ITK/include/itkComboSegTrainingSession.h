/*
 * itkComboSegTrainingSession.h - training or fine-tuning a ComboSeg model on labelled scans.
 *
 * The loop a site runs to train its own model: cases are read and prepared on the model's grid
 * (itkComboSegDataSet.h), patches sampled with the engine's seeded generator, the engine's
 * trainer stepped, the model validated after each epoch (hard Dice per class on whole validation
 * volumes, as ComboSegSegment gives them: voxels that hold no data for the model are background
 * and the model's recommended clean-up is applied), and everything a killed run needs to resume written atomically: the
 * checkpoint, a small sidecar with the epoch and the history, the best model so far, the history table and a PNG plot
 * of the curves.
 *
 *     itk::ComboSegTrainingSession session;
 *     session.SetTrainingCases(itk::ReadMSDDataSet("Task01").cases);
 *     session.SetBaseModelFileName("brain-structures-t1.safetensors");
 *     session.SetEpochs(20);
 *     session.SetOutputModelFileName("site.safetensors");     // checkpoint goes beside it
 *     session.SetHistoryFileName("site-history.tsv");
 *     session.SetProgressCallback([](double f, const std::string &text) { ... });
 *     itk::ComboSegTrainingResult result = session.Run();    // throws itk::ExceptionObject
 */
#ifndef itkComboSegTrainingSession_h
#define itkComboSegTrainingSession_h

#include "comboseg/comboseg.h"
#include "itkComboSegDataSet.h"
#include "itkComboSegIO.h"
#include "itkComboSegModel.h"
#include "itkMacro.h"

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace itk
{

/** One epoch of the training history. */
struct ComboSegTrainingRecord
{
  int64_t             epoch = 0;          // 1-based
  int64_t             step = 0;           // optimiser steps done at the end of the epoch
  double              seconds = 0.0;      // training time so far, over all runs of a resumed session
  double              trainLoss = 0.0;    // mean loss of the epoch's steps
  double              learningRate = 0.0; // at the epoch's last step
  std::vector<double> dice;               // (K) validation hard Dice per class, NaN where absent
  double              meanDice = 0.0;     // mean foreground Dice; NaN without validation cases
};

/** What a Run() did. */
struct ComboSegTrainingResult
{
  bool                     completed = false; // the epochs or the time budget were used up
  bool                     cancelled = false;
  bool                     resumed = false; // continued from a checkpoint
  int64_t                  epochs = 0;      // epochs done, earlier runs included
  int64_t                  steps = 0;
  double                   seconds = 0.0;
  int64_t                  bestEpoch = 0;      // epoch whose model went to the output file
  double                   bestMeanDice = 0.0; // NaN without validation cases
  std::vector<std::string> addedClasses;       // structures the base model lacked
  std::vector<std::string> trainedClasses;     // foreground classes the site's labels mark
  std::vector<std::string> keptClasses;        // a base model's classes the labels lack: kept as they were
  int64_t                  trainingCases = 0;
  int64_t                  validationCases = 0;
};

/** A new model's configuration chosen from its training cases (as nnU-Net does from its data
 * set fingerprint), with the reasons in words. */
struct ComboSegDataConfiguration
{
  std::vector<cs_channel_info> channels;                     // modality and normalisation per channel (names empty)
  std::array<double, 3>        spacing{ { 1.0, 1.0, 1.0 } }; // mm, physical x y z (RAS axes)
  std::array<int32_t, 3>       patchSize{ { 64, 64, 64 } };
  std::string                  modalityReason, normalizationReason, spacingReason, patchReason;
};

class ComboSegTrainingSession
{
public:
  ITK_DISALLOW_COPY_AND_MOVE(ComboSegTrainingSession);

  /** fraction of the whole run in [0, 1] and a line for the user, e.g. "epoch 3/20 loss 0.412 Dice 0.81". */
  using ProgressCallback = std::function<void(double fraction, const std::string & comment)>;

  ComboSegTrainingSession();
  ~ComboSegTrainingSession();

  /** Data. Without validation cases, ValidationFraction of the training cases (seeded shuffle)
   * validate. Label names map the cases' label values to the model's classes by name. */
  void
  SetTrainingCases(const std::vector<ComboSegCaseFiles> & cases)
  {
    m_TrainingCases = cases;
  }
  void
  AddTrainingCase(const ComboSegCaseFiles & c)
  {
    m_TrainingCases.push_back(c);
  }
  void
  SetValidationCases(const std::vector<ComboSegCaseFiles> & cases)
  {
    m_ValidationCases = cases;
  }
  void
  SetLabelNames(const std::vector<LabelName> & names)
  {
    m_LabelNames = names;
  }
  void
  SetValidationFraction(double f)
  {
    m_ValidationFraction = f;
  }
  double
  GetValidationFraction() const
  {
    return m_ValidationFraction;
  }

  /** The starting point: a base model (file or object, which is copied, never changed), or a new
   * architecture whose classes come from the label names (or the label values found). */
  void
  SetBaseModelFileName(const std::string & path)
  {
    m_BaseModelFileName = path;
  }
  void
  SetBaseModel(ComboSegModel * model)
  {
    m_BaseModel = model;
  }
  void
  SetNewModel(const cs_unet_config & arch, const std::vector<cs_channel_info> & channels);
  /** New models: target spacing in mm (x y z, 1 1 1) and orientation ("RAS"). */
  void
  SetTargetSpacing(const std::array<double, 3> & spacing)
  {
    m_TargetSpacing = spacing;
  }
  void
  SetOrientation(const std::string & o)
  {
    m_Orientation = o;
  }
  /** Metadata written into the model; empty keeps the base model's (or a generated text). */
  void
  SetModelName(const std::string & s)
  {
    m_ModelName = s;
  }
  void
  SetModelDescription(const std::string & s)
  {
    m_ModelDescription = s;
  }
  void
  SetTrainingDataDescription(const std::string & s)
  {
    m_TrainingDataDescription = s;
  }
  void
  SetLicence(const std::string & s)
  {
    m_Licence = s;
  }
  /** The test-time mirroring the model recommends to segmenters (a mask of x 1, y 2, z 4, e.g. 1
   * when cross-validation showed that averaging with the left-right mirror pays); below 0 keeps
   * the base model's (a new model's: none). */
  void
  SetRecommendedTestTimeMirrorAxes(int axes)
  {
    m_RecommendedTestTimeMirrorAxes = axes;
  }
  /** Whether the model recommends keeping the largest piece of each structure (1) or no clean-up
   * (0) to segmenters; below 0 keeps the base model's (a new model's: 1). Structures that come in
   * pieces by nature (a tumour's sub-regions) lose to the clean-up (docs/design.md, clean-up). */
  void
  SetRecommendedLargestComponent(int recommended)
  {
    m_RecommendedLargestComponent = recommended;
  }
  /** Fine-tuning: structures named in the label names that the base model lacks become new
   * classes (the head grows, old classes are kept). Off: such names are an error. */
  void
  SetAddMissingClasses(bool on)
  {
    m_AddMissingClasses = on;
  }

  /** Optimiser, loss (alpha, beta, curriculum), batch and patch size, seed. A zero patch size
   * takes the model's. With epochs set, the schedule's total_steps becomes epochs x steps; under
   * a time budget it is re-estimated before each step from the run's pace, so that the learning
   * rate and the curriculum end when the budget does (or at the epochs, whichever comes first). */
  void
  SetTrainConfig(const cs_train_config & config)
  {
    m_TrainConfig = config;
  }
  const cs_train_config &
  GetTrainConfig() const
  {
    return m_TrainConfig;
  }
  void
  SetSamplingOptions(const cs_sampling_options & o)
  {
    m_Sampling = o;
  }
  const cs_sampling_options &
  GetSamplingOptions() const
  {
    return m_Sampling;
  }
  /** Epochs (0: until the time budget), steps per epoch, time budget in seconds (0: none). */
  void
  SetEpochs(int64_t n)
  {
    m_Epochs = n;
  }
  void
  SetStepsPerEpoch(int64_t n)
  {
    m_StepsPerEpoch = n;
  }
  void
  SetTimeBudget(double seconds)
  {
    m_TimeBudget = seconds;
  }
  void
  SetNumberOfThreads(int n)
  {
    m_NumberOfThreads = n;
  }
  /** Prepared cases are kept in memory while their total stays under this (bytes); the others
   * are read again when needed. */
  void
  SetMemoryBudget(uint64_t bytes)
  {
    m_MemoryBudget = bytes;
  }
  /** Window overlap of the validation predictions (0.25). */
  void
  SetValidationOverlap(float overlap)
  {
    m_ValidationOverlap = overlap;
  }

  /** Files. The output model (the best validation epoch, written atomically) is required; the
   * checkpoint defaults to "<output>.checkpoint" with its sidecar "<checkpoint>.session". */
  void
  SetOutputModelFileName(const std::string & p)
  {
    m_OutputModelFileName = p;
  }
  void
  SetCheckpointFileName(const std::string & p)
  {
    m_CheckpointFileName = p;
  }
  std::string
  GetCheckpointFileName() const;
  /** Resume from an existing checkpoint (on by default); off starts over. A checkpoint whose run
   * had other settings (modality, normalisation, intensity range, spacing, learning rate, loss,
   * patch or batch size) is refused, naming each difference. */
  void
  SetResume(bool on)
  {
    m_Resume = on;
  }
  void
  SetHistoryFileName(const std::string & p)
  {
    m_HistoryFileName = p;
  }
  void
  SetPlotFileName(const std::string & p)
  {
    m_PlotFileName = p;
  }

  void
  SetProgressCallback(ProgressCallback cb)
  {
    m_Progress = std::move(cb);
  }
  /** Least seconds between two progress reports within an epoch (0.5); the end of each epoch is
   * always reported. */
  void
  SetProgressInterval(double seconds)
  {
    m_ProgressInterval = seconds;
  }
  /** Polled between steps, e.g. set by a signal handler; Cancel() sets the session's own. */
  void
  SetCancelFlag(const std::atomic<bool> * flag)
  {
    m_CancelFlag = flag;
  }
  void
  Cancel()
  {
    m_Cancelled = true;
  }

  /** Data-parallel training (ComboSegTrain under mpirun, Logic/Distributed): this process is
   * rank `rank` of `size` and every rank runs Run() with the same settings. The batch size is the
   * global batch, split evenly over the ranks; each rank reads its own share of the training
   * cases (all of them when there are fewer cases than ranks) and samples its own patches; only
   * rank 0 validates and writes files. The functions are collective: Attach makes the trainer
   * data-parallel, StepEnd turns this rank's step status (and message) into the status agreed by
   * all ranks (and its message), AnyOf is true on every rank when any rank's flag is. */
  struct Peers
  {
    int                                                                   rank = 0;
    int                                                                   size = 1;
    std::function<cs_status(cs_trainer_t trainer, std::string & message)> Attach;
    std::function<cs_status(cs_status local, std::string & message)>      StepEnd;
    std::function<bool(bool flag)>                                        AnyOf;
  };
  void
  SetPeers(const Peers & peers)
  {
    m_Peers = peers;
  }
  /** Trains. Throws itk::ExceptionObject naming the problem (and the file) on any failure. */
  ComboSegTrainingResult
  Run();

  const std::vector<ComboSegTrainingRecord> &
  GetHistory() const
  {
    return m_History;
  }
  /** The best model of the run (what went to the output file). */
  ComboSegModel::Pointer
  GetModel() const
  {
    return m_ResultModel;
  }

  /** Reads the cases' scans and label maps and chooses, per channel, the modality (CT when most
   * scans are CT by their DICOM Modality tag or CT's Hounsfield signature, as the modality check
   * reads them, ComboSegScanModality; otherwise MR for non-negative scans, "other" for scans
   * already normalised) and the
   * normalisation (CT: clip to the 0.5 and 99.5 percentiles of the labelled voxels, then z-score
   * by their mean and standard deviation; otherwise z-score over the non-zero voxels); the
   * target spacing (the median of the cases' spacings along each axis); and the patch size (the
   * median image size in voxels at that spacing, rounded up to a multiple of 2^(levels-1) and
   * capped at 64 voxels per axis, 256 in 2D). Throws on unreadable files. */
  static ComboSegDataConfiguration
  ChooseConfiguration(const std::vector<ComboSegCaseFiles> & cases, int32_t levels, int32_t spatialDims);

  /** The training split: cases not drawn for validation, from a seeded shuffle. At least one
   * case stays for training; fraction 0 (or one case) validates on none. */
  static void
  SplitCases(const std::vector<ComboSegCaseFiles> & cases, double fraction, uint64_t seed,
             std::vector<ComboSegCaseFiles> & training, std::vector<ComboSegCaseFiles> & validation);
  /** The history as a tab-separated table (a Slicer table): epoch, step, seconds, train_loss,
   * learning_rate, then (when validated) one dice column per foreground class and mean_dice.
   * Written atomically. */
  static void
  WriteHistoryTable(const std::string & path, const std::vector<std::string> & classNames,
                    const std::vector<ComboSegTrainingRecord> & history);
  /** A PNG plot: train loss (orange, scaled to its range) and, when validated, the mean
   * validation Dice (blue, 0 to 1) per epoch. Written atomically. */
  static void
  WriteHistoryPlot(const std::string & path, const std::vector<ComboSegTrainingRecord> & history);

private:
  struct Impl;

  std::vector<ComboSegCaseFiles> m_TrainingCases;
  std::vector<ComboSegCaseFiles> m_ValidationCases;
  std::vector<LabelName>         m_LabelNames;
  double                         m_ValidationFraction = 0.2;

  std::string                  m_BaseModelFileName;
  ComboSegModel::Pointer       m_BaseModel;
  bool                         m_NewModel = false;
  cs_unet_config               m_NewArch{};
  std::vector<cs_channel_info> m_NewChannels;
  std::array<double, 3>        m_TargetSpacing{ { 1.0, 1.0, 1.0 } };
  std::string                  m_Orientation = "RAS";
  std::string                  m_ModelName;
  std::string                  m_ModelDescription;
  std::string                  m_TrainingDataDescription;
  std::string                  m_Licence;
  int                          m_RecommendedTestTimeMirrorAxes = -1;
  int                          m_RecommendedLargestComponent = -1;
  bool                         m_AddMissingClasses = true;

  cs_train_config     m_TrainConfig;
  cs_sampling_options m_Sampling;
  int64_t             m_Epochs = 10;
  int64_t             m_StepsPerEpoch = 50;
  double              m_TimeBudget = 0.0;
  int                 m_NumberOfThreads = 0;
  uint64_t            m_MemoryBudget = 4ull << 30;
  float               m_ValidationOverlap = static_cast<float>(CS_OVERLAP_DEFAULT);

  std::string m_OutputModelFileName;
  std::string m_CheckpointFileName;
  bool        m_Resume = true;
  std::string m_HistoryFileName;
  std::string m_PlotFileName;

  ProgressCallback          m_Progress;
  double                    m_ProgressInterval = 0.5;
  const std::atomic<bool> * m_CancelFlag = nullptr;
  std::atomic<bool>         m_Cancelled{ false };

  std::vector<ComboSegTrainingRecord> m_History;
  ComboSegModel::Pointer              m_ResultModel;
  Peers                               m_Peers;
};

} // namespace itk

#endif
