#ifndef itkComboSegImageFilter_hxx
#define itkComboSegImageFilter_hxx

#include <algorithm>
#include <limits>
#include <memory>
#include <vector>

#include "itkComboSegImageFilter.h"
#include "itkComboSegInputChecks.h"
#include "itkComboSegProcessing.h"
#include "itkImageRegionIterator.h"
#include "itkProcessObject.h"

namespace itk
{

template <typename TInputImage, typename TOutputImage>
ComboSegImageFilter<TInputImage, TOutputImage>::ComboSegImageFilter()
{
  // Inputs beyond the first are further channels; the mask is optional.
  this->SetNumberOfRequiredInputs(1);
}

template <typename TInputImage, typename TOutputImage>
void
ComboSegImageFilter<TInputImage, TOutputImage>::SetModelFileName(const std::string & path)
{
  if (path == m_ModelFileName)
  {
    return;
  }
  m_ModelFileName = path;
  // A file name replaces a model loaded from another file, not one given as an object.
  if (m_Model && m_Model->GetFileName() != path && !std::string(m_Model->GetFileName()).empty())
  {
    m_Model = nullptr;
  }
  this->Modified();
}

template <typename TInputImage, typename TOutputImage>
void
ComboSegImageFilter<TInputImage, TOutputImage>::SetModel(ComboSegModel * model)
{
  if (m_Model.GetPointer() != model)
  {
    m_Model = model;
    this->Modified();
  }
}

template <typename TInputImage, typename TOutputImage>
void
ComboSegImageFilter<TInputImage, TOutputImage>::SetOverlap(double overlap)
{
  if (!(overlap >= CS_OVERLAP_MIN && overlap <= CS_OVERLAP_MAX))
  {
    itkExceptionMacro(<< "Overlap " << overlap << " is outside [" << CS_OVERLAP_MIN << ", " << CS_OVERLAP_MAX << "]");
  }
  if (overlap != m_Overlap)
  {
    m_Overlap = overlap;
    this->Modified();
  }
}

template <typename TInputImage, typename TOutputImage>
void
ComboSegImageFilter<TInputImage, TOutputImage>::SetMinimumProbability(double probability)
{
  if (!(probability >= 0.0 && probability <= 1.0))
  {
    itkExceptionMacro(<< "MinimumProbability " << probability << " is outside [0, 1]");
  }
  if (probability != m_MinimumProbability)
  {
    m_MinimumProbability = probability;
    this->Modified();
  }
}

template <typename TInputImage, typename TOutputImage>
void
ComboSegImageFilter<TInputImage, TOutputImage>::SetTestTimeMirrorAxes(unsigned int axes)
{
  if (axes > 7)
  {
    itkExceptionMacro(<< "TestTimeMirrorAxes " << axes << " is not a mask of the axes x (1), y (2) and z (4)");
  }
  if (axes != m_TestTimeMirrorAxes)
  {
    m_TestTimeMirrorAxes = axes;
    this->Modified();
  }
}

template <typename TInputImage, typename TOutputImage>
ComboSegModel *
ComboSegImageFilter<TInputImage, TOutputImage>::GetModel()
{
  if (!m_Model)
  {
    if (m_ModelFileName.empty())
    {
      itkExceptionMacro(<< "no model: call SetModelFileName or SetModel");
    }
    ComboSegModel::Pointer model = ComboSegModel::New();
    model->Load(m_ModelFileName);
    m_Model = model;
  }
  return m_Model.GetPointer();
}

template <typename TInputImage, typename TOutputImage>
void
ComboSegImageFilter<TInputImage, TOutputImage>::GenerateInputRequestedRegion()
{
  Superclass::GenerateInputRequestedRegion();
  for (auto & name : this->GetInputNames())
  {
    auto * input = dynamic_cast<ImageBase<ImageDimension> *>(this->ProcessObject::GetInput(name));
    if (input)
    {
      input->SetRequestedRegionToLargestPossibleRegion();
    }
  }
}

template <typename TInputImage, typename TOutputImage>
void
ComboSegImageFilter<TInputImage, TOutputImage>::EnlargeOutputRequestedRegion(DataObject * output)
{
  Superclass::EnlargeOutputRequestedRegion(output);
  output->SetRequestedRegionToLargestPossibleRegion();
}

template <typename TInputImage, typename TOutputImage>
int
ComboSegImageFilter<TInputImage, TOutputImage>::EngineProgress(void * passProgress, float fraction)
{
  const auto * p = static_cast<const PassProgress *>(passProgress);
  // Pre-processing takes the first 10 %, post-processing the last 10 %.
  p->filter->UpdateProgress(0.1f + 0.8f * (static_cast<float>(p->pass) + fraction) / static_cast<float>(p->passes));
  return p->filter->GetAbortGenerateData() ? 1 : 0;
}

template <typename TInputImage, typename TOutputImage>
unsigned int
ComboSegImageFilter<TInputImage, TOutputImage>::MirrorAxes(const cs_model_info & info) const
{
  return ComboSegTestTimeMirrorAxes(info, m_TestTimeMirrorAxes, m_UseModelRecommendations);
}

template <typename TInputImage, typename TOutputImage>
void
ComboSegImageFilter<TInputImage, TOutputImage>::Predict(ComboSegModel * model, const ComboSegGrid & grid,
                                                        ComboSegVolume & image, float * probabilities, int32_t * labels)
{
  const unsigned int mirrors = this->MirrorAxes(model->GetInfo());
  ComboSegContext    context;
  cs_context_set_threads(context.Get(), m_NumberOfThreads);
  cs_context_set_inference_precision(context.Get(), m_BFloat16 ? CS_PRECISION_BFLOAT16 : CS_PRECISION_FLOAT32);
  PassProgress     progress{ this, 0, ComboSegMirrorPassCount(mirrors) };
  cs_infer_options options = cs_infer_options_default();
  options.overlap = static_cast<float>(m_Overlap);
  options.progress = &Self::EngineProgress;
  options.progress_user_data = &progress;
  const cs_status status = ComboSegPredictMirrored(context.Get(), model->GetModel(), image, grid.size, mirrors, options,
                                                   probabilities, labels,
                                                   [&progress](unsigned int pass) { progress.pass = pass; });
  if (status == CS_ERR_CANCELLED && this->GetAbortGenerateData())
  {
    ProcessAborted aborted(__FILE__, __LINE__);
    aborted.SetDescription("ComboSegImageFilter aborted during inference");
    throw aborted;
  }
  if (status != CS_OK)
  {
    ComboSegThrowEngineError(__FILE__, __LINE__, "ComboSegImageFilter: inference failed", status, context.Get());
  }
}

template <typename TInputImage, typename TOutputImage>
void
ComboSegImageFilter<TInputImage, TOutputImage>::PredictLabels(ComboSegModel * model, const ComboSegGrid & modelGrid,
                                                              ComboSegVolume & image, const ComboSegGrid & outputGrid,
                                                              int32_t * labels)
{
  const int32_t      numberOfClasses = model->GetInfo().arch.num_classes;
  const unsigned int mirrors = this->MirrorAxes(model->GetInfo());
  if (mirrors == 0 && !(m_MinimumProbability > 0.0) && ComboSegCentresCoincideExactly(outputGrid, modelGrid))
  {
    // The engine's argmax is then the one ComboSegProbabilitiesToLabels would take: labels
    // without the probability map (K floats a voxel, 767 MB for a 1 mm whole head).
    // A scan already on the model's grid gets the engine's labels as they are; others through a
    // buffer on the model grid, not zeroed: the engine writes every label, over the threads (28 MB
    // of serial zeroes and first touches for a 1 mm head otherwise).
    const bool                 direct = ComboSegIndicesCoincide(outputGrid, modelGrid);
    std::unique_ptr<int32_t[]> modelLabels =
      direct ? nullptr : ComboSegNewVolumeBuffer<int32_t>(static_cast<size_t>(modelGrid.NumberOfVoxels()));
    this->Predict(model, modelGrid, image, nullptr, direct ? labels : modelLabels.get());
    image.clear();
    image.shrink_to_fit();
    if (!direct)
      ComboSegLabelsAtCentres(labels, outputGrid, modelLabels.get(), modelGrid, m_NumberOfThreads);
    return;
  }
  // Not zeroed: the first pass writes every value.
  std::unique_ptr<float[]> probabilities = ComboSegNewVolumeBuffer<float>(
    static_cast<size_t>(modelGrid.NumberOfVoxels()) * static_cast<size_t>(numberOfClasses));
  this->Predict(model, modelGrid, image, probabilities.get(), nullptr);
  image.clear();
  image.shrink_to_fit();
  ComboSegProbabilitiesToLabels(labels, outputGrid, probabilities.get(), modelGrid, numberOfClasses,
                                static_cast<float>(m_MinimumProbability), m_NumberOfThreads);
}

template <typename TInputImage, typename TOutputImage>
void
ComboSegImageFilter<TInputImage, TOutputImage>::GenerateData()
{
  ComboSegModel *       model = this->GetModel();
  const cs_model_info & info = model->GetInfo();
  if (info.arch.spatial_dims != static_cast<int32_t>(ImageDimension))
  {
    itkExceptionMacro(<< "model '" << info.name << "' is " << info.arch.spatial_dims << "D but the filter's images are "
                      << ImageDimension << "D");
  }
  this->UpdateProgress(0.0f);

  // Inputs as float volumes on 3D grids; messages name each input by its model channel.
  const unsigned int              inputs = this->GetNumberOfIndexedInputs();
  std::vector<std::vector<float>> values(inputs); // converted copies, where an input is not float
  std::vector<ComboSegChannel>    channels(inputs);
  for (unsigned int i = 0; i < inputs; ++i)
  {
    const InputImageType * input = this->GetInput(i);
    std::string            source = "input " + std::to_string(i);
    if (static_cast<int32_t>(i) < info.arch.in_channels)
    {
      source += " (" + std::string(info.channels[i].name) + ")";
    }
    if (!input)
    {
      itkExceptionMacro(<< source << " is not set");
    }
    channels[i].values = ComboSegFloatValuesOf(input, values[i]);
    channels[i].grid = ComboSegGridOf(input);
    channels[i].source = source;
    ComboSegCheckDimensions(channels[i].grid, info, source);
    if (!m_IgnoreModalityMismatch && static_cast<int32_t>(i) < info.arch.in_channels)
    {
      ComboSegCheckModality(channels[i].values, channels[i].grid.NumberOfVoxels(), input->GetMetaDataDictionary(), info,
                            static_cast<int>(i), source, "turn IgnoreModalityMismatch on to go ahead anyway",
                            m_NumberOfThreads);
    }
  }
  std::vector<uint8_t> mask;
  if (const MaskImageType * maskImage = this->GetMask())
  {
    if (!ComboSegSameGrid(ComboSegGridOf(maskImage), channels[0].grid))
    {
      itkExceptionMacro(<< "the mask is on a different grid than input 0: "
                        << ComboSegGridToString(ComboSegGridOf(maskImage)) << " versus "
                        << ComboSegGridToString(channels[0].grid));
    }
    for (float v : ComboSegValuesOf(maskImage))
    {
      mask.push_back(v != 0.0f ? 1 : 0);
    }
  }

  ComboSegGrid   modelGrid;
  ComboSegVolume image;
  ComboSegPrepareChannels(channels, info, mask.empty() ? nullptr : mask.data(), modelGrid, image, m_NumberOfThreads);
  std::vector<uint8_t> outside;
  if (m_BackgroundOutsideBody)
  {
    outside = ComboSegOutsideBody(channels, info, mask.empty() ? nullptr : mask.data(), m_NumberOfThreads);
  }
  values.clear();
  this->UpdateProgress(0.1f);

  // Sliding-window inference (the engine calls back per window), then back onto the input's exact
  // grid, and the clean-up.
  const int32_t      numberOfClasses = info.arch.num_classes;
  const ComboSegGrid outputGrid = channels[0].grid;
  const int64_t      voxels = outputGrid.NumberOfVoxels();
  // Not zeroed: PredictLabels writes every voxel.
  std::unique_ptr<int32_t[]> labels = ComboSegNewVolumeBuffer<int32_t>(static_cast<size_t>(voxels));
  this->PredictLabels(model, modelGrid, image, outputGrid, labels.get());
  // Before the clean-up, so that the largest component is chosen among voxels with data.
  if (!outside.empty())
  {
    ComboSegParallelChunks(voxels, m_NumberOfThreads, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        labels[i] = outside[static_cast<size_t>(i)] ? 0 : labels[i];
    });
  }
  const cs_postprocessing & recommended = info.postprocessing;
  const bool                useModel = m_UseModelRecommendations;
  if (m_LargestComponent || (useModel && recommended.largest_component))
  {
    ComboSegKeepLargestComponents(labels.get(), outputGrid.size, m_NumberOfThreads);
  }
  if (m_FillHoles || (useModel && recommended.fill_holes))
  {
    ComboSegFillHoles(labels.get(), outputGrid.size, m_NumberOfThreads);
  }
  this->UpdateProgress(0.95f);

