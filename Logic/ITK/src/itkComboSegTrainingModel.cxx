// itkComboSegTrainingModel.cxx - the model a training run trains: a new one whose classes come
// from the cases' label names (or values), or a copy of a base model whose head grows the
// structures it lacks; then the metadata the output model carries.
#include "itkComboSegTrainingRun.h"

#include "itkComboSegDataSet.h"
#include "itkComboSegProcessing.h"
#include "itkComboSegFiles.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>

namespace itk
{
using namespace training;

namespace
{

// The structures the cases name: the given names, plus those a Slicer segmentation file carries
// (PrepareCase prefers a file's own names), one entry per name.
std::vector<LabelName>
CollectNames(const std::vector<LabelName> & given, const std::vector<ComboSegCaseFiles> & cases)
{
  std::vector<LabelName> names;
  std::set<std::string>  seen;
  auto                   add = [&](const LabelName & n) {
    if (n.value != 0 && !n.name.empty() && seen.insert(ComboSegStructureNameKey(n.name)).second)
      names.push_back(n);
  };
  for (const LabelName & n : given)
    add(n);
  for (const ComboSegCaseFiles & c : cases)
    if (!c.labels.empty() && (ComboSegEndsWithNoCase(c.labels, ".nrrd") || ComboSegEndsWithNoCase(c.labels, ".nhdr")))
      for (const LabelName & n : ReadLabelNames(c.labels))
        add(n);
  return names;
}

// The label values present in the cases' label maps (for a new model without names).
std::vector<int32_t>
CollectLabelValues(const std::vector<ComboSegCaseFiles> & cases)
{
  std::set<int32_t> values;
  for (const ComboSegCaseFiles & c : cases)
  {
    if (c.labels.empty())
      continue;
    auto         labels = ReadScan<Image<int, 3>>(c.labels);
    const int *  v = labels->GetBufferPointer();
    const size_t n = labels->GetLargestPossibleRegion().GetNumberOfPixels();
    for (size_t i = 0; i < n; ++i)
      values.insert(v[i]);
  }
  return std::vector<int32_t>(values.begin(), values.end());
}

// Distinct colours for classes that come without one: hues a golden angle apart.
std::array<uint8_t, 3>
PaletteColor(int i)
{
  const double h = std::fmod(i * 0.618033988749895, 1.0) * 6.0;
  const double s = 0.65, v = 0.9;
  const int    sector = static_cast<int>(h);
  const double f = h - sector, p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  double       r, g, b;
  switch (sector % 6)
  {
    case 0: r = v, g = t, b = p; break;
    case 1: r = q, g = v, b = p; break;
    case 2: r = p, g = v, b = t; break;
    case 3: r = p, g = q, b = v; break;
    case 4: r = t, g = p, b = v; break;
    default: r = v, g = p, b = q; break;
  }
  return { { static_cast<uint8_t>(r * 255), static_cast<uint8_t>(g * 255), static_cast<uint8_t>(b * 255) } };
}

cs_class_info
MakeClass(const LabelName & n, int paletteIndex, int32_t value)
{
  cs_class_info c{};
  c.value = value;
  CopyText(c.name, n.name);
  const std::array<uint8_t, 3> rgb = n.hasColor ? n.rgb : PaletteColor(paletteIndex);
  std::memcpy(c.rgb, rgb.data(), 3);
  return c;
}

// Classes of a new model: background, then the named labels by value (or "label <v>" without names).
std::vector<cs_class_info>
NewModelClasses(std::vector<LabelName> names, const std::vector<ComboSegCaseFiles> & cases)
{
  std::vector<cs_class_info> classes;
  LabelName                  background{ 0, "background", { { 0, 0, 0 } }, true };
  classes.push_back(MakeClass(background, 0, 0));
  if (names.empty())
    for (int32_t v : CollectLabelValues(cases))
      if (v != 0)
        names.push_back(LabelName{ v, "label " + std::to_string(v), { { 0, 0, 0 } }, false });
  std::sort(names.begin(), names.end(), [](const LabelName & a, const LabelName & b) { return a.value < b.value; });
  for (const LabelName & n : names)
    classes.push_back(MakeClass(n, static_cast<int>(classes.size()), n.value));
  if (classes.size() < 2)
    itkGenericExceptionMacro("a new model needs the names of its structures (label names) or at least one "
                             "foreground label");
  if (classes.size() > CS_MAX_CLASSES)
    itkGenericExceptionMacro("a model holds at most " << CS_MAX_CLASSES << " classes, the labels name "
                                                      << classes.size());
  return classes;
}

} // namespace

void
ComboSegTrainingSession::Impl::SetUpModel()
{
  siteNames = CollectNames(s.m_LabelNames, trainingCases);
  if (s.m_NewModel)
    this->CreateNewModel();
  else
  {
    this->LoadBaseModel();
    this->AddMissingClasses();
  }
  this->WriteMetadata();
  info = *cs_model_get_info(model.model);
  K = info.arch.num_classes;
  C = info.arch.in_channels;
  for (int32_t k = 0; k < K; ++k)
    classNames.emplace_back(info.classes[k].name);
  // Patches flipped along x swap left/right classes (L_thalamus, R_thalamus...), keeping labels true.
  mirrorClasses = ComboSegLeftRightPartners(info);
  sampling = s.m_Sampling;
  if (!sampling.mirror_classes)
    sampling.mirror_classes = mirrorClasses.data();
}

void
ComboSegTrainingSession::Impl::CreateNewModel()
{
  cs_unet_config arch = s.m_NewArch;
  cs_model_info  newInfo;
  arch.num_classes = 2; // placeholder until the classes are known
  Check(cs_model_info_init(&newInfo, &arch), ctx, "bad architecture");
  const std::vector<cs_class_info> classes = NewModelClasses(siteNames, trainingCases);
  arch.num_classes = static_cast<int32_t>(classes.size());
  Check(cs_model_info_init(&newInfo, &arch), ctx, "bad architecture");
  for (int32_t k = 0; k < arch.num_classes; ++k)
    newInfo.classes[k] = classes[k];
  if (!s.m_NewChannels.empty())
  {
    if (static_cast<int32_t>(s.m_NewChannels.size()) != arch.in_channels)
      itkGenericExceptionMacro("the architecture has " << arch.in_channels << " input channel(s) but "
                                                       << s.m_NewChannels.size() << " channel descriptions were given");
    for (int32_t c = 0; c < arch.in_channels; ++c)
      newInfo.channels[c] = s.m_NewChannels[c];
  }
  for (int i = 0; i < 3; ++i)
    newInfo.spacing[i] = s.m_TargetSpacing[i];
  CopyText(newInfo.orientation, s.m_Orientation);
  newInfo.postprocessing.largest_component = 1; // recommended to segmenters; a base model's is kept
  for (int i = 0; i < 3; ++i)
    if (s.m_TrainConfig.patch_size[i] > 0)
      newInfo.patch_size[i] = s.m_TrainConfig.patch_size[i];
  Check(cs_model_create(ctx, &newInfo, s.m_TrainConfig.seed, &model.model), ctx, "cannot create the model");
}

void
ComboSegTrainingSession::Impl::LoadBaseModel()
{
  if (s.m_BaseModel && s.m_BaseModel->GetModel())
    model.Reset(CloneModel(ctx, s.m_BaseModel->GetModel()));
  else if (!s.m_BaseModelFileName.empty())
    Check(cs_model_load(ctx, s.m_BaseModelFileName.c_str(), &model.model), ctx,
          "cannot load the base model " + s.m_BaseModelFileName);
  else
    itkGenericExceptionMacro("give a base model or a new architecture");
  provenance = std::string("fine-tuned from ") + cs_model_get_info(model.model)->name + "; ";
}

// Structures the site names that the base model lacks: the head grows, old classes are kept.
void
ComboSegTrainingSession::Impl::AddMissingClasses()
{
  const cs_model_info &      base = *cs_model_get_info(model.model);
  std::vector<cs_class_info> added;
  auto                       known = [&](const std::string & name) {
    const std::string key = ComboSegStructureNameKey(name);
    for (int32_t k = 0; k < base.arch.num_classes; ++k)
      if (ComboSegStructureNameKey(base.classes[k].name) == key)
        return true;
    return std::any_of(added.begin(), added.end(),
                                             [&](const cs_class_info & a) { return ComboSegStructureNameKey(a.name) == key; });
  };
  // Label values stay unique among the classes: a taken value moves past the largest.
  auto freeValue = [&](int32_t value) {
    int32_t largest = 0;
    bool    taken = false;
    for (int32_t k = 0; k < base.arch.num_classes; ++k)
      taken = taken || base.classes[k].value == value, largest = std::max(largest, base.classes[k].value);
    for (const auto & a : added)
      taken = taken || a.value == value, largest = std::max(largest, a.value);
    return taken ? largest + 1 : value;
  };
  for (const LabelName & n : siteNames)
  {
    if (known(n.name))
      continue;
    if (!s.m_AddMissingClasses)
      itkGenericExceptionMacro("the base model " << base.name << " has no class named '" << n.name
                                                 << "' (allow adding structures to learn it)");
    added.push_back(MakeClass(n, base.arch.num_classes + static_cast<int>(added.size()), freeValue(n.value)));
    result.addedClasses.push_back(n.name);
  }
  if (added.empty())
    return;
  cs_model_t grown = nullptr;
  Check(cs_model_add_classes(ctx, model.model, added.data(), static_cast<int32_t>(added.size()), &grown), ctx,
        "cannot add the new structures to the model");
  model.Reset(grown);
}

// Metadata the output model carries: what it was trained on, with which loss, under which licence.
void
ComboSegTrainingSession::Impl::WriteMetadata()
{
  cs_model_info meta = *cs_model_get_info(model.model);
  if (!s.m_ModelName.empty())
    CopyText(meta.name, s.m_ModelName);
  if (!s.m_ModelDescription.empty())
    CopyText(meta.description, s.m_ModelDescription);
  if (!s.m_Licence.empty())
    CopyText(meta.licence, s.m_Licence);
  if (!s.m_TrainingDataDescription.empty())
    CopyText(meta.training_data, s.m_TrainingDataDescription);
  else
  {
    std::ostringstream text;
    text << provenance << trainingCases.size() << " training case(s) (";
    for (size_t i = 0; i < trainingCases.size(); ++i)
      text << (i ? ", " : "") << trainingCases[i].id;
    text << "), " << validationCases.size() << " validation case(s)";
    CopyText(meta.training_data, text.str());
  }
  meta.loss = s.m_TrainConfig.loss;
  meta.loss.class_weights = nullptr;
  meta.loss.labelled_classes = nullptr;
  for (int i = 0; i < 3; ++i)
    if (s.m_TrainConfig.patch_size[i] > 0)
      meta.patch_size[i] = s.m_TrainConfig.patch_size[i];
  if (s.m_RecommendedTestTimeMirrorAxes >= 0)
    meta.test_time_mirror_axes = s.m_RecommendedTestTimeMirrorAxes;
  if (s.m_RecommendedLargestComponent >= 0)
    meta.postprocessing.largest_component = s.m_RecommendedLargestComponent ? 1 : 0;
  Check(cs_model_set_info(ctx, model.model, &meta), ctx, "bad model metadata");
}

} // namespace itk
