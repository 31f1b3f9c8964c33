/*
 * itkComboSegImageFilter.h - multi-organ segmentation of a scan with a ComboSeg model.
 *
 *   auto filter = itk::ComboSegImageFilter<ImageType, LabelImageType>::New();
 *   filter->SetModelFileName("abdomen.safetensors");   // or SetModel(sharedModel)
 *   filter->SetInput(0, ct);                           // one input per model channel
 *   filter->Update();                                  // label map on ct's exact grid
 */
#ifndef itkComboSegImageFilter_h
#define itkComboSegImageFilter_h

#include <string>
#include <vector>

#include "itkImageToImageFilter.h"
#include "itkComboSegModel.h"
#include "itkComboSegProcessing.h"

namespace itk
{

/** \class ComboSegImageFilter
 * \brief Segments a 2D or 3D scan (one input per model channel) into the model's classes.
 *
 * Pre-processing follows the model's metadata, not the caller: the inputs are resampled
 * (linearly) onto a grid with the model's orientation axes and spacing and normalised by each
 * channel's recipe. The engine then predicts class probabilities with a sliding window; they
 * are resampled back onto the first input's grid before the argmax, so the output has exactly
 * its size, spacing, origin and direction. Voxels that hold no data for the model's recipe (zero
 * in every channel z-scored over non-zero voxels, outside the body of channels z-scored inside
 * a mask) are background unless BackgroundOutsideBody is turned off. Clean-up: the largest
 * connected component per class and hole filling, each applied when the model recommends it
 * (its metadata; UseModelRecommendationsOff for the raw output) or when switched on here, and a
 * minimum probability below which a voxel is background.
 *
 * Inputs are checked against the model first (ComboSegInputChecks): a 2D image for a 3D model,
 * and a scan that clearly is of another modality than its channel's (DICOM Modality tag, CT's
 * Hounsfield signature for an MR model) are exceptions; IgnoreModalityMismatch goes ahead anyway.
 * Optional test-time augmentation averages the probabilities of mirrored copies of the input
 * (TestTimeMirrorAxes, added to the mirroring the model recommends unless UseModelRecommendationsOff).
 *
 * The output holds the classes' label values (OutputLabelValues, the default) or class indices.
 * Progress events come per window; setting AbortGenerateData stops the filter between windows
 * with itk::ProcessAborted. Errors are itk::ExceptionObject naming the problem.
 */
template <typename TInputImage, typename TOutputImage>
class ITK_TEMPLATE_EXPORT ComboSegImageFilter : public ImageToImageFilter<TInputImage, TOutputImage>
{
public:
  ITK_DISALLOW_COPY_AND_MOVE(ComboSegImageFilter);

  using Self = ComboSegImageFilter;
  using Superclass = ImageToImageFilter<TInputImage, TOutputImage>;
  using Pointer = SmartPointer<Self>;
  using ConstPointer = SmartPointer<const Self>;

  itkNewMacro(Self);
  itkTypeMacro(ComboSegImageFilter, ImageToImageFilter);

  static constexpr unsigned int ImageDimension = TInputImage::ImageDimension;
  static_assert(ImageDimension == 2 || ImageDimension == 3, "ComboSegImageFilter handles 2D and 3D images");
  static_assert(ImageDimension == TOutputImage::ImageDimension, "input and output must have one dimension");

  using InputImageType = TInputImage;
  using OutputImageType = TOutputImage;
  using OutputPixelType = typename TOutputImage::PixelType;
  using MaskImageType = Image<unsigned char, ImageDimension>;

  /** The model file to load (when no model object was given). */
  void
  SetModelFileName(const std::string & path);
  itkGetStringMacro(ModelFileName);

  /** A loaded model, possibly shared with other filters; takes precedence over the file name. */
  void
  SetModel(ComboSegModel * model);
  /** The model in use (loaded from the file on first use when only a file name was given). */
  ComboSegModel *
  GetModel();

  /** Optional body mask on the first input's grid, for channels normalised inside a mask. */
  itkSetInputMacro(Mask, MaskImageType);
  itkGetInputMacro(Mask, MaskImageType);

  /** Threads of the engine (OpenMP) and of the pre- and post-processing (ITK work units); 0 takes
   * their defaults. */
  itkSetMacro(NumberOfThreads, int);
  itkGetConstMacro(NumberOfThreads, int);

  /** Convolutions of inference in bfloat16 (float32 sums) where the CPU has AVX512_BF16: about
   * twice as fast, Dice within 0.004 of float32's on the bundled models' evaluation cases
   * (docs/performance.md); float32 elsewhere. On by default; off computes float32 everywhere. */
  itkSetMacro(BFloat16, bool);
  itkGetConstMacro(BFloat16, bool);
  itkBooleanMacro(BFloat16);

  /** Fraction of the sliding window shared by neighbouring windows, in [CS_OVERLAP_MIN,
   * CS_OVERLAP_MAX] (CS_OVERLAP_DEFAULT; comboseg/parameters.h); a value outside throws, naming
   * Overlap. */
  void
  SetOverlap(double overlap);
  itkGetConstMacro(Overlap, double);

