/*
 * itkComboSegCaseStore.h - the training session's prepared cases, and partial labels'
 * pseudo-labels (private to the library).
 */
#ifndef itkComboSegCaseStore_h
#define itkComboSegCaseStore_h

#include "comboseg/comboseg.h"
#include "itkComboSegDataSet.h"
#include "itkComboSegTrainingSession.h"

#include <functional>
#include <memory>
#include <vector>

namespace itk
{
namespace training
{

// Prepared cases: kept in memory while they fit the budget, else read again when needed.
class CaseStore
{
public:
  // Every case is read once here: bad files and unknown labels fail before training. `budget`
  // (bytes) shrinks by what the cases kept in memory take.
  CaseStore(const std::vector<ComboSegCaseFiles> & files, const cs_model_info & info,
            const std::vector<LabelName> & names, uint64_t & budget);

  // Partial labels (docs/partial-labels.md): `complete` fills in each case's labels, now for the
  // cases in memory and on every later read of a streamed one.
  void
  SetLabelCompletion(std::function<void(ComboSegPreparedCase &)> complete);

  size_t
  Size() const
  {
    return m_Files.size();
  }
  // Whether any case's labels hold class k (as read, before any completion).
  bool
  Present(int32_t k) const
  {
    return m_Present[static_cast<size_t>(k)];
  }
  size_t
  StreamedCount() const
  {
    return m_Streamed.size();
  }
  const ComboSegCaseFiles &
  Files(size_t i) const
  {
    return m_Files[i];
  }

  // The case i: from memory, or read now (the last one read stays until the next).
  const ComboSegPreparedCase &
  Get(size_t i);

  // For sampling: a streamed case drawn stands for the streamed case in memory, which moves on
  // to the next one every `rotateEvery` draws, so each is read about once per epoch.
  const ComboSegPreparedCase &
  Draw(size_t i, int64_t rotateEvery);

private:
  ComboSegPreparedCase
  Prepare(size_t i) const;

  std::vector<ComboSegCaseFiles>                     m_Files;
  cs_model_info                                      m_Info;
  std::vector<LabelName>                             m_Names;
  std::vector<std::shared_ptr<ComboSegPreparedCase>> m_Cached;
  std::vector<bool>                                  m_Present;
  std::vector<size_t>                                m_Streamed;
  std::function<void(ComboSegPreparedCase &)>        m_Complete;
  std::shared_ptr<ComboSegPreparedCase>              m_Current;
  size_t                                             m_CurrentIndex = 0;
  size_t                                             m_Rotation = 0;
  int64_t                                            m_Draws = 0;
};

// Partial labels: 1 for the classes the training labels mark (background always), 0 for a base
// model's classes they lack. With names, the named classes are labelled (a named class absent
// from a scan is absent there); without, the classes whose values the training label maps hold.
std::vector<uint8_t>
LabelledClasses(const cs_model_info & info, const std::vector<LabelName> & siteNames, const CaseStore & trainStore,
                const ComboSegTrainingSession::Peers & peers);

// A prepared case segmented as ComboSegSegment would: the network's labels (with the model's
// recommended test-time mirroring), the background rule (no structure where the scan holds no
// data) and the model's recommended clean-up, in its order.
std::vector<int32_t>
SegmentPreparedCase(cs_context_t ctx, cs_model_t model, const ComboSegPreparedCase & c,
                    const cs_infer_options & options);

// Pseudo-labels for the classes a site did not draw: where its label map says 0, the base
// model's own segmentation of the scan fills in the undrawn classes it finds there, so that
// training goes on teaching them as the base model had them instead of letting them drift
// (docs/partial-labels.md). Drawn classes keep exactly the site's voxels.
void
FillUndrawnClasses(cs_context_t ctx, cs_model_t base, const std::vector<uint8_t> & labelled,
                   const cs_infer_options & options, ComboSegPreparedCase & c);

} // namespace training
} // namespace itk

#endif
