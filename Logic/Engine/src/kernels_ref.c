/* kernels_ref.c - (being written) */
#include "internal.h"
