# Run with cmake -P at build time: turns a module's .xml into a header holding it as a raw string,
# so that the .xml file stays the single source of the module's description.
# Inputs: INPUT (the .xml), OUTPUT (the header), VARIABLE (the C++ name of the string).
file(READ "${INPUT}" xml_text)
string(FIND "${xml_text}" ")comboseg_xml\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${INPUT} contains the raw-string delimiter )comboseg_xml\"")
endif()
file(WRITE "${OUTPUT}.tmp"
  "// Generated from ${INPUT} at build time: do not edit.\n"
  "#pragma once\n"
  "static const char ${VARIABLE}[] = R\"comboseg_xml(${xml_text})comboseg_xml\";\n")
# Replace only when changed so dependants do not rebuild needlessly.
file(RENAME "${OUTPUT}.tmp" "${OUTPUT}")
