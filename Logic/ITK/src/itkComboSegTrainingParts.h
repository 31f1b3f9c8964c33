/*
 * itkComboSegTrainingParts.h - the pieces itkComboSegTrainingSession.cxx runs a training with
 * (private to the library, not installed):
 *   engine handle owners and small formatting helpers (here),
 *   the model set-up: new model, base model and its grown classes, metadata (itkComboSegTrainingModel.cxx),
 *   the case store and partial labels' pseudo-labels (itkComboSegCaseStore.cxx),
 *   the sidecar beside the checkpoint and the resume rule (itkComboSegTrainingState.cxx),
 *   the history table and plot (itkComboSegTrainingReports.cxx, itkComboSegTrainingPlot.cxx).
 */
#ifndef itkComboSegTrainingParts_h
#define itkComboSegTrainingParts_h

#include "comboseg/comboseg.h"
#include "itkComboSegModel.h"
#include "itkComboSegTrainingSession.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace itk
{
namespace training
{

constexpr double NaN = std::numeric_limits<double>::quiet_NaN();

inline void
Check(cs_status status, cs_context_t ctx, const std::string & what)
{
  if (status != CS_OK)
    ComboSegThrowEngineError(__FILE__, __LINE__, what.c_str(), status, ctx);
}

// Owners of engine handles, so that every exit path frees them.
struct Context
{
  cs_context_t ctx = nullptr;
  Context() { Check(cs_context_init(&ctx), nullptr, "cannot create an engine context"); }
  ~Context() { cs_context_free(ctx); }
  Context(const Context &) = delete;
  Context &
  operator=(const Context &) = delete;
};

struct ModelOwner
{
  cs_model_t model = nullptr;
  ModelOwner() = default;
  ModelOwner(const ModelOwner &) = delete;
  ModelOwner &
  operator=(const ModelOwner &) = delete;
  ~ModelOwner() { cs_model_free(model); }
  void
  Reset(cs_model_t m)
  {
    cs_model_free(model);
    model = m;
  }
  cs_model_t
  Release()
  {
    return std::exchange(model, nullptr);
  }
};

struct TrainerOwner
{
  cs_trainer_t trainer = nullptr;
  TrainerOwner() = default;
  TrainerOwner(const TrainerOwner &) = delete;
  TrainerOwner &
  operator=(const TrainerOwner &) = delete;
  ~TrainerOwner() { cs_trainer_free(trainer); }
};

// A copy of a model that the caller may change freely.
inline cs_model_t
CloneModel(cs_context_t ctx, cs_model_t model)
{
  cs_model_t copy = nullptr;
  Check(cs_model_add_classes(ctx, model, nullptr, 0, &copy), ctx, "cannot copy the model");
  return copy;
}

// Copies s into a fixed engine field, cut at a UTF-8 character boundary.
template <size_t N>
void
CopyText(char (&dst)[N], const std::string & s)
{
  size_t n = std::min(s.size(), N - 1);
  while (n > 0 && n < s.size() && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80)
    --n;
  std::memcpy(dst, s.data(), n);
  dst[n] = '\0';
}

// "%.<precision>g", or "nan".
std::string
FormatDouble(double v, int precision = 6);
// Mean over the classes 1..K-1 that have a value.
double
MeanForeground(const std::vector<double> & dice);
// Whether any epoch was validated (a run without validation cases has NaN everywhere).
bool
HasValidation(const std::vector<ComboSegTrainingRecord> & history);
// "a, b, c", or "none".
std::string
JoinNames(const std::vector<std::string> & names);
// The foreground classes whose validation Dice is exactly 0: not a voxel of them found.
std::vector<std::string>
UnfoundStructures(const std::vector<std::string> & classNames, const std::vector<double> & dice);
// "epoch 3/20 loss 0.412 Dice 0.810; not found yet (Dice 0): a, b" (epochs 0: no "/20"; NaN
// Dice: none; the list only when some structure is unfound).
std::string
EpochComment(int64_t epoch, int64_t epochs, double loss, double dice, const std::vector<std::string> & unfound);

} // namespace training
} // namespace itk

#endif
