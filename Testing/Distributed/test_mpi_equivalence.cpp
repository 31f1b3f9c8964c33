// test_mpi_equivalence.cpp - data-parallel training under `mpirun -np 2`: 2 ranks with half
// the global batch each train to the weights 1 process reaches with the whole batch; all ranks
// keep identical weights; a checkpoint written by rank 0 restarts the job exactly.
//
// Every rank runs every test; each test calls the collective functions in the same order on
// all ranks (checks use EXPECT, never ASSERT, before a collective call).
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <unistd.h>
#include <vector>

#include "comboseg/comboseg_mpi.h"
#include "cs_mpi_test_util.h"
#include "internal.h" // the model's tensor table, to tell weights apart by name

namespace
{

using namespace cs_mpi_test;

cs_mpi_t g_mpi = nullptr;

constexpr int kGlobalBatch = 4;
constexpr int kSteps = 20;

// A model and its trainer on a context with one thread.
struct Training {
    cs_context_t ctx = nullptr;
    cs_model_t model = nullptr;
    cs_trainer_t trainer = nullptr;
    cs_status status = CS_OK;

    explicit Training(int batch, uint64_t model_seed = 42)
    {
        status = cs_context_init(&ctx);
        if (status != CS_OK) return;
        cs_context_set_threads(ctx, 1);
        cs_model_info info = SmallModelInfo();
        status = cs_model_create(ctx, &info, model_seed, &model);
        cs_train_config config = SmallTrainConfig(batch);
        if (status == CS_OK) status = cs_trainer_init(ctx, model, &config, &trainer);
    }
    ~Training()
    {
        cs_trainer_free(trainer);
        cs_model_free(model);
        cs_context_free(ctx);
    }
    std::vector<float> Params() const
    {
        float *p = nullptr;
        int64_t n = 0;
        cs_trainer_get_state(trainer, &p, nullptr, nullptr, &n);
        return std::vector<float>(p, p + n);
    }
    // Adam's first moment: after one step it is (1 - beta1) times the (clipped) gradient
    std::vector<float> FirstMoment() const
    {
        float *m = nullptr;
        int64_t n = 0;
        cs_trainer_get_state(trainer, nullptr, &m, nullptr, &n);
        return std::vector<float>(m, m + n);
    }
};

// Runs steps [from, to) of the distributed training: each rank takes its share of the global
// batch. Returns the agreed status; the local losses go to losses (when not NULL).
cs_status TrainShards(Training &t, int64_t from, int64_t to, std::vector<float> *losses)
{
    int64_t first = 0, count = 0;
    cs_mpi_shard(kGlobalBatch, cs_mpi_rank(g_mpi), cs_mpi_size(g_mpi), &first, &count);
    cs_status st = CS_OK;
    for (int64_t s = from; s < to && st == CS_OK; s++) {
        Batch b = MakeBatch(s, first, count);
        cs_step_result r;
        cs_status local = cs_trainer_step(t.trainer, b.images.data(), b.labels.data(), &r);
        st = cs_mpi_step_end(g_mpi, local, cs_context_last_error(t.ctx));
        if (losses && st == CS_OK) losses->push_back(r.loss);
    }
    return st;
}

double MaxAbsDiff(const std::vector<float> &a, const std::vector<float> &b)
{
    double m = a.size() == b.size() ? 0.0 : INFINITY;
    for (size_t i = 0; i < std::min(a.size(), b.size()); i++)
        m = std::max(m, (double)std::fabs(a[i] - b[i]));
    return m;
}

double MaxAbs(const std::vector<float> &a)
{
    double m = 0.0;
    for (float x : a) m = std::max(m, (double)std::fabs(x));
    return m;
}

// The bias of a convolution followed by instance norm has no effect (the norm subtracts each
// channel's mean), so its true gradient is 0 and what the backward pass computes is rounding
// noise, which Adam normalises into steps of about the learning rate: such weights differ between
// any two summation orders and are left out of the weight comparison.
bool IsBiasBeforeNorm(const char *name)
{
    const std::string n(name);
    return n.size() > 11 && (n.compare(n.size() - 11, 11, ".conv1.bias") == 0 ||
                             n.compare(n.size() - 11, 11, ".conv2.bias") == 0);
}

// max |a - b| over the weights that affect the output (a and b laid out like model).
double MaxAbsDiffEffective(const cs_model_t model, const std::vector<float> &a,
                           const std::vector<float> &b)
{
    double m = 0.0;
    for (int32_t t = 0; t < model->num_tensors; t++) {
        const cs_param_tensor &p = model->tensors[t];
        if (IsBiasBeforeNorm(p.name)) continue;
        for (int64_t i = p.offset; i < p.offset + p.count; i++)
            m = std::max(m, (double)std::fabs(a[(size_t)i] - b[(size_t)i]));
    }
    return m;
}

// Logits of both models on a batch neither trained on: max |difference| and max |logit|.
void CompareLogits(cs_context_t ctx, const cs_model_t a, const cs_model_t b, double *diff,
                   double *scale)
{
    Batch x = MakeBatch(1000, 0, 2);
    const int64_t size[3] = {kPatch, kPatch, kPatch};
    std::vector<float> la((size_t)(2 * kClasses * kVoxels)), lb(la.size());
    EXPECT_EQ(cs_model_forward(ctx, a, x.images.data(), 2, size, la.data()), CS_OK);
    EXPECT_EQ(cs_model_forward(ctx, b, x.images.data(), 2, size, lb.data()), CS_OK);
    *diff = MaxAbsDiff(la, lb);
    *scale = MaxAbs(la);
}

// max over elements of (max over ranks - min over ranks) of x: 0 when all ranks agree.
double SpreadOverRanks(const std::vector<float> &x)
{
    std::vector<float> lo(x), hi(x);
    MPI_Allreduce(MPI_IN_PLACE, lo.data(), (int)lo.size(), MPI_FLOAT, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, hi.data(), (int)hi.size(), MPI_FLOAT, MPI_MAX, MPI_COMM_WORLD);
    return MaxAbsDiff(lo, hi);
}

TEST(MpiDataParallel, RunsOnTwoRanks)
{
    EXPECT_EQ(cs_mpi_size(g_mpi), 2) << "run under mpirun -np 2";
    EXPECT_TRUE(cs_mpi_active(g_mpi));
}

// The reduction itself, with nothing amplifying rounding: after one step, the gradient every
// rank applied (read from Adam's first moment) is the whole batch's gradient, to float rounding.
// A sum instead of a mean, a missing or partial reduction would differ by a large factor.
TEST(MpiDataParallel, TheAveragedGradientIsTheWholeBatchGradient)
{
    Training dist(kGlobalBatch / cs_mpi_size(g_mpi));
    cs_status st = cs_mpi_attach_trainer(g_mpi, dist.trainer);
    EXPECT_EQ(st, CS_OK) << cs_mpi_last_error(g_mpi);
    if (st == CS_OK) st = TrainShards(dist, 0, 1, nullptr);
    EXPECT_EQ(st, CS_OK) << cs_mpi_last_error(g_mpi);

    Training ref(kGlobalBatch);
    Batch b = MakeBatch(0, 0, kGlobalBatch);
    cs_step_result r;
    EXPECT_EQ(cs_trainer_step(ref.trainer, b.images.data(), b.labels.data(), &r), CS_OK);

    const std::vector<float> m = dist.FirstMoment(), m_ref = ref.FirstMoment();
    const double diff = MaxAbsDiffEffective(dist.model, m, m_ref), scale = MaxAbs(m_ref);
    if (cs_mpi_rank(g_mpi) == 0)
        std::printf("[ figures  ] one step: max |gradient difference| = %.3g, max |gradient| = "
                    "%.3g (both times 1 - beta1)\n",
                    diff, scale);
    EXPECT_GT(scale, 0.0);
    EXPECT_LT(diff, 1e-4 * scale);
}

TEST(MpiDataParallel, TwoRanksTrainLikeOneProcessWithTheWholeBatch)
{
    const int size = cs_mpi_size(g_mpi);
    EXPECT_EQ(kGlobalBatch % size, 0);
    // the distributed run: same model seed on every rank; rank 0's weights are broadcast anyway
    Training dist(kGlobalBatch / size);
    EXPECT_EQ(dist.status, CS_OK) << cs_context_last_error(dist.ctx);
    cs_status st = cs_mpi_attach_trainer(g_mpi, dist.trainer);
    EXPECT_EQ(st, CS_OK) << cs_mpi_last_error(g_mpi);
    std::vector<float> initial = dist.Params();
    std::vector<float> dist_losses;
    if (st == CS_OK) st = TrainShards(dist, 0, kSteps, &dist_losses);
    EXPECT_EQ(st, CS_OK) << cs_mpi_last_error(g_mpi);
    EXPECT_EQ(cs_trainer_steps_done(dist.trainer), kSteps);

    // the reference: this process alone with the whole global batch, no reducer
    Training ref(kGlobalBatch);
    EXPECT_EQ(ref.status, CS_OK) << cs_context_last_error(ref.ctx);
    std::vector<float> ref_losses;
    for (int64_t s = 0; s < kSteps && ref.status == CS_OK; s++) {
        Batch b = MakeBatch(s, 0, kGlobalBatch);
        cs_step_result r;
        ref.status = cs_trainer_step(ref.trainer, b.images.data(), b.labels.data(), &r);
        ref_losses.push_back(r.loss);
    }
    EXPECT_EQ(ref.status, CS_OK) << cs_context_last_error(ref.ctx);

    const std::vector<float> w = dist.Params(), w_ref = ref.Params();
    const double diff_all = MaxAbsDiff(w, w_ref), moved = MaxAbsDiff(w_ref, initial);
    const double diff = MaxAbsDiffEffective(dist.model, w, w_ref);
    double logit_diff = 0.0, logit_scale = 0.0;
    CompareLogits(ref.ctx, dist.model, ref.model, &logit_diff, &logit_scale);
    // the mean of the ranks' local losses is the whole batch's loss at every step
    double loss_diff = 0.0;
    for (size_t s = 0; s < dist_losses.size(); s++) {
        float mean = dist_losses[s];
        MPI_Allreduce(MPI_IN_PLACE, &mean, 1, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        mean /= (float)size;
        if (s < ref_losses.size())
            loss_diff = std::max(loss_diff, (double)std::fabs(mean - ref_losses[s]));
    }
    const double spread = SpreadOverRanks(w);
    if (cs_mpi_rank(g_mpi) == 0)
        std::printf("[ figures  ] %d parameters, %d steps, global batch %d over %d ranks:\n"
                    "[ figures  ]   max |w_2ranks - w_1process| = %.3g over the weights that "
                    "affect the output (%.3g over all, conv biases before instance norm included)"
                    "\n[ figures  ]   max |w| = %.3g, max weight change from the start = %.3g\n"
                    "[ figures  ]   max |logits difference| on unseen patches = %.3g (max |logit|"
                    " = %.3g); max |loss difference| over the steps = %.3g\n"
                    "[ figures  ]   spread of the weights over ranks = %.3g\n",
                    (int)w.size(), kSteps, kGlobalBatch, size, diff, diff_all, MaxAbs(w_ref), moved,
                    logit_diff, logit_scale, loss_diff, spread);
    EXPECT_GT(moved, 1e-2) << "training must move the weights for the comparison to mean anything";
    // Float32 sums in another order are the only difference, but Adam turns the rounding noise of
    // near-zero gradients into steps of the learning rate and training amplifies it: the two runs
    // drift apart by about 2x per step after the fifth (measured: loss difference 4e-9 after 5
    // steps, 4e-5 after 20; swapping the fast norm for the reference one gives 3e-4). So after 20
    // steps the bounds are those of the same training, not of the same bits; the exact check of
    // the reduction is TheAveragedGradientIsTheWholeBatchGradient.
    EXPECT_LT(diff, 0.1 * std::max(1.0, MaxAbs(w_ref)));
    EXPECT_LT(logit_diff, 0.05 * std::max(1.0, logit_scale));
    EXPECT_LT(loss_diff, 2e-3);
    // the reduced gradient is the same on every rank, so every rank applies the same update
    EXPECT_EQ(spread, 0.0);
}

TEST(MpiDataParallel, AttachBroadcastsRankZerosWeights)
{
    // each rank creates its model from a different seed: after attaching, all hold rank 0's
    Training t(kGlobalBatch / cs_mpi_size(g_mpi), 100 + (uint64_t)cs_mpi_rank(g_mpi));
    EXPECT_EQ(t.status, CS_OK);
    Training rank0(1, 100);
    EXPECT_GT(SpreadOverRanks(t.Params()), 0.0);
    EXPECT_EQ(cs_mpi_attach_trainer(g_mpi, t.trainer), CS_OK) << cs_mpi_last_error(g_mpi);
    EXPECT_EQ(SpreadOverRanks(t.Params()), 0.0);
    EXPECT_EQ(MaxAbsDiff(t.Params(), rank0.Params()), 0.0);
}

TEST(MpiDataParallel, CheckpointWrittenByRankZeroRestartsTheJobExactly)
{
    const int rank = cs_mpi_rank(g_mpi), size = cs_mpi_size(g_mpi);
    // one path for all ranks, from rank 0's process id
    int pid = (int)getpid();
    MPI_Bcast(&pid, 1, MPI_INT, 0, MPI_COMM_WORLD);
    const std::string path = std::string(COMBOSEG_BINARY_DIR) + "/mpi_checkpoint_" +
                             std::to_string(pid) + ".safetensors";

    // uninterrupted: 20 steps, with a checkpoint after step 10 written by rank 0 only
    Training full(kGlobalBatch / size);
    EXPECT_EQ(cs_mpi_attach_trainer(g_mpi, full.trainer), CS_OK) << cs_mpi_last_error(g_mpi);
    cs_status st = TrainShards(full, 0, 10, nullptr);
    cs_status saved = rank == 0 ? cs_trainer_save_checkpoint(full.trainer, path.c_str()) : CS_OK;
    // the agreement doubles as a barrier: no rank reads the file before it is complete
    EXPECT_EQ(cs_mpi_agree(g_mpi, saved, cs_context_last_error(full.ctx)), CS_OK)
        << cs_mpi_last_error(g_mpi);
    if (st == CS_OK) st = TrainShards(full, 10, kSteps, nullptr);
    EXPECT_EQ(st, CS_OK) << cs_mpi_last_error(g_mpi);

    // restarted: a new job (different initial weights) loads the checkpoint on every rank
    Training resumed(kGlobalBatch / size, 999);
    cs_status loaded = cs_trainer_load_checkpoint(resumed.trainer, path.c_str());
    EXPECT_EQ(cs_mpi_agree(g_mpi, loaded, cs_context_last_error(resumed.ctx)), CS_OK)
        << cs_mpi_last_error(g_mpi);
    EXPECT_EQ(cs_trainer_steps_done(resumed.trainer), 10);
    EXPECT_EQ(cs_mpi_attach_trainer(g_mpi, resumed.trainer), CS_OK) << cs_mpi_last_error(g_mpi);
    st = TrainShards(resumed, 10, kSteps, nullptr);
    EXPECT_EQ(st, CS_OK) << cs_mpi_last_error(g_mpi);
    EXPECT_EQ(MaxAbsDiff(resumed.Params(), full.Params()), 0.0);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) std::remove(path.c_str());
}

TEST(MpiDataParallel, DifferentStepsOnRanksAreRefusedOnEveryRank)
{
    Training t(kGlobalBatch / cs_mpi_size(g_mpi));
    // rank 1 alone takes a step before attaching, as if it had resumed from another checkpoint
    if (cs_mpi_rank(g_mpi) == 1) {
        Batch b = MakeBatch(0, 0, kGlobalBatch / cs_mpi_size(g_mpi));
        EXPECT_EQ(cs_trainer_step(t.trainer, b.images.data(), b.labels.data(), nullptr), CS_OK);
    }
    EXPECT_EQ(cs_mpi_attach_trainer(g_mpi, t.trainer), CS_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(cs_mpi_last_error(g_mpi)).find("same checkpoint"), std::string::npos)
        << cs_mpi_last_error(g_mpi);
}

TEST(MpiDataParallel, BucketedAverageIsTheMeanOverRanks)
{
    const int rank = cs_mpi_rank(g_mpi), size = cs_mpi_size(g_mpi);
    std::vector<float> x(1001);
    for (size_t i = 0; i < x.size(); i++) x[i] = (float)(i % 17) * (float)(rank + 1);
    const cs_mpi_stats before = cs_mpi_get_stats(g_mpi);
    cs_mpi_set_bucket_bytes(g_mpi, 100 * sizeof(float)); // 11 buckets, the last one short
    EXPECT_EQ(cs_mpi_allreduce_mean(g_mpi, x.data(), (int64_t)x.size()), CS_OK);
    cs_mpi_set_bucket_bytes(g_mpi, 0);
    const double mean_factor = (double)(size + 1) / 2.0; // mean of 1..size
    double err = 0.0;
    for (size_t i = 0; i < x.size(); i++)
        err = std::max(err, std::fabs(x[i] - (double)(i % 17) * mean_factor));
    EXPECT_LT(err, 1e-5);
    const cs_mpi_stats after = cs_mpi_get_stats(g_mpi);
    EXPECT_EQ(after.messages - before.messages, 11);
    EXPECT_EQ(after.bytes_reduced - before.bytes_reduced, (uint64_t)(x.size() * sizeof(float)));
}

// On ranks other than 0: only failed assertions, prefixed with the rank.
class FailurePrinter : public ::testing::EmptyTestEventListener
{
  public:
    explicit FailurePrinter(int rank) : rank_(rank) {}
    void OnTestPartResult(const ::testing::TestPartResult &r) override
    {
        if (r.failed())
            std::fprintf(stderr, "rank %d: %s:%d: failure\n%s\n", rank_,
                         r.file_name() ? r.file_name() : "?", r.line_number(), r.summary());
    }

  private:
    int rank_;
};

} // namespace

int main(int argc, char **argv)
{
    ::testing::InitGoogleTest(&argc, argv);
    if (cs_mpi_init(&argc, &argv, &g_mpi) != CS_OK) {
        std::fprintf(stderr, "cs_mpi_init: %s\n", cs_mpi_last_error(g_mpi));
        cs_mpi_free(g_mpi);
        return 1;
    }
    // rank 0 reports; the others stay quiet unless a test fails there
    if (cs_mpi_rank(g_mpi) != 0) {
        auto &listeners = ::testing::UnitTest::GetInstance()->listeners();
        delete listeners.Release(listeners.default_result_printer());
        listeners.Append(new FailurePrinter(cs_mpi_rank(g_mpi)));
    }
    int failed = RUN_ALL_TESTS() != 0;
    if (cs_mpi_active(g_mpi))
        MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    cs_mpi_free(g_mpi);
    return failed;
}
