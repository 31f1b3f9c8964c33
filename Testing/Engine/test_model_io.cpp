// test_model_io.cpp - (being written)
#include <gtest/gtest.h>
