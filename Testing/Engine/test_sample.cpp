// test_sample.cpp - (being written)
#include <gtest/gtest.h>
