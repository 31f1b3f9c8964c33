/*
 * itkComboSegTrainingState.h - the sidecar beside a training checkpoint (private to the library).
 *
 * What the checkpoint does not hold (epoch, time, best Dice, the run's settings, the history),
 * so that a resumed run continues them. Plain text, one "key value" per line, then the history
 * rows tab-separated: epoch step seconds loss lr mean dice_0 .. dice_K-1.
 */
#ifndef itkComboSegTrainingState_h
#define itkComboSegTrainingState_h

#include "comboseg/comboseg.h"
#include "itkComboSegTrainingSession.h"

#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace itk
{
namespace training
{

// (name, value) pairs, values free of blanks.
using RunSettingList = std::vector<std::pair<std::string, std::string>>;

struct Sidecar
{
  int64_t                             epoch = 0;
  int64_t                             step = 0;
  int64_t                             stepsPerEpoch = 0;
  int32_t                             classes = 0;
  double                              seconds = 0.0;
  int64_t                             bestEpoch = 0;
  double                              bestDice = std::numeric_limits<double>::quiet_NaN();
  RunSettingList                      settings; // RunSettings of the run that wrote it
  std::vector<ComboSegTrainingRecord> history;
};

// What a resumed run must share with the run that wrote the checkpoint (one comma-separated
// entry per channel or axis).
RunSettingList
RunSettings(const cs_model_info & info, const cs_train_config & config, int32_t globalBatch);

// Refuses a resume whose settings differ from the checkpoint's, naming each difference.
void
CheckResumeSettings(const std::string & checkpoint, const RunSettingList & saved, const RunSettingList & now);

// Written atomically.
void
WriteSidecar(const std::string & path, const Sidecar & s);
// False when there is no file; throws, naming the file and line, on one it cannot read.
bool
ReadSidecar(const std::string & path, Sidecar & s);

// The state a run continues from once the checkpoint (`steps` done) is loaded: `fresh` (this
// run's settings) with the epochs, time and history of the sidecar that are not ahead of the
// checkpoint, or with the epoch the checkpoint's step tells when the sidecar is older or absent.
Sidecar
ResumedState(Sidecar fresh, const Sidecar & saved, bool haveSidecar, int64_t steps);

} // namespace training
} // namespace itk

#endif
