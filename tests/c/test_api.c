/*
 * The C API from C: ownership (every object freed by its one free function, from any
 * thread), statuses on bad input, copy-on-write mappings. Run under valgrind or ASan by
 * tests/c/run.sh; any leak or memory error fails there.
 *
 *   test_api CHECKPOINT_DIR
 */
#define _POSIX_C_SOURCE 200112L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model_context.h"
#include "check.h"


static void *free_on_thread(void *arg) {
  DLManagedTensorVersioned *t = arg;
  t->deleter(t);
  return NULL;
}

/* Runs fn(arg) on a new thread and joins it. The thread gets a stack of our own: glibc keeps
 * the stacks it allocates (with their thread-local blocks) in a cache past pthread_join, which
 * valgrind reports as "possibly lost"; a caller's stack is released with its blocks. */
static int run_on_thread(void *(*fn)(void *), void *arg) {
  size_t size = 8u << 20;
  void *stack = NULL;
  if (posix_memalign(&stack, 4096, size) != 0) return -1;
  pthread_attr_t attr;
  pthread_t th;
  int rc = pthread_attr_init(&attr);
  if (rc == 0) rc = pthread_attr_setstack(&attr, stack, size);
  if (rc == 0) rc = pthread_create(&th, &attr, fn, arg);
  if (rc == 0) rc = pthread_join(th, NULL);
  pthread_attr_destroy(&attr);
  free(stack);
  return rc;
}

static void every_weight(const mc_context *ctx, int64_t n_layers) {
  for (mc_weight_location loc = 0; loc < MC_WEIGHT_COUNT; loc++) {
    bool per_layer = false;
    CHECK(mc_weight_location_per_layer(loc, &per_layer) == MC_OK);
    int32_t layer = per_layer ? (int32_t)(n_layers - 1) : MC_LAYER_NONE;
    DLManagedTensorVersioned *v = NULL;
    DLManagedTensor *l = NULL;
    CHECK(mc_get_weight(ctx, loc, layer, MC_DIM_NONE, NULL, &v) == MC_OK);
    CHECK(mc_get_weight_legacy(ctx, loc, layer, MC_DIM_NONE, "cpu", &l) == MC_OK);
    if (!v || !l) continue;
    CHECK(v->version.major == 1 && v->dl_tensor.strides != NULL);
    CHECK(v->dl_tensor.ndim == l->dl_tensor.ndim && v->dl_tensor.data == l->dl_tensor.data);
    CHECK((v->flags & DLPACK_FLAG_BITMASK_READ_ONLY) != 0);
    mc_dimension nd = MC_DIM_RESIDUAL_STREAM_CHANNELS; /* in every shape but these: */
    if (loc == MC_WEIGHT_ATTN_QUERY_BIAS || loc == MC_WEIGHT_ATTN_KEY_BIAS || loc == MC_WEIGHT_ATTN_VALUE_BIAS)
      nd = MC_DIM_ATTN_HEADS;
    if (loc == MC_WEIGHT_MLP_HIDDEN_BIAS) nd = MC_DIM_MLP_ACTS;
    DLManagedTensorVersioned *n = NULL;
    CHECK(mc_get_weight(ctx, loc, layer, nd, NULL, &n) == MC_OK);
    if (n) {
      CHECK((n->flags & DLPACK_FLAG_BITMASK_READ_ONLY) == 0);
      n->deleter(n);
    }
    l->deleter(l);
    CHECK(run_on_thread(free_on_thread, v) == 0);
  }
}

static void bad_input(const mc_context *ctx) {
  DLManagedTensorVersioned *sentinel = (DLManagedTensorVersioned *)&checks, *out = sentinel;
  CHECK(mc_get_weight(NULL, 0, 0, MC_DIM_NONE, NULL, &out) == MC_ERR_NULL_ARGUMENT && out == sentinel);
  CHECK(mc_get_weight(ctx, MC_WEIGHT_COUNT, 0, MC_DIM_NONE, NULL, &out) == MC_ERR_INVALID_ARGUMENT);
  CHECK(strstr(mc_last_error(), "21") != NULL);
  CHECK(mc_get_weight(ctx, MC_WEIGHT_ATTN_TO_KEY, 1000, MC_DIM_NONE, NULL, &out) == MC_ERR_INVALID_ARGUMENT);
  CHECK(strstr(mc_last_error(), "layer 1000") != NULL);
  CHECK(mc_get_weight(ctx, MC_WEIGHT_EMBEDDING, MC_LAYER_NONE, 99, NULL, &out) == MC_ERR_INVALID_ARGUMENT);
  CHECK(mc_get_weight(ctx, MC_WEIGHT_EMBEDDING, MC_LAYER_NONE, MC_DIM_NONE, "gpu:0", &out) == MC_ERR_INVALID_ARGUMENT);
  CHECK(mc_get_weight(ctx, MC_WEIGHT_EMBEDDING, MC_LAYER_NONE, MC_DIM_NONE, NULL, NULL) == MC_ERR_NULL_ARGUMENT);
  CHECK(out == sentinel);
  int64_t size = -5;
  CHECK(mc_dim_size(ctx, -3, &size) == MC_ERR_INVALID_ARGUMENT && size == -5);
  mc_context *other = NULL;
  CHECK(mc_open("/no/such/model", NULL, &other) == MC_ERR_NOT_FOUND && other == NULL);
  CHECK(strstr(mc_last_error(), "/no/such/model") != NULL);
  CHECK(mc_open(NULL, NULL, &other) == MC_ERR_NULL_ARGUMENT);
  mc_free(NULL);
  mc_string_free(NULL);
}

