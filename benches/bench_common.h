/* Helpers shared by the C benchmark drivers: a monotonic clock, medians, resident set size
 * and a status check that names the failing call. */
#ifndef MC_BENCH_COMMON_H
#define MC_BENCH_COMMON_H
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "model_context.h"

static inline double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Sorts `v` and returns its median. */
static inline double median(double *v, int n) {
  qsort(v, n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* VmRSS of this process in KiB (-1 if unknown). */
static inline long rss_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) kb = atol(line + 6);
  if (f) fclose(f);
  return kb;
}

static inline void check(mc_status s, const char *what) {
  if (s != MC_OK) {
    fprintf(stderr, "%s: %s: %s\n", what, mc_status_name(s), mc_last_error());
    exit(1);
  }
}
/* Opens a checkpoint on the CPU and creates its model in the dtype named "f32" or "bf16". */
static inline mc_context *open_model(const char *path, const char *dtype) {
  mc_context *ctx = NULL;
  check(mc_open(path, "cpu", &ctx), "mc_open");
  mc_model_options mo;
  check(mc_model_options_init(&mo, sizeof mo), "mc_model_options_init");
  mo.dtype = strcmp(dtype, "bf16") == 0 ? MC_DTYPE_BFLOAT16 : MC_DTYPE_FLOAT32;
  check(mc_create_model(ctx, &mo), "mc_create_model");
  return ctx;
}

/* Seconds for one mc_forward of `r` (output freed). */
static inline double forward_seconds(mc_context *ctx, const mc_forward_request *r) {
  mc_forward_output *out = NULL;
  double t0 = now();
  check(mc_forward(ctx, r, &out), "mc_forward");
  double dt = now() - t0;
  mc_forward_output_free(out);
  return dt;
}

#endif
