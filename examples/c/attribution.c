/*
 * Attribution from C: one forward pass with a backward pass from a logit difference (the
 * last position's logit of one token minus another's), gradients at every layer's
 * mlp.post_act, and each neuron's activation x gradient summed over positions; prints the
 * ten neurons of largest |act x grad|. Then checks the first one: scaling that neuron by
 * (1 + 1e-3) with an edit must move the objective by about 1e-3 x its attribution.
 *
 *   cc attribution.c $(pkg-config --cflags --libs model_context) -lm -o attribution
 *   ./attribution MODEL_DIR
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "model_context.h"

static int failed(mc_status s, const char *what) {
  if (s == MC_OK) return 0;
  fprintf(stderr, "%s failed: %s: %s\n", what, mc_status_name(s), mc_last_error());
  return 1;
}

typedef struct {
  int32_t layer;
  int64_t neuron;
  double score;
} attribution;

static int by_magnitude(const void *a, const void *b) {
  double x = fabs(((const attribution *)a)->score), y = fabs(((const attribution *)b)->score);
  return (x < y) - (x > y);
}

/* Runs `req` and reads row 0's objective; with `scores`, fills act x grad per neuron. */
static int run(const mc_context *ctx, const mc_forward_request *req, int64_t n_layers,
               int64_t d_ff, double *objective, attribution *scores) {
  mc_forward_output *out = NULL;
  DLManagedTensorVersioned *value = NULL, *act = NULL, *grad = NULL;
  int rc = 1;
  if (failed(mc_forward(ctx, req, &out), "mc_forward")) return 1;
  if (failed(mc_forward_output_objective(out, &value), "objective")) goto done;
  *objective = ((const float *)value->dl_tensor.data)[0];
  for (int32_t l = 0; scores && l < n_layers; l++) {
    if (failed(mc_forward_output_get(out, MC_ACT_MLP_POST_ACT, l, &act), "activation") ||
        failed(mc_forward_output_grad(out, MC_ACT_MLP_POST_ACT, l, &grad), "gradient"))
      goto done;
    const float *a = act->dl_tensor.data, *g = grad->dl_tensor.data; /* [1, T, d_ff] */
    int64_t t = act->dl_tensor.shape[1];
    for (int64_t n = 0; n < d_ff; n++) {
      double s = 0;
      for (int64_t p = 0; p < t; p++) s += (double)a[p * d_ff + n] * g[p * d_ff + n];
      scores[l * d_ff + n] = (attribution){l, n, s};
    }
    act->deleter(act);
    grad->deleter(grad);
    act = grad = NULL;
  }
  rc = 0;
done:
  if (value) value->deleter(value);
  if (act) act->deleter(act);
  if (grad) grad->deleter(grad);
  mc_forward_output_free(out);
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
    return 2;
  }
  int rc = 1;
  mc_context *ctx = NULL;
  attribution *scores = NULL;
  if (failed(mc_open(argv[1], "cpu", &ctx), "mc_open")) return 1;
  int64_t n_layers = 0, d_ff = 0;
  if (failed(mc_dim_size(ctx, MC_DIM_LAYERS, &n_layers), "mc_dim_size") ||
      failed(mc_dim_size(ctx, MC_DIM_MLP_ACTS, &d_ff), "mc_dim_size"))
    goto done;
  if (!(scores = calloc((size_t)(n_layers * d_ff), sizeof *scores))) goto done;

  uint32_t ids[6] = {464, 3139, 286, 4881, 318, 262}; /* "The capital of France is the" */
  int64_t token = 6342, other = 3576;                  /* " Paris" vs " London" */
  mc_objective obj;
  if (failed(mc_objective_init(&obj, sizeof obj), "mc_objective_init")) goto done;
  obj.kind = MC_OBJECTIVE_LOGIT_DIFF;
  obj.tokens = &token;
  obj.n_tokens = 1;
  obj.other_tokens = &other;
  obj.n_other_tokens = 1; /* positions NULL: each row's last position */

  mc_activation at = MC_ACT_MLP_POST_ACT;
  int32_t every = MC_LAYER_ALL;
  mc_forward_request req;
  if (failed(mc_forward_request_init(&req, sizeof req), "mc_forward_request_init")) goto done;
  req.token_type = MC_TOKENS_UINT32;
  req.tokens = ids;
  req.n_tokens = 6;
  req.batch = 1;
  req.seq_len = 6;
  req.logits = MC_LOGITS_NONE; /* the objective reads the logits it needs */
  req.activations = &at;
  req.layers = &every;
  req.n_activations = 1;
  req.objective = &obj;
  req.grad_activations = &at;
  req.grad_layers = &every;
  req.n_grads = 1;
  double before = 0, after = 0;
  if (run(ctx, &req, n_layers, d_ff, &before, scores)) goto done;
  qsort(scores, (size_t)(n_layers * d_ff), sizeof *scores, by_magnitude);
  printf("logit(\" Paris\") - logit(\" London\") = %.6f\n", before);
  for (int i = 0; i < 10; i++)
    printf("neuron layer=%d index=%lld act x grad = %+.6f\n", scores[i].layer,
           (long long)scores[i].neuron, scores[i].score);

  /* First order: scale the top neuron by (1 + e) at every position. */
  const double e = 1e-3;
  mc_axis_selection sel[3] = {{NULL, 0}, {NULL, 0}, {&scores[0].neuron, 1}};
  mc_edit edit;
  if (failed(mc_edit_init(&edit, sizeof edit), "mc_edit_init")) goto done;
  edit.location = MC_ACT_MLP_POST_ACT;
  edit.layer = scores[0].layer;
  edit.op = MC_EDIT_SCALE;
  edit.value = 1 + e;
  edit.selection = sel;
  edit.n_selection = 3;
  req.edits = &edit;
  req.n_edits = 1;
  req.n_activations = 0;
  req.n_grads = 0;
  if (run(ctx, &req, n_layers, d_ff, &after, NULL)) goto done;
  double predicted = e * scores[0].score, moved = after - before;
  int ok = fabs(moved - predicted) <= 0.05 * fabs(predicted) + 1e-6;
  printf("first-order check: moved %.3e, predicted %.3e: %s\n", moved, predicted,
         ok ? "ok" : "FAILED");
  rc = ok ? 0 : 1;
done:
  free(scores);
  mc_free(ctx);
  return rc;
}
