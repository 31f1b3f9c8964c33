# Run with cmake -P at build time: the README's ITK snippet must be ComboSegSnippet.cxx, byte for
# byte, so that the snippet users copy is code the build compiles.
# Inputs: README (README.md), SNIPPET (ComboSegSnippet.cxx), STAMP (touched when they agree).
file(READ "${README}" readme)
file(READ "${SNIPPET}" snippet)
set(marker "<!-- examples/ComboSegSnippet.cxx: the build checks that this block is that file -->\n```cpp\n")
string(FIND "${readme}" "${marker}" start)
if(start EQUAL -1)
  message(FATAL_ERROR "${README} has no C++ block after the line\n${marker}")
endif()
string(LENGTH "${marker}" marker_length)
math(EXPR start "${start} + ${marker_length}")
string(SUBSTRING "${readme}" ${start} -1 rest)
string(FIND "${rest}" "```" end)
string(SUBSTRING "${rest}" 0 ${end} block)
if(NOT block STREQUAL snippet)
  message(FATAL_ERROR "the C++ block of ${README} differs from ${SNIPPET}: copy one onto the other")
endif()
file(TOUCH "${STAMP}")
