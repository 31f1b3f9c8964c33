# Runs cs_mpi_failure_job under mpirun and checks how the job ends.
#   -DMPIEXEC=... -DMPIEXEC_FLAGS="a;b" -DJOB=<exe> -DMODE=<mode> -DWORKDIR=<folder>
#   -DEXPECT_RC=0|nonzero -DEXPECT=<regex the output must match>
execute_process(
  COMMAND ${MPIEXEC} ${MPIEXEC_FLAGS} ${JOB} ${MODE} ${WORKDIR}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 240)
set(all "${out}\n${err}")
message(STATUS "exit: ${rc}\n${all}")
if(EXPECT_RC STREQUAL "0")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "the job should succeed, it ended with '${rc}'")
  endif()
else()
  if(NOT rc MATCHES "^[0-9]+$")
    message(FATAL_ERROR "the job did not exit by itself: '${rc}' (a rank hung?)")
  endif()
  if(rc EQUAL 0)
    message(FATAL_ERROR "the job exited 0 although a rank failed")
  endif()
endif()
if(NOT all MATCHES "${EXPECT}")
  message(FATAL_ERROR "the output does not match '${EXPECT}'")
endif()
