// ComboSegPipeline - segments a scan with a ComboSeg model in a three-filter ITK pipeline:
//
//   reader (image file, or ImageSeriesReader for a DICOM folder) -> ComboSegImageFilter -> writer
//
// Usage: ComboSegPipeline <scan file or DICOM folder> <model.safetensors> <output label map>
//                         [threads] [--largest-component] [--fill-holes]
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>

#include "itkComboSegFiles.h"
#include "itkComboSegIO.h"
#include "itkComboSegImageFilter.h"
#include "itkGDCMImageIO.h"
#include "itkImageFileReader.h"
#include "itkImageFileWriter.h"
#include "itkImageSeriesReader.h"

int
main(int argc, char * argv[])
{
  if (argc < 4)
  {
    std::cerr << "usage: " << argv[0]
              << " <scan file or DICOM folder> <model.safetensors> <output label map> [threads]"
                 " [--largest-component] [--fill-holes]\n";
    return EXIT_FAILURE;
  }
  using ImageType = itk::Image<float, 3>;
  using LabelImageType = itk::Image<unsigned short, 3>;
  const std::string scan = argv[1], modelFile = argv[2], output = argv[3];

  try
  {
    const auto start = std::chrono::steady_clock::now();
    itk::ComboSegRegisterImageIO();

    // 1. The reader: a DICOM folder is a series sorted by slice position.
    itk::ImageSource<ImageType>::Pointer reader;
    if (itk::ComboSegIsFolder(scan))
    {
      auto series = itk::ImageSeriesReader<ImageType>::New();
      series->SetImageIO(itk::GDCMImageIO::New());
      series->SetFileNames(itk::ComboSegDicomSeriesFiles(scan));
      reader = series;
    }
    else
    {
      auto file = itk::ImageFileReader<ImageType>::New();
      file->SetFileName(scan);
      reader = file;
    }

    // 2. The segmentation.
    auto segment = itk::ComboSegImageFilter<ImageType, LabelImageType>::New();
    segment->SetModelFileName(modelFile);
    segment->SetInput(reader->GetOutput());
    for (int i = 4; i < argc; ++i)
    {
      const std::string option = argv[i];
      if (option == "--largest-component")
        segment->LargestComponentOn();
      else if (option == "--fill-holes")
        segment->FillHolesOn();
      else
        segment->SetNumberOfThreads(std::atoi(argv[i]));
    }

    // 3. The writer pulls the pipeline.
    auto writer = itk::ImageFileWriter<LabelImageType>::New();
    writer->SetInput(segment->GetOutput());
    writer->SetFileName(output);
    writer->UseCompressionOn();
    writer->Update();

    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const auto   size = segment->GetOutput()->GetLargestPossibleRegion().GetSize();
    std::cout << "segmented " << scan << " (" << size[0] << "x" << size[1] << "x" << size[2] << ") with "
              << segment->GetModel()->GetInfo().name << " into " << output << " in " << seconds << " s\n";
  }
  catch (const itk::ExceptionObject & e)
  {
    std::cerr << "error: " << e.GetDescription() << "\n";
    return EXIT_FAILURE;
  }
  return EXIT_SUCCESS;
}
