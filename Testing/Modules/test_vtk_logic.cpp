// test_vtk_logic.cpp - vtkComboSegLogic with image data and an IJK-to-RAS matrix as Slicer's
// volume nodes hold them.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cs_slicer_harness.h"
#include "cs_test_model.h"
#include "vtkComboSegLogic.h"

#include <vtkCenterOfMass.h>
#include <vtkFeatureEdges.h>
#include <vtkImageData.h>
#include <vtkLookupTable.h>
#include <vtkMassProperties.h>
#include <vtkMath.h>
#include <vtkMatrix4x4.h>
#include <vtkNew.h>
#include <vtkPointData.h>
#include <vtkPolyData.h>
#include <vtkShortArray.h>
#include <vtkTriangleFilter.h>
#include <vtkVariant.h>

namespace
{

// Mirrored, rotated, anisotropic IJK-to-RAS with an offset, like an oblique LPS-ordered volume.
void MakeIJKToRAS(vtkMatrix4x4 *m)
{
  const double c = std::cos(0.4), s = std::sin(0.4);
  const double spacing[3] = {0.8, 1.1, 1.6};
  const double axes[3][3] = {{-c, -s, 0.0}, {s, -c, 0.0}, {0.0, 0.0, 1.0}}; // columns: i, j, k directions
  m->Identity();
  for (int r = 0; r < 3; ++r)
    for (int col = 0; col < 3; ++col)
      m->SetElement(r, col, axes[col][r] * spacing[col]);
  m->SetElement(0, 3, 31.0);
  m->SetElement(1, 3, -12.5);
  m->SetElement(2, 3, 4.0);
}

size_t OpenOrNonManifoldEdges(vtkPolyData *surface)
{
  vtkNew<vtkFeatureEdges> edges;
  edges->SetInputData(surface);
  edges->BoundaryEdgesOn();
  edges->NonManifoldEdgesOn();
  edges->FeatureEdgesOff();
  edges->ManifoldEdgesOff();
  edges->Update();
  return size_t(edges->GetOutput()->GetNumberOfCells());
}

} // namespace

TEST(VtkComboSegLogic, GeometryRoundTripsBetweenITKAndRAS)
{
  vtkNew<vtkMatrix4x4> m;
  MakeIJKToRAS(m);
  double origin[3], spacing[3], direction[9];
  vtkComboSegLogic::ComputeLPSGeometry(m, origin, spacing, direction);
  EXPECT_NEAR(spacing[0], 0.8, 1e-12);
  EXPECT_NEAR(spacing[2], 1.6, 1e-12);
  EXPECT_NEAR(origin[0], -31.0, 1e-12); // LPS x = -RAS x
  EXPECT_NEAR(origin[2], 4.0, 1e-12);
  vtkNew<vtkMatrix4x4> back;
  vtkComboSegLogic::ComputeIJKToRAS(origin, spacing, direction, back);
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c)
      EXPECT_NEAR(back->GetElement(r, c), m->GetElement(r, c), 1e-12);
}

TEST(VtkComboSegLogic, SurfaceIsClosedAndInRAS)
{
  // A ball of label 7 touching the volume's edge (the surface must still close).
  const int n[3] = {24, 20, 18};
  vtkNew<vtkImageData> labels;
  labels->SetDimensions(n);
  labels->AllocateScalars(VTK_SHORT, 1);
  short *p = static_cast<short *>(labels->GetScalarPointer());
  const double centre[3] = {6.4, 10.0, 9.0}, radius = 6.5;
  long voxels = 0;
  for (int k = 0, i = 0; k < n[2]; ++k)
    for (int j = 0; j < n[1]; ++j)
      for (int x = 0; x < n[0]; ++x, ++i)
      {
        const double d2 = (x - centre[0]) * (x - centre[0]) + (j - centre[1]) * (j - centre[1]) +
                          (k - centre[2]) * (k - centre[2]);
        p[i] = d2 <= radius * radius ? 7 : (x > 18 ? 3 : 0);
        voxels += p[i] == 7;
      }
  vtkNew<vtkMatrix4x4> ijkToRAS;
  MakeIJKToRAS(ijkToRAS);
  vtkSmartPointer<vtkPolyData> surface = vtkComboSegLogic::ComputeSurface(labels, ijkToRAS, 7);
  ASSERT_GT(surface->GetNumberOfPolys(), 100);
  EXPECT_EQ(OpenOrNonManifoldEdges(surface), 0u) << "surface is not closed";

  // Its centre is the ball's centre mapped to RAS.
  vtkNew<vtkCenterOfMass> com;
  com->SetInputData(surface);
  com->SetUseScalarsAsWeights(false);
  com->Update();
  double ijk[4] = {centre[0], centre[1], centre[2], 1.0}, ras[4];
  ijkToRAS->MultiplyPoint(ijk, ras);
  for (int d = 0; d < 3; ++d)
    EXPECT_NEAR(com->GetCenter()[d], ras[d], 0.6) << "axis " << d;

  // Its volume is the voxels' volume in mm^3 (smoothing shrinks it a little).
  vtkNew<vtkTriangleFilter> triangles;
  triangles->SetInputData(surface);
  vtkNew<vtkMassProperties> mass;
  mass->SetInputConnection(triangles->GetOutputPort());
  mass->Update();
  const double voxelMm3 = 0.8 * 1.1 * 1.6;
  EXPECT_NEAR(mass->GetVolume(), voxels * voxelMm3, 0.15 * voxels * voxelMm3);

  // Absent values give an empty surface.
  EXPECT_EQ(vtkComboSegLogic::ComputeSurface(labels, ijkToRAS, 99)->GetNumberOfPoints(), 0);
}

