/*
 * C half of the gradients benchmark: on the GPT-2-small-shaped checkpoint, 8x128 seeded
 * tokens, a forward pass (logits at the last position only, as the objective needs) and the
 * same pass with a backward pass from a logit difference at each row's last position, with
 * gradients at every layer's mlp.post_act. Prints medians (seconds) as JSON; the two
 * requests' repetitions are interleaved. The peer is benches/bench_grads_hf.py.
 *
 *   bench_grads CHECKPOINT_DIR REPS
 */
#include "bench_common.h"

enum { B = 8, T = 128 };

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  int reps = atoi(argv[2]);
  mc_context *ctx = NULL;
  check(mc_open(argv[1], "cpu", &ctx), "mc_open");
  check(mc_create_model(ctx, NULL), "mc_create_model");
  static int64_t tokens[B * T], good[B], bad[B];
  unsigned s = 12345;
  for (int i = 0; i < B * T; i++) tokens[i] = (s = s * 1103515245u + 12345u) % 50257;
  for (int i = 0; i < B; i++) good[i] = 1000 + i, bad[i] = 2000 + i;
  mc_objective obj;
  check(mc_objective_init(&obj, sizeof obj), "mc_objective_init");
  obj.kind = MC_OBJECTIVE_LOGIT_DIFF;
  obj.tokens = good;
  obj.n_tokens = B;
  obj.other_tokens = bad;
  obj.n_other_tokens = B;
  mc_activation at = MC_ACT_MLP_POST_ACT;
  int32_t every = MC_LAYER_ALL;
  mc_forward_request r[2];
  for (int k = 0; k < 2; k++) {
    check(mc_forward_request_init(&r[k], sizeof r[k]), "mc_forward_request_init");
    r[k].tokens = tokens;
    r[k].n_tokens = B * T;
    r[k].batch = B;
    r[k].seq_len = T;
    r[k].logits = MC_LOGITS_LAST;
  }
  r[1].objective = &obj;
  r[1].grad_activations = &at;
  r[1].grad_layers = &every;
  r[1].n_grads = 1;
  double *t = calloc((size_t)(2 * reps), sizeof *t);
  for (int k = 0; k < 2; k++) forward_seconds(ctx, &r[k]); /* warm-up */
  for (int i = 0; i < reps; i++)
    for (int k = 0; k < 2; k++) t[k * reps + i] = forward_seconds(ctx, &r[k]);
  printf("{\"impl\": \"c-api\", \"forward\": %.6f, \"forward_backward\": %.6f}\n",
         median(t, reps), median(t + reps, reps));
  free(t);
  mc_free(ctx);
  return 0;
}
