/* model_io.c - (being written) */
#include "internal.h"
