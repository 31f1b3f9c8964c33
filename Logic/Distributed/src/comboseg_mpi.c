/* comboseg_mpi.c - data-parallel training over MPI: rank helpers, bucketed gradient averaging,
 * broadcast of the initial state and agreed failures (see comboseg_mpi.h).
 *
 * A lone process (not launched by mpirun) never calls MPI: every collective is then the
 * identity, so a build with MPI still runs alone. */
#include "comboseg/comboseg_mpi.h"

#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CS_MPI_MESSAGE_MAX 1024
#define CS_MPI_DEFAULT_BUCKET_BYTES ((size_t)8 << 20)

struct cs_mpi {
    int active;          /* MPI in use */
    int initialised_mpi; /* cs_mpi_init called MPI_Init_thread, so cs_mpi_free finalises */
    int rank, size;
    MPI_Comm comm; /* private duplicate of MPI_COMM_WORLD, errors return */
    size_t bucket_bytes;
    int reducer_agreed; /* the reducer agreed during the current step */
    int reducer_failed; /* ... and that agreement reported a failure */
    cs_status last_status;
    int failed_rank;
    char message[CS_MPI_MESSAGE_MAX + 64];
    cs_mpi_stats stats;
};

/* What an agreement sends from the failing rank to all. */
typedef struct agreed_failure {
    int32_t status;
    char text[CS_MPI_MESSAGE_MAX];
} agreed_failure;

static cs_status mpi_fail(cs_mpi_t mpi, cs_status status, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    vsnprintf(mpi->message, sizeof mpi->message, format, ap);
    va_end(ap);
    mpi->last_status = status;
    return status;
}

/* An MPI error code as a failure naming the call. */
static cs_status mpi_check(cs_mpi_t mpi, int code, const char *call)
{
    if (code == MPI_SUCCESS) return CS_OK;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "code %d", code);
    return mpi_fail(mpi, CS_ERR_IO, "rank %d: %s failed: %s", mpi->rank, call, text);
}

