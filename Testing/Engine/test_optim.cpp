// test_optim.cpp - (being written)
#include <gtest/gtest.h>
