// test_loss.cpp - (being written)
#include <gtest/gtest.h>
