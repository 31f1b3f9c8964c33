// vtkComboSegLogic.cxx - vtkImageData + IJK-to-RAS in; label map, colour table and surfaces out.
#include "vtkComboSegLogic.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <vector>

#include <vtkCommand.h>
#include <vtkDataArray.h>
#include <vtkDiscreteFlyingEdges3D.h>
#include <vtkImageData.h>
#include <vtkLookupTable.h>
#include <vtkMatrix4x4.h>
#include <vtkNew.h>
#include <vtkObjectFactory.h>
#include <vtkPointData.h>
#include <vtkPolyData.h>
#include <vtkPolyDataNormals.h>
#include <vtkShortArray.h>
#include <vtkTransform.h>
#include <vtkTransformPolyDataFilter.h>
#include <vtkUnsignedCharArray.h>
#include <vtkVariant.h>
#include <vtkWindowedSincPolyDataFilter.h>

#include "itkComboSegIO.h"
#include "itkComboSegImageFilter.h"

vtkStandardNewMacro(vtkComboSegLogic);

namespace
{
using ImageType = itk::Image<float, 3>;
using LabelImageType = itk::Image<short, 3>;

// A model's class (the ITK layer's class record) and its voxels in the label map.
struct Structure : itk::LabelName
{
  long voxels = 0;
};
} // namespace

struct vtkComboSegLogic::Internals
{
  std::string modelFileName;
  itk::ComboSegModel::Pointer model;
  std::vector<vtkSmartPointer<vtkImageData>> inputs;
  vtkSmartPointer<vtkMatrix4x4> ijkToRAS = vtkSmartPointer<vtkMatrix4x4>::New();
  vtkSmartPointer<vtkImageData> labelMap;
  vtkSmartPointer<vtkLookupTable> colorTable;
  std::vector<Structure> structures;
  std::vector<vtkSmartPointer<vtkPolyData>> surfaces;
  double voxelVolumeMm3 = 0.0;
  std::string lastError;
};

vtkComboSegLogic::vtkComboSegLogic() : Internal(new Internals) {}

vtkComboSegLogic::~vtkComboSegLogic() = default;

void vtkComboSegLogic::PrintSelf(ostream &os, vtkIndent indent)
{
  this->Superclass::PrintSelf(os, indent);
  os << indent << "ModelFileName: " << this->Internal->modelFileName << "\n";
  os << indent << "Overlap: " << this->Overlap << "\n";
  os << indent << "LargestComponent: " << this->LargestComponent << "\n";
  os << indent << "FillHoles: " << this->FillHoles << "\n";
  os << indent << "NumberOfThreads: " << this->NumberOfThreads << "\n";
  os << indent << "SmoothingIterations: " << this->SmoothingIterations << "\n";
  os << indent << "SmoothingPassBand: " << this->SmoothingPassBand << "\n";
  os << indent << "NumberOfStructures: " << this->GetNumberOfStructures() << "\n";
  os << indent << "LastError: " << this->Internal->lastError << "\n";
}

int vtkComboSegLogic::Fail(const std::string &message)
{
  this->Internal->lastError = message;
  vtkErrorMacro(<< message);
  return 0;
}

const std::string &vtkComboSegLogic::GetLastError() const
{
  return this->Internal->lastError;
}

void vtkComboSegLogic::SetModelFileName(const std::string &path)
{
  if (path == this->Internal->modelFileName)
    return;
  this->Internal->modelFileName = path;
  this->Internal->model = nullptr;
  this->Modified();
}

int vtkComboSegLogic::LoadModel()
{
  if (this->Internal->model)
    return 1;
  try
  {
    auto model = itk::ComboSegModel::New();
    model->Load(this->Internal->modelFileName);
    this->Internal->model = model;
    return 1;
  }
  catch (const std::exception &e)
  {
    return this->Fail(std::string("cannot load the model: ") + e.what());
  }
}

int vtkComboSegLogic::GetNumberOfInputChannels() const
{
  return this->Internal->model ? this->Internal->model->GetInfo().arch.in_channels : 0;
}

const char *vtkComboSegLogic::GetInputChannelName(int channel) const
{
  if (channel < 0 || channel >= this->GetNumberOfInputChannels())
    return nullptr;
  return this->Internal->model->GetInfo().channels[channel].name;
}

void vtkComboSegLogic::SetInputVolume(int channel, vtkImageData *image)
{
  if (channel < 0 || channel >= 64)
  {
    vtkErrorMacro(<< "bad input channel " << channel);
    return;
  }
  if (static_cast<size_t>(channel) >= this->Internal->inputs.size())
    this->Internal->inputs.resize(channel + 1);
  this->Internal->inputs[channel] = image;
  this->Modified();
}

