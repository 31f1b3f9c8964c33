/* train.c - (being written) */
#include "internal.h"