/* A forward pass with activations, read after the output is freed, and a short sample. */
static void forward(const mc_context *ctx) {
  uint32_t tokens[6] = {464, 2068, 7586, 21831, 11, 50256};
  bool pad[6] = {false, false, false, false, true, true};
  mc_activation acts[2] = {MC_ACT_MLP_POST_ACT, MC_ACT_RESID_POST_EMB};
  int32_t layers[2] = {MC_LAYER_ALL, MC_LAYER_NONE};
  mc_forward_request r;
  CHECK(mc_forward_request_init(&r, sizeof r) == MC_OK);
  r.tokens = tokens;
  r.n_tokens = 6;
  r.token_type = MC_TOKENS_UINT32;
  r.batch = 2;
  r.seq_len = 3;
  r.pad = pad;
  r.n_pad = 6;
  r.activations = acts;
  r.layers = layers;
  r.n_activations = 2;
  mc_forward_output *out = NULL;
  CHECK(mc_forward(ctx, &r, &out) == MC_OK);
  if (!out) return;
  DLManagedTensorVersioned *logits = NULL, *post = NULL, *missing = NULL;
  CHECK(mc_forward_output_get(out, MC_ACT_LOGITS, MC_LAYER_NONE, &logits) == MC_OK);
  CHECK(mc_forward_output_get(out, MC_ACT_MLP_POST_ACT, 0, &post) == MC_OK);
  CHECK(mc_forward_output_get(out, MC_ACT_ATTN_Q, 0, &missing) == MC_ERR_NOT_FOUND && missing == NULL);
  mc_forward_output_free(out);
  CHECK(logits && logits->dl_tensor.ndim == 3 && logits->dl_tensor.shape[2] == 50257);
  CHECK(post && post->dl_tensor.shape[0] == 2 && post->dl_tensor.shape[1] == 3);
  if (logits) logits->deleter(logits);
  if (post) post->deleter(post);
  r.pad = NULL;
  r.n_pad = 0;
  tokens[1] = 999999; /* out of vocabulary */
  out = NULL;
  CHECK(mc_forward(ctx, &r, &out) == MC_ERR_TOKEN && out == NULL);
  uint32_t sampled[4];
  size_t n = 0;
  mc_sample_options so;
  CHECK(mc_sample_options_init(&so, sizeof so) == MC_OK);
  so.max_new_tokens = 4;
  so.temperature = 0.8;
  so.seed = 3;
  CHECK(mc_sample(ctx, tokens, 1, &so, sampled, 4, &n) == MC_OK && n >= 1 && n <= 4);
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  mc_open_options opts;
  CHECK(mc_open_options_init(&opts, sizeof opts) == MC_OK);
  CHECK(opts.struct_size == sizeof(mc_open_options) && opts.device == NULL);
  opts.device = "cpu";
  mc_context *ctx = NULL;
  CHECK(mc_open_ex(argv[1], &opts, &ctx) == MC_OK);
  if (!ctx) return 1;

  int64_t n_layers = 0, d_model = 0;
  CHECK(mc_dim_size(ctx, MC_DIM_LAYERS, &n_layers) == MC_OK && n_layers > 0);
  CHECK(mc_dim_size(ctx, MC_DIM_RESIDUAL_STREAM_CHANNELS, &d_model) == MC_OK);
  every_weight(ctx, n_layers);
  bad_input(ctx);
  forward(ctx);

  char *json = NULL;
  CHECK(mc_config_json(ctx, &json) == MC_OK && strstr(json, "\"d_model\"") != NULL);
  mc_string_free(json);

  DLManagedTensorVersioned *emb = NULL, *unemb = NULL;
  CHECK(mc_get_embedding(ctx, NULL, &emb) == MC_OK);
  CHECK(mc_get_unembedding_with_ln_gain(ctx, NULL, &unemb) == MC_OK);
  mc_free(ctx); /* tensors outlive their context */
  float *row = (float *)emb->dl_tensor.data;
  float before = row[0];
  row[0] = before + 1.0f; /* read-only by contract, but a write only touches private pages */
  CHECK(unemb->dl_tensor.shape[0] == d_model);
  unemb->deleter(unemb);
  emb->deleter(emb);

  /* The file itself is unchanged: a fresh context sees the original value. */
  CHECK(mc_open(argv[1], "cpu", &ctx) == MC_OK);
  CHECK(mc_get_embedding(ctx, NULL, &emb) == MC_OK);
  CHECK(((float *)emb->dl_tensor.data)[0] == before);
  emb->deleter(emb);
  mc_free(ctx);

  printf("test_api: %d checks, %d failed\n", checks, failed);
  return failed != 0;
}