int cs_mpi_launched(void)
{
    /* Open MPI, PMIx (Open MPI 4+, Slurm), PMI-1/2 (MPICH's hydra, Slurm srun --mpi=pmi2) */
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

cs_status cs_mpi_init(int *argc, char ***argv, cs_mpi_t *out)
{
    if (!out) return CS_ERR_INVALID_ARGUMENT;
    *out = NULL;
    cs_mpi_t mpi = (cs_mpi_t)calloc(1, sizeof *mpi);
    if (!mpi) return CS_ERR_OUT_OF_MEMORY;
    mpi->size = 1;
    mpi->failed_rank = -1;
    mpi->comm = MPI_COMM_NULL;
    mpi->bucket_bytes = CS_MPI_DEFAULT_BUCKET_BYTES;
    *out = mpi; /* returned even on failure, so that the caller can read the message */

    int started = 0;
    MPI_Initialized(&started);
    if (!started && !cs_mpi_launched()) return CS_OK;
    mpi->active = 1;
    if (!started) {
        int provided = 0;
        if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
            return mpi_fail(mpi, CS_ERR_IO, "MPI_Init_thread failed");
        mpi->initialised_mpi = 1;
        if (provided < MPI_THREAD_FUNNELED)
            return mpi_fail(mpi, CS_ERR_UNSUPPORTED,
                            "the MPI library provides thread level %d, below MPI_THREAD_FUNNELED",
                            provided);
    }
    cs_status st = mpi_check(mpi, MPI_Comm_dup(MPI_COMM_WORLD, &mpi->comm), "MPI_Comm_dup");
    if (st != CS_OK) return st;
    MPI_Comm_set_errhandler(mpi->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(mpi->comm, &mpi->rank);
    MPI_Comm_size(mpi->comm, &mpi->size);
    return CS_OK;
}

void cs_mpi_free(cs_mpi_t mpi)
{
    if (!mpi) return;
    if (mpi->comm != MPI_COMM_NULL) MPI_Comm_free(&mpi->comm);
    if (mpi->initialised_mpi) {
        int finalised = 0;
        MPI_Finalized(&finalised);
        if (!finalised) MPI_Finalize();
    }
    free(mpi);
}

void cs_mpi_abort(cs_mpi_t mpi, int code)
{
    if (mpi && mpi->active) MPI_Abort(MPI_COMM_WORLD, code);
}

int cs_mpi_rank(const cs_mpi_t mpi) { return mpi ? mpi->rank : 0; }
int cs_mpi_size(const cs_mpi_t mpi) { return mpi ? mpi->size : 1; }
int cs_mpi_active(const cs_mpi_t mpi) { return mpi ? mpi->active : 0; }
const char *cs_mpi_last_error(const cs_mpi_t mpi) { return mpi ? mpi->message : ""; }
int cs_mpi_failed_rank(const cs_mpi_t mpi) { return mpi ? mpi->failed_rank : -1; }
cs_mpi_stats cs_mpi_get_stats(const cs_mpi_t mpi)
{
    cs_mpi_stats none;
    memset(&none, 0, sizeof none);
    return mpi ? mpi->stats : none;
}

void cs_mpi_shard(int64_t total, int rank, int size, int64_t *first, int64_t *count)
{
    cs_shard(total, rank, size, first, count); /* the engine's rule, as training sessions */
}

void cs_mpi_set_bucket_bytes(cs_mpi_t mpi, size_t bytes)
{
    if (!mpi) return;
    /* at least one float, at most what an int count can address */
    const size_t max = (size_t)1 << 30;
    mpi->bucket_bytes = bytes == 0              ? CS_MPI_DEFAULT_BUCKET_BYTES
                        : bytes < sizeof(float) ? sizeof(float)
                        : bytes > max           ? max
                                                : bytes;
}

static int64_t bucket_count(const cs_mpi_t mpi)
{
    return (int64_t)(mpi->bucket_bytes / sizeof(float));
}

cs_status cs_mpi_allreduce_mean(cs_mpi_t mpi, float *x, int64_t count)
{
    if (!mpi || (count > 0 && !x) || count < 0) return CS_ERR_INVALID_ARGUMENT;
    if (!mpi->active || mpi->size == 1) return CS_OK;
    const double t0 = MPI_Wtime();
    const int64_t per = bucket_count(mpi);
    for (int64_t off = 0; off < count; off += per) {
        const int n = (int)(count - off < per ? count - off : per);
        cs_status st = mpi_check(
            mpi, MPI_Allreduce(MPI_IN_PLACE, x + off, n, MPI_FLOAT, MPI_SUM, mpi->comm),
            "MPI_Allreduce of the gradient");
        if (st != CS_OK) return st;
        mpi->stats.messages++;
    }
    /* a division, not a multiplication by 1/size, so that 2 ranks' (a + b) / 2 is exact */
    const float size = (float)mpi->size;
    for (int64_t i = 0; i < count; i++) x[i] /= size;
    mpi->stats.reductions++;
    mpi->stats.bytes_reduced += (uint64_t)count * sizeof(float);
    mpi->stats.reduce_seconds += MPI_Wtime() - t0;
    return CS_OK;
}

cs_status cs_mpi_broadcast(cs_mpi_t mpi, float *x, int64_t count, int root)
{
    if (!mpi || (count > 0 && !x) || count < 0) return CS_ERR_INVALID_ARGUMENT;
    if (root < 0 || root >= mpi->size)
        return mpi_fail(mpi, CS_ERR_INVALID_ARGUMENT, "broadcast root %d is not a rank of %d", root,
                        mpi->size);
    if (!mpi->active || mpi->size == 1) return CS_OK;
    const int64_t per = bucket_count(mpi);
    for (int64_t off = 0; off < count; off += per) {
        const int n = (int)(count - off < per ? count - off : per);
        cs_status st = mpi_check(mpi, MPI_Bcast(x + off, n, MPI_FLOAT, root, mpi->comm),
                                 "MPI_Bcast");
        if (st != CS_OK) return st;
    }
    return CS_OK;
}

cs_status cs_mpi_agree(cs_mpi_t mpi, cs_status local, const char *local_message)
{
    if (!mpi) return CS_ERR_INVALID_ARGUMENT;
    if (!local_message || !local_message[0]) local_message = cs_status_string(local);
    if (!mpi->active || mpi->size == 1) {
        if (local == CS_OK) return CS_OK;
        mpi->failed_rank = 0;
        return mpi_fail(mpi, local, "rank 0: %s", local_message);
    }
    const double t0 = MPI_Wtime();
    /* the lowest failing rank: MINLOC over (0 if failed else 1, rank) */
    int in[2] = {local != CS_OK ? 0 : 1, mpi->rank}, out[2] = {1, 0};
    cs_status st = mpi_check(mpi, MPI_Allreduce(in, out, 1, MPI_2INT, MPI_MINLOC, mpi->comm),
                             "MPI_Allreduce of the step status");
    if (st == CS_OK && out[0] == 0) {
        agreed_failure f;
        memset(&f, 0, sizeof f);
        if (mpi->rank == out[1]) {
            f.status = (int32_t)local;
            snprintf(f.text, sizeof f.text, "%s", local_message);
        }
        st = mpi_check(mpi, MPI_Bcast(&f, (int)sizeof f, MPI_BYTE, out[1], mpi->comm),
                       "MPI_Bcast of the failure message");
        if (st == CS_OK) {
            f.text[sizeof f.text - 1] = '\0';
            mpi->failed_rank = out[1];
            st = mpi_fail(mpi, f.status != CS_OK ? (cs_status)f.status : CS_ERR_IO, "rank %d: %s",
                          out[1], f.text);
        }
    }
    mpi->stats.agree_seconds += MPI_Wtime() - t0;
    return st;
}

/* The trainer's gradient reducer: agree first, so that a rank that failed before its backward
 * pass stops the others here instead of leaving them in the gradient all-reduce. */
static cs_status reduce_gradients(void *user_data, float *grads, int64_t count, char *message,
                                  size_t message_size)
{
    cs_mpi_t mpi = (cs_mpi_t)user_data;
    mpi->reducer_agreed = 1;
    cs_status st = cs_mpi_agree(mpi, CS_OK, NULL);
    if (st != CS_OK) mpi->reducer_failed = 1;
    else st = cs_mpi_allreduce_mean(mpi, grads, count);
    if (st != CS_OK) snprintf(message, message_size, "%s", mpi->message);
    return st;
}

cs_status cs_mpi_step_end(cs_mpi_t mpi, cs_status local, const char *local_message)
{
    if (!mpi) return CS_ERR_INVALID_ARGUMENT;
    const int agreed = mpi->reducer_agreed, failed = mpi->reducer_failed;
    mpi->reducer_agreed = mpi->reducer_failed = 0;
    /* every rank took part in the reducer's failed agreement and knows the failure */
    if (agreed && failed) return mpi->last_status;
    /* Otherwise either this rank never reached the reducer (its agreement pairs with the
     * reducer's on the ranks that did), or all reduced and this one pairs with theirs. */
    return cs_mpi_agree(mpi, local, local_message);
}

cs_status cs_mpi_attach_trainer(cs_mpi_t mpi, cs_trainer_t trainer)
{
    if (!mpi || !trainer) return CS_ERR_INVALID_ARGUMENT;
    float *params = NULL, *m = NULL, *v = NULL;
    int64_t count = 0;
    cs_status st = cs_trainer_get_state(trainer, &params, &m, &v, &count);
    if (st != CS_OK)
        return mpi_fail(mpi, st, "rank %d: cannot read the trainer's state", mpi->rank);
    if (mpi->active && mpi->size > 1) {
        /* min and max over ranks of the parameter count and the step, as min of (x, -x) */
        const int64_t step = cs_trainer_steps_done(trainer);
        int64_t in[4] = {count, -count, step, -step}, out[4];
        st = mpi_check(mpi, MPI_Allreduce(in, out, 4, MPI_INT64_T, MPI_MIN, mpi->comm),
                       "MPI_Allreduce of the model size");
        if (st != CS_OK) return st;
        if (out[0] != -out[1])
            return mpi_fail(mpi, CS_ERR_INVALID_ARGUMENT,
                            "the ranks' models differ: from %lld to %lld parameters",
                            (long long)out[0], (long long)-out[1]);
        if (out[2] != -out[3])
            return mpi_fail(mpi, CS_ERR_INVALID_ARGUMENT,
                            "the ranks' trainers are at steps %lld to %lld: every rank must "
                            "resume from the same checkpoint",
                            (long long)out[2], (long long)-out[3]);
        /* the same seed gives the same weights, but a model loaded on one rank only would not */
        if ((st = cs_mpi_broadcast(mpi, params, count, 0)) != CS_OK ||
            (st = cs_mpi_broadcast(mpi, m, count, 0)) != CS_OK ||
            (st = cs_mpi_broadcast(mpi, v, count, 0)) != CS_OK)
            return st;
    }
    mpi->reducer_agreed = mpi->reducer_failed = 0;
    cs_trainer_set_gradient_reducer(trainer, reduce_gradients, mpi);
    return CS_OK;
}
