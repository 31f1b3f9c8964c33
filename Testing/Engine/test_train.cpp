// test_train.cpp - (being written)
#include <gtest/gtest.h>
