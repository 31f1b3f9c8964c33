#include "itkComboSegModel.h"

#include <sstream>

namespace itk
{

void
ComboSegThrowEngineError(const char * file, unsigned int line, const char * what, cs_status status,
                         cs_context_t context)
{
  std::ostringstream message;
  message << what << ": " << cs_status_string(status);
  const char * detail = context ? cs_context_last_error(context) : "";
  if (detail && *detail)
  {
    message << ": " << detail;
  }
  throw ExceptionObject(file, line, message.str(), "ComboSeg");
}

ComboSegContext::ComboSegContext()
{
  const cs_status status = cs_context_init(&m_Context);
  if (status != CS_OK)
  {
    m_Context = nullptr;
    ComboSegThrowEngineError(__FILE__, __LINE__, "cannot create an engine context", status, nullptr);
  }
}

ComboSegContext::~ComboSegContext()
{
  cs_context_free(m_Context);
}

ComboSegModel::~ComboSegModel()
{
  cs_model_free(m_Model);
}

void
ComboSegModel::Load(const std::string & path)
{
  ComboSegContext context;
  cs_model_t      loaded = nullptr;
  const cs_status status = cs_model_load(context.Get(), path.c_str(), &loaded);
  if (status != CS_OK)
  {
    ComboSegThrowEngineError(__FILE__, __LINE__, ("cannot load model file " + path).c_str(), status, context.Get());
  }
  cs_model_free(m_Model);
  m_Model = loaded;
  m_FileName = path;
  this->Modified();
}

void
ComboSegModel::Save(const std::string & path) const
{
  if (!m_Model)
  {
    itkExceptionMacro(<< "cannot save model file " << path << ": no model is held");
  }
  ComboSegContext context;
  const cs_status status = cs_model_save(context.Get(), m_Model, path.c_str());
  if (status != CS_OK)
  {
    ComboSegThrowEngineError(__FILE__, __LINE__, ("cannot save model file " + path).c_str(), status, context.Get());
  }
}

void
ComboSegModel::SetModel(cs_model_t model)
{
  if (model == m_Model)
  {
    return;
  }
  cs_model_free(m_Model);
  m_Model = model;
  m_FileName.clear();
  this->Modified();
}

const cs_model_info &
ComboSegModel::GetInfo() const
{
  if (!m_Model)
  {
    itkExceptionMacro(<< "no model is loaded");
  }
  return *cs_model_get_info(m_Model);
}

void
ComboSegModel::PrintSelf(std::ostream & os, Indent indent) const
{
  Superclass::PrintSelf(os, indent);
  os << indent << "FileName: " << m_FileName << std::endl;
  if (!m_Model)
  {
    os << indent << "Model: (none)" << std::endl;
    return;
  }
  const cs_model_info & info = *cs_model_get_info(m_Model);
  os << indent << "Name: " << info.name << std::endl;
  os << indent << "SpatialDimensions: " << info.arch.spatial_dims << std::endl;
  os << indent << "Channels:";
  for (int32_t c = 0; c < info.arch.in_channels; ++c)
  {
    os << ' ' << info.channels[c].name;
  }
  os << std::endl;
  os << indent << "Classes: " << info.arch.num_classes << std::endl;
  os << indent << "Spacing: " << info.spacing[0] << ' ' << info.spacing[1] << ' ' << info.spacing[2] << std::endl;
  os << indent << "Orientation: " << info.orientation << std::endl;
  os << indent << "Parameters: " << cs_model_num_parameters(m_Model) << std::endl;
}

} // end namespace itk
