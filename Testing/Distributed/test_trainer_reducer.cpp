// test_trainer_reducer.cpp - the engine's gradient-reducer hook and ComboSegMPI in a lone
// process (not launched by mpirun: rank 0 of 1, MPI never touched).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "comboseg/comboseg_mpi.h"
#include "cs_mpi_test_util.h"

namespace
{

using namespace cs_mpi_test;

struct Fixture {
    cs_context_t ctx = nullptr;
    cs_model_t model = nullptr;
    cs_trainer_t trainer = nullptr;
    Fixture()
    {
        cs_context_init(&ctx);
        cs_context_set_threads(ctx, 1);
        cs_model_info info = SmallModelInfo();
        cs_model_create(ctx, &info, 42, &model);
        cs_train_config config = SmallTrainConfig(2);
        cs_trainer_init(ctx, model, &config, &trainer);
    }
    ~Fixture()
    {
        cs_trainer_free(trainer);
        cs_model_free(model);
        cs_context_free(ctx);
    }
    std::vector<float> Params()
    {
        float *p = nullptr;
        int64_t n = 0;
        cs_trainer_get_state(trainer, &p, nullptr, nullptr, &n);
        return std::vector<float>(p, p + n);
    }
    cs_status Step(int64_t s, cs_step_result *r = nullptr)
    {
        Batch b = MakeBatch(s, 0, 2);
        return cs_trainer_step(trainer, b.images.data(), b.labels.data(), r);
    }
};

struct Calls {
    int count = 0;
    int64_t size = 0;
    float scale = 1.0f;
};

cs_status ScaleGradients(void *user_data, float *grads, int64_t count, char *, size_t)
{
    Calls *c = static_cast<Calls *>(user_data);
    c->count++;
    c->size = count;
    for (int64_t i = 0; i < count; i++) grads[i] *= c->scale;
    return CS_OK;
}

cs_status Refuse(void *, float *, int64_t, char *message, size_t size)
{
    std::snprintf(message, size, "rank 3: the network went away");
    return CS_ERR_IO;
}

TEST(TrainerGradientReducer, IsCalledOncePerStepWithEveryParameter)
{
    Fixture f;
    ASSERT_TRUE(f.trainer) << cs_context_last_error(f.ctx);
    Calls calls;
    cs_trainer_set_gradient_reducer(f.trainer, ScaleGradients, &calls);
    ASSERT_EQ(f.Step(0), CS_OK);
    ASSERT_EQ(f.Step(1), CS_OK);
    EXPECT_EQ(calls.count, 2);
    EXPECT_EQ(calls.size, cs_model_num_parameters(f.model));
}

TEST(TrainerGradientReducer, RunsBeforeTheNormAndTheUpdate)
{
    // a reducer that doubles the gradient doubles the reported norm (taken before clipping)
    Fixture a, b;
    Calls twice;
    twice.scale = 2.0f;
    cs_trainer_set_gradient_reducer(b.trainer, ScaleGradients, &twice);
    cs_step_result ra, rb;
    ASSERT_EQ(a.Step(0, &ra), CS_OK);
    ASSERT_EQ(b.Step(0, &rb), CS_OK);
    EXPECT_NEAR(rb.grad_norm, 2.0f * ra.grad_norm, 1e-5f * ra.grad_norm);
    // a zeroed gradient leaves the weights where they are (Adam with no decay)
    Fixture c;
    Calls zero;
    zero.scale = 0.0f;
    cs_trainer_set_gradient_reducer(c.trainer, ScaleGradients, &zero);
    const std::vector<float> before = c.Params();
    ASSERT_EQ(c.Step(0), CS_OK);
    EXPECT_EQ(c.Params(), before);
}

TEST(TrainerGradientReducer, AFailingReducerStopsTheStepWithItsMessage)
{
    Fixture f;
    cs_trainer_set_gradient_reducer(f.trainer, Refuse, nullptr);
    const std::vector<float> before = f.Params();
    EXPECT_EQ(f.Step(0), CS_ERR_IO);
    const std::string message = cs_context_last_error(f.ctx);
    EXPECT_NE(message.find("rank 3: the network went away"), std::string::npos) << message;
    EXPECT_EQ(f.Params(), before);
    EXPECT_EQ(cs_trainer_steps_done(f.trainer), 0);
    // removing the reducer restores plain training
    cs_trainer_set_gradient_reducer(f.trainer, nullptr, nullptr);
    EXPECT_EQ(f.Step(0), CS_OK);
    EXPECT_EQ(cs_trainer_steps_done(f.trainer), 1);
}

TEST(TrainerGradientReducer, StateExposesParametersAndMoments)
{
    Fixture f;
    float *p = nullptr, *m = nullptr, *v = nullptr;
    int64_t n = 0;
    ASSERT_EQ(cs_trainer_get_state(f.trainer, &p, &m, &v, &n), CS_OK);
    EXPECT_EQ(n, cs_model_num_parameters(f.model));
    ASSERT_TRUE(p && m && v);
    EXPECT_EQ(m[0], 0.0f);
    ASSERT_EQ(f.Step(0), CS_OK);
    double m_abs = 0.0;
    for (int64_t i = 0; i < n; i++) m_abs += std::fabs(m[i]);
    EXPECT_GT(m_abs, 0.0); // the same array the optimiser updates
    EXPECT_EQ(cs_trainer_get_state(nullptr, &p, &m, &v, &n), CS_ERR_INVALID_ARGUMENT);
}

TEST(ComboSegMPILoneProcess, IsRankZeroOfOneAndTrainsAsWithoutMPI)
{
    cs_mpi_t mpi = nullptr;
    ASSERT_EQ(cs_mpi_init(nullptr, nullptr, &mpi), CS_OK);
    EXPECT_EQ(cs_mpi_rank(mpi), 0);
    EXPECT_EQ(cs_mpi_size(mpi), 1);
    EXPECT_FALSE(cs_mpi_active(mpi));
    Fixture a, b;
    ASSERT_EQ(cs_mpi_attach_trainer(mpi, b.trainer), CS_OK);
    for (int s = 0; s < 3; s++) {
        ASSERT_EQ(a.Step(s), CS_OK);
        ASSERT_EQ(cs_mpi_step_end(mpi, b.Step(s), cs_context_last_error(b.ctx)), CS_OK);
    }
    EXPECT_EQ(a.Params(), b.Params());
    // a failure is reported as rank 0's
    EXPECT_EQ(cs_mpi_step_end(mpi, CS_ERR_IO, "cannot read case 'x.nrrd'"), CS_ERR_IO);
    EXPECT_STREQ(cs_mpi_last_error(mpi), "rank 0: cannot read case 'x.nrrd'");
    EXPECT_EQ(cs_mpi_failed_rank(mpi), 0);
    cs_mpi_free(mpi);
}

TEST(ComboSegMPILoneProcess, ShardsSplitItemsContiguouslyAndEvenly)
{
    int64_t first = -1, count = -1, next = 0, total = 0;
    for (int r = 0; r < 3; r++) {
        cs_mpi_shard(10, r, 3, &first, &count);
        EXPECT_EQ(first, next);
        EXPECT_EQ(count, r == 0 ? 4 : 3);
        next = first + count;
        total += count;
    }
    EXPECT_EQ(total, 10);
    cs_mpi_shard(4, 1, 2, &first, &count);
    EXPECT_EQ(first, 2);
    EXPECT_EQ(count, 2);
}

} // namespace
