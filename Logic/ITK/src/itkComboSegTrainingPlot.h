/*
 * itkComboSegTrainingPlot.h - the training curves as a PNG picture (private to the library).
 */
#ifndef itkComboSegTrainingPlot_h
#define itkComboSegTrainingPlot_h

#include "itkComboSegTrainingSession.h"

#include <string>
#include <vector>

namespace itk
{
namespace training
{

// Train loss (orange, right axis, scaled to its range) and, when validated, the mean validation
// Dice (blue, left axis, 0 to 1) per epoch, as a PNG whatever the file name says. Written
// atomically; throws itk::ExceptionObject naming the file.
void
WriteHistoryPlotPng(const std::string & path, const std::vector<ComboSegTrainingRecord> & history);

} // namespace training
} // namespace itk

#endif
