// fuzz.h — what the two parts of the fuzz harness share (fuzz.c: the kernels, and main;
// fuzz_model.c: the forward pass and the thread pool): the tally, the input patterns, the
// generated inputs.
#pragma once
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "lp.h"

// Counts a check, printing it when it failed (fuzz.c prints the tally at the end).
void check(int ok, const char *what, const char *isa, const char *type, int pattern);
const char *isa_name(int isa);

// Input patterns: plain values, or special ones (NaN, inf, huge, denormal, tiny...) now and
// then or throughout.
enum { P_PLAIN, P_ALL_NAN, P_SOME_NAN, P_SOME_INF, P_HUGE, P_DENORMAL, P_TINY, P_MIXED, P_ALL_NEG_INF,
       P_ZERO, P_COUNT };

// n floats of the pattern.
void fill(float *x, int64_t n, int pattern);
// Weights of type t whose scales follow the pattern (plain ones below scale).
void fill_weights(int t, uint8_t *w, int64_t n, int pattern, float scale);

// The forward pass and the thread pool (fuzz_model.c).
void check_models(int isa);
void check_pool(void);
