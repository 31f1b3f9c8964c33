/* comboseg_mpi_bench.c - time per data-parallel training step, for docs/scaling.md.
 *
 *   mpirun -np R comboseg_mpi_bench [--patch 64] [--batch 2] [--steps 3] [--warmup 1]
 *                                    [--threads 1] [--channels 2] [--classes 5] [--base 16]
 *                                    [--levels 4] [--bucket-mib 8]
 *
 * --batch is the batch of each rank (weak scaling: the global batch is R * batch). The default
 * case is the reference network (docs/design.md, "The network"). Rank 0 prints one JSON object:
 * seconds per step and its parts (compute = step - all-reduce - agreement, as the slowest rank
 * saw them), the gradient bytes each rank hands to MPI_Allreduce per step, and the parameter
 * count. */
#include "comboseg/comboseg_mpi.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* wall seconds; MPI_Wtime needs MPI, which a lone run never starts */
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int arg_int(int argc, char **argv, const char *name, int fallback)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return atoi(argv[i + 1]);
    return fallback;
}

int main(int argc, char **argv)
{
    cs_mpi_t mpi = NULL;
    if (cs_mpi_init(&argc, &argv, &mpi) != CS_OK) {
        fprintf(stderr, "error: %s\n", cs_mpi_last_error(mpi));
        cs_mpi_free(mpi);
        return 1;
    }
    const int patch = arg_int(argc, argv, "--patch", 64), batch = arg_int(argc, argv, "--batch", 2);
    const int steps = arg_int(argc, argv, "--steps", 3),
              warmup = arg_int(argc, argv, "--warmup", 1);
    const int threads = arg_int(argc, argv, "--threads", 1);
    cs_mpi_set_bucket_bytes(mpi, (size_t)arg_int(argc, argv, "--bucket-mib", 8) << 20);
    cs_unet_config arch = cs_unet_config_default();
    arch.in_channels = arg_int(argc, argv, "--channels", 2);
    arch.num_classes = arg_int(argc, argv, "--classes", 5);
    arch.base_filters = arg_int(argc, argv, "--base", 16);
    arch.levels = arg_int(argc, argv, "--levels", 4);
    const int rank = cs_mpi_rank(mpi), size = cs_mpi_size(mpi);

    cs_context_t ctx = NULL;
    cs_model_t model = NULL;
    cs_trainer_t trainer = NULL;
    cs_model_info info;
    cs_status st = cs_context_init(&ctx);
    if (st == CS_OK) {
        cs_context_set_threads(ctx, threads);
        st = cs_model_info_init(&info, &arch);
    }
    if (st == CS_OK) {
        for (int a = 0; a < 3; a++) info.patch_size[a] = patch;
        st = cs_model_create(ctx, &info, 1, &model);
    }
    cs_train_config config = cs_train_config_default();
    config.batch_size = batch;
    if (st == CS_OK) st = cs_trainer_init(ctx, model, &config, &trainer);
    const int64_t voxels = (int64_t)patch * patch * patch;
    float *images = st == CS_OK
                        ? malloc(sizeof(float) * (size_t)(batch * arch.in_channels * voxels))
                        : NULL;
    int32_t *labels = st == CS_OK ? malloc(sizeof(int32_t) * (size_t)(batch * voxels)) : NULL;
    if (st == CS_OK && (!images || !labels)) st = CS_ERR_OUT_OF_MEMORY;
    if (st == CS_OK) {
        cs_rng rng;
        cs_rng_seed(&rng, 100 + (uint64_t)rank);
        for (int64_t i = 0; i < batch * arch.in_channels * voxels; i++)
            images[i] = cs_rng_normal(&rng);
        for (int64_t i = 0; i < batch * voxels; i++)
            labels[i] = (int32_t)cs_rng_below(&rng, arch.num_classes);
    }
    st = cs_mpi_agree(mpi, st, ctx ? cs_context_last_error(ctx) : "no context");
    if (st == CS_OK) st = cs_mpi_attach_trainer(mpi, trainer);

    double step_seconds = 0.0, reduce_seconds = 0.0, agree_seconds = 0.0;
    for (int s = 0; st == CS_OK && s < warmup + steps; s++) {
        if (cs_mpi_active(mpi)) MPI_Barrier(MPI_COMM_WORLD); /* steps start together */
        const cs_mpi_stats before = cs_mpi_get_stats(mpi);
        const double t0 = now();
        cs_status local = cs_trainer_step(trainer, images, labels, NULL);
        st = cs_mpi_step_end(mpi, local, cs_context_last_error(ctx));
        const double t1 = now();
        const cs_mpi_stats after = cs_mpi_get_stats(mpi);
        if (s >= warmup) {
            step_seconds += t1 - t0;
            reduce_seconds += after.reduce_seconds - before.reduce_seconds;
            agree_seconds += after.agree_seconds - before.agree_seconds;
        }
    }
    if (st != CS_OK) {
        if (rank == 0) fprintf(stderr, "error: %s\n", cs_mpi_last_error(mpi));
    } else {
        /* compute is what a rank spent outside MPI; the slowest rank sets the pace */
        double part[3] = {step_seconds / steps, reduce_seconds / steps, agree_seconds / steps};
        double compute = part[0] - part[1] - part[2], slowest = compute;
        if (cs_mpi_active(mpi))
            MPI_Allreduce(&compute, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        const cs_mpi_stats stats = cs_mpi_get_stats(mpi);
        if (rank == 0)
            printf("{\"ranks\": %d, \"threads\": %d, \"batch_per_rank\": %d, \"patch\": %d, "
                   "\"parameters\": %lld, \"steps\": %d, \"seconds_per_step\": %.6f, "
                   "\"steps_per_second\": %.6f, \"compute_seconds\": %.6f, "
                   "\"allreduce_seconds\": %.6f, \"agree_seconds\": %.6f, "
                   "\"gradient_bytes_per_step\": %llu, \"messages_per_step\": %lld}\n",
                   size, threads, batch, patch, (long long)cs_model_num_parameters(model), steps,
                   part[0], 1.0 / part[0], slowest, part[1], part[2],
                   (unsigned long long)(size > 1 ? stats.bytes_reduced / (uint64_t)stats.reductions
                                                 : (uint64_t)cs_model_num_parameters(model) * 4u),
                   (long long)(size > 1 ? stats.messages / stats.reductions : 0));
    }
    free(images);
    free(labels);
    cs_trainer_free(trainer);
    cs_model_free(model);
    cs_context_free(ctx);
    cs_mpi_free(mpi);
    return st == CS_OK ? 0 : 1;
}
