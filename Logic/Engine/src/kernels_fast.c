/* kernels_fast.c - (being written) */
#include "internal.h"