TEST(VtkComboSegLogic, SegmentsOnTheInputGridWithNamesColoursAndClosedSurfaces)
{
  slicer::TempDir tmp;
  const std::string modelPath = tmp.Path() + "/blobs.safetensors";
  cstest::MakeTestModel(modelPath);

  const int n[3] = {32, 28, 20};
  std::vector<float> values;
  std::vector<int32_t> truth;
  cstest::MakeBlobs(n[0], n[1], n[2], values, truth);
  vtkNew<vtkImageData> image; // as in a Slicer volume node: origin 0, spacing 1
  image->SetDimensions(n);
  image->AllocateScalars(VTK_FLOAT, 1);
  std::copy(values.begin(), values.end(), static_cast<float *>(image->GetScalarPointer()));
  vtkNew<vtkMatrix4x4> ijkToRAS;
  MakeIJKToRAS(ijkToRAS);

  vtkNew<vtkComboSegLogic> logic;
  logic->SetModelFileName(modelPath);
  logic->SetInputVolume(0, image);
  logic->SetIJKToRASMatrix(ijkToRAS);
  logic->SetNumberOfThreads(2);
  ASSERT_EQ(logic->Segment(), 1) << logic->GetLastError();

  vtkImageData *labelMap = logic->GetLabelMap();
  ASSERT_NE(labelMap, nullptr);
  int dims[3];
  labelMap->GetDimensions(dims);
  EXPECT_EQ(dims[0], n[0]);
  EXPECT_EQ(dims[1], n[1]);
  EXPECT_EQ(dims[2], n[2]);
  EXPECT_EQ(labelMap->GetScalarType(), VTK_SHORT);
  ASSERT_EQ(logic->GetNumberOfStructures(), 2);
  EXPECT_STREQ(logic->GetStructureName(0), "left blob");
  EXPECT_EQ(logic->GetStructureLabelValue(1), 9);
  vtkLookupTable *table = logic->GetColorTable();
  ASSERT_NE(table, nullptr);
  EXPECT_EQ(std::string(table->GetAnnotation(table->GetAnnotatedValueIndex(vtkVariant(9)))), "right blob");
  double rgba[4];
  table->GetTableValue(5, rgba);
  EXPECT_NEAR(rgba[0], 230 / 255.0, 1e-6);

  // Voxel values are the model's label values; volumes follow the matrix's voxel size.
  const short *out = static_cast<short *>(labelMap->GetScalarPointer());
  long count5 = 0;
  for (long i = 0; i < long(n[0]) * n[1] * n[2]; ++i)
  {
    EXPECT_TRUE(out[i] == 0 || out[i] == 5 || out[i] == 9) << out[i];
    count5 += out[i] == 5;
    if (!(out[i] == 0 || out[i] == 5 || out[i] == 9))
      break;
  }
  EXPECT_NEAR(logic->GetStructureVolumeMl(0), count5 * 0.8 * 1.1 * 1.6 / 1000.0, 1e-9);

  ASSERT_EQ(logic->ComputeSurfaces(), 1) << logic->GetLastError();
  for (int s = 0; s < logic->GetNumberOfStructures(); ++s)
  {
    vtkPolyData *surface = logic->GetSurface(s);
    ASSERT_NE(surface, nullptr);
    if (surface->GetNumberOfPoints() == 0)
      continue;
    EXPECT_EQ(OpenOrNonManifoldEdges(surface), 0u) << logic->GetStructureName(s);
  }
}

