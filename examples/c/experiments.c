/*
 * Causal experiments from C: zero-ablate an MLP neuron and an attention head, patch the
 * residual stream of a clean prompt into a corrupted one, and add a steering vector, each as
 * a declarative edit in the forward request (docs/experiments.md). Prints one line per
 * experiment: how far the last position's logits moved, and the patched run against the
 * clean one (which it must reproduce exactly).
 *
 *   cc experiments.c $(pkg-config --cflags --libs model_context) -o experiments
 *   ./experiments MODEL_DIR
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model_context.h"

static int failed(mc_status s, const char *what) {
  if (s == MC_OK) return 0;
  fprintf(stderr, "%s failed: %s: %s\n", what, mc_status_name(s), mc_last_error());
  return 1;
}

/* A float32 CPU tensor over caller memory, borrowed by the library for one call. */
typedef struct {
  DLManagedTensorVersioned m;
  int64_t shape[3];
} borrowed_tensor;

static const DLManagedTensorVersioned *borrow(borrowed_tensor *b, float *data, int ndim,
                                              const int64_t *shape) {
  memset(b, 0, sizeof *b);
  b->m.version.major = DLPACK_MAJOR_VERSION;
  b->m.version.minor = DLPACK_MINOR_VERSION;
  b->m.dl_tensor.data = data;
  b->m.dl_tensor.device.device_type = kDLCPU;
  b->m.dl_tensor.ndim = ndim;
  b->m.dl_tensor.dtype.code = kDLFloat;
  b->m.dl_tensor.dtype.bits = 32;
  b->m.dl_tensor.dtype.lanes = 1;
  memcpy(b->shape, shape, (size_t)ndim * sizeof *shape);
  b->m.dl_tensor.shape = b->shape;
  b->m.dl_tensor.strides = NULL; /* compact row-major */
  return &b->m;
}

/* Runs `req` and returns its logits (freed by the caller's deleter call), or NULL. */
static DLManagedTensorVersioned *logits_of(const mc_context *ctx, const mc_forward_request *req,
                                           mc_activation keep, int32_t keep_layer,
                                           DLManagedTensorVersioned **kept) {
  mc_forward_output *out = NULL;
  DLManagedTensorVersioned *logits = NULL;
  if (failed(mc_forward(ctx, req, &out), "mc_forward")) return NULL;
  if (failed(mc_forward_output_get(out, MC_ACT_LOGITS, MC_LAYER_NONE, &logits), "logits") ||
      (kept && failed(mc_forward_output_get(out, keep, keep_layer, kept), "activation")))
    logits = NULL;
  mc_forward_output_free(out);
  return logits;
}

/* Largest |a - b| over two float32 tensors of the same size. */
static double max_diff(const DLManagedTensorVersioned *a, const DLManagedTensorVersioned *b) {
  int64_t n = 1;
  for (int i = 0; i < a->dl_tensor.ndim; i++) n *= a->dl_tensor.shape[i];
  const float *x = a->dl_tensor.data, *y = b->dl_tensor.data;
  double d = 0;
  for (int64_t i = 0; i < n; i++) d = fmax(d, fabs((double)x[i] - y[i]));
  return d;
}

