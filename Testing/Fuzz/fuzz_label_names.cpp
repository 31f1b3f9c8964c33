/* fuzz_label_names - libFuzzer target for label-name files: colour tables (`value name R G B A`)
 * and CSV files (Slicer 5's header, or `value,name[,R,G,B]`), read with itk::ReadLabelNames, then
 * mapped onto a fixed model's classes with itk::ComboSegMapLabelValues. (The input is written as
 * a .txt file, which is read as CSV when its first line holds a comma, else as a colour table;
 * NRRD, which ITK's reader parses, is not fuzzed here.)
 *
 * A bad file must give an itk::ExceptionObject. Names that read must be sorted by value with no
 * value twice (what ReadLabelNames promises). */
#include <cstdio>
#include <string>

#include "comboseg/comboseg.h"
#include "fuzz_util.h"
#include "itkComboSegDataSet.h"
#include "itkComboSegIO.h"

namespace
{
const cs_model_info &
FuzzModelInfo()
{
  static cs_model_info info = [] {
    cs_unet_config arch = cs_unet_config_default();
    arch.num_classes = 4;
    cs_model_info i;
    cs_model_info_init(&i, &arch);
    const char * names[4] = { "background", "L_striatum", "Precentral_L", "liver" };
    for (int k = 0; k < 4; ++k)
    {
      i.classes[k].value = k;
      std::snprintf(i.classes[k].name, sizeof i.classes[k].name, "%s", names[k]);
    }
    return i;
  }();
  return info;
}
} // namespace

extern "C" int
LLVMFuzzerTestOneInput(const uint8_t * data, size_t size)
{
  const std::string path = cs_fuzz::ScratchFolder() + "/labels.txt";
  cs_fuzz::WriteFile(path, data, size);
  try
  {
    const std::vector<itk::LabelName> names = itk::ReadLabelNames(path);
    for (size_t i = 1; i < names.size(); ++i)
      if (!(names[i - 1].value < names[i].value))
        __builtin_trap();
    itk::ComboSegMapLabelValues(names, FuzzModelInfo(), path);
  }
  catch (const itk::ExceptionObject &)
  {
    // a clear error: what a bad file should give
  }
  return 0;
}
