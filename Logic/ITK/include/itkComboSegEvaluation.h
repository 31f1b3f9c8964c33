/*
 * itkComboSegEvaluation.h - how a segmentation agrees with a reference, structure by structure:
 * overlap (Dice, Jaccard), precision and recall, false-positive and false-negative voxel rates,
 * boundary distances (95% Hausdorff and mean surface distance, in mm) and volumes (ml).
 * ComboSegEvaluate prints these; C++ and VTK code can call them on any two label maps.
 * Errors are itk::ExceptionObject whose message names the problem.
 */
#ifndef itkComboSegEvaluation_h
#define itkComboSegEvaluation_h

#include <cstdint>
#include <functional>
#include <vector>

#include "itkImage.h"

namespace itk
{

/** A label map: 0 is background, any other value a structure. */
using ComboSegLabelMap = Image<int, 3>;

/** How one structure (one label value) of an evaluated map agrees with the reference. A measure
 * that is undefined is NaN: Dice and Jaccard without voxels in either map, precision without
 * predicted voxels, recall and the false-negative rate without reference voxels, the surface
 * distances when the structure is missing from one map. */
struct ComboSegStructureAgreement
{
  int     labelValue{ 0 };
  int64_t referenceVoxels{ 0 };
  int64_t predictedVoxels{ 0 };
  int64_t overlapVoxels{ 0 };
  double  dice{ 0.0 };                // 2 |R n P| / (|R| + |P|)
  double  jaccard{ 0.0 };             // |R n P| / |R u P|
  double  precision{ 0.0 };           // |R n P| / |P|
  double  recall{ 0.0 };              // |R n P| / |R|
  double  falsePositiveRate{ 0.0 };   // |P \ R| / (voxels outside R)
  double  falseNegativeRate{ 0.0 };   // |R \ P| / |R|
  double  hausdorff95{ 0.0 };         // mm: 95th percentile (nearest rank) of both boundaries' distances
  double  meanSurfaceDistance{ 0.0 }; // mm: mean of the same distances
  double  referenceVolumeMl{ 0.0 };
  double  predictedVolumeMl{ 0.0 };
};

/** The evaluated map on the reference's grid: itself when it already lies there, else resampled
 * by nearest neighbour (0 outside it). */
ComboSegLabelMap::Pointer
ComboSegOnReferenceGrid(const ComboSegLabelMap * reference, const ComboSegLabelMap * predicted,
                        int numberOfThreads = 0);

/** One entry per label value other than 0 found in either map, in increasing order; `predicted`
 * must lie on the reference's grid (ComboSegOnReferenceGrid). `progress`, when given, is called
 * with the fraction done after each structure. */
std::vector<ComboSegStructureAgreement>
ComboSegCompareStructures(const ComboSegLabelMap * reference, const ComboSegLabelMap * predicted,
                          const std::function<void(double)> & progress = {}, int numberOfThreads = 0);

/** Every structure merged into one (any non-zero label against any non-zero label, e.g. the
 * whole tumour), reported as label value 1. */
ComboSegStructureAgreement
ComboSegCompareAllStructures(const ComboSegLabelMap * reference, const ComboSegLabelMap * predicted,
                             int numberOfThreads = 0);

/** Dice averaged over the structures the reference holds; NaN when it holds none. */
double
ComboSegMeanDice(const std::vector<ComboSegStructureAgreement> & structures);

} // end namespace itk

#endif
