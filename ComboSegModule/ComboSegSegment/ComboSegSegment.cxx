// ComboSegSegment - Slicer CLI: segments a volume with a bundled model or a model file.
// Outputs: the label map (NRRD with Slicer segment keys; NIfTI or MetaImage when the file name asks
// for it), optional colour table, per-structure surface models (.vtk, RAS), a PNG preview, and
// return parameters (volumes in ml, structures found, time).
#include "ComboSegCLI.h"
#include "ComboSegInputs.h"
#include "ComboSegOutput.h"
#include "ComboSegRunOutputs.h"
#include "ComboSegSegmentXML.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <sstream>

#include "itkComboSegFiles.h"
#include "itkComboSegIO.h"
#include "itkComboSegImageFilter.h"
#include "itkComboSegProcessing.h"

#include "vtkComboSegLogic.h"
#include <vtkImageData.h>
#include <vtkMatrix4x4.h>
#include <vtkNew.h>
#include <vtkPolyData.h>
#include <vtkPolyDataWriter.h>
#include <vtkShortArray.h>
#include <vtkPointData.h>

namespace
{

using ImageType = ComboSegScalarImage;
using LabelImageType = ComboSegLabelImage;

std::string SafeFileName(const std::string &name)
{
  std::string out;
  for (char c : name)
    out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') ? c : '_';
  return out.empty() ? std::string("structure") : out;
}

// Surfaces through the VTK logic: the label map as Slicer holds it (vtkImageData + IJK-to-RAS).
void WriteSurfaces(const LabelImageType *labels, const std::vector<ComboSegSegmentInfo> &segments,
                   const std::map<int, long> &counts, const std::string &folder,
                   const std::function<void(double)> &progress)
{
  if (!itk::ComboSegMakeFolder(folder))
    throw std::runtime_error("cannot create the surface folder " + folder);
  const auto size = labels->GetLargestPossibleRegion().GetSize();
  vtkNew<vtkImageData> image;
  image->SetDimensions(int(size[0]), int(size[1]), int(size[2]));
  vtkNew<vtkShortArray> scalars;
  scalars->SetArray(const_cast<short *>(labels->GetBufferPointer()), vtkIdType(labels->GetPixelContainer()->Size()), 1);
  image->GetPointData()->SetScalars(scalars);
  const itk::ComboSegGrid grid = itk::ComboSegGridOf(labels);
  vtkNew<vtkMatrix4x4> ijkToRAS;
  vtkComboSegLogic::ComputeIJKToRAS(grid.origin.data(), grid.spacing.data(), grid.direction.data(), ijkToRAS);
  size_t done = 0;
  for (const ComboSegSegmentInfo &s : segments)
  {
    progress(double(done++) / segments.size());
    if (!counts.count(s.value))
      continue;
    vtkSmartPointer<vtkPolyData> surface = vtkComboSegLogic::ComputeSurface(image, ijkToRAS, s.value);
    const std::string path = folder + "/" + std::to_string(s.value) + "_" + SafeFileName(s.name) + ".vtk";
    const std::string tmp = ComboSegTemporaryPath(path);
    vtkNew<vtkPolyDataWriter> writer;
    writer->SetFileName(tmp.c_str());
    writer->SetInputData(surface);
    writer->SetHeader("SPACE=RAS"); // Slicer reads the coordinate system from the header
    writer->SetFileTypeToBinary();
    if (!writer->Write())
    {
      std::remove(tmp.c_str());
      throw std::runtime_error("cannot write surface model " + path);
    }
    ComboSegCommitFile(tmp, path);
  }
  progress(1.0);
}

// What clean-up the run applies, e.g. "largest component (the model's recommendation)".
std::string CleanUpText(const cs_postprocessing &recommended, const ComboSegArguments &args)
{
  const bool useModel = !args.GetBool("rawOutput");
  std::string text;
  auto step = [&](const char *name, bool asked, bool fromModel) {
    if (!asked && !(useModel && fromModel))
      return;
    text += std::string(text.empty() ? "" : ", ") + name + (asked ? "" : " (the model's recommendation)");
  };
  step("largest component", args.GetBool("largestComponent"), recommended.largest_component);
  step("fill holes", args.GetBool("fillHoles"), recommended.fill_holes);
  return text.empty() ? std::string("none") : text;
}

// The mirrors a run averages over, e.g. "mirrored along x (the model's recommendation)".
std::string TestTimeAugmentationText(unsigned int axes, bool asked)
{
  std::string text;
  for (int a = 0; a < 3; ++a)
    if (axes & (1u << a))
      text += std::string(text.empty() ? "mirrored along " : " and ") + "xyz"[a];
  if (text.empty())
    return "none";
  return text + (asked ? "" : " (the model's recommendation)");
}

int Run(ComboSegArguments &args, ComboSegProgress &progress)
{
  const double start = ComboSegSeconds();
  ComboSegLimitITKThreads(int(args.GetInt("threads"))); // before ITK's pool exists
  // Every output is checked before the minutes of work that precede its writing; all are
  // written beside their names and renamed together at the end.
  ComboSegRunOutputs outputs(
      args, {{"outputLabelMap", ComboSegLabelMapExtensions()}, {"outputColorTable", ComboSegColorTableExtensions()}});
  progress.Start("ComboSeg Segment", "loading the model");

  auto model = itk::ComboSegModel::New();
  const std::string modelPath = args.IsSet("modelFile") ? args.GetString("modelFile")
                                                        : ComboSegFindBundledModel(args.GetString("model"));
  model->Load(modelPath);
  const cs_model_info &info = model->GetInfo();
  progress.Comment(std::string("model ") + info.name + " (" + std::to_string(info.arch.num_classes - 1) +
                   " structures) from " + modelPath);
  progress.Progress(0.02);

  // One input per model channel, in the model's order.
  const char *const channelParams[] = {"inputVolume", "inputVolume2", "inputVolume3", "inputVolume4"};
  const int channels = info.arch.in_channels;
  if (channels > 4)
    throw std::runtime_error("the model needs " + std::to_string(channels) + " channels; this module takes at most 4");
  std::vector<std::string> files;
  for (int c = 0; c < channels; ++c)
  {
    if (c > 0 && !args.IsSet(channelParams[c]))
      throw std::runtime_error(std::string("the model needs channel ") + std::to_string(c + 1) + " (" +
                               info.channels[c].name + "): give it with --" + channelParams[c]);
    files.push_back(args.GetString(channelParams[c]));
  }
  const std::vector<ImageType::Pointer> inputs =
      ComboSegReadChannels(files, info, args.GetBool("ignoreModalityMismatch"), progress, int(args.GetInt("threads")));
  for (int c = channels; c < 4; ++c)
    if (args.IsSet(channelParams[c]))
      progress.Comment(std::string("note: the model has ") + std::to_string(channels) + " channel(s); --" +
                       channelParams[c] + " is ignored");
  progress.Progress(0.05);

  auto filter = itk::ComboSegImageFilter<ImageType, LabelImageType>::New();
  filter->SetModel(model);
  filter->SetIgnoreModalityMismatch(true); // checked above, where the files could be named
  for (int c = 0; c < channels; ++c)
    filter->SetInput(c, inputs[c]);
  filter->SetOverlap(args.GetDouble("overlap"));
  // What the model recommends (clean-up, test-time mirroring), unless the raw output is asked for;
  // the flags add steps.
  filter->SetUseModelRecommendations(!args.GetBool("rawOutput"));
  filter->SetLargestComponent(args.GetBool("largestComponent"));
  filter->SetFillHoles(args.GetBool("fillHoles"));
  progress.Comment("clean-up: " + CleanUpText(info.postprocessing, args));
  filter->SetTestTimeMirrorAxes(args.GetBool("testTimeAugmentation") ? 1u : 0u); // x: left-right
  progress.Comment("test-time augmentation: " +
                   TestTimeAugmentationText(filter->MirrorAxes(info), args.GetBool("testTimeAugmentation")));
  filter->SetNumberOfThreads(int(args.GetInt("threads")));
  filter->SetBFloat16(args.GetString("precision") == "bfloat16");
  progress.Comment(std::string("arithmetic: ") +
                   (filter->GetBFloat16() && cs_bfloat16_available() ? "bfloat16 (AVX512_BF16)" : "float32"));
  const auto inferenceProgress = progress.Range(0.05, 0.85);
  filter->AddObserver(itk::ProgressEvent(),
                      [&](const itk::EventObject &) { inferenceProgress(filter->GetProgress()); });
  progress.Comment("segmenting");
  filter->Update();
  LabelImageType::Pointer labels = filter->GetOutput();
  labels->DisconnectPipeline();

  // Volumes per structure.
  const std::vector<ComboSegSegmentInfo> segments = ComboSegSegmentsFromModel(info);
  std::map<int, long> counts;
  {
    const short *p = labels->GetBufferPointer();
    const size_t n = labels->GetPixelContainer()->Size();
    for (size_t i = 0; i < n; ++i)
      if (p[i] != 0)
        ++counts[p[i]];
  }
  const auto spacing = labels->GetSpacing();
  const double voxelMl = spacing[0] * spacing[1] * spacing[2] / 1000.0;
  std::ostringstream volumes;
  volumes.precision(6);
  int found = 0;
  for (const ComboSegSegmentInfo &s : segments)
  {
    const auto it = counts.find(s.value);
    const long count = it == counts.end() ? 0 : it->second;
    found += count > 0;
    volumes << (s.value == segments.front().value ? "" : "; ") << s.name << ": " << count * voxelMl;
  }

  progress.Comment("writing the segmentation");
  ComboSegWriteLabelMap(labels, segments, outputs.Staged("outputLabelMap"));
  progress.Progress(0.88);
  if (outputs.Has("outputColorTable"))
    ComboSegWriteColorTable(segments, outputs.Staged("outputColorTable"));
  if (outputs.Has("previewImage"))
    ComboSegWritePreview(outputs.Staged("previewImage"), inputs[0], labels, segments);
  progress.Progress(0.9);
  if (outputs.Has("surfaceDirectory"))
  {
    progress.Comment("building surface models");
    WriteSurfaces(labels, segments, counts, outputs.Staged("surfaceDirectory"), progress.Range(0.9, 0.99));
  }
  outputs.Commit();

  const double elapsed = ComboSegSeconds() - start;
  args.SetReturn("structureVolumes", volumes.str());
  args.SetReturn("numberOfStructures", std::to_string(found));
  args.SetReturn("elapsedSeconds", elapsed);
  progress.Comment(std::to_string(found) + " structures found in " + std::to_string(elapsed) + " s");
  progress.End();
  return 0;
}

} // namespace

int main(int argc, char **argv)
{
  return ComboSegMain(argc, argv, ComboSegSegmentXML, &Run);
}
