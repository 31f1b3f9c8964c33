/* optim.c - (being written) */
#include "internal.h"