// Largest distance between the points of two surfaces with the same points (inf when they differ
// in number).
static double WorstPointDistance(vtkPolyData *a, vtkPolyData *b)
{
  if (a->GetNumberOfPoints() != b->GetNumberOfPoints())
    return INFINITY;
  double worst = 0.0;
  for (vtkIdType i = 0; i < a->GetNumberOfPoints(); ++i)
    worst = std::max(worst, std::sqrt(vtkMath::Distance2BetweenPoints(a->GetPoint(i), b->GetPoint(i))));
  return worst;
}

// What a module panel calls besides Segment(): the model's channels before segmenting (to offer
// one volume selector per channel), the structures' colours, and the surface smoothing settings.
TEST(VtkComboSegLogic, PanelQueriesAndSmoothingSettings)
{
  slicer::TempDir tmp;
  const std::string modelPath = tmp.Path() + "/blobs.safetensors";
  cstest::MakeTestModel(modelPath);
  vtkNew<vtkComboSegLogic> logic;
  logic->SetModelFileName(modelPath);
  EXPECT_EQ(logic->GetNumberOfInputChannels(), 0) << "no model loaded yet";
  ASSERT_EQ(logic->LoadModel(), 1) << logic->GetLastError();
  ASSERT_EQ(logic->GetNumberOfInputChannels(), 1);
  EXPECT_STREQ(logic->GetInputChannelName(0), "T1");
  EXPECT_EQ(logic->GetInputChannelName(1), nullptr);

  const int n[3] = {32, 28, 20};
  std::vector<float> values;
  std::vector<int32_t> truth;
  cstest::MakeBlobs(n[0], n[1], n[2], values, truth);
  vtkNew<vtkImageData> image;
  image->SetDimensions(n);
  image->AllocateScalars(VTK_FLOAT, 1);
  std::copy(values.begin(), values.end(), static_cast<float *>(image->GetScalarPointer()));
  vtkNew<vtkMatrix4x4> ijkToRAS;
  MakeIJKToRAS(ijkToRAS);
  logic->SetInputVolume(0, image);
  logic->SetIJKToRASMatrix(ijkToRAS);
  ASSERT_EQ(logic->Segment(), 1) << logic->GetLastError();

  // Colours: the model's, as the colour table holds them; black for a structure that is not.
  double rgb[3], rgba[4];
  logic->GetStructureColor(1, rgb);
  logic->GetColorTable()->GetTableValue(logic->GetStructureLabelValue(1), rgba);
  for (int c = 0; c < 3; ++c)
    EXPECT_NEAR(rgb[c], rgba[c], 1e-12);
  EXPECT_GT(rgb[0] + rgb[1] + rgb[2], 0.0);
  logic->GetStructureColor(2, rgb);
  EXPECT_EQ(rgb[0] + rgb[1] + rgb[2], 0.0);

  // ComputeSurfaces smooths as set: the same surface as ComputeSurface with those settings.
  const int value = logic->GetStructureLabelValue(0);
  logic->SetSmoothingPassBand(5.0);
  EXPECT_EQ(logic->GetSmoothingPassBand(), 2.0) << "clamped to [0.001, 2]";
  for (const int iterations : {0, 10})
  {
    logic->SetSmoothingIterations(iterations);
    logic->SetSmoothingPassBand(0.05);
    EXPECT_EQ(logic->GetSmoothingIterations(), iterations);
    ASSERT_EQ(logic->ComputeSurfaces(), 1) << logic->GetLastError();
    ASSERT_GT(logic->GetSurface(0)->GetNumberOfPoints(), 0);
    auto expected = vtkComboSegLogic::ComputeSurface(logic->GetLabelMap(), ijkToRAS, value, iterations, 0.05);
    EXPECT_LT(WorstPointDistance(logic->GetSurface(0), expected), 1e-9) << iterations << " iterations";
    auto other = vtkComboSegLogic::ComputeSurface(logic->GetLabelMap(), ijkToRAS, value, 10 - iterations, 0.05);
    EXPECT_GT(WorstPointDistance(logic->GetSurface(0), other), 0.01) << "smoothing has no effect";
  }
}

TEST(VtkComboSegLogic, ErrorsAreReportedNotThrown)
{
  vtkNew<vtkComboSegLogic> logic;
  logic->SetModelFileName("/nonexistent/model.safetensors");
  logic->GlobalWarningDisplayOff();
  EXPECT_EQ(logic->Segment(), 0);
  EXPECT_NE(logic->GetLastError().find("/nonexistent/model.safetensors"), std::string::npos) << logic->GetLastError();
  EXPECT_EQ(logic->GetLabelMap(), nullptr);
}
