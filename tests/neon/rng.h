// The C harnesses' random numbers: xorshift64*, seeded by the includer's RNG_SEED, so that a
// harness's inputs are the same on every run and every machine.
#pragma once
#include <stdint.h>

static uint64_t rng_state = RNG_SEED;
static uint32_t rnd(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545f4914f6cdd1dull) >> 32);
}
static float rnd_unit(void) { return (float)rnd() / 4294967296.0f * 2.0f - 1.0f; }  // [-1, 1)
