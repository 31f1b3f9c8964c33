/* rng.c - our own seeded generator: xoshiro256** seeded through splitmix64, so that the same
 * seed gives the same weights and patches on every platform and compiler. */
#include "internal.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void cs_rng_seed(cs_rng *rng, uint64_t seed)
{
    uint64_t state = seed;
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&state);
}

uint64_t cs_rng_next(cs_rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float cs_rng_uniform(cs_rng *rng)
{
    /* the top 24 bits give every float in [0, 1) with spacing 2^-24 */
    return (float)(cs_rng_next(rng) >> 40) * (1.0f / 16777216.0f);
}

float cs_rng_normal(cs_rng *rng)
{
    /* Box-Muller in double for accuracy; u1 in (0, 1] so the log is finite */
    double u1 = ((double)(cs_rng_next(rng) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(cs_rng_next(rng) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

int64_t cs_rng_below(cs_rng *rng, int64_t bound)
{
    if (bound <= 1) return 0;
    /* rejection keeps the result unbiased */
    uint64_t b = (uint64_t)bound;
    uint64_t limit = UINT64_MAX - UINT64_MAX % b;
    uint64_t x;
    do x = cs_rng_next(rng);
    while (x >= limit);
    return (int64_t)(x % b);
}