void vtkComboSegLogic::SetIJKToRASMatrix(vtkMatrix4x4 *matrix)
{
  if (matrix)
    this->Internal->ijkToRAS->DeepCopy(matrix);
  else
    this->Internal->ijkToRAS->Identity();
  this->Modified();
}

void vtkComboSegLogic::ComputeIJKToRAS(const double origin[3], const double spacing[3], const double direction[9],
                                       vtkMatrix4x4 *ijkToRAS)
{
  ijkToRAS->Identity();
  for (int r = 0; r < 3; ++r)
  {
    const double flip = r < 2 ? -1.0 : 1.0; // LPS -> RAS
    for (int c = 0; c < 3; ++c)
      ijkToRAS->SetElement(r, c, flip * direction[3 * r + c] * spacing[c]);
    ijkToRAS->SetElement(r, 3, flip * origin[r]);
  }
}

void vtkComboSegLogic::ComputeLPSGeometry(vtkMatrix4x4 *ijkToRAS, double origin[3], double spacing[3],
                                          double direction[9])
{
  for (int c = 0; c < 3; ++c)
  {
    double norm = 0.0;
    for (int r = 0; r < 3; ++r)
      norm += ijkToRAS->GetElement(r, c) * ijkToRAS->GetElement(r, c);
    spacing[c] = std::sqrt(norm);
    for (int r = 0; r < 3; ++r)
    {
      const double flip = r < 2 ? -1.0 : 1.0;
      direction[3 * r + c] = spacing[c] > 0 ? flip * ijkToRAS->GetElement(r, c) / spacing[c] : (r == c);
    }
  }
  for (int r = 0; r < 3; ++r)
    origin[r] = (r < 2 ? -1.0 : 1.0) * ijkToRAS->GetElement(r, 3);
}

int vtkComboSegLogic::Segment()
{
  Internals &in = *this->Internal;
  in.labelMap = nullptr;
  in.colorTable = nullptr;
  in.structures.clear();
  in.surfaces.clear();
  in.lastError.clear();
  if (!this->LoadModel())
    return 0;
  const cs_model_info &info = in.model->GetInfo();
  const int channels = info.arch.in_channels;
  if (static_cast<int>(in.inputs.size()) < channels)
    return this->Fail("the model needs " + std::to_string(channels) + " input volume(s), " +
                      std::to_string(in.inputs.size()) + " given");
  vtkImageData *first = in.inputs[0];
  if (!first || !first->GetPointData()->GetScalars())
    return this->Fail("input volume 1 is missing or has no scalars");
  int extent[6];
  first->GetExtent(extent);
  const size_t size[3] = {size_t(extent[1] - extent[0] + 1), size_t(extent[3] - extent[2] + 1),
                          size_t(extent[5] - extent[4] + 1)};
  if (size[0] == 0 || size[1] == 0 || size[2] == 0)
    return this->Fail("input volume 1 is empty");

  // Geometry: voxel (extent start) at IJK-to-RAS * (e0, e2, e4), in LPS for ITK.
  double origin[3], spacing[3], direction[9];
  ComputeLPSGeometry(in.ijkToRAS, origin, spacing, direction);
  const double startIJK[4] = {double(extent[0]), double(extent[2]), double(extent[4]), 1.0};
  double startRAS[4];
  in.ijkToRAS->MultiplyPoint(startIJK, startRAS);
  const double startLPS[3] = {-startRAS[0], -startRAS[1], startRAS[2]};
  if (!(spacing[0] > 0 && spacing[1] > 0 && spacing[2] > 0))
    return this->Fail("the IJK-to-RAS matrix is singular");

  try
  {
    auto filter = itk::ComboSegImageFilter<ImageType, LabelImageType>::New();
    filter->SetModel(in.model);
    for (int c = 0; c < channels; ++c)
    {
      vtkImageData *image = in.inputs[c];
      vtkDataArray *scalars = image ? image->GetPointData()->GetScalars() : nullptr;
      int e[6];
      if (image)
        image->GetExtent(e);
      if (!scalars || !std::equal(e, e + 6, extent))
        return this->Fail("input volume " + std::to_string(c + 1) + " is missing or not on the grid of input volume 1");
      ImageType::Pointer itkImage = ImageType::New();
      ImageType::RegionType region;
      region.SetSize({{size[0], size[1], size[2]}});
      itkImage->SetRegions(region);
      ImageType::DirectionType dir;
      for (int r = 0; r < 3; ++r)
        for (int k = 0; k < 3; ++k)
          dir(r, k) = direction[3 * r + k];
      itkImage->SetOrigin(startLPS);
      itkImage->SetSpacing(spacing);
      itkImage->SetDirection(dir);
      itkImage->Allocate();
      float *dst = itkImage->GetBufferPointer();
      const vtkIdType n = scalars->GetNumberOfTuples();
      for (vtkIdType i = 0; i < n; ++i)
        dst[i] = static_cast<float>(scalars->GetComponent(i, 0));
      filter->SetInput(c, itkImage);
    }
    filter->SetOverlap(this->Overlap);
    filter->SetLargestComponent(this->LargestComponent);
    filter->SetFillHoles(this->FillHoles);
    filter->SetNumberOfThreads(this->NumberOfThreads);
    filter->AddObserver(itk::ProgressEvent(), [this, &filter](const itk::EventObject &) {
      double progress = filter->GetProgress();
      this->InvokeEvent(vtkCommand::ProgressEvent, &progress);
    });
    filter->Update();

    vtkNew<vtkImageData> labelMap;
    labelMap->SetExtent(extent);
    labelMap->SetOrigin(first->GetOrigin());
    labelMap->SetSpacing(first->GetSpacing());
    labelMap->AllocateScalars(VTK_SHORT, 1);
    const size_t count = size[0] * size[1] * size[2];
    const short *labels = filter->GetOutput()->GetBufferPointer();
    std::memcpy(labelMap->GetScalarPointer(), labels, count * sizeof(short));
    labelMap->GetPointData()->GetScalars()->SetName("labels");
    in.labelMap = labelMap;

    std::vector<long> histogram(65536, 0);
    for (size_t i = 0; i < count; ++i)
      ++histogram[uint16_t(labels[i])];
    int maxValue = 0;
    for (const itk::LabelName &label : itk::ComboSegModelClasses(info))
    {
      Structure s;
      static_cast<itk::LabelName &>(s) = label;
      s.voxels = histogram[uint16_t(s.value)];
      maxValue = std::max(maxValue, s.value);
      in.structures.push_back(s);
    }
    vtkNew<vtkLookupTable> table;
    table->SetNumberOfTableValues(maxValue + 1);
    table->SetTableRange(0, maxValue);
    for (int v = 0; v <= maxValue; ++v)
      table->SetTableValue(v, 0.0, 0.0, 0.0, 0.0);
    table->SetAnnotation(vtkVariant(0), "Background");
    for (const Structure &s : in.structures)
    {
      table->SetTableValue(s.value, s.rgb[0] / 255.0, s.rgb[1] / 255.0, s.rgb[2] / 255.0, 1.0);
      table->SetAnnotation(vtkVariant(s.value), s.name);
    }
    in.colorTable = table;
    in.voxelVolumeMm3 = std::fabs(in.ijkToRAS->Determinant());
  }
  catch (const std::exception &e)
  {
    return this->Fail(std::string("segmentation failed: ") + e.what());
  }
  return 1;
}

