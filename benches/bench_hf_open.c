/*
 * Times the C API on a Hugging Face GPT-2 folder: mc_open of the folder, then every weight
 * location of every layer via mc_get_weight and a sum of its elements (Conv1D weights come
 * out as transposed views of the mapped safetensors file, c_attn split into q/k/v views).
 * Prints one JSON object per repetition for benches/bench_hf_open.py.
 *
 *   bench_hf_open MODEL_DIR REPS
 */
#include "bench_common.h"

/* Sum of a float32 tensor of any strides, visiting memory in address order: dimensions are
 * walked outermost-first by decreasing stride, so the innermost loop is the smallest stride
 * (1 for every view this library hands out). */
static double sum_f32(const DLTensor *t) {
  int nd = t->ndim, order[8];
  int64_t n = 1;
  for (int i = 0; i < nd; i++) {
    order[i] = i;
    n *= t->shape[i];
  }
  if (n == 0) return 0;
  for (int i = 1; i < nd; i++) /* insertion sort by decreasing stride */
    for (int j = i; j > 0 && t->strides[order[j]] > t->strides[order[j - 1]]; j--) {
      int tmp = order[j]; order[j] = order[j - 1]; order[j - 1] = tmp;
    }
  const float *p = (const float *)((const char *)t->data + t->byte_offset);
  if (nd == 0) return p[0];
  int inner = order[nd - 1];
  int64_t len = t->shape[inner], step = t->strides[inner];
  int64_t idx[8] = {0}, base = 0;
  double acc[8] = {0};
  for (;;) {
    const float *row = p + base;
    int64_t i = 0;
    if (step == 1) {
      for (; i + 8 <= len; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += row[i + k];
    }
    for (; i < len; i++) acc[0] += row[i * step];
    int d = nd - 2;
    for (; d >= 0; d--) {
      int dim = order[d];
      base += t->strides[dim];
      if (++idx[dim] < t->shape[dim]) break;
      base -= t->shape[dim] * t->strides[dim];
      idx[dim] = 0;
    }
    if (d < 0) break;
  }
  double s = 0;
  for (int k = 0; k < 8; k++) s += acc[k];
  return s;
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  int reps = atoi(argv[2]);
  for (int r = 0; r < reps; r++) {
    long rss0 = rss_kb();
    double t0 = now();
    mc_context *ctx = NULL;
    if (mc_open(argv[1], "cpu", &ctx) != MC_OK) {
      fprintf(stderr, "mc_open: %s\n", mc_last_error());
      return 1;
    }
    double t_open = now() - t0;
    int64_t n_layers = 0;
    mc_dim_size(ctx, MC_DIM_LAYERS, &n_layers);
    DLManagedTensorVersioned *held[8192];
    int n_held = 0;
    double total = 0;
    int64_t elements = 0;
    for (mc_weight_location loc = 0; loc < MC_WEIGHT_COUNT; loc++) {
      bool per_layer = false;
      mc_weight_location_per_layer(loc, &per_layer);
      for (int64_t l = 0; l < (per_layer ? n_layers : 1); l++) {
        DLManagedTensorVersioned *w = NULL;
        if (mc_get_weight(ctx, loc, per_layer ? (int32_t)l : MC_LAYER_NONE, MC_DIM_NONE, NULL, &w) != MC_OK) {
          fprintf(stderr, "mc_get_weight: %s\n", mc_last_error());
          return 1;
        }
        total += sum_f32(&w->dl_tensor);
        int64_t n = 1;
        for (int i = 0; i < w->dl_tensor.ndim; i++) n *= w->dl_tensor.shape[i];
        elements += n;
        held[n_held++] = w;
      }
    }
    double t_all = now() - t0;
    long rss_held = rss_kb();
    for (int i = 0; i < n_held; i++) held[i]->deleter(held[i]);
    mc_free(ctx);
    printf("{\"open\": %.6f, \"all\": %.6f, \"sum\": %.6f, \"n_weights\": %d, \"elements\": %lld, "
           "\"rss_start_kb\": %ld, \"rss_held_kb\": %ld}\n",
           t_open, t_all, total, n_held, (long long)elements, rss0, rss_held);
    fflush(stdout);
  }
  return 0;
}
