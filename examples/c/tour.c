/*
 * A tour of the C API: open a checkpoint, read its config and dimensions, fetch weights,
 * encode and decode text, run a forward pass keeping two activations, check the logits
 * against them, and show how failures are reported. Every object is freed with its one
 * free function. The C++, Go, Julia and Python examples print exactly the same lines.
 *
 *   cc tour.c $(pkg-config --cflags --libs model_context) -o tour
 *   ./tour MODEL_DIR
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model_context.h"

/* Reports a failed call: its status name and the thread's last error message. */
static int failed(mc_status s, const char *what) {
  if (s == MC_OK) return 0;
  fprintf(stderr, "%s failed: %s: %s\n", what, mc_status_name(s), mc_last_error());
  return 1;
}

/* The element at `offset` (in elements) of a float32 CPU tensor. */
static double at(const DLTensor *t, int64_t offset) {
  return ((const float *)((const char *)t->data + t->byte_offset))[offset];
}

/* The offset of the row-major flat index `flat`, walking the strides. */
static int64_t offset_of(const DLTensor *t, int64_t flat) {
  int64_t offset = 0;
  for (int i = t->ndim - 1; i >= 0; i--) {
    offset += (flat % t->shape[i]) * t->strides[i];
    flat /= t->shape[i];
  }
  return offset;
}

static int64_t numel(const DLTensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

/* Sum of the elements in row-major order, accumulated in double. */
static double sum(const DLTensor *t) {
  double s = 0.0;
  for (int64_t i = 0, n = numel(t); i < n; i++) s += at(t, offset_of(t, i));
  return s;
}

static void print_dims(const char *label, const int64_t *v, int n) {
  printf(" %s=[", label);
  for (int i = 0; i < n; i++) printf(i ? ",%lld" : "%lld", (long long)v[i]);
  printf("]");
}

static void print_layer(int32_t layer) {
  if (layer == MC_LAYER_NONE) printf(" layer=-"); else printf(" layer=%d", layer);
}

/* Quotes bytes that may not be UTF-8: printable ASCII as is, everything else as \xNN. */
static void print_quoted(const char *bytes, size_t n) {
  putchar('"');
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)bytes[i];
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') putchar(c); else printf("\\x%02x", c);
  }
  putchar('"');
}

/* Prints one float32 CPU tensor: name, layer, shape, strides, dtype and sum. */
static int describe(const char *kind, const char *name, int32_t layer, const DLTensor *t) {
  if (t->device.device_type != kDLCPU || t->dtype.code != kDLFloat || t->dtype.bits != 32) {
    fprintf(stderr, "%s: this tour reads float32 tensors on the CPU only\n", name);
    return 1;
  }
  printf("%s %s", kind, name);
  print_layer(layer);
  print_dims("shape", t->shape, t->ndim);
  print_dims("strides", t->strides, t->ndim);
  printf(" dtype=float32 sum=%.6f\n", sum(t));
  return 0;
}

