// vtkComboSegLogic.h - the VTK-facing logic of ComboSeg: what a Slicer loadable module's logic
// calls with the contents of its MRML nodes.
//
//   vtkNew<vtkComboSegLogic> logic;
//   logic->SetModelFileName("brain-structures-t1.safetensors");
//   logic->SetInputVolume(0, volumeNode->GetImageData());
//   volumeNode->GetIJKToRASMatrix(ijkToRAS);  logic->SetIJKToRASMatrix(ijkToRAS);
//   if (!logic->Segment()) { ... logic->GetLastError() ... }
//   labelMapNode->SetAndObserveImageData(logic->GetLabelMap());     // same grid as the input
//   labelMapNode->SetIJKToRASMatrix(ijkToRAS);
//   colorNode->SetLookupTable(logic->GetColorTable());               // names as annotations
//   logic->ComputeSurfaces();  modelNode->SetAndObservePolyData(logic->GetSurface(i));  // RAS
//
// Geometry follows Slicer's volume nodes: voxel (i, j, k) of the image data sits at
// RAS = IJKToRAS * (i, j, k, 1); the image data's own origin and spacing are not used (Slicer
// keeps them at 0 and 1). Errors: methods return 0, vtkErrorMacro is raised and GetLastError()
// names the problem; the logic never throws to its caller.
#ifndef vtkComboSegLogic_h
#define vtkComboSegLogic_h

#include <memory>
#include <string>

#include <vtkObject.h>
#include "comboseg/parameters.h"
#include <vtkSmartPointer.h>

class vtkImageData;
class vtkLookupTable;
class vtkMatrix4x4;
class vtkPolyData;

class vtkComboSegLogic : public vtkObject
{
public:
  static vtkComboSegLogic *New();
  vtkTypeMacro(vtkComboSegLogic, vtkObject);
  void PrintSelf(ostream &os, vtkIndent indent) override;

  // The model: a file (loaded on the next Segment() or by LoadModel()).
  void SetModelFileName(const std::string &path);
  // Loads the model now (e.g. to show its structures before segmenting). 1 on success.
  int LoadModel();
  // Metadata of the loaded model (0 structures before a model is loaded).
  int GetNumberOfInputChannels() const;
  const char *GetInputChannelName(int channel) const;

  // Inputs: one image per model channel, all on the grid given by the IJK-to-RAS matrix.
  void SetInputVolume(int channel, vtkImageData *image);
  void SetIJKToRASMatrix(vtkMatrix4x4 *matrix);

  // Options of the pipeline (see itk::ComboSegImageFilter).
  // Overlap: CS_OVERLAP_DEFAULT, within [CS_OVERLAP_MIN, CS_OVERLAP_MAX] (comboseg/parameters.h);
  // Segment() fails naming it when outside, as the ITK filter does.
  vtkSetMacro(Overlap, double);
  vtkGetMacro(Overlap, double);
  vtkSetMacro(LargestComponent, bool);
  vtkGetMacro(LargestComponent, bool);
  vtkSetMacro(FillHoles, bool);
  vtkGetMacro(FillHoles, bool);
  vtkSetMacro(NumberOfThreads, int);
  vtkGetMacro(NumberOfThreads, int);
  // Surface smoothing (windowed sinc): iterations and pass band (smaller is smoother).
  vtkSetMacro(SmoothingIterations, int);
  vtkGetMacro(SmoothingIterations, int);
  vtkSetClampMacro(SmoothingPassBand, double, 0.001, 2.0);
  vtkGetMacro(SmoothingPassBand, double);

  // Runs the pipeline. 1 on success; progress is reported with vtkCommand::ProgressEvent.
  int Segment();

  // Results of the last Segment(): the label map (short, label values) on the input's grid
  // (same dimensions, extent, origin and spacing as input 0), the colour table (indexed by
  // label value, names as annotations) and the structures of the model.
  vtkImageData *GetLabelMap() const;
  vtkLookupTable *GetColorTable() const;
  int GetNumberOfStructures() const;
  int GetStructureLabelValue(int structure) const;
  const char *GetStructureName(int structure) const;
  void GetStructureColor(int structure, double rgb[3]) const;
  double GetStructureVolumeMl(int structure) const; // from the IJK-to-RAS voxel volume

  // One closed surface per structure of the last Segment(), in RAS (empty when absent). 1 on success.
  int ComputeSurfaces();
  vtkPolyData *GetSurface(int structure) const;

  const std::string &GetLastError() const;

  // Helpers shared with the CLI modules.
  // The IJK-to-RAS matrix of an ITK (LPS) grid: origin, spacing, direction (row-major 3x3).
  static void ComputeIJKToRAS(const double origin[3], const double spacing[3], const double direction[9],
                              vtkMatrix4x4 *ijkToRAS);
  // The inverse: an ITK (LPS) grid from an IJK-to-RAS matrix (spacing = column norms).
  static void ComputeLPSGeometry(vtkMatrix4x4 *ijkToRAS, double origin[3], double spacing[3], double direction[9]);
  // Closed, smoothed surface of one label value of a label map, in RAS: discrete flying edges on
  // the value's bounding box padded with background, windowed-sinc smoothing, then IJK-to-RAS
  // (orientation kept outward when the matrix mirrors). Empty poly data when the value is absent.
  static vtkSmartPointer<vtkPolyData> ComputeSurface(vtkImageData *labelMap, vtkMatrix4x4 *ijkToRAS, int value,
                                                     int smoothingIterations = 20, double passBand = 0.1);

protected:
  vtkComboSegLogic();
  ~vtkComboSegLogic() override;

private:
  vtkComboSegLogic(const vtkComboSegLogic &) = delete;
  void operator=(const vtkComboSegLogic &) = delete;
  int Fail(const std::string &message);

  double Overlap = CS_OVERLAP_DEFAULT;
  bool LargestComponent = false;
  bool FillHoles = false;
  int NumberOfThreads = 0;
  int SmoothingIterations = 20;
  double SmoothingPassBand = 0.1;

  struct Internals;
  std::unique_ptr<Internals> Internal;
};

#endif
