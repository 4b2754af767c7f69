/*
 * Sampling from C: greedy continuation of a prompt, then seeded temperature / top-p sampling
 * twice with the same seed (equal results), each decoded to text. The size probe gives the
 * buffer size (max_new_tokens).
 *
 *   cc sample.c $(pkg-config --cflags --libs model_context) -o sample
 *   ./sample MODEL_DIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model_context.h"

static int failed(mc_status s, const char *what) {
  if (s == MC_OK) return 0;
  fprintf(stderr, "%s failed: %s: %s\n", what, mc_status_name(s), mc_last_error());
  return 1;
}

/* Samples with `o` and prints the new ids and their text; returns the count or -1. */
static long sample(const mc_context *ctx, const uint32_t *prompt, size_t n_prompt,
                   const mc_sample_options *o, uint32_t *out, const char *label) {
  size_t n = 0, n_bytes = 0;
  if (failed(mc_sample(ctx, prompt, n_prompt, o, NULL, 0, &n), "mc_sample (probe)")) return -1;
  if (failed(mc_sample(ctx, prompt, n_prompt, o, out, n, &n), "mc_sample")) return -1;
  char text[512];
  if (failed(mc_decode(ctx, out, n, text, sizeof text, &n_bytes), "mc_decode")) return -1;
  printf("%s: %zu ids:", label, n);
  for (size_t i = 0; i < n; i++) printf(" %u", out[i]);
  printf(" text=\"%.*s\"\n", (int)n_bytes, text);
  return (long)n;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
    return 2;
  }
  mc_context *ctx = NULL;
  if (failed(mc_open(argv[1], "cpu", &ctx), "mc_open")) return 1;
  int rc = 1;
  uint32_t prompt[16], a[8], b[8];
  size_t n_prompt = 0;
  if (failed(mc_encode(ctx, "The quick brown", 15, prompt, 16, &n_prompt), "mc_encode")) goto done;
  mc_sample_options o;
  if (failed(mc_sample_options_init(&o, sizeof o), "mc_sample_options_init")) goto done;
  o.max_new_tokens = 8;
  o.stop_at_end_of_text = false;
  if (sample(ctx, prompt, n_prompt, &o, a, "greedy") < 0) goto done;
  o.temperature = 0.9;
  o.top_p = 0.95;
  o.seed = 42;
  long n1 = sample(ctx, prompt, n_prompt, &o, a, "seed 42");
  long n2 = sample(ctx, prompt, n_prompt, &o, b, "seed 42 again");
  if (n1 < 0 || n2 < 0) goto done;
  printf("same seed, same tokens: %s\n", n1 == n2 && memcmp(a, b, (size_t)n1 * sizeof *a) == 0 ? "yes" : "NO");
  rc = 0;
done:
  mc_free(ctx);
  return rc;
}
