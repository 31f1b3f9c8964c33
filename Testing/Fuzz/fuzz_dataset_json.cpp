/* fuzz_dataset_json - libFuzzer target for data-set descriptions: the input is a dataset.json
 * (MSD or nnU-Net layout) in a scratch folder that holds two cases (empty image and label
 * files: ReadMSDDataSet only checks that they exist), read with itk::ReadMSDDataSet. The label
 * names it finds are then mapped onto a fixed model's classes (ComboSegMapLabelValues).
 *
 * A bad file must give an itk::ExceptionObject; anything else escaping, a crash or a sanitiser
 * report is a finding. A description that reads must name files that exist. */
#include <fstream>
#include <cstdio>
#include <string>
#include <sys/stat.h>

#include "comboseg/comboseg.h"
#include "fuzz_util.h"
#include "itkComboSegDataSet.h"

namespace
{
const std::string &
DataSetFolder()
{
  static std::string folder = [] {
    const std::string root = cs_fuzz::ScratchFolder() + "/Task00_Fuzz";
    for (const char * sub : { "", "/imagesTr", "/labelsTr" })
      mkdir((root + sub).c_str(), 0700);
    for (const char * file :
         { "/imagesTr/case_001_0000.nii.gz", "/imagesTr/case_001_0001.nii.gz", "/imagesTr/case_002_0000.nii.gz",
           "/imagesTr/case_002.nii.gz", "/labelsTr/case_001.nii.gz", "/labelsTr/case_002.nii.gz",
           "/imagesTr/case_001_0000.nrrd", "/labelsTr/case_001.nrrd" })
      cs_fuzz::WriteFile(root + file, nullptr, 0);
    return root;
  }();
  return folder;
}

const cs_model_info &
FuzzModelInfo()
{
  static cs_model_info info = [] {
    cs_unet_config arch = cs_unet_config_default();
    arch.num_classes = 4;
    cs_model_info i;
    cs_model_info_init(&i, &arch);
    const char * names[4] = { "background", "liver", "left kidney", "spleen" };
    for (int k = 0; k < 4; ++k)
    {
      i.classes[k].value = k;
      std::snprintf(i.classes[k].name, sizeof i.classes[k].name, "%s", names[k]);
    }
    return i;
  }();
  return info;
}

bool
Exists(const std::string & path)
{
  std::ifstream in(path);
  return static_cast<bool>(in);
}
} // namespace

extern "C" int
LLVMFuzzerTestOneInput(const uint8_t * data, size_t size)
{
  const std::string folder = DataSetFolder();
  cs_fuzz::WriteFile(folder + "/dataset.json", data, size);
  try
  {
    const itk::ComboSegDataSetDescription d = itk::ReadMSDDataSet(folder);
    for (const auto & c : d.cases)
    {
      if (!Exists(c.labels))
        __builtin_trap();
      for (const auto & channel : c.channels)
        if (!Exists(channel))
          __builtin_trap();
    }
    itk::ComboSegMapLabelValues(d.labelNames, FuzzModelInfo(), "fuzz");
  }
  catch (const itk::ExceptionObject &)
  {
    // a clear error: what a bad description should give
  }
  return 0;
}
