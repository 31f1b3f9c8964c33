/* rng.c - (being written) */
#include "internal.h"
