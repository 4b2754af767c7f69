/*
 * Times the C API on a checkpoint: a fresh context, mc_get_weight of every weight (every
 * layer) and a sum of its elements; also the embedding alone and attn.to_query layer 0.
 * Prints one JSON object per line for benches/bench_weights.py. Also reports the resident
 * set size after opening and at the end while holding every weight.
 *
 *   bench_weights CHECKPOINT_DIR REPS
 */
#include "bench_common.h"

/* Sum of a float32 tensor. A dense tensor (any permutation of a contiguous block) is summed
 * over its memory in one pass, as torch does; anything else walks its strides. */
static double sum_f32(const DLTensor *t) {
  int64_t n = 1, span = 1;
  for (int i = 0; i < t->ndim; i++) {
    n *= t->shape[i];
    if (t->shape[i] > 1) span += (t->shape[i] - 1) * t->strides[i];
  }
  const float *p = (const float *)((const char *)t->data + t->byte_offset);
  double acc[8] = {0};
  if (span == n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      for (int k = 0; k < 8; k++) acc[k] += p[i + k];
    for (; i < n; i++) acc[0] += p[i];
  } else {
    for (int64_t flat = 0; flat < n; flat++) {
      int64_t rest = flat, off = 0;
      for (int d = t->ndim - 1; d >= 0; d--) {
        off += (rest % t->shape[d]) * t->strides[d];
        rest /= t->shape[d];
      }
      acc[0] += p[off];
    }
  }
  double s = 0;
  for (int k = 0; k < 8; k++) s += acc[k];
  return s;
}

static mc_context *open_ctx(const char *dir) {
  mc_context *ctx = NULL;
  if (mc_open(dir, "cpu", &ctx) != MC_OK) {
    fprintf(stderr, "mc_open: %s\n", mc_last_error());
    exit(1);
  }
  return ctx;
}

static DLManagedTensorVersioned *get(mc_context *ctx, mc_weight_location loc, int32_t layer) {
  DLManagedTensorVersioned *w = NULL;
  if (mc_get_weight(ctx, loc, layer, MC_DIM_NONE, NULL, &w) != MC_OK) {
    fprintf(stderr, "mc_get_weight: %s\n", mc_last_error());
    exit(1);
  }
  return w;
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  int reps = atoi(argv[2]);
  for (int r = 0; r < reps; r++) {
    long rss0 = rss_kb();
    double t0 = now();
    mc_context *ctx = open_ctx(argv[1]);
    long rss_open = rss_kb();
    int64_t n_layers = 0;
    mc_dim_size(ctx, MC_DIM_LAYERS, &n_layers);
    DLManagedTensorVersioned *held[4096];
    int n_held = 0;
    double total = 0;
    for (mc_weight_location loc = 0; loc < MC_WEIGHT_COUNT; loc++) {
      bool per_layer = false;
      mc_weight_location_per_layer(loc, &per_layer);
      for (int64_t l = 0; l < (per_layer ? n_layers : 1); l++) {
        DLManagedTensorVersioned *w = get(ctx, loc, per_layer ? (int32_t)l : MC_LAYER_NONE);
        total += sum_f32(&w->dl_tensor);
        held[n_held++] = w;
      }
    }
    double t_all = now() - t0;
    long rss_held = rss_kb();
    for (int i = 0; i < n_held; i++) held[i]->deleter(held[i]);
    mc_free(ctx);

    t0 = now();
    ctx = open_ctx(argv[1]);
    DLManagedTensorVersioned *e = get(ctx, MC_WEIGHT_EMBEDDING, MC_LAYER_NONE);
    double t_emb_get = now() - t0;
    double emb = sum_f32(&e->dl_tensor);
    double t_emb = now() - t0;
    e->deleter(e);
    mc_free(ctx);

    t0 = now();
    ctx = open_ctx(argv[1]);
    DLManagedTensorVersioned *q = get(ctx, MC_WEIGHT_ATTN_TO_QUERY, 0);
    double t_q_get = now() - t0;
    double qs = sum_f32(&q->dl_tensor);
    double t_q = now() - t0;
    q->deleter(q);
    mc_free(ctx);
    printf("{\"all\": %.6f, \"embedding\": %.6f, \"embedding_get\": %.6f, \"to_query_0\": %.6f, "
           "\"to_query_0_get\": %.6f, \"sum_all\": %.6f, \"sum_embedding\": %.6f, \"sum_to_query_0\": %.6f, "
           "\"n_weights\": %d, \"rss_start_kb\": %ld, \"rss_open_kb\": %ld, \"rss_held_kb\": %ld}\n",
           t_all, t_emb, t_emb_get, t_q, t_q_get, total, emb, qs, n_held, rss0, rss_open, rss_held);
    fflush(stdout);
  }
  return 0;
}
