// cs_mpi_failure_job.cpp - a small data-parallel training job in which one rank fails, run by
// RunFailureJob.cmake under `mpirun -np 2`: the whole job must stop with the failing rank's
// message (printed by rank 0) and a non-zero exit on every rank, never hang.
//
//   cs_mpi_failure_job <mode> <output folder>
//   modes: label       rank 1 gets a label outside [0, K) at step 3 (fails inside its step)
//          load        rank 1 cannot "read" its case at step 2 (fails before its step)
//          nan         rank 1's images hold a NaN at step 2 (non-finite loss on rank 1 only)
//          checkpoint  rank 0 cannot write its checkpoint after step 2
//          none        nothing fails: the job trains 5 steps and exits 0
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include "comboseg/comboseg_mpi.h"
#include "cs_mpi_test_util.h"

using namespace cs_mpi_test;

int main(int argc, char **argv)
{
    cs_mpi_t mpi = nullptr;
    if (cs_mpi_init(&argc, &argv, &mpi) != CS_OK) {
        std::fprintf(stderr, "error: %s\n", cs_mpi_last_error(mpi));
        cs_mpi_free(mpi);
        return 1;
    }
    const std::string mode = argc > 1 ? argv[1] : "none";
    const std::string folder = argc > 2 ? argv[2] : ".";
    const int rank = cs_mpi_rank(mpi), size = cs_mpi_size(mpi);
    const int global_batch = 2 * size;
    int64_t first = 0, count = 0;
    cs_mpi_shard(global_batch, rank, size, &first, &count);

    cs_context_t ctx = nullptr;
    cs_model_t model = nullptr;
    cs_trainer_t trainer = nullptr;
    cs_status st = cs_context_init(&ctx);
    if (st == CS_OK) {
        cs_context_set_threads(ctx, 1);
        cs_model_info info = SmallModelInfo();
        cs_train_config config = SmallTrainConfig((int)count);
        st = cs_model_create(ctx, &info, 42, &model);
        if (st == CS_OK) st = cs_trainer_init(ctx, model, &config, &trainer);
    }
    // setting up can fail on one rank too: agree before any collective that needs a trainer
    st = cs_mpi_agree(mpi, st, ctx ? cs_context_last_error(ctx) : "no context");
    if (st == CS_OK) st = cs_mpi_attach_trainer(mpi, trainer);

    for (int64_t step = 0; st == CS_OK && step < 5; step++) {
        Batch b = MakeBatch(step, first, count);
        cs_status local = CS_OK;
        char message[256] = "";
        if (rank == 1 && mode == "load" && step == 2) {
            local = CS_ERR_IO; // a bad case: the training loop fails before the step
            std::snprintf(message, sizeof message, "cannot read case 'case_%03lld.nrrd'",
                          (long long)first);
        } else {
            if (rank == 1 && mode == "label" && step == 3) b.labels[123] = 9;
            if (rank == 1 && mode == "nan" && step == 2) b.images[77] = NAN;
            cs_step_result r;
            local = cs_trainer_step(trainer, b.images.data(), b.labels.data(), &r);
            if (local != CS_OK)
                std::snprintf(message, sizeof message, "%s", cs_context_last_error(ctx));
        }
        st = cs_mpi_step_end(mpi, local, message);
        if (st == CS_OK && step == 2) {
            // rank 0 alone writes; the others learn the outcome from the agreement
            std::string path = folder + (mode == "checkpoint" ? "/no/such/folder" : "") +
                               "/failure_job_" + mode + ".ckpt";
            cs_status saved = rank == 0 ? cs_trainer_save_checkpoint(trainer, path.c_str()) : CS_OK;
            st = cs_mpi_agree(mpi, saved, cs_context_last_error(ctx));
            if (rank == 0 && saved == CS_OK) std::remove(path.c_str());
        }
        if (st == CS_OK && rank == 0) std::printf("step %lld done\n", (long long)step + 1);
    }

    if (st != CS_OK && rank == 0)
        std::fprintf(stderr, "error: training stopped: %s\n", cs_mpi_last_error(mpi));
    if (st == CS_OK && rank == 0) std::printf("training finished\n");
    std::fflush(stdout);
    cs_trainer_free(trainer);
    cs_model_free(model);
    cs_context_free(ctx);
    cs_mpi_free(mpi);
    return st == CS_OK ? 0 : 1;
}