vtkImageData *vtkComboSegLogic::GetLabelMap() const
{
  return this->Internal->labelMap;
}
vtkLookupTable *vtkComboSegLogic::GetColorTable() const
{
  return this->Internal->colorTable;
}
int vtkComboSegLogic::GetNumberOfStructures() const
{
  return int(this->Internal->structures.size());
}

int vtkComboSegLogic::GetStructureLabelValue(int structure) const
{
  if (structure < 0 || structure >= this->GetNumberOfStructures())
    return -1;
  return this->Internal->structures[structure].value;
}

const char *vtkComboSegLogic::GetStructureName(int structure) const
{
  if (structure < 0 || structure >= this->GetNumberOfStructures())
    return nullptr;
  return this->Internal->structures[structure].name.c_str();
}

void vtkComboSegLogic::GetStructureColor(int structure, double rgb[3]) const
{
  for (int c = 0; c < 3; ++c)
    rgb[c] = (structure >= 0 && structure < this->GetNumberOfStructures())
                 ? this->Internal->structures[structure].rgb[c] / 255.0
                 : 0.0;
}

double vtkComboSegLogic::GetStructureVolumeMl(int structure) const
{
  if (structure < 0 || structure >= this->GetNumberOfStructures())
    return 0.0;
  return this->Internal->structures[structure].voxels * this->Internal->voxelVolumeMm3 / 1000.0;
}

int vtkComboSegLogic::ComputeSurfaces()
{
  Internals &in = *this->Internal;
  if (!in.labelMap)
    return this->Fail("no label map: run Segment() first");
  in.surfaces.clear();
  for (const Structure &s : in.structures)
  {
    if (s.voxels == 0)
    {
      in.surfaces.push_back(vtkSmartPointer<vtkPolyData>::New());
      continue;
    }
    in.surfaces.push_back(
        ComputeSurface(in.labelMap, in.ijkToRAS, s.value, this->SmoothingIterations, this->SmoothingPassBand));
    double progress = double(in.surfaces.size()) / in.structures.size();
    this->InvokeEvent(vtkCommand::ProgressEvent, &progress);
  }
  return 1;
}

