/*
 * Times the model through the C API: creation (open + mc_create_model), and forward passes
 * of 1x128 and 8x128 tokens with and without capturing every layer's MLP post-activations.
 * Prints one JSON object (median seconds over REPS after a warm-up) for bench_forward.py.
 *
 *   bench_forward CHECKPOINT_DIR REPS
 */
#include "bench_common.h"

static double forward(mc_context *ctx, int64_t *tokens, int64_t batch, int capture) {
  mc_forward_request r;
  check(mc_forward_request_init(&r, sizeof r), "mc_forward_request_init");
  mc_activation act = MC_ACT_MLP_POST_ACT;
  int32_t layer = MC_LAYER_ALL;
  r.tokens = tokens;
  r.n_tokens = (size_t)(batch * 128);
  r.token_type = MC_TOKENS_INT64;
  r.batch = batch;
  r.seq_len = 128;
  if (capture) {
    r.activations = &act;
    r.layers = &layer;
    r.n_activations = 1;
  }
  mc_forward_output *out = NULL;
  double t0 = now();
  check(mc_forward(ctx, &r, &out), "mc_forward");
  double dt = now() - t0;
  mc_forward_output_free(out);
  return dt;
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  int reps = atoi(argv[2]);
  double *t = calloc(reps, sizeof *t);
  for (int r = 0; r < reps; r++) {
    double t0 = now();
    mc_context *c = NULL;
    check(mc_open(argv[1], "cpu", &c), "mc_open");
    check(mc_create_model(c, NULL), "mc_create_model");
    t[r] = now() - t0;
    mc_free(c);
  }
  printf("{\"create\": %.6f", median(t, reps));
  mc_context *ctx = NULL;
  check(mc_open(argv[1], "cpu", &ctx), "mc_open");
  check(mc_create_model(ctx, NULL), "mc_create_model");
  int64_t tokens[8 * 128];
  unsigned s = 12345;
  for (int i = 0; i < 8 * 128; i++) tokens[i] = (s = s * 1103515245u + 12345u) % 50257;
  const int64_t batches[2] = {1, 8};
  for (int b = 0; b < 2; b++)
    for (int capture = 0; capture < 2; capture++) {
      forward(ctx, tokens, batches[b], capture); /* warm-up */
      for (int r = 0; r < reps; r++) t[r] = forward(ctx, tokens, batches[b], capture);
      printf(", \"forward_%lldx128%s\": %.6f", (long long)batches[b], capture ? "_capture" : "", median(t, reps));
    }
  printf("}\n");
  mc_free(ctx);
  free(t);
  return 0;
}