  // Class indices or label values, checked against the output pixel type.
  std::vector<OutputPixelType> lookup(static_cast<size_t>(numberOfClasses));
  for (int32_t k = 0; k < numberOfClasses; ++k)
  {
    const double value = m_OutputLabelValues ? static_cast<double>(info.classes[k].value) : static_cast<double>(k);
    if (value > static_cast<double>(NumericTraits<OutputPixelType>::max()) ||
        value < static_cast<double>(NumericTraits<OutputPixelType>::NonpositiveMin()))
    {
      itkExceptionMacro(<< "label value " << value << " of class '" << info.classes[k].name
                        << "' does not fit the output pixel type");
    }
    lookup[static_cast<size_t>(k)] = static_cast<OutputPixelType>(value);
  }
  OutputImageType * output = this->GetOutput();
  output->SetBufferedRegion(output->GetRequestedRegion());
  output->Allocate();
  // The requested region is the largest (EnlargeOutputRequestedRegion): x fastest, as labels.
  OutputPixelType * out = output->GetBufferPointer();
  ComboSegAdviseHugePages(out, static_cast<size_t>(voxels) * sizeof(OutputPixelType));
  ComboSegParallelChunks(voxels, m_NumberOfThreads, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      out[i] = lookup[static_cast<size_t>(labels[i])];
  });
  this->UpdateProgress(1.0f);
}