static void release(DLManagedTensorVersioned *t) {
  if (t) t->deleter(t);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
    return 2;
  }
  int rc = 1;
  mc_context *ctx = NULL;
  DLManagedTensorVersioned *base = NULL, *clean = NULL, *resid = NULL, *t = NULL;
  if (failed(mc_open(argv[1], "cpu", &ctx), "mc_open")) return 1;
  int64_t d_model = 0;
  if (failed(mc_dim_size(ctx, MC_DIM_RESIDUAL_STREAM_CHANNELS, &d_model), "mc_dim_size")) goto done;

  /* Two prompts of the same length: a clean one and a corrupted one. */
  uint32_t clean_ids[4] = {464, 2068, 7586, 21831}, corrupt_ids[4] = {464, 3105, 7586, 21831};
  mc_forward_request req;
  if (failed(mc_forward_request_init(&req, sizeof req), "mc_forward_request_init")) goto done;
  req.token_type = MC_TOKENS_UINT32;
  req.tokens = corrupt_ids;
  req.n_tokens = 4;
  req.batch = 1;
  req.seq_len = 4;
  req.logits = MC_LOGITS_LAST; /* only the last position's logits: [1, 1, vocab] */
  if (!(base = logits_of(ctx, &req, 0, 0, NULL))) goto done;

  /* 1. Zero-ablate neuron 7 of layer 1 at every position. */
  int64_t neuron = 7, head = 2;
  mc_axis_selection neuron_sel[3] = {{NULL, 0}, {NULL, 0}, {&neuron, 1}};
  mc_edit e;
  if (failed(mc_edit_init(&e, sizeof e), "mc_edit_init")) goto done;
  e.location = MC_ACT_MLP_POST_ACT;
  e.layer = 1;
  e.op = MC_EDIT_SET;
  e.value = 0.0;
  e.selection = neuron_sel;
  e.n_selection = 3;
  req.edits = &e;
  req.n_edits = 1;
  if (!(t = logits_of(ctx, &req, 0, 0, NULL))) goto done;
  printf("ablate mlp.post_act layer=1 neuron=7: logits moved by %.6f\n", max_diff(t, base));
  release(t);

  /* 2. Zero-ablate head 2 of layer 0 (its value output, before the output projection). */
  mc_axis_selection head_sel[3] = {{NULL, 0}, {NULL, 0}, {&head, 1}};
  e.location = MC_ACT_ATTN_V_OUT;
  e.layer = 0;
  e.selection = head_sel;
  if (!(t = logits_of(ctx, &req, 0, 0, NULL))) goto done;
  printf("ablate attn.v_out layer=0 head=2: logits moved by %.6f\n", max_diff(t, base));
  release(t);

  /* 3. Patch: the clean run's resid.post_mlp of layer 0 into the corrupted run. */
  mc_activation keep = MC_ACT_RESID_POST_MLP;
  int32_t keep_layer = 0;
  req.tokens = clean_ids;
  req.n_edits = 0;
  req.activations = &keep;
  req.layers = &keep_layer;
  req.n_activations = 1;
  if (!(clean = logits_of(ctx, &req, keep, keep_layer, &resid))) goto done;
  req.n_activations = 0;
  req.tokens = corrupt_ids;
  if (failed(mc_edit_init(&e, sizeof e), "mc_edit_init")) goto done;
  e.location = MC_ACT_RESID_POST_MLP;
  e.layer = 0;
  e.op = MC_EDIT_REPLACE;
  e.operand = resid; /* a tensor the library handed out, borrowed for the call */
  req.n_edits = 1;
  if (!(t = logits_of(ctx, &req, 0, 0, NULL))) goto done;
  printf("patch resid.post_mlp layer=0 clean->corrupt: logits moved by %.6f, vs clean %.6f\n",
         max_diff(t, base), max_diff(t, clean));
  release(t);

  /* 4. Steer: add 4 * e_0 to the residual stream after layer 0 at every position. */
  float *steer = calloc((size_t)d_model, sizeof *steer);
  if (!steer) goto done;
  steer[0] = 4.0f;
  borrowed_tensor vec;
  e.op = MC_EDIT_ADD;
  e.operand = borrow(&vec, steer, 1, &d_model); /* [d_model] broadcasts over rows, positions */
  t = logits_of(ctx, &req, 0, 0, NULL);
  free(steer);
  if (!t) goto done;
  printf("steer resid.post_mlp layer=0 by 4*e0: logits moved by %.6f\n", max_diff(t, base));
  release(t);
  rc = 0;
done:
  release(base);
  release(clean);
  release(resid);
  mc_free(ctx);
  return rc;
}
