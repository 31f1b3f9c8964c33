// A consumer of the installed package: writes a small oblique scan, runs reader -> ComboSeg ->
// writer with a freshly created model, reads the label map back and checks that its geometry is
// the scan's. Exits non-zero on any failure.
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <string>

#include "comboseg/comboseg.h"
#include "itkComboSegIO.h"
#include "itkComboSegImageFilter.h"
#include "itkComboSegModel.h"
#include "itkImageFileReader.h"
#include "itkImageFileWriter.h"
#include "itkImageRegionIteratorWithIndex.h"

int
main(int argc, char * argv[])
{
  if (argc < 2)
  {
    std::cerr << "usage: " << argv[0] << " <work folder>\n";
    return EXIT_FAILURE;
  }
  const std::string folder = argv[1];
  using ImageType = itk::Image<float, 3>;
  using LabelImageType = itk::Image<unsigned char, 3>;
  try
  {
    itk::ComboSegRegisterImageIO();

    // A 23x19x17 scan with oblique axes and anisotropic voxels: a bright ball in the middle.
    auto                  scan = ImageType::New();
    ImageType::RegionType region;
    region.SetSize({ { 23, 19, 17 } });
    scan->SetRegions(region);
    ImageType::SpacingType spacing;
    spacing[0] = 1.3;
    spacing[1] = 0.9;
    spacing[2] = 2.1;
    scan->SetSpacing(spacing);
    ImageType::DirectionType direction;
    const double             a = 0.4;
    direction.SetIdentity();
    direction(0, 0) = std::cos(a);
    direction(0, 1) = -std::sin(a);
    direction(1, 0) = std::sin(a);
    direction(1, 1) = std::cos(a);
    scan->SetDirection(direction);
    scan->Allocate();
    itk::ImageRegionIteratorWithIndex<ImageType> it(scan, region);
    for (it.GoToBegin(); !it.IsAtEnd(); ++it)
    {
      const auto   i = it.GetIndex();
      const double r = std::hypot(std::hypot(i[0] - 11.0, i[1] - 9.0), i[2] - 8.0);
      it.Set(r < 5.0 ? 200.0f : 0.0f);
    }
    auto scanWriter = itk::ImageFileWriter<ImageType>::New();
    scanWriter->SetInput(scan);
    scanWriter->SetFileName(folder + "/scan.nrrd");
    scanWriter->Update();

    // A small untrained model, saved and loaded like any model file.
    cs_unet_config arch = cs_unet_config_default();
    arch.num_classes = 3;
    arch.base_filters = 4;
    arch.levels = 2;
    cs_model_info info;
    if (cs_model_info_init(&info, &arch) != CS_OK)
      throw std::runtime_error("cs_model_info_init failed");
    info.patch_size[0] = info.patch_size[1] = info.patch_size[2] = 16;
    itk::ComboSegContext context;
    cs_model_t           created = nullptr;
    if (cs_model_create(context.Get(), &info, 1, &created) != CS_OK)
      throw std::runtime_error(cs_context_last_error(context.Get()));
    auto model = itk::ComboSegModel::New();
    model->SetModel(created);
    model->Save(folder + "/model.safetensors");

    // reader -> ComboSeg -> writer
    auto reader = itk::ImageFileReader<ImageType>::New();
    reader->SetFileName(folder + "/scan.nrrd");
    auto segment = itk::ComboSegImageFilter<ImageType, LabelImageType>::New();
    segment->SetModelFileName(folder + "/model.safetensors");
    segment->SetInput(reader->GetOutput());
    auto writer = itk::ImageFileWriter<LabelImageType>::New();
    writer->SetInput(segment->GetOutput());
    writer->SetFileName(folder + "/labels.nrrd");
    writer->Update();

    auto       labels = itk::ReadScan<LabelImageType>(folder + "/labels.nrrd");
    const bool same = labels->GetLargestPossibleRegion().GetSize() == region.GetSize() &&
                      labels->GetSpacing() == reader->GetOutput()->GetSpacing() &&
                      labels->GetOrigin() == reader->GetOutput()->GetOrigin() &&
                      (labels->GetDirection().GetVnlMatrix() - direction.GetVnlMatrix()).absolute_value_max() < 1e-6;
    std::cout << "ComboSegConsumer: segmented a " << region.GetSize() << " scan with " << info.arch.num_classes
              << " classes; output geometry " << (same ? "equals" : "DIFFERS FROM") << " the input's\n";
    return same ? EXIT_SUCCESS : EXIT_FAILURE;
  }
  catch (const std::exception & e)
  {
    std::cerr << "ComboSegConsumer: " << e.what() << "\n";
    return EXIT_FAILURE;
  }
}
