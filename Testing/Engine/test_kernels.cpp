// test_kernels.cpp - (being written)
#include <gtest/gtest.h>
