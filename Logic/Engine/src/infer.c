/* infer.c - (being written) */
#include "internal.h"
