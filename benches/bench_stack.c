/*
 * Stacked fetches (MC_LAYER_ALL) against one fetch per layer, and dtype conversion cost,
 * through the C API on a warm context. One JSON object (median seconds) for bench_stack.py.
 *
 *   bench_stack CHECKPOINT_DIR REPS
 */
#include "bench_common.h"

/* Fetches `loc` for `layer` (MC_LAYER_ALL: stacked) converted to `dtype`, then frees it. */
static void fetch(mc_context *ctx, mc_weight_location loc, int32_t layer, mc_dtype dtype) {
  mc_weight_request r;
  check(mc_weight_request_init(&r, sizeof r), "mc_weight_request_init");
  r.location = loc;
  r.layer = layer;
  r.dtype = dtype;
  DLManagedTensorVersioned *t = NULL;
  check(mc_get_weight_ex(ctx, &r, &t), "mc_get_weight_ex");
  t->deleter(t);
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  int reps = atoi(argv[2]);
  mc_context *ctx = NULL;
  check(mc_open(argv[1], "cpu", &ctx), "mc_open");
  int64_t n_layers = 0;
  check(mc_dim_size(ctx, MC_DIM_LAYERS, &n_layers), "mc_dim_size");
  double *t = calloc(reps, sizeof *t);
  const struct { const char *name; mc_weight_location loc; int32_t layer; mc_dtype dtype; int per_layer; } cases[] = {
      {"to_query_stacked", MC_WEIGHT_ATTN_TO_QUERY, MC_LAYER_ALL, MC_DTYPE_NONE, 0},
      {"to_query_each_layer", MC_WEIGHT_ATTN_TO_QUERY, 0, MC_DTYPE_NONE, 1},
      {"mlp_to_hidden_stacked", MC_WEIGHT_MLP_TO_HIDDEN, MC_LAYER_ALL, MC_DTYPE_NONE, 0},
      {"mlp_to_hidden_each_layer", MC_WEIGHT_MLP_TO_HIDDEN, 0, MC_DTYPE_NONE, 1},
      {"embedding_float32", MC_WEIGHT_EMBEDDING, MC_LAYER_NONE, MC_DTYPE_NONE, 0},
      {"embedding_to_float16", MC_WEIGHT_EMBEDDING, MC_LAYER_NONE, MC_DTYPE_FLOAT16, 0},
      {"embedding_to_bfloat16", MC_WEIGHT_EMBEDDING, MC_LAYER_NONE, MC_DTYPE_BFLOAT16, 0},
      {"mlp_to_hidden_stacked_float16", MC_WEIGHT_MLP_TO_HIDDEN, MC_LAYER_ALL, MC_DTYPE_FLOAT16, 0},
  };
  printf("{");
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    for (int r = -1; r < reps; r++) { /* r = -1: warm-up (maps the pieces) */
      double t0 = now();
      for (int64_t l = 0; l < (cases[c].per_layer ? n_layers : 1); l++)
        fetch(ctx, cases[c].loc, cases[c].per_layer ? (int32_t)l : cases[c].layer, cases[c].dtype);
      if (r >= 0) t[r] = now() - t0;
    }
    printf("%s\"%s\": %.6f", c ? ", " : "", cases[c].name, median(t, reps));
  }
  printf("}\n");
  mc_free(ctx);
  free(t);
  return 0;
}
