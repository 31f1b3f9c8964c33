/*
 * itkComboSegModel.h - a ComboSeg model (weights and metadata) as an itk::Object, so that one
 * loaded model can be shared by several filters through a SmartPointer.
 */
#ifndef itkComboSegModel_h
#define itkComboSegModel_h

#include <string>

#include "itkObject.h"
#include "itkObjectFactory.h"
#include "comboseg/comboseg.h"
#include "comboseg/parameters.h" // the defaults and ranges every layer shares

namespace itk
{

/** \class ComboSegModel
 * \brief Owns a cs_model_t. The model is read-only during inference, so filters running in
 * parallel may share it. Every engine error becomes an itk::ExceptionObject carrying the
 * engine's message.
 */
class ComboSegModel : public Object
{
public:
  ITK_DISALLOW_COPY_AND_MOVE(ComboSegModel);

  using Self = ComboSegModel;
  using Superclass = Object;
  using Pointer = SmartPointer<Self>;
  using ConstPointer = SmartPointer<const Self>;

  itkNewMacro(Self);
  itkTypeMacro(ComboSegModel, Object);

  /** Loads a model file (safetensors with ComboSeg metadata), replacing any held model. */
  void
  Load(const std::string & path);

  /** Saves the model atomically; a failed save leaves an existing file intact. */
  void
  Save(const std::string & path) const;

  /** Takes ownership of an engine model (freed with this object); nullptr releases the held one. */
  void
  SetModel(cs_model_t model);

  /** The held engine model, or nullptr. Still owned by this object. */
  cs_model_t
  GetModel() const
  {
    return m_Model;
  }

  bool
  IsLoaded() const
  {
    return m_Model != nullptr;
  }

  /** The model's metadata; throws when no model is held. */
  const cs_model_info &
  GetInfo() const;

  /** The file the model was loaded from or last saved to ("" when built in memory). */
  itkGetStringMacro(FileName);

protected:
  ComboSegModel() = default;
  ~ComboSegModel() override;
  void
  PrintSelf(std::ostream & os, Indent indent) const override;

private:
  cs_model_t  m_Model{ nullptr };
  std::string m_FileName{};
};

/** An engine context owned for the lifetime of a scope (one per thread of the caller). */
class ComboSegContext
{
public:
  ComboSegContext();
  ~ComboSegContext();
  ComboSegContext(const ComboSegContext &) = delete;
  ComboSegContext &
  operator=(const ComboSegContext &) = delete;

  cs_context_t
  Get() const
  {
    return m_Context;
  }

private:
  cs_context_t m_Context{ nullptr };
};

/** Throws an itk::ExceptionObject built from an engine status and the context's message. */
[[noreturn]] void
ComboSegThrowEngineError(const char * file, unsigned int line, const char * what, cs_status status,
                         cs_context_t context);

} // end namespace itk

#endif
