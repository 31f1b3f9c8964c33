/* net.c - (being written) */
#include "internal.h"
