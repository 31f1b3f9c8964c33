/*
 * comboseg_mpi.h - synchronous data-parallel training of the ComboSeg engine over MPI
 * (library ComboSegMPI, built with -DCOMBOSEG_USE_MPI=ON).
 *
 * Every process (rank) holds the whole model, trains on its own share of each global batch and
 * averages gradients with MPI_Allreduce before an identical optimiser step, so all ranks keep
 * identical weights. Worked example: a global batch of B patches over `size` ranks.
 *
 *     cs_mpi_t mpi;
 *     if (cs_mpi_init(&argc, &argv, &mpi) != CS_OK) return 1;   // MPI only under mpirun
 *     int64_t first, local_batch;
 *     cs_mpi_shard(B, cs_mpi_rank(mpi), cs_mpi_size(mpi), &first, &local_batch);
 *     config.batch_size = (int32_t)local_batch;               // B must divide evenly
 *     ... cs_model_create / cs_trainer_init as usual (same seed and config on every rank) ...
 *     cs_status st = cs_mpi_attach_trainer(mpi, trainer);      // rank 0's state to all
 *     for (step = 0; st == CS_OK && step < steps; step++) {
 *         cs_status local = sample_my_patches(...);            // a bad case fails locally
 *         if (local == CS_OK) local = cs_trainer_step(trainer, images, labels, &result);
 *         st = cs_mpi_step_end(mpi, local, cs_context_last_error(ctx)); // agreed by all ranks
 *     }
 *     if (st != CS_OK && cs_mpi_rank(mpi) == 0)
 *         fprintf(stderr, "error: %s\n", cs_mpi_last_error(mpi)); // "rank 1: label 9 at ..."
 *     cs_mpi_free(mpi);                                        // MPI_Finalize
 *     return st == CS_OK ? 0 : 1;                              // every rank exits alike
 *
 * Rules
 * - Every rank calls the collective functions (attach, agree, step_end, allreduce, broadcast)
 *   in the same order. Each step every rank either calls cs_trainer_step or reports its failure
 *   to cs_mpi_step_end without calling it; the reducer and cs_mpi_step_end then agree, so a rank
 *   that fails (bad case, out of memory, non-finite loss) stops every rank with its message
 *   instead of leaving the others waiting in MPI_Allreduce.
 * - Gradient averaging equals one process's full-batch gradient only when the loss is a mean
 *   over batch items and the ranks hold equal shares: batch_dice off (with batch_dice the Dice
 *   sums would have to be all-reduced instead) and weighted cross-entropy with explicit
 *   class_weights (the default weights come from the local batch's class frequencies).
 *   Instance norm is per item, so the network itself does not couple batch items.
 * - Only rank 0 should write files (checkpoints, the model); then cs_mpi_agree on the outcome
 *   so that a failed write stops every rank and the others wait until the file exists.
 * - Functions return a cs_status and keep their message in cs_mpi_last_error(); nothing here
 *   prints, exits or aborts. MPI is used from the calling thread only (MPI_THREAD_FUNNELED);
 *   OpenMP threads inside the engine never call MPI.
 */
#ifndef COMBOSEG_COMBOSEG_MPI_H
#define COMBOSEG_COMBOSEG_MPI_H

#include "comboseg/comboseg.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cs_mpi *cs_mpi_t;

/* 1 when this process was started by an MPI launcher (mpirun, mpiexec, srun with PMI). */
int cs_mpi_launched(void);

/* Joins the job: MPI_Init_thread (FUNNELED) when launched by mpirun and MPI is not yet
 * initialised, then a private duplicate of MPI_COMM_WORLD whose errors return codes. A process
 * that was not launched by MPI is rank 0 of 1 and never touches MPI, so the same executable runs
 * alone. argc and argv may be NULL. */
cs_status cs_mpi_init(int *argc, char ***argv, cs_mpi_t *out);
/* Frees the communicator and finalises MPI if cs_mpi_init initialised it. */
void cs_mpi_free(cs_mpi_t mpi);

int cs_mpi_rank(const cs_mpi_t mpi);
int cs_mpi_size(const cs_mpi_t mpi);
/* 1 when MPI is in use (launched by mpirun), 0 for a lone process. */
int cs_mpi_active(const cs_mpi_t mpi);
/* The message of the last failure ("rank 1: ..." for an agreed failure; "" if none). */
const char *cs_mpi_last_error(const cs_mpi_t mpi);
/* The rank whose failure the last failed agreement reported, or -1. */
int cs_mpi_failed_rank(const cs_mpi_t mpi);

/* The contiguous share of total items of a rank: [*first, *first + *count). The first
 * total % size ranks get one more (cs_shard, the engine's rule). */
void cs_mpi_shard(int64_t total, int rank, int size, int64_t *first, int64_t *count);

/* Bytes of one MPI_Allreduce of the gradient (default 8 MiB; 0 restores it). Buckets bound the
 * size of each message and the count an MPI call takes (an int). */
void cs_mpi_set_bucket_bytes(cs_mpi_t mpi, size_t bytes);

/* x (count) = the mean over ranks of x, in buckets. Collective. */
cs_status cs_mpi_allreduce_mean(cs_mpi_t mpi, float *x, int64_t count);
/* x (count) = root's x, in buckets. Collective. */
cs_status cs_mpi_broadcast(cs_mpi_t mpi, float *x, int64_t count, int root);
/* Collective: every rank passes its local status (and message when it failed). Returns CS_OK
 * when all succeeded, else on every rank the status of the lowest failing rank, whose message
 * becomes cs_mpi_last_error() ("rank <r>: <message>") on every rank. */
cs_status cs_mpi_agree(cs_mpi_t mpi, cs_status local, const char *local_message);

/* Makes trainer data-parallel: checks that every rank has the same parameter count and step,
 * copies rank 0's parameters and Adam moments to every rank and installs the gradient reducer
 * (agreement, then the bucketed mean). Every rank must then apply identical updates: same
 * train config apart from batch_size, which is the local share. Collective. */
cs_status cs_mpi_attach_trainer(cs_mpi_t mpi, cs_trainer_t trainer);
/* Ends a step, collectively: local is this rank's outcome of the step (of cs_trainer_step, or a
 * failure before it), local_message its message. Returns CS_OK when every rank's step succeeded,
 * else the agreed failure (see cs_mpi_agree) on every rank. */
cs_status cs_mpi_step_end(cs_mpi_t mpi, cs_status local, const char *local_message);

/* Ends every rank of the job at once with exit code `code` (MPI_Abort), for a process that
 * cannot take part in the next agreement, e.g. after an error outside the training loop, where
 * MPI_Finalize could wait for ranks stuck in a collective. The only call here that ends the
 * process, and only when the caller asks; nothing happens for a lone process. */
void cs_mpi_abort(cs_mpi_t mpi, int code);

/* Work done since cs_mpi_init, for the scaling report. */
typedef struct cs_mpi_stats {
    int64_t reductions;     /* gradient all-reductions (one per step) */
    int64_t messages;       /* MPI_Allreduce calls on gradient buckets */
    uint64_t bytes_reduced; /* gradient bytes handed to MPI_Allreduce (per rank) */
    double reduce_seconds;  /* wall time in gradient all-reductions (including waiting) */
    double agree_seconds;   /* wall time in agreements (including waiting for slower ranks) */
} cs_mpi_stats;

cs_mpi_stats cs_mpi_get_stats(const cs_mpi_t mpi);

#ifdef __cplusplus
}
#endif

#endif /* COMBOSEG_COMBOSEG_MPI_H */
