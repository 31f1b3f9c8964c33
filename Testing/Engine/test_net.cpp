// test_net.cpp - (being written)
#include <gtest/gtest.h>