vtkPolyData *vtkComboSegLogic::GetSurface(int structure) const
{
  if (structure < 0 || static_cast<size_t>(structure) >= this->Internal->surfaces.size())
    return nullptr;
  return this->Internal->surfaces[structure];
}

vtkSmartPointer<vtkPolyData> vtkComboSegLogic::ComputeSurface(vtkImageData *labelMap, vtkMatrix4x4 *ijkToRAS, int value,
                                                              int smoothingIterations, double passBand)
{
  auto empty = vtkSmartPointer<vtkPolyData>::New();
  vtkDataArray *scalars = labelMap ? labelMap->GetPointData()->GetScalars() : nullptr;
  if (!scalars || !ijkToRAS)
    return empty;
  int e[6];
  labelMap->GetExtent(e);
  const long nx = e[1] - e[0] + 1, ny = e[3] - e[2] + 1, nz = e[5] - e[4] + 1;
  // Voxels of the value, through the raw buffer when it is short (the common case).
  const short *shortData = vtkShortArray::SafeDownCast(scalars) ? static_cast<short *>(scalars->GetVoidPointer(0))
                                                                : nullptr;
  auto isValue = [&](long i) {
    return shortData ? shortData[i] == value : static_cast<int>(scalars->GetComponent(i, 0)) == value;
  };
  long box[6] = {nx, -1, ny, -1, nz, -1};
  for (long k = 0, i = 0; k < nz; ++k)
    for (long j = 0; j < ny; ++j)
      for (long x = 0; x < nx; ++x, ++i)
        if (isValue(i))
        {
          box[0] = std::min(box[0], x);
          box[1] = std::max(box[1], x);
          box[2] = std::min(box[2], j);
          box[3] = std::max(box[3], j);
          box[4] = std::min(box[4], k);
          box[5] = std::max(box[5], k);
        }
  if (box[1] < 0)
    return empty;

  // Binary mask of the bounding box padded by one background voxel, so every surface closes.
  vtkNew<vtkImageData> mask;
  mask->SetExtent(int(e[0] + box[0] - 1), int(e[0] + box[1] + 1), int(e[2] + box[2] - 1), int(e[2] + box[3] + 1),
                  int(e[4] + box[4] - 1), int(e[4] + box[5] + 1));
  mask->SetOrigin(0.0, 0.0, 0.0); // points come out in IJK
  mask->SetSpacing(1.0, 1.0, 1.0);
  mask->AllocateScalars(VTK_UNSIGNED_CHAR, 1);
  unsigned char *m = static_cast<unsigned char *>(mask->GetScalarPointer());
  const long mx = box[1] - box[0] + 3, my = box[3] - box[2] + 3, mz = box[5] - box[4] + 3;
  std::fill(m, m + mx * my * mz, static_cast<unsigned char>(0));
  for (long k = box[4]; k <= box[5]; ++k)
    for (long j = box[2]; j <= box[3]; ++j)
      for (long x = box[0]; x <= box[1]; ++x)
        if (isValue((k * ny + j) * nx + x))
          m[((k - box[4] + 1) * my + (j - box[2] + 1)) * mx + (x - box[0] + 1)] = 1;

  vtkNew<vtkDiscreteFlyingEdges3D> contour;
  contour->SetInputData(mask);
  contour->SetValue(0, 1.0);
  contour->ComputeNormalsOff();
  contour->ComputeGradientsOff();
  contour->ComputeScalarsOff();

  vtkNew<vtkWindowedSincPolyDataFilter> smoother;
  smoother->SetInputConnection(contour->GetOutputPort());
  smoother->SetNumberOfIterations(std::max(0, smoothingIterations));
  smoother->SetPassBand(passBand);
  smoother->BoundarySmoothingOff();
  smoother->FeatureEdgeSmoothingOff();
  smoother->NonManifoldSmoothingOn();
  smoother->NormalizeCoordinatesOn();

  vtkNew<vtkTransform> transform;
  transform->SetMatrix(ijkToRAS);
  vtkNew<vtkTransformPolyDataFilter> toRAS;
  if (smoothingIterations > 0)
    toRAS->SetInputConnection(smoother->GetOutputPort());
  else
    toRAS->SetInputConnection(contour->GetOutputPort());
  toRAS->SetTransform(transform);

  // Outward normals whatever the handedness of IJK-to-RAS.
  vtkNew<vtkPolyDataNormals> normals;
  normals->SetInputConnection(toRAS->GetOutputPort());
  normals->SplittingOff();
  normals->ConsistencyOn();
  normals->AutoOrientNormalsOn();
  normals->Update();
  auto out = vtkSmartPointer<vtkPolyData>::New();
  out->DeepCopy(normals->GetOutput());
  return out;
}
