// itkComboSegCaseStore.cxx - the training session's prepared cases and partial labels'
// pseudo-labels.
#include "itkComboSegCaseStore.h"

#include "itkComboSegProcessing.h"
#include "itkComboSegTrainingParts.h"
#include "itkComboSegTrainingRun.h"

#include <algorithm>

#include <set>

namespace itk
{
namespace training
{

CaseStore::CaseStore(const std::vector<ComboSegCaseFiles> & files, const cs_model_info & info,
                     const std::vector<LabelName> & names, uint64_t & budget)
  : m_Files(files)
  , m_Info(info)
  , m_Names(names)
  , m_Cached(files.size())
  , m_Present(static_cast<size_t>(info.arch.num_classes), false)
{
  for (size_t i = 0; i < files.size(); ++i)
  {
    auto prepared = std::make_shared<ComboSegPreparedCase>(this->Prepare(i));
    for (int32_t k : prepared->labels)
      m_Present[static_cast<size_t>(k)] = true;
    const uint64_t bytes = sizeof(float) * prepared->image.size() + sizeof(int32_t) * prepared->labels.size() +
                           prepared->outsideBody.size();
    if (bytes <= budget)
    {
      budget -= bytes;
      m_Cached[i] = prepared;
    }
    else
      m_Streamed.push_back(i);
  }
}

void
CaseStore::SetLabelCompletion(std::function<void(ComboSegPreparedCase &)> complete)
{
  m_Complete = std::move(complete);
  for (auto & c : m_Cached)
    if (c)
      m_Complete(*c);
  m_Current.reset();
}

const ComboSegPreparedCase &
CaseStore::Get(size_t i)
{
  if (m_Cached[i])
    return *m_Cached[i];
  if (m_CurrentIndex != i || !m_Current)
  {
    m_Current.reset(); // one streamed case in memory at a time
    m_Current = std::make_shared<ComboSegPreparedCase>(this->Prepare(i));
    m_CurrentIndex = i;
  }
  return *m_Current;
}

const ComboSegPreparedCase &
CaseStore::Draw(size_t i, int64_t rotateEvery)
{
  if (m_Cached[i])
    return *m_Cached[i];
  if (!m_Current || ++m_Draws > rotateEvery)
  {
    m_Draws = 1;
    m_Rotation = m_Current ? (m_Rotation + 1) % m_Streamed.size() : m_Rotation;
    return this->Get(m_Streamed[m_Rotation]);
  }
  return *m_Current;
}

ComboSegPreparedCase
CaseStore::Prepare(size_t i) const
{
  ComboSegPreparedCase c = PrepareCase(m_Files[i], m_Info, m_Names);
  const int64_t        n = c.size[0] * c.size[1] * c.size[2];
  if (n <= 0 || c.image.size() != static_cast<size_t>(n * m_Info.arch.in_channels))
    itkGenericExceptionMacro("case " << m_Files[i].id << " was not prepared to the model's " << m_Info.arch.in_channels
                                     << " channel(s)");
  if (c.labels.size() != static_cast<size_t>(n))
    itkGenericExceptionMacro("case " << m_Files[i].id << " has no label map (" << m_Files[i].labels << ")");
  if (m_Complete)
    m_Complete(c);
  return c;
}

std::vector<uint8_t>
LabelledClasses(const cs_model_info & info, const std::vector<LabelName> & siteNames, const CaseStore & trainStore,
                const ComboSegTrainingSession::Peers & peers)
{
  const int32_t         K = info.arch.num_classes;
  std::set<std::string> named;
  for (const LabelName & n : siteNames)
    named.insert(ComboSegStructureNameKey(n.name));
  std::vector<uint8_t> labelled(static_cast<size_t>(K), 0);
  labelled[0] = 1;
  for (int32_t k = 1; k < K; ++k)
  {
    bool on = siteNames.empty() ? trainStore.Present(k)
                                : named.count(ComboSegStructureNameKey(info.classes[k].name)) > 0;
    if (peers.size > 1)
      on = peers.AnyOf(on); // every rank's share of the cases: one answer for all
    labelled[static_cast<size_t>(k)] = on ? 1 : 0;
  }
  return labelled;
}

std::vector<int32_t>
SegmentPreparedCase(cs_context_t ctx, cs_model_t model, const ComboSegPreparedCase & c,
                    const cs_infer_options & options)
{
  const cs_model_info &        info = *cs_model_get_info(model);
  const std::array<int64_t, 3> size{ { c.size[0], c.size[1], c.size[2] } };
  const int64_t                n = size[0] * size[1] * size[2];
  std::vector<int32_t>         predicted(static_cast<size_t>(n));
  const unsigned int           mirrors = ComboSegTestTimeMirrorAxes(info, 0, true);
  if (mirrors == 0)
    Check(cs_predict_volume(ctx, model, c.image.data(), c.size, &options, nullptr, predicted.data()), ctx,
          "cannot segment case " + c.id);
  else
  {
    ComboSegVolume     image(c.image);
    std::vector<float> probabilities(static_cast<size_t>(n * info.arch.num_classes));
    Check(ComboSegPredictMirrored(ctx, model, image, size, mirrors, options, probabilities.data(), predicted.data()),
          ctx, "cannot segment case " + c.id);
  }
  for (size_t i = 0; i < c.outsideBody.size(); ++i)
    if (c.outsideBody[i])
      predicted[i] = 0;
  if (info.postprocessing.largest_component)
    ComboSegKeepLargestComponents(predicted.data(), size);
  if (info.postprocessing.fill_holes)
    ComboSegFillHoles(predicted.data(), size);
  return predicted;
}

void
FillUndrawnClasses(cs_context_t ctx, cs_model_t base, const std::vector<uint8_t> & labelled,
                   const cs_infer_options & options, ComboSegPreparedCase & c)
{
  const std::vector<int32_t> predicted = SegmentPreparedCase(ctx, base, c, options);
  for (size_t i = 0; i < predicted.size(); ++i)
    if (c.labels[i] == 0 && !labelled[static_cast<size_t>(predicted[i])])
      c.labels[i] = predicted[i];
}

} // namespace training

using namespace training;

// ------------------------------------------------------------------------------------------
// The run's cases: read and prepared on the model's grid, this rank's share of them.

void
ComboSegTrainingSession::Impl::PrepareCases()
{
  uint64_t budget = s.m_MemoryBudget; // shared by the two stores
  if (s.m_Progress)
    s.m_Progress(0.0, "preparing " + std::to_string(trainingCases.size() + validationCases.size()) + " case(s)");
  if (parallel && s.m_Peers.rank != 0)
    validationCases.clear(); // rank 0 alone validates
  trainStore.reset(new CaseStore(this->TrainingShard(), info, s.m_LabelNames, budget));
  validStore.reset(new CaseStore(validationCases, info, s.m_LabelNames, budget));
  inferOptions = cs_infer_options_default();
  inferOptions.overlap = s.m_ValidationOverlap;
  this->KeepUnlabelledClasses();
}

// Data-parallel: each rank reads its own contiguous share of the training cases (all of them
// when there are fewer cases than ranks).
std::vector<ComboSegCaseFiles>
ComboSegTrainingSession::Impl::TrainingShard() const
{
  if (!parallel || trainingCases.size() < static_cast<size_t>(s.m_Peers.size))
    return trainingCases;
  int64_t first = 0, count = 0;
  cs_shard(static_cast<int64_t>(trainingCases.size()), s.m_Peers.rank, s.m_Peers.size, &first, &count);
  return std::vector<ComboSegCaseFiles>(trainingCases.begin() + first, trainingCases.begin() + first + count);
}

// Partial labels: the base model's classes the site did not label are kept, taught by the base
// model's own segmentation of each training scan (pseudo-labels).
void
ComboSegTrainingSession::Impl::KeepUnlabelledClasses()
{
  labelled = s.m_NewModel ? std::vector<uint8_t>(static_cast<size_t>(K), 1)
                          : LabelledClasses(info, siteNames, *trainStore, s.m_Peers);
  result.trainedClasses.clear();
  result.keptClasses.clear();
  for (int32_t k = 1; k < K; ++k)
    (labelled[static_cast<size_t>(k)] ? result.trainedClasses : result.keptClasses).push_back(classNames[k]);
  if (std::find(labelled.begin(), labelled.end(), 0) == labelled.end())
    return;
  if (s.m_Progress)
    s.m_Progress(0.0, "trained (labelled): " + JoinNames(result.trainedClasses) +
                        "; not labelled, kept as the base model segments them on the training scans "
                        "(docs/partial-labels.md): " +
                        JoinNames(result.keptClasses));
  frozenBase.Reset(CloneModel(ctx, model.model));
  cs_model_t                   base = frozenBase.model;
  cs_context_t                 context = ctx;
  const std::vector<uint8_t> & classes = labelled;
  const cs_infer_options       options = inferOptions;
  trainStore->SetLabelCompletion([context, base, &classes, options](ComboSegPreparedCase & c) {
    FillUndrawnClasses(context, base, classes, options, c);
  });
}

} // namespace itk
