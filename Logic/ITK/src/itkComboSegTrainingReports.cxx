// itkComboSegTrainingReports.cxx - the history table and plot a training run writes after each
// epoch.
#include "itkComboSegTrainingSession.h"

#include "itkComboSegFiles.h"
#include "itkComboSegTrainingPlot.h"
#include "itkComboSegTrainingRun.h"

#include <sstream>

namespace itk
{
using namespace training;

void
ComboSegTrainingSession::WriteHistoryTable(const std::string & path, const std::vector<std::string> & classNames,
                                           const std::vector<ComboSegTrainingRecord> & history)
{
  // Without validation cases there is no Dice: no columns of nan.
  const bool         validated = HasValidation(history);
  std::ostringstream out;
  out << "epoch\tstep\tseconds\ttrain_loss\tlearning_rate";
  if (validated)
  {
    for (size_t k = 1; k < classNames.size(); ++k)
      out << "\tdice " << classNames[k];
    out << "\tmean_dice";
  }
  out << "\n";
  for (const auto & r : history)
  {
    out << r.epoch << '\t' << r.step << '\t' << FormatDouble(r.seconds, 6) << '\t' << FormatDouble(r.trainLoss, 6)
        << '\t' << FormatDouble(r.learningRate, 6);
    if (validated)
    {
      for (size_t k = 1; k < classNames.size(); ++k)
        out << '\t' << FormatDouble(k < r.dice.size() ? r.dice[k] : NaN, 4);
      out << '\t' << FormatDouble(r.meanDice, 4);
    }
    out << '\n';
  }
  ComboSegWriteFileAtomically(path, out.str());
}

void
ComboSegTrainingSession::WriteHistoryPlot(const std::string & path, const std::vector<ComboSegTrainingRecord> & history)
{
  WriteHistoryPlotPng(path, history);
}

void
ComboSegTrainingSession::Impl::WriteReports()
{
  if (s.m_Peers.rank != 0)
    return; // data-parallel: rank 0 writes
  if (!s.m_HistoryFileName.empty())
    WriteHistoryTable(s.m_HistoryFileName, classNames, s.m_History);
  if (!s.m_PlotFileName.empty())
    WriteHistoryPlot(s.m_PlotFileName, s.m_History);
}

} // namespace itk
