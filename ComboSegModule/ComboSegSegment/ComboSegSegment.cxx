// ComboSegSegment - Slicer CLI: segments a volume with a bundled model or a model file.
// Outputs: the label map (NRRD with Slicer segment keys; NIfTI or MetaImage when the file name asks
// for it), optional colour table, per-structure surface models (.vtk, RAS), a PNG preview, and
// return parameters (volumes in ml, structures found, time).
#include "ComboSegCLI.h"
#include "ComboSegOutput.h"
#include "ComboSegSegmentXML.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <sstream>
#include <sys/stat.h>

#include "itkComboSegIO.h"
#include "itkComboSegImageFilter.h"
#include "itkComboSegProcessing.h"
#include "itkLinearInterpolateImageFunction.h"
#include "itkResampleImageFilter.h"

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

// Extra channels are brought onto the first channel's grid (linear), as Slicer volumes may differ.
ImageType::Pointer OnGridOf(ImageType *image, const ImageType *reference)
{
  if (itk::ComboSegSameGrid(itk::ComboSegGridOf(image), itk::ComboSegGridOf(reference)))
    return image;
  auto resample = itk::ResampleImageFilter<ImageType, ImageType>::New();
  resample->SetInput(image);
  resample->SetReferenceImage(reference);
  resample->UseReferenceImageOn();
  resample->SetInterpolator(itk::LinearInterpolateImageFunction<ImageType, double>::New());
  resample->SetDefaultPixelValue(0);
  resample->Update();
  return resample->GetOutput();
}

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
  if (mkdir(folder.c_str(), 0775) != 0 && errno != EEXIST)
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

int Run(ComboSegArguments &args, ComboSegProgress &progress)
{
  const double start = ComboSegSeconds();
  // Output file names are checked before the minutes of work that precede their writing.
  ComboSegLabelMapExtension(args.GetString("outputLabelMap"));
  if (args.IsSet("previewImage"))
    ComboSegCheckExtension("preview image", args.GetString("previewImage"), {".png"});
  progress.Start("ComboSeg Segment", "loading the model");

  auto model = itk::ComboSegModel::New();
  const std::string modelPath =
    args.IsSet("modelFile") ? args.GetString("modelFile") : ComboSegFindBundledModel(args.GetString("model"));
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
  std::vector<ImageType::Pointer> inputs;
  for (int c = 0; c < channels; ++c)
  {
    if (c > 0 && !args.IsSet(channelParams[c]))
      throw std::runtime_error(std::string("the model needs channel ") + std::to_string(c + 1) + " (" +
                               info.channels[c].name + "): give it with --" + channelParams[c]);
    ImageType::Pointer image = itk::ReadScan<ImageType>(args.GetString(channelParams[c]));
    inputs.push_back(c == 0 ? image : OnGridOf(image, inputs[0]));
  }
  for (int c = channels; c < 4; ++c)
    if (args.IsSet(channelParams[c]))
      progress.Comment(std::string("note: the model has ") + std::to_string(channels) + " channel(s); --" +
                       channelParams[c] + " is ignored");
  progress.Progress(0.05);

  auto filter = itk::ComboSegImageFilter<ImageType, LabelImageType>::New();
  filter->SetModel(model);
  for (int c = 0; c < channels; ++c)
    filter->SetInput(c, inputs[c]);
  filter->SetOverlap(args.GetDouble("overlap"));
  filter->SetLargestComponent(args.GetBool("largestComponent"));
  filter->SetFillHoles(args.GetBool("fillHoles"));
  filter->SetTestTimeMirrorAxes(args.GetBool("testTimeAugmentation") ? 1u : 0u); // x: left-right
  filter->SetNumberOfThreads(int(args.GetInt("threads")));
  const auto inferenceProgress = progress.Range(0.05, 0.85);
  filter->AddObserver(itk::ProgressEvent(), [&](const itk::EventObject &) { inferenceProgress(filter->GetProgress()); });
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
  ComboSegWriteLabelMap(labels, segments, args.GetString("outputLabelMap"));
  progress.Progress(0.88);
  if (args.IsSet("outputColorTable"))
    ComboSegWriteColorTable(segments, args.GetString("outputColorTable"));
  if (args.IsSet("previewImage"))
    ComboSegWritePreview(args.GetString("previewImage"), inputs[0], labels, segments);
  progress.Progress(0.9);
  if (args.IsSet("surfaceDirectory"))
  {
    progress.Comment("building surface models");
    WriteSurfaces(labels, segments, counts, args.GetString("surfaceDirectory"), progress.Range(0.9, 0.99));
  }

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
