// Segment a scan with a ComboSeg model in an ITK pipeline: ComboSegSnippet <scan> <model> <labels>
#include <cstdlib>
#include <iostream>

#include "itkComboSegIO.h"
#include "itkComboSegImageFilter.h"
#include "itkImageFileWriter.h"

int
main(int argc, char * argv[])
{
  if (argc != 4)
  {
    std::cerr << "usage: " << argv[0] << " <scan file or DICOM folder> <model.safetensors> <labels.nii.gz>\n";
    return EXIT_FAILURE;
  }
  using ImageType = itk::Image<float, 3>;
  using LabelImageType = itk::Image<unsigned short, 3>;
  try
  {
    auto segment = itk::ComboSegImageFilter<ImageType, LabelImageType>::New();
    segment->SetModelFileName(argv[2]);
    segment->SetInput(0, itk::ReadScan<ImageType>(argv[1])); // one input per model channel
    segment->LargestComponentOn();                           // optional clean-up
    segment->SetNumberOfThreads(2);                          // 0: all cores

    auto writer = itk::ImageFileWriter<LabelImageType>::New();
    writer->SetInput(segment->GetOutput()); // label values on the scan's own grid
    writer->SetFileName(argv[3]);
    writer->Update();

    const cs_model_info & info = segment->GetModel()->GetInfo(); // names and colours
    for (int k = 1; k < info.arch.num_classes; ++k)
      std::cout << info.classes[k].value << " " << info.classes[k].name << "\n";
  }
  catch (const itk::ExceptionObject & e) // every error: a message naming the problem
  {
    std::cerr << "error: " << e.GetDescription() << "\n";
    return EXIT_FAILURE;
  }
  return EXIT_SUCCESS;
}