static int show_weight(const mc_context *ctx, mc_weight_location loc, int32_t layer) {
  DLManagedTensorVersioned *w = NULL;
  if (failed(mc_get_weight(ctx, loc, layer, MC_DIM_NONE, NULL, &w), "mc_get_weight")) return 1;
  int rc = describe("weight", mc_weight_location_name(loc), layer, &w->dl_tensor);
  w->deleter(w); /* the tensor's own deleter frees it, exactly once */
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
    return 2;
  }
  int rc = 1;
  mc_context *ctx = NULL;
  mc_forward_output *out = NULL;
  DLManagedTensorVersioned *logits = NULL, *mlp = NULL, *resid = NULL, *unemb = NULL;
  uint32_t *tokens = NULL;
  char *text = NULL;

  /* Open: reads config.json only; weights are mapped on first use. */
  if (failed(mc_open(argv[1], "cpu", &ctx), "mc_open")) return 1;
  printf("model_context %s\n", mc_version());
  char *config = NULL;
  if (failed(mc_config_json(ctx, &config), "mc_config_json")) goto done;
  printf("config %s\n", config);
  mc_string_free(config);

  int64_t layers = 0, d_model = 0, heads = 0, vocab = 0;
  if (failed(mc_dim_size(ctx, MC_DIM_LAYERS, &layers), "mc_dim_size") ||
      failed(mc_dim_size(ctx, MC_DIM_RESIDUAL_STREAM_CHANNELS, &d_model), "mc_dim_size") ||
      failed(mc_dim_size(ctx, MC_DIM_ATTN_HEADS, &heads), "mc_dim_size") ||
      failed(mc_dim_size(ctx, MC_DIM_VOCAB_SIZE, &vocab), "mc_dim_size"))
    goto done;
  printf("dims layers=%lld d_model=%lld heads=%lld vocab=%lld\n", (long long)layers,
         (long long)d_model, (long long)heads, (long long)vocab);

  /* Weights: one per-layer location (a strided view of the file) and one model-wide. */
  if (show_weight(ctx, MC_WEIGHT_ATTN_TO_QUERY, 0) || show_weight(ctx, MC_WEIGHT_EMBEDDING, MC_LAYER_NONE))
    goto done;

  /* Tokens: a capacity of one id per input byte always suffices. */
  const char *prompt = "Hello, world";
  size_t prompt_len = strlen(prompt), n_tokens = 0;
  tokens = malloc(prompt_len * sizeof *tokens);
  if (failed(mc_encode(ctx, prompt, prompt_len, tokens, prompt_len, &n_tokens), "mc_encode")) goto done;
  printf("tokens \"%s\" -> [", prompt);
  for (size_t i = 0; i < n_tokens; i++) printf(i ? ",%u" : "%u", tokens[i]);
  printf("]\n");
  /* Decode with the size probe: ask for the length, then fill an exact buffer. */
  size_t n_bytes = 0;
  if (failed(mc_decode(ctx, tokens, n_tokens, NULL, 0, &n_bytes), "mc_decode")) goto done;
  text = malloc(n_bytes + 1);
  if (failed(mc_decode(ctx, tokens, n_tokens, text, n_bytes, &n_bytes), "mc_decode")) goto done;
  printf("decode -> ");
  print_quoted(text, n_bytes);
  printf("\n");

  /* Forward: keep mlp.post_act of layer 1 and the final layer norm's output. */
  mc_activation acts[2] = {MC_ACT_MLP_POST_ACT, MC_ACT_RESID_POST_LN_F};
  int32_t act_layers[2] = {1, MC_LAYER_NONE};
  mc_forward_request req;
  if (failed(mc_forward_request_init(&req, sizeof req), "mc_forward_request_init")) goto done;
  req.tokens = tokens;
  req.n_tokens = n_tokens;
  req.token_type = MC_TOKENS_UINT32;
  req.batch = 1;
  req.seq_len = (int64_t)n_tokens;
  req.activations = acts;
  req.layers = act_layers;
  req.n_activations = 2;
  if (failed(mc_forward(ctx, &req, &out), "mc_forward")) goto done;
  if (failed(mc_forward_output_get(out, MC_ACT_LOGITS, MC_LAYER_NONE, &logits), "mc_forward_output_get") ||
      failed(mc_forward_output_get(out, MC_ACT_MLP_POST_ACT, 1, &mlp), "mc_forward_output_get") ||
      failed(mc_forward_output_get(out, MC_ACT_RESID_POST_LN_F, MC_LAYER_NONE, &resid), "mc_forward_output_get"))
    goto done;
  mc_forward_output_free(out); /* the tensors taken from it stay valid */
  out = NULL;
  if (describe("forward", "logits", MC_LAYER_NONE, &logits->dl_tensor) ||
      describe("activation", mc_activation_name(MC_ACT_MLP_POST_ACT), 1, &mlp->dl_tensor) ||
      describe("activation", mc_activation_name(MC_ACT_RESID_POST_LN_F), MC_LAYER_NONE, &resid->dl_tensor))
    goto done;

  /* The last position's logits are resid.post_ln_f @ unembedding ([d_model, vocab]). */
  if (failed(mc_get_weight(ctx, MC_WEIGHT_UNEMBEDDING, MC_LAYER_NONE, MC_DIM_NONE, NULL, &unemb), "mc_get_weight"))
    goto done;
  const DLTensor *L = &logits->dl_tensor, *H = &resid->dl_tensor, *W = &unemb->dl_tensor;
  int64_t last = (int64_t)n_tokens - 1, best = 0;
  double max_diff = 0.0;
  for (int64_t v = 0; v < vocab; v++) {
    double dot = 0.0;
    for (int64_t d = 0; d < d_model; d++)
      dot += at(H, last * H->strides[1] + d * H->strides[2]) * at(W, d * W->strides[0] + v * W->strides[1]);
    double l = at(L, last * L->strides[1] + v * L->strides[2]);
    if (fabs(l - dot) > max_diff) max_diff = fabs(l - dot);
    if (l > at(L, last * L->strides[1] + best * L->strides[2])) best = v;
  }
  printf("check logits == resid.post_ln_f @ unembedding: %s\n", max_diff < 1e-4 ? "ok" : "FAILED");
  char piece[64];
  size_t piece_len = 0;
  if (failed(mc_decode_token(ctx, (uint32_t)best, piece, sizeof piece, &piece_len), "mc_decode_token")) goto done;
  printf("next token %lld ", (long long)best);
  print_quoted(piece, piece_len);
  printf("\n");

  /* Errors: a status per class, the message names the cause; out-parameters stay untouched. */
  DLManagedTensorVersioned *none = NULL;
  mc_status s = mc_get_weight(ctx, MC_WEIGHT_ATTN_TO_QUERY, 99, MC_DIM_NONE, NULL, &none);
  printf("error mc_get_weight(attn.to_query, layer 99): %s: %s\n", mc_status_name(s), mc_last_error());
  mc_context *missing = NULL;
  s = mc_open("/no/such/model", "cpu", &missing);
  printf("error mc_open(/no/such/model): %s: %s\n", mc_status_name(s), mc_last_error());
  rc = (none == NULL && missing == NULL && max_diff < 1e-4) ? 0 : 1;

done:
  /* Every free function accepts NULL; tensors outlive the context and the forward output. */
  mc_forward_output_free(out);
  if (logits) logits->deleter(logits);
  if (mlp) mlp->deleter(mlp);
  if (resid) resid->deleter(resid);
  if (unemb) unemb->deleter(unemb);
  mc_free(ctx);
  free(tokens);
  free(text);
  return rc;
}
