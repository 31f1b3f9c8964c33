/* sample.c - (being written) */
#include "internal.h"
