// test_infer.cpp - (being written)
#include <gtest/gtest.h>