template <typename TInputImage, typename TOutputImage>
void
ComboSegImageFilter<TInputImage, TOutputImage>::PrintSelf(std::ostream & os, Indent indent) const
{
  Superclass::PrintSelf(os, indent);
  os << indent << "ModelFileName: " << m_ModelFileName << std::endl;
  os << indent << "Model: ";
  if (m_Model)
  {
    os << std::endl;
    m_Model->Print(os, indent.GetNextIndent());
  }
  else
  {
    os << "(not loaded)" << std::endl;
  }
  os << indent << "NumberOfThreads: " << m_NumberOfThreads << std::endl;
  os << indent << "BFloat16: " << m_BFloat16 << std::endl;
  os << indent << "Overlap: " << m_Overlap << std::endl;
  os << indent << "BackgroundOutsideBody: " << (m_BackgroundOutsideBody ? "On" : "Off") << std::endl;
  os << indent << "UseModelRecommendations: " << (m_UseModelRecommendations ? "On" : "Off") << std::endl;
  os << indent << "LargestComponent: " << (m_LargestComponent ? "On" : "Off") << std::endl;
  os << indent << "FillHoles: " << (m_FillHoles ? "On" : "Off") << std::endl;
  os << indent << "MinimumProbability: " << m_MinimumProbability << std::endl;
  os << indent << "TestTimeMirrorAxes: " << m_TestTimeMirrorAxes << std::endl;
  os << indent << "OutputLabelValues: " << (m_OutputLabelValues ? "On" : "Off") << std::endl;
  os << indent << "IgnoreModalityMismatch: " << (m_IgnoreModalityMismatch ? "On" : "Off") << std::endl;
}

} // end namespace itk

#endif
