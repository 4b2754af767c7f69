/*
 * C half of the edits benchmark: an 8x128 forward pass on the GPT-2-small-shaped checkpoint
 * without edits, with ten edits (five neuron ablations at mlp.post_act of layers 0-4, three
 * head ablations at attn.v_out of layers 5-7, a steering vector at resid.post_mlp of layer 8,
 * a patch of resid.post_attn of layer 9), and stopped after layer 3 of 12. Prints medians
 * (seconds) as JSON. The edits are those of benches/bench_edits_hf.py, as hooks there.
 *
 *   bench_edits CHECKPOINT_DIR REPS
 */
#include "bench_common.h"

enum { B = 8, T = 128, D = 768 };

typedef struct {
  DLManagedTensorVersioned m;
  int64_t shape[3];
} borrowed;

static const DLManagedTensorVersioned *borrow(borrowed *b, float *data, int ndim, const int64_t *shape) {
  memset(b, 0, sizeof *b);
  b->m.version.major = 1;
  b->m.dl_tensor.data = data;
  b->m.dl_tensor.device.device_type = kDLCPU;
  b->m.dl_tensor.ndim = ndim;
  b->m.dl_tensor.dtype.code = kDLFloat;
  b->m.dl_tensor.dtype.bits = 32;
  b->m.dl_tensor.dtype.lanes = 1;
  memcpy(b->shape, shape, (size_t)ndim * sizeof *shape);
  b->m.dl_tensor.shape = b->shape;
  return &b->m;
}

/* The three requests' medians, their reps interleaved so that drift on a shared machine
 * (frequency, other load) falls on all three alike. */
static void timed(mc_context *ctx, const mc_forward_request *r, int reps, double *median_s) {
  double *t = calloc((size_t)(3 * reps), sizeof *t);
  for (int k = 0; k < 3; k++) forward_seconds(ctx, &r[k]); /* warm-up */
  for (int i = 0; i < reps; i++)
    for (int k = 0; k < 3; k++) t[k * reps + i] = forward_seconds(ctx, &r[k]);
  for (int k = 0; k < 3; k++) median_s[k] = median(t + k * reps, reps);
  free(t);
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  int reps = atoi(argv[2]);
  mc_context *ctx = NULL;
  check(mc_open(argv[1], "cpu", &ctx), "mc_open");
  check(mc_create_model(ctx, NULL), "mc_create_model");
  static int64_t tokens[B * T];
  unsigned s = 12345;
  for (int i = 0; i < B * T; i++) tokens[i] = (s = s * 1103515245u + 12345u) % 50257;
  static float steer[D], patch[T * D];
  for (int i = 0; i < D; i++) steer[i] = (float)((i % 7) - 3) * 0.1f;
  for (int i = 0; i < T * D; i++) patch[i] = (float)((i % 13) - 6) * 0.05f;
  mc_forward_request r;
  check(mc_forward_request_init(&r, sizeof r), "mc_forward_request_init");
  r.tokens = tokens;
  r.n_tokens = B * T;
  r.batch = B;
  r.seq_len = T;
  mc_forward_request req[3] = {r, r, r}; /* plain, ten edits, stopped after layer 3 */

  mc_edit e[10];
  int64_t neurons[5] = {100, 200, 300, 400, 500}, head = 3;
  mc_axis_selection neuron_sel[5][3], head_sel[3] = {{NULL, 0}, {NULL, 0}, {&head, 1}};
  for (int i = 0; i < 10; i++) check(mc_edit_init(&e[i], sizeof e[i]), "mc_edit_init");
  for (int i = 0; i < 5; i++) {
    neuron_sel[i][0] = neuron_sel[i][1] = (mc_axis_selection){NULL, 0};
    neuron_sel[i][2] = (mc_axis_selection){&neurons[i], 1};
    e[i].location = MC_ACT_MLP_POST_ACT;
    e[i].layer = i;
    e[i].selection = neuron_sel[i];
    e[i].n_selection = 3;
  }
  for (int i = 5; i < 8; i++) {
    e[i].location = MC_ACT_ATTN_V_OUT;
    e[i].layer = i;
    e[i].selection = head_sel;
    e[i].n_selection = 3;
  }
  borrowed sv, pv;
  const int64_t sshape[1] = {D}, pshape[3] = {1, T, D};
  e[8].location = MC_ACT_RESID_POST_MLP;
  e[8].layer = 8;
  e[8].op = MC_EDIT_ADD;
  e[8].operand = borrow(&sv, steer, 1, sshape);
  e[9].location = MC_ACT_RESID_POST_ATTN;
  e[9].layer = 9;
  e[9].op = MC_EDIT_REPLACE;
  e[9].operand = borrow(&pv, patch, 3, pshape);
  req[1].edits = e;
  req[1].n_edits = 10;
  req[2].end_layer = 3;
  double m[3];
  timed(ctx, req, reps, m);
  printf("{\"forward\": %.6f, \"forward_edits\": %.6f, \"forward_stop3\": %.6f}\n", m[0], m[1], m[2]);
  mc_free(ctx);
  return 0;
}
