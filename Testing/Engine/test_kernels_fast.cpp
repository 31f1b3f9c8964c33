// test_kernels_fast.cpp - (being written)
#include <gtest/gtest.h>