  /** Background for the voxels outside the body of every channel whose recipe z-scores inside one
   * (see ComboSegOutsideBody): on by default, as such voxels are no data for the model. */
  itkSetMacro(BackgroundOutsideBody, bool);
  itkGetConstMacro(BackgroundOutsideBody, bool);
  itkBooleanMacro(BackgroundOutsideBody);

  /** Apply what the model recommends: its clean-up (cs_model_info::postprocessing) and its
   * test-time mirroring (test_time_mirror_axes). On by default; off gives the network's single
   * pass, with only the steps switched on below. */
  itkSetMacro(UseModelRecommendations, bool);
  itkGetConstMacro(UseModelRecommendations, bool);
  itkBooleanMacro(UseModelRecommendations);

  /** Keep only the largest connected component of each class (whatever the model recommends). */
  itkSetMacro(LargestComponent, bool);
  itkGetConstMacro(LargestComponent, bool);
  itkBooleanMacro(LargestComponent);

  /** Fill background holes enclosed by a class (whatever the model recommends). */
  itkSetMacro(FillHoles, bool);
  itkGetConstMacro(FillHoles, bool);
  itkBooleanMacro(FillHoles);

  /** A voxel whose winning class probability is below this becomes background; in [0, 1], a
   * value outside throws, naming MinimumProbability. */
  void
  SetMinimumProbability(double probability);
  itkGetConstMacro(MinimumProbability, double);

  /** Segment inputs that look like another modality than the model's (off: such inputs throw). */
  itkSetMacro(IgnoreModalityMismatch, bool);
  itkGetConstMacro(IgnoreModalityMismatch, bool);
  itkBooleanMacro(IgnoreModalityMismatch);

  /** Test-time augmentation: a bit mask of the model grid's axes (1 x, 2 y, 4 z; z is ignored for
   * 2D models). The input is segmented in every combination of mirrors along them (2^axes passes)
   * and the class probabilities, mirrored back, are averaged before the argmax; mirroring x swaps
   * the probabilities of left/right classes (ComboSegLeftRightPartners). Costs one inference per
   * pass and no memory: the image and the probability sum are mirrored in place and the engine
   * adds each pass to the sum. 0 (the default) adds none to what the model recommends. */
  void
  SetTestTimeMirrorAxes(unsigned int axes); // above 7 throws, naming TestTimeMirrorAxes
  itkGetConstMacro(TestTimeMirrorAxes, unsigned int);
  /** The mirror axes a run with a model of this info averages over: those set here and, with
   * UseModelRecommendations, those the model recommends (limited to the image's axes). */
  unsigned int
  MirrorAxes(const cs_model_info & info) const;

  /** true: the output holds the classes' label values; false: class indices 0..K-1. */
  itkSetMacro(OutputLabelValues, bool);
  itkGetConstMacro(OutputLabelValues, bool);
  itkBooleanMacro(OutputLabelValues);

protected:
  ComboSegImageFilter();
  ~ComboSegImageFilter() override = default;

  void
  PrintSelf(std::ostream & os, Indent indent) const override;

  /** The whole of every input is needed and the whole output is produced at once. */
  void
  GenerateInputRequestedRegion() override;
  void
  EnlargeOutputRequestedRegion(DataObject * output) override;

  /** Channels are checked in GenerateData, where messages can name the model's channels and
   * sizes are compared too. */
  void
  VerifyInputInformation() const override
  {
  }

  void
  GenerateData() override;

private:
  /** The engine's progress for one pass of the test-time augmentation. */
  struct PassProgress
  {
    Self *       filter;
    unsigned int pass, passes;
  };
  static int
  EngineProgress(void * passProgress, float fraction);

  /** Class probabilities (K, model grid) of the image, averaged over the test-time mirrors, or
   * (without mirrors only) the engine's class indices; the other pointer is null. */
  void
  Predict(ComboSegModel * model, const ComboSegGrid & grid, ComboSegVolume & image, float * probabilities,
          int32_t * labels);

  /** Class indices on outputGrid of the image on modelGrid (which it releases). */
  void
  PredictLabels(ComboSegModel * model, const ComboSegGrid & modelGrid, ComboSegVolume & image,
                const ComboSegGrid & outputGrid, int32_t * labels);

  ComboSegModel::Pointer m_Model{};
  std::string            m_ModelFileName{};
  int                    m_NumberOfThreads{ 0 };
  bool                   m_BFloat16{ true };
  double                 m_Overlap{ CS_OVERLAP_DEFAULT };
  bool                   m_BackgroundOutsideBody{ true };
  bool                   m_UseModelRecommendations{ true };
  bool                   m_LargestComponent{ false };
  bool                   m_FillHoles{ false };
  double                 m_MinimumProbability{ 0.0 };
  unsigned int           m_TestTimeMirrorAxes{ 0 };
  bool                   m_OutputLabelValues{ true };
  bool                   m_IgnoreModalityMismatch{ false };
};

} // end namespace itk

#ifndef ITK_MANUAL_INSTANTIATION
#include "itkComboSegImageFilter.hxx"
#endif

#endif
