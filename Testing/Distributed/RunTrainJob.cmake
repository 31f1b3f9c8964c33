# ComboSegTrain under mpirun on the small abdominal CT of the shared data (skipped without it):
# 2 ranks train a tiny model; rank 0 alone reports and writes the model and its checkpoint.
#   -DMPIEXEC=... -DMPIEXEC_FLAGS="a;b" -DTRAIN=<ComboSegTrain> -DDATA=<data dir> -DWORKDIR=<dir>
set(ct "${DATA}/ct-abdomen/totalseg/example_ct_sm.nii.gz")
set(seg "${DATA}/ct-abdomen/totalseg/example_seg.nii.gz")
if(NOT EXISTS "${ct}" OR NOT EXISTS "${seg}")
  message("SKIPPED: ${ct} is absent (set COMBOSEG_DATA_DIR)")
  return()
endif()
file(MAKE_DIRECTORY "${WORKDIR}")
file(WRITE "${WORKDIR}/cases.txt" "${seg}\t${ct}\n${seg}\t${ct}\n")
set(model "${WORKDIR}/mpi-model.safetensors")
file(REMOVE "${model}" "${model}.checkpoint" "${model}.checkpoint.session")
set(common --caseList "${WORKDIR}/cases.txt" --baseModel new --modality CT --normalization clip
    --intensityRange -1000,1000 --targetSpacing 6,6,6 --patchSize 16,16,16 --levels 2
    --baseFilters 4 --epochs 2 --stepsPerEpoch 3 --validationShare 0 --threads 1 --restart)

execute_process(COMMAND ${MPIEXEC} ${MPIEXEC_FLAGS} ${TRAIN} ${common} --batchSize 2
                        --outputModel "${model}"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 600)
message(STATUS "exit: ${rc}\n${out}\n${err}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "2-rank training failed: '${rc}'")
endif()
if(NOT EXISTS "${model}" OR NOT EXISTS "${model}.checkpoint")
  message(FATAL_ERROR "rank 0 wrote no model or checkpoint")
endif()
string(REGEX MATCHALL "model: [^\n]*6 steps" reports "${out}")
list(LENGTH reports n)
if(NOT n EQUAL 1)
  message(FATAL_ERROR "expected one report of 6 steps (from rank 0 alone), found ${n}")
endif()

# a global batch that does not split evenly stops every rank with the reason
execute_process(COMMAND ${MPIEXEC} ${MPIEXEC_FLAGS} ${TRAIN} ${common} --batchSize 3
                        --outputModel "${WORKDIR}/odd.safetensors"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 300)
if(rc EQUAL 0 OR NOT "${out}${err}" MATCHES "batch size 3 must be a multiple of the 2 ranks")
  message(FATAL_ERROR "batch 3 on 2 ranks: exit '${rc}'\n${out}\n${err}")
endif()
