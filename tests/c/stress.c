/*
 * Threads sharing one context from C: each thread reads weights, encodes, decodes and runs
 * forward passes, and hands every tensor it makes to a queue that the next thread frees. Each
 * result's checksum (FNV-1a of its bytes, in row-major order) must equal the single-threaded
 * one taken first on a separate context. Run under AddressSanitizer and valgrind by
 * tests/c/run.sh, which fail on any memory error or leak.
 *
 *   stress CHECKPOINT_DIR [THREADS] [ROUNDS]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model_context.h"

#define MAX_THREADS 16
#define N_OPS 8

static const char *model;
static mc_context *shared;
static int rounds = 3, n_threads = 4;
static uint64_t reference[N_OPS];
static int failures = 0;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
/* Tensors waiting to be freed by a thread other than their maker. */
static DLManagedTensorVersioned *queue[4096];
static int queue_owner[4096];
static int queued = 0;

static void fail(const char *what, int op) {
  pthread_mutex_lock(&lock);
  failures++;
  fprintf(stderr, "stress: %s (op %d): %s\n", what, op, mc_last_error());
  pthread_mutex_unlock(&lock);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

/* Checksum of a tensor's elements in row-major order, whatever its strides. */
static uint64_t tensor_sum(uint64_t h, const DLTensor *t) {
  size_t esz = (t->dtype.bits + 7) / 8;
  int64_t index[16] = {0}, numel = 1;
  for (int d = 0; d < t->ndim; d++) numel *= t->shape[d];
  h = fnv(h, t->shape, sizeof(int64_t) * (size_t)t->ndim);
  const char *base = (const char *)t->data + t->byte_offset;
  for (int64_t i = 0; i < numel; i++) {
    int64_t off = 0;
    for (int d = 0; d < t->ndim; d++) off += index[d] * t->strides[d];
    h = fnv(h, base + off * (int64_t)esz, esz);
    for (int d = t->ndim - 1; d >= 0; d--) {
      if (++index[d] < t->shape[d]) break;
      index[d] = 0;
    }
  }
  return h;
}

/* Leaves a tensor for another thread to free, and frees those other threads left. */
static void hand_off(DLManagedTensorVersioned *t, int me) {
  DLManagedTensorVersioned *mine[4096];
  int n_mine = 0;
  DLManagedTensorVersioned *theirs[4096];
  int n_theirs = 0;
  pthread_mutex_lock(&lock);
  if (t && queued < 4096) {
    queue[queued] = t;
    queue_owner[queued++] = me;
    t = NULL;
  }
  for (int i = 0; i < queued; i++) {
    if (queue_owner[i] != me) theirs[n_theirs++] = queue[i];
    else mine[n_mine++] = queue[i];
  }
  memcpy(queue, mine, sizeof(mine[0]) * (size_t)n_mine);
  for (int i = 0; i < n_mine; i++) queue_owner[i] = me;
  queued = n_mine;
  pthread_mutex_unlock(&lock);
  for (int i = 0; i < n_theirs; i++) theirs[i]->deleter(theirs[i]);
  if (t) t->deleter(t); /* the queue was full */
}

static const char *TEXT =
    "Threads share one context: encode, decode, weights and forward passes at once. "
    "\xc3\xa9migr\xc3\xa9 \xe6\x9d\xb1\xe4\xba\xac <|endoftext|> 12345\n";

static uint64_t run(const mc_context *ctx, int op, int me) {
  uint64_t h = 1469598103934665603ull;
  DLManagedTensorVersioned *t = NULL;
  switch (op) {
    case 0: case 1: case 2: case 3: {
      static const mc_weight_location locs[4] = {MC_WEIGHT_EMBEDDING, MC_WEIGHT_ATTN_TO_QUERY,
                                                 MC_WEIGHT_MLP_TO_RESIDUAL, MC_WEIGHT_LAYER_NORM_GAIN_FINAL};
      static const int32_t layers[4] = {MC_LAYER_NONE, 1, MC_LAYER_ALL, MC_LAYER_NONE};
      mc_dimension norm = op == 0 ? MC_DIM_RESIDUAL_STREAM_CHANNELS : MC_DIM_NONE;
      if (mc_get_weight(ctx, locs[op], layers[op], norm, NULL, &t) != MC_OK) { fail("weight", op); return 0; }
      h = tensor_sum(h, &t->dl_tensor);
      hand_off(t, me);
      return h;
    }
    case 4: case 5: {
      uint32_t ids[512];
      size_t n = 0, m = 0;
      char back[512];
      if (mc_encode(ctx, TEXT, strlen(TEXT), ids, 512, &n) != MC_OK) { fail("encode", op); return 0; }
      h = fnv(h, ids, n * sizeof ids[0]);
      if (op == 5) {
        if (mc_decode(ctx, ids, n, back, sizeof back, &m) != MC_OK) { fail("decode", op); return 0; }
        if (m != strlen(TEXT) || memcmp(back, TEXT, m) != 0) fail("decode(encode(text)) != text", op);
        h = fnv(h, back, m);
      }
      return h;
    }
    default: {
      uint32_t tokens[8] = {464, 2068, 7586, 21831, 11, 50256, 318, 257};
      mc_activation acts[1] = {MC_ACT_MLP_POST_ACT};
      int32_t layers[1] = {0};
      mc_forward_request r;
      if (mc_forward_request_init(&r, sizeof r) != MC_OK) { fail("init", op); return 0; }
      r.tokens = tokens;
      r.n_tokens = 8;
      r.token_type = MC_TOKENS_UINT32;
      r.batch = 2;
      r.seq_len = 4;
      r.activations = acts;
      r.layers = layers;
      r.n_activations = op == 6 ? 1 : 0;
      mc_forward_output *out = NULL;
      if (mc_forward(ctx, &r, &out) != MC_OK) { fail("forward", op); return 0; }
      mc_activation get = op == 6 ? MC_ACT_MLP_POST_ACT : MC_ACT_LOGITS;
      int32_t layer = op == 6 ? 0 : MC_LAYER_NONE;
      if (mc_forward_output_get(out, get, layer, &t) != MC_OK) { fail("output", op); mc_forward_output_free(out); return 0; }
      mc_forward_output_free(out);
      h = tensor_sum(h, &t->dl_tensor);
      hand_off(t, me);
      return h;
    }
  }
}

static void *worker(void *arg) {
  int me = (int)(intptr_t)arg;
  for (int round = 0; round < rounds; round++) {
    for (int k = 0; k < N_OPS; k++) {
      int op = (k + me * 3 + round) % N_OPS; /* every thread in its own order */
      uint64_t h = run(shared, op, me);
      if (h != reference[op]) fail("result differs from the single-threaded one", op);
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  model = argv[1];
  if (argc > 2) n_threads = atoi(argv[2]);
  if (argc > 3) rounds = atoi(argv[3]);
  if (n_threads < 1 || n_threads > MAX_THREADS || rounds < 1) return 2;
  mc_context *single = NULL;
  if (mc_open(model, "cpu", &single) != MC_OK) { fprintf(stderr, "%s\n", mc_last_error()); return 1; }
  for (int op = 0; op < N_OPS; op++) reference[op] = run(single, op, -1);
  hand_off(NULL, -2); /* frees the reference run's tensors */
  mc_free(single);

  if (mc_open(model, "cpu", &shared) != MC_OK) { fprintf(stderr, "%s\n", mc_last_error()); return 1; }
  pthread_t th[MAX_THREADS];
  for (int i = 0; i < n_threads; i++) pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i);
  for (int i = 0; i < n_threads; i++) pthread_join(th[i], NULL);
  mc_free(shared);
  hand_off(NULL, -3); /* whatever is left, after the context: tensors outlive it */
  printf("stress: %d threads x %d rounds x %d ops, %d failures\n", n_threads, rounds, N_OPS, failures);
  return failures != 0;
}
