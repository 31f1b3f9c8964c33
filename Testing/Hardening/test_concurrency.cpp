// test_concurrency.cpp - the engine keeps no global mutable state: work on two contexts in two
// threads at once gives exactly what each gives alone. Run under ThreadSanitizer by
// Testing/run_all.sh (see there for OpenMP under TSan).
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "comboseg/comboseg.h"
#include "hardening_util.h"
#include "internal.h"

using namespace cs_hardening;

namespace
{

struct Job {
    cs_model_t model = nullptr;
    std::vector<float> image;
    int64_t size[3] = {0, 0, 0};
    std::vector<float> probabilities;
    std::vector<int32_t> labels;
    cs_status status = CS_OK;
};

// One prediction on its own context with `threads` OpenMP threads.
void RunPredict(Job *job, int threads, int repeats)
{
    cs_context_t ctx = nullptr;
    if (cs_context_init(&ctx) != CS_OK) {
        job->status = CS_ERR_OUT_OF_MEMORY;
        return;
    }
    cs_context_set_threads(ctx, threads);
    const int K = cs_model_get_info(job->model)->arch.num_classes;
    const size_t n = static_cast<size_t>(job->size[0] * job->size[1] * job->size[2]);
    job->probabilities.assign(n * K, 0.0f);
    job->labels.assign(n, -1);
    for (int r = 0; r < repeats && job->status == CS_OK; ++r)
        job->status = cs_predict_volume(ctx, job->model, job->image.data(), job->size, nullptr,
                                        job->probabilities.data(), job->labels.data());
    cs_context_free(ctx);
}

class Concurrency : public ::testing::TestWithParam<int>
{
  protected:
    void SetUp() override
    {
        ASSERT_EQ(cs_context_init(&ctx_), CS_OK);
        const cs_model_info a = TinyInfo(3, 1, 3);
        cs_model_info b = TinyInfo(3, 2, 4);
        b.arch.base_filters = 4;
        ASSERT_EQ(cs_model_create(ctx_, &a, 21, &a_), CS_OK);
        ASSERT_EQ(cs_model_create(ctx_, &b, 22, &b_), CS_OK);
    }
    void TearDown() override
    {
        cs_model_free(a_);
        cs_model_free(b_);
        cs_context_free(ctx_);
    }
    Job MakeJob(cs_model_t model, int channels, float phase) const
    {
        Job j;
        j.model = model;
        // 5 x 4 windows of 8 per z-row: with 2 threads each runs whole windows (window tasks)
        j.size[0] = 21;
        j.size[1] = 18;
        j.size[2] = 9;
        j.image = TestImage(channels, j.size, phase);
        return j;
    }
    cs_context_t ctx_ = nullptr;
    cs_model_t a_ = nullptr, b_ = nullptr;
};

TEST_P(Concurrency, TwoModelsAtOnceGiveWhatEachGivesAlone)
{
    const int threads = GetParam();
    Job alone_a = MakeJob(a_, 1, 0.0f), alone_b = MakeJob(b_, 2, 1.0f);
    RunPredict(&alone_a, threads, 1);
    RunPredict(&alone_b, threads, 1);
    ASSERT_EQ(alone_a.status, CS_OK);
    ASSERT_EQ(alone_b.status, CS_OK);

    Job both_a = MakeJob(a_, 1, 0.0f), both_b = MakeJob(b_, 2, 1.0f);
    std::thread ta(RunPredict, &both_a, threads, 2), tb(RunPredict, &both_b, threads, 2);
    ta.join();
    tb.join();
    ASSERT_EQ(both_a.status, CS_OK);
    ASSERT_EQ(both_b.status, CS_OK);
    // bit for bit: the same work in the same order on each context
    EXPECT_EQ(both_a.labels, alone_a.labels);
    EXPECT_EQ(both_b.labels, alone_b.labels);
    EXPECT_EQ(0, std::memcmp(both_a.probabilities.data(), alone_a.probabilities.data(),
                             both_a.probabilities.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(both_b.probabilities.data(), alone_b.probabilities.data(),
                             both_b.probabilities.size() * sizeof(float)));
}

TEST_P(Concurrency, OneModelSharedByTwoThreads)
{
    // comboseg.h: a model is read-only during inference and may be shared by several threads.
    const int threads = GetParam();
    Job alone1 = MakeJob(a_, 1, 0.0f), alone2 = MakeJob(a_, 1, 2.0f);
    RunPredict(&alone1, threads, 1);
    RunPredict(&alone2, threads, 1);
    Job both1 = MakeJob(a_, 1, 0.0f), both2 = MakeJob(a_, 1, 2.0f);
    std::thread t1(RunPredict, &both1, threads, 2), t2(RunPredict, &both2, threads, 2);
    t1.join();
    t2.join();
    ASSERT_EQ(both1.status, CS_OK);
    ASSERT_EQ(both2.status, CS_OK);
    EXPECT_EQ(both1.labels, alone1.labels);
    EXPECT_EQ(both2.labels, alone2.labels);
    EXPECT_EQ(both1.probabilities, alone1.probabilities);
    EXPECT_EQ(both2.probabilities, alone2.probabilities);
}

// Sliding-window inference's window tasks (threads running whole windows, blends in window
// order) give the one-thread result bit for bit, also while another context runs the same.
TEST_P(Concurrency, WindowTasksGiveTheOneThreadResult)
{
    Job one = MakeJob(b_, 2, 3.0f);
    RunPredict(&one, 1, 1);
    ASSERT_EQ(one.status, CS_OK);
    Job first = MakeJob(b_, 2, 3.0f), second = MakeJob(b_, 2, 3.0f);
    std::thread t1(RunPredict, &first, GetParam() + 1, 2), t2(RunPredict, &second, 2, 1);
    t1.join();
    t2.join();
    for (const Job *j : {&first, &second}) {
        ASSERT_EQ(j->status, CS_OK);
        EXPECT_EQ(j->labels, one.labels);
        EXPECT_EQ(0, std::memcmp(j->probabilities.data(), one.probabilities.data(),
                                 one.probabilities.size() * sizeof(float)));
    }
}

// Training in two threads (each its own model, context and trainer) gives the weights that
// training alone gives.
void Train(cs_model_t model, int threads, int steps, cs_status *status)
{
    cs_context_t ctx = nullptr;
    *status = cs_context_init(&ctx);
    if (*status != CS_OK) return;
    cs_context_set_threads(ctx, threads);
    cs_train_config config = cs_train_config_default();
    config.batch_size = 1;
    cs_trainer_t t = nullptr;
    *status = cs_trainer_init(ctx, model, &config, &t);
    const int64_t size[3] = {8, 8, 8};
    const std::vector<float> image = TestImage(1, size);
    std::vector<int32_t> labels(image.size());
    for (size_t i = 0; i < labels.size(); ++i)
        labels[i] = image[i] > 0.2f ? 1 : image[i] < -0.4f ? 2 : 0;
    cs_step_result r;
    for (int s = 0; s < steps && *status == CS_OK; ++s)
        *status = cs_trainer_step(t, image.data(), labels.data(), &r);
    cs_trainer_free(t);
    cs_context_free(ctx);
}

TEST_P(Concurrency, TwoTrainersAtOnceGiveWhatEachGivesAlone)
{
    const int threads = GetParam();
    const cs_model_info info = TinyInfo(3, 1, 3);
    cs_model_t alone = nullptr, m1 = nullptr, m2 = nullptr;
    ASSERT_EQ(cs_model_create(ctx_, &info, 4, &alone), CS_OK);
    ASSERT_EQ(cs_model_create(ctx_, &info, 4, &m1), CS_OK);
    ASSERT_EQ(cs_model_create(ctx_, &info, 4, &m2), CS_OK);
    cs_status s0, s1, s2;
    Train(alone, threads, 4, &s0);
    std::thread t1(Train, m1, threads, 4, &s1), t2(Train, m2, threads, 4, &s2);
    t1.join();
    t2.join();
    ASSERT_EQ(s0, CS_OK);
    ASSERT_EQ(s1, CS_OK);
    ASSERT_EQ(s2, CS_OK);
    const size_t bytes = sizeof(float) * static_cast<size_t>(alone->num_params);
    EXPECT_EQ(0, std::memcmp(m1->params, alone->params, bytes));
    EXPECT_EQ(0, std::memcmp(m2->params, alone->params, bytes));
    cs_model_free(alone);
    cs_model_free(m1);
    cs_model_free(m2);
}

INSTANTIATE_TEST_SUITE_P(OpenMPThreads, Concurrency, ::testing::Values(1, 2),
                         [](const ::testing::TestParamInfo<int> &p) {
                             return std::to_string(p.param) + "Threads";
                         });

} // namespace
