/*
 * The README's main job: open a checkpoint, print its config and, for every weight, the
 * shape, strides, dtype, device and a checksum (sum of elements), then free everything.
 *
 *   weights MODEL_DIR [DEVICE]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model_context.h"

static double element(const DLTensor *t, int64_t offset) {
  const char *base = (const char *)t->data + t->byte_offset;
  if (t->dtype.code == kDLFloat && t->dtype.bits == 32) return ((const float *)base)[offset];
  if (t->dtype.code == kDLFloat && t->dtype.bits == 64) return ((const double *)base)[offset];
  if (t->dtype.code == kDLFloat && t->dtype.bits == 16) {
    uint16_t h = ((const uint16_t *)base)[offset];
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? m / 1024.0 / 16384.0 : e == 31 ? (m ? 0.0 / 0.0 : 1.0 / 0.0)
                                                       : (1.0 + m / 1024.0) * (double)(1 << e) / 32768.0;
    return (h & 0x8000) ? -v : v;
  }
  if (t->dtype.code == kDLBfloat && t->dtype.bits == 16) {
    uint32_t bits = (uint32_t)((const uint16_t *)base)[offset] << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
  }
  return 0.0;
}

/* Sums every element by walking the strides (no assumption of contiguity). */
static double checksum(const DLTensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  double sum = 0.0;
  for (int64_t flat = 0; flat < n; flat++) {
    int64_t rest = flat, offset = 0;
    for (int i = t->ndim - 1; i >= 0; i--) {
      offset += (rest % t->shape[i]) * t->strides[i];
      rest /= t->shape[i];
    }
    sum += element(t, offset);
  }
  return sum;
}

static void print_dims(const char *label, const int64_t *v, int n) {
  printf(" %s=[", label);
  for (int i = 0; i < n; i++) printf(i ? ",%lld" : "%lld", (long long)v[i]);
  printf("]");
}

static int report(mc_status s, const char *what) {
  if (s == MC_OK) return 0;
  fprintf(stderr, "%s failed: %s: %s\n", what, mc_status_name(s), mc_last_error());
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL_DIR [DEVICE]\n", argv[0]);
    return 2;
  }
  mc_context *ctx = NULL;
  if (report(mc_open(argv[1], argc > 2 ? argv[2] : "cpu", &ctx), "mc_open")) return 1;
  printf("model_context %s\n", mc_version());

  char *config = NULL;
  if (report(mc_config_json(ctx, &config), "mc_config_json")) return 1;
  printf("config %s\n", config);
  mc_string_free(config);

  int64_t n_layers = 0;
  if (report(mc_dim_size(ctx, MC_DIM_LAYERS, &n_layers), "mc_dim_size")) return 1;
  int failures = 0;
  for (mc_weight_location loc = 0; loc < MC_WEIGHT_COUNT; loc++) {
    bool per_layer = false;
    if (report(mc_weight_location_per_layer(loc, &per_layer), "mc_weight_location_per_layer")) return 1;
    int64_t layers = per_layer ? n_layers : 1;
    for (int64_t layer = 0; layer < layers; layer++) {
      DLManagedTensorVersioned *w = NULL;
      mc_status s = mc_get_weight(ctx, loc, per_layer ? (int32_t)layer : MC_LAYER_NONE, MC_DIM_NONE, NULL, &w);
      if (report(s, mc_weight_location_name(loc))) { failures++; continue; }
      const DLTensor *t = &w->dl_tensor;
      printf("%-26s", mc_weight_location_name(loc));
      if (per_layer) printf(" layer=%lld", (long long)layer); else printf(" layer=-");
      print_dims("shape", t->shape, t->ndim);
      print_dims("strides", t->strides, t->ndim);
      printf(" dtype=%s%d device=%s:%d read_only=%d checksum=%.6f\n",
             t->dtype.code == kDLFloat ? "float" : t->dtype.code == kDLBfloat ? "bfloat" : "other",
             t->dtype.bits, t->device.device_type == kDLCPU ? "cpu" : t->device.device_type == kDLCUDA ? "cuda" : "other",
             t->device.device_id, (int)(w->flags & DLPACK_FLAG_BITMASK_READ_ONLY), t->device.device_type == kDLCPU ? checksum(t) : 0.0);
      w->deleter(w);
    }
  }
  mc_free(ctx);
  return failures ? 1 : 0;
}
