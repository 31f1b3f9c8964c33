# The CMake package: `cmake --install` writes ComboSegConfig.cmake, its version file and the
# exported targets (ComboSeg::comboseg, ComboSeg::ComboSegITK) under <prefix>/lib/cmake/ComboSeg.
include(CMakePackageConfigHelpers)

set(COMBOSEG_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/ComboSeg")
if(NOT DEFINED COMBOSEG_ITK_COMPONENTS)
  set(COMBOSEG_ITK_COMPONENTS "")
endif()
foreach(flag COMBOSEG_USE_OPENMP COMBOSEG_BUILD_ITK)
  if(${flag})
    set(${flag} ON)
  else()
    set(${flag} OFF)
  endif()
endforeach()

install(EXPORT ComboSegTargets
  NAMESPACE ComboSeg::
  DESTINATION "${COMBOSEG_INSTALL_CMAKEDIR}")
configure_package_config_file(
  "${CMAKE_CURRENT_LIST_DIR}/ComboSegConfig.cmake.in"
  "${CMAKE_BINARY_DIR}/ComboSegConfig.cmake"
  INSTALL_DESTINATION "${COMBOSEG_INSTALL_CMAKEDIR}")
write_basic_package_version_file(
  "${CMAKE_BINARY_DIR}/ComboSegConfigVersion.cmake"
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMinorVersion)
install(FILES
  "${CMAKE_BINARY_DIR}/ComboSegConfig.cmake"
  "${CMAKE_BINARY_DIR}/ComboSegConfigVersion.cmake"
  DESTINATION "${COMBOSEG_INSTALL_CMAKEDIR}")
