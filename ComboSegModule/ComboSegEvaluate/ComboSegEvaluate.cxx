// ComboSegEvaluate - Slicer CLI: per-structure agreement between a reference and a label map; the
// measures are the ITK layer's (itkComboSegEvaluation.h), this module reads, names and writes them.
#include "ComboSegCLI.h"
#include "ComboSegInputs.h"
#include "ComboSegEvaluateXML.h"
#include "ComboSegOutput.h"
#include "ComboSegRunOutputs.h"

#include <cmath>
#include <map>
#include <sstream>

#include "itkComboSegEvaluation.h"
#include "itkComboSegIO.h"
#include "itkComboSegInputChecks.h"
#include "itkComboSegProcessing.h"

namespace
{

using LabelImageType = itk::ComboSegLabelMap;

std::map<int, std::string> Names(const ComboSegArguments &args)
{
  std::map<int, std::string> names;
  if (args.IsSet("namesFile"))
  {
    for (const itk::LabelName &l : itk::ReadLabelNames(args.GetString("namesFile")))
      names[l.value] = l.name;
    return names;
  }
  // Without a names file, the maps' own segment keys (NRRD); other formats simply carry none.
  for (const char *param : {"referenceLabelMap", "predictedLabelMap"})
  {
    try
    {
      for (const itk::LabelName &l : itk::ReadLabelNames(args.GetString(param)))
        names[l.value] = l.name;
    }
    catch (const std::exception &)
    {
      names.clear();
    }
    if (!names.empty())
      break;
  }
  return names;
}

std::string Number(double v)
{
  if (std::isnan(v))
    return "nan";
  std::ostringstream s;
  s.precision(6);
  s << v;
  return s.str();
}

// One row of the table.
std::vector<std::string> Row(const itk::ComboSegStructureAgreement &a, const std::string &value,
                             const std::string &name)
{
  return {value,
          name,
          Number(a.dice),
          Number(a.jaccard),
          Number(a.precision),
          Number(a.recall),
          Number(a.falsePositiveRate),
          Number(a.falseNegativeRate),
          Number(a.hausdorff95),
          Number(a.meanSurfaceDistance),
          Number(a.referenceVolumeMl),
          Number(a.predictedVolumeMl),
          std::to_string(a.referenceVoxels),
          std::to_string(a.predictedVoxels),
          std::to_string(a.overlapVoxels)};
}

int Run(ComboSegArguments &args, ComboSegProgress &progress)
{
  ComboSegRunOutputs outputs(args); // the table's folder and name, checked before the work
  progress.Start("ComboSeg Evaluate", "reading the label maps");
  LabelImageType::Pointer reference = ComboSegReadLabelMap(args.GetString("referenceLabelMap"), progress);
  LabelImageType::Pointer predicted = ComboSegReadLabelMap(args.GetString("predictedLabelMap"), progress);
  const itk::ComboSegGrid refGrid = itk::ComboSegGridOf(reference.GetPointer());
  const itk::ComboSegGrid predGrid = itk::ComboSegGridOf(predicted.GetPointer());
  if (itk::ComboSegPhysicalOverlap(refGrid, predGrid) <= 0.0)
    ComboSegWarn(progress, "the two label maps do not overlap in space (" + args.GetString("predictedLabelMap") +
                               " lies elsewhere than " + args.GetString("referenceLabelMap") +
                               "): every structure of the evaluated map is lost; check that they belong to one scan");
  if (!itk::ComboSegSameGrid(refGrid, predGrid))
    progress.Comment("the evaluated map is resampled onto the reference grid (nearest neighbour)");
  predicted = itk::ComboSegOnReferenceGrid(reference, predicted);
  const std::map<int, std::string> names = Names(args);
  progress.Progress(0.1);

  const std::vector<itk::ComboSegStructureAgreement> structures =
      itk::ComboSegCompareStructures(reference, predicted, progress.Range(0.1, 0.95));
  std::vector<std::vector<std::string>> rows;
  for (const itk::ComboSegStructureAgreement &a : structures)
  {
    const auto name = names.find(a.labelValue);
    rows.push_back(Row(a, std::to_string(a.labelValue),
                       name != names.end() ? name->second : "label " + std::to_string(a.labelValue)));
  }
  if (args.GetBool("allStructures"))
    rows.push_back(Row(itk::ComboSegCompareAllStructures(reference, predicted), "all", "all structures"));
  if (outputs.Has("outputTable"))
    ComboSegWriteTable(outputs.Staged("outputTable"),
                       {"LabelValue", "Name", "Dice", "Jaccard", "Precision", "Recall", "FalsePositiveRate",
                        "FalseNegativeRate", "Hausdorff95_mm", "MeanSurfaceDistance_mm", "ReferenceVolume_ml",
                        "PredictedVolume_ml", "ReferenceVoxels", "PredictedVoxels", "OverlapVoxels"},
                       rows);
  const double meanDice = itk::ComboSegMeanDice(structures);
  outputs.Commit();
  args.SetReturn("meanDice", meanDice);
  args.SetReturn("numberOfStructures", std::to_string(structures.size()));
  progress.Comment(std::to_string(structures.size()) + " structures, mean Dice " + Number(meanDice));
  progress.End();
  return 0;
}

} // namespace

int main(int argc, char **argv)
{
  return ComboSegMain(argc, argv, ComboSegEvaluateXML, &Run);
}
