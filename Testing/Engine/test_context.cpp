// Contexts, error messages and status names.
#include <gtest/gtest.h>

#include <cstring>

#include "comboseg/comboseg.h"
#include "internal.h"

TEST(Context, KeepsTheLastErrorMessage)
{
  cs_context_t ctx = nullptr;
  ASSERT_EQ(cs_context_init(&ctx), CS_OK);
  EXPECT_STREQ(cs_context_last_error(ctx), "");
  EXPECT_EQ(cs_fail(ctx, CS_ERR_IO, "cannot open '%s'", "x.nii"), CS_ERR_IO);
  EXPECT_STREQ(cs_context_last_error(ctx), "cannot open 'x.nii'");
  cs_context_clear_error(ctx);
  EXPECT_STREQ(cs_context_last_error(ctx), "");
  cs_context_free(ctx);
}

TEST(Context, ThreadsDefaultAndOverride)
{
  cs_context_t ctx = nullptr;
  ASSERT_EQ(cs_context_init(&ctx), CS_OK);
  EXPECT_EQ(cs_context_get_threads(ctx), 0);
  EXPECT_GE(cs_threads(ctx), 1);
  cs_context_set_threads(ctx, 1);
  EXPECT_EQ(cs_threads(ctx), 1);
  cs_context_free(ctx);
}

TEST(Context, AllocIsAlignedZeroedAndReportsFailure)
{
  cs_context_t ctx = nullptr;
  ASSERT_EQ(cs_context_init(&ctx), CS_OK);
  float *p = static_cast<float *>(cs_alloc(ctx, 1000 * sizeof(float), "test buffer"));
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
  for (int i = 0; i < 1000; ++i)
    ASSERT_EQ(p[i], 0.0f);
  cs_free(p);
  void *huge = cs_alloc(ctx, SIZE_MAX - 8, "impossible buffer");
  EXPECT_EQ(huge, nullptr);
  EXPECT_NE(std::strstr(cs_context_last_error(ctx), "impossible buffer"), nullptr);
  cs_context_free(ctx);
}

TEST(Context, StatusNamesAreDistinct)
{
  EXPECT_STREQ(cs_status_string(CS_OK), "ok");
  EXPECT_STRNE(cs_status_string(CS_ERR_IO), cs_status_string(CS_ERR_FORMAT));
}
