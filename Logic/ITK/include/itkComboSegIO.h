/*
 * itkComboSegIO.h - reading scans (any ITK image file or a DICOM series folder) and label
 * names (Slicer segmentation NRRD keys, colour tables, CSV colour tables, model classes).
 */
#ifndef itkComboSegIO_h
#define itkComboSegIO_h

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "comboseg/comboseg.h"
#include "itkImage.h"

namespace itk
{

/** One class of a model or a label map: its label value, structure name and, when known, its
 * colour. The C++ layers' one record of a class (the engine's is cs_class_info): label names read
 * from files, a model's segments as ComboSegSegment writes them (ComboSegSegmentInfo), and
 * vtkComboSegLogic's structures. */
struct LabelName
{
  int                    value{ 0 };
  std::string            name{};
  std::array<uint8_t, 3> rgb{ { 0, 0, 0 } };
  bool                   hasColor{ false };
};

/** A model's foreground classes (1..K-1), with their colours. */
std::vector<LabelName>
ComboSegModelClasses(const cs_model_info & info);

/** Registers the image IO factories ComboSeg reads with (NIfTI, NRRD, MetaImage, GDCM), once,
 * skipping those already registered; ReadScan calls it. */
void
ComboSegRegisterImageIO();

/** Reads a scan: an image file (NIfTI, NRRD, MetaImage, ...) or a folder holding one DICOM series
 * (slices sorted by position; the largest series when there are several). Files with more than
 * TImage's dimension (a 4D file for a 3D image) or with vector pixels are refused. Throws an
 * itk::ExceptionObject naming the file and the problem. Pixels are cast to TImage's type over
 * numberOfThreads threads (0: ITK's default). */
template <typename TImage>
typename TImage::Pointer
ReadScan(const std::string & path, int numberOfThreads = 0);

/** The file names of the DICOM series in a folder, sorted by slice position. */
std::vector<std::string>
ComboSegDicomSeriesFiles(const std::string & folder);

/** The formats ReadLabelNames reads, for messages. */
constexpr const char * ComboSegLabelNameFormats =
  "label names are read from Slicer colour tables (.csv with a LabelValue,Name,Color_R,... header as Slicer 5 "
  "saves them, or value,name lines; .ctbl or .txt with 'value name R G B A' lines), segmentations (.seg.nrrd, "
  ".nrrd with Segment<i>_Name keys) and ComboSeg models (.safetensors)";

/** Label names, chosen by the file's ending: a Slicer segmentation or label NRRD
 * (`Segment<i>_Name`, `_LabelValue`, `_Color` keys; an empty list when it has none); a CSV colour
 * table read by its header (Slicer 5's LabelValue, Name, Color_R, Color_G, Color_B, Color_A and
 * terminology columns, the name falling back on Type_CodeMeaning; or value,name[,R,G,B]) or
 * without one (value,name[,R,G,B] lines); a .ctbl / .txt colour table (`value name R G B A` per
 * line, '#' comments; a comma-separated one is read as CSV); a model's classes (.safetensors).
 * Other endings are refused with a message listing these formats. Sorted by value. */
std::vector<LabelName>
ReadLabelNames(const std::string & path);

// ReadScan is compiled once in the library for the usual pixel types.
#define COMBOSEG_DECLARE_READ_SCAN(T, D)                                                                               \
  extern template Image<T, D>::Pointer ReadScan<Image<T, D>>(const std::string &, int)
COMBOSEG_DECLARE_READ_SCAN(float, 3);
COMBOSEG_DECLARE_READ_SCAN(double, 3);
COMBOSEG_DECLARE_READ_SCAN(short, 3);
COMBOSEG_DECLARE_READ_SCAN(unsigned short, 3);
COMBOSEG_DECLARE_READ_SCAN(int, 3);
COMBOSEG_DECLARE_READ_SCAN(unsigned char, 3);
COMBOSEG_DECLARE_READ_SCAN(float, 2);
COMBOSEG_DECLARE_READ_SCAN(short, 2);
COMBOSEG_DECLARE_READ_SCAN(int, 2);
COMBOSEG_DECLARE_READ_SCAN(unsigned char, 2);
#undef COMBOSEG_DECLARE_READ_SCAN

} // end namespace itk

#endif
