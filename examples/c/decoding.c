/*
 * Incremental decoding from C (docs/decoding.md): a state with four sequences driven through
 * hundreds of steps of appends (several sequences per call), forks, truncates and removes,
 * each step's logits checked now and then against a full forward pass over the whole
 * sequence; then greedy generation of two prompts at once with mc_sample_batch. Prints one
 * summary line per part.
 *
 *   cc decoding.c $(pkg-config --cflags --libs model_context) -lm -o decoding
 *   ./decoding MODEL_DIR
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model_context.h"

enum { N_SEQ = 4, STEPS = 300 };

static int failed(mc_status s, const char *what) {
  if (s == MC_OK) return 0;
  fprintf(stderr, "%s failed: %s: %s\n", what, mc_status_name(s), mc_last_error());
  return 1;
}

static unsigned rng = 12345;
static int64_t next_id(void) { return (rng = rng * 1103515245u + 12345u) % 50000; }

/* Row 0's logits at its last position: a pointer into `t` ([1, T, vocab] or [1, 1, vocab]). */
static const float *last_row(const DLManagedTensorVersioned *t, int64_t row_len) {
  int64_t vocab = t->dl_tensor.shape[2];
  return (const float *)t->dl_tensor.data + (row_len - 1) * vocab;
}

/* Largest difference between the state's last new logits and a full pass over `seq`. */
static double check_full(const mc_context *ctx, const int64_t *seq, int64_t len,
                         const DLManagedTensorVersioned *got, int64_t got_len, int *bad) {
  mc_forward_request req;
  mc_forward_output *out = NULL;
  DLManagedTensorVersioned *full = NULL;
  double d = 0;
  *bad = 1;
  if (failed(mc_forward_request_init(&req, sizeof req), "init")) return 0;
  req.tokens = seq;
  req.n_tokens = (size_t)len;
  req.batch = 1;
  req.seq_len = len;
  req.logits = MC_LOGITS_LAST;
  if (failed(mc_forward(ctx, &req, &out), "mc_forward") ||
      failed(mc_forward_output_get(out, MC_ACT_LOGITS, MC_LAYER_NONE, &full), "logits")) {
    mc_forward_output_free(out);
    return 0;
  }
  const float *a = last_row(got, got_len), *b = full->dl_tensor.data;
  for (int64_t i = 0; i < full->dl_tensor.shape[2]; i++) d = fmax(d, fabs((double)a[i] - b[i]));
  full->deleter(full);
  mc_forward_output_free(out);
  *bad = 0;
  return d;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
    return 2;
  }
  int rc = 1, checks = 0;
  double worst = 0;
  mc_context *ctx = NULL;
  mc_state *state = NULL;
  int64_t window = 0;
  int64_t *hist[N_SEQ] = {NULL};
  int64_t len[N_SEQ] = {0};
  if (failed(mc_open(argv[1], "cpu", &ctx), "mc_open") ||
      failed(mc_dim_size(ctx, MC_DIM_MAX_CONTEXT_LENGTH, &window), "mc_dim_size") ||
      failed(mc_state_new(ctx, N_SEQ, &state), "mc_state_new"))
    goto done;
  for (int s = 0; s < N_SEQ; s++)
    if (!(hist[s] = calloc((size_t)window, sizeof(int64_t)))) goto done;

  for (int step = 0; step < STEPS; step++) {
    int op = (int)(next_id() % 10), s = (int)(next_id() % N_SEQ);
    if (op == 0 && len[s] > 0) { /* fork s into another id */
      int d = (s + 1) % N_SEQ;
      if (failed(mc_state_copy(state, s, d), "mc_state_copy")) goto done;
      memcpy(hist[d], hist[s], (size_t)len[s] * sizeof(int64_t));
      len[d] = len[s];
    } else if (op == 1) { /* truncate to half */
      if (failed(mc_state_truncate(state, s, len[s] / 2), "mc_state_truncate")) goto done;
      len[s] /= 2;
    } else if (op == 2 || len[s] + 3 > window) { /* remove (and always before the window) */
      if (failed(mc_state_remove(state, s), "mc_state_remove")) goto done;
      len[s] = 0;
    } else { /* append 1..3 tokens to s and 1 to the next sequence, in one call */
      int t = (int)(next_id() % 3) + 1, s2 = (s + 1) % N_SEQ;
      if (len[s2] + 1 > window) continue;
      int64_t toks[4];
      for (int i = 0; i < t + 1; i++) toks[i] = next_id();
      int32_t ids[2] = {s, s2};
      size_t offsets[3] = {0, (size_t)t, (size_t)t + 1};
      mc_append_request req;
      mc_forward_output *out = NULL;
      DLManagedTensorVersioned *logits = NULL;
      if (failed(mc_append_request_init(&req, sizeof req), "init")) goto done;
      req.seq_ids = ids;
      req.n_seq_ids = 2;
      req.tokens = toks;
      req.n_tokens = (size_t)t + 1;
      req.offsets = offsets;
      req.n_offsets = 3;
      if (failed(mc_state_append(state, &req, &out), "mc_state_append") ||
          failed(mc_forward_output_get(out, MC_ACT_LOGITS, MC_LAYER_NONE, &logits), "logits")) {
        mc_forward_output_free(out);
        goto done;
      }
      memcpy(hist[s] + len[s], toks, (size_t)t * sizeof(int64_t));
      len[s] += t;
      hist[s2][len[s2]++] = toks[t];
      int bad = 0;
      if (step % 10 == 3) { /* every tenth step: row 0 against the full pass */
        worst = fmax(worst, check_full(ctx, hist[s], len[s], logits, t, &bad));
        checks++;
      }
      logits->deleter(logits);
      mc_forward_output_free(out);
      if (bad) goto done;
    }
    for (int q = 0; q < N_SEQ; q++) {
      int64_t n = -1;
      if (failed(mc_state_length(state, q, &n), "mc_state_length")) goto done;
      if (n != len[q]) {
        fprintf(stderr, "sequence %d holds %lld tokens, expected %lld\n", q, (long long)n, (long long)len[q]);
        goto done;
      }
    }
  }
  /* Bad input leaves the state as it was. */
  int32_t bad_id = N_SEQ;
  int64_t one = 1;
  size_t off[2] = {0, 1};
  mc_append_request bad;
  mc_forward_output *none = NULL;
  if (failed(mc_append_request_init(&bad, sizeof bad), "init")) goto done;
  bad.seq_ids = &bad_id;
  bad.n_seq_ids = 1;
  bad.tokens = &one;
  bad.n_tokens = 1;
  bad.offsets = off;
  bad.n_offsets = 2;
  mc_status st = mc_state_append(state, &bad, &none);
  printf("error %s: %s\n", mc_status_name(st), mc_last_error());
  if (st != MC_ERR_INVALID_ARGUMENT || none) goto done;
  printf("decoding: %d steps, %d checks against the full pass, worst %.2e: %s\n", STEPS, checks,
         worst, worst <= 1e-4 && checks >= 10 ? "ok" : "FAILED");
  if (!(worst <= 1e-4 && checks >= 10)) goto done;

  /* Two prompts of different lengths, greedy, together. */
  uint32_t prompts[5] = {464, 2068, 7586, 15496, 11};
  size_t prompt_offsets[3] = {0, 3, 5}, offsets[3];
  uint32_t tokens[16];
  mc_stop_reason reasons[2];
  size_t n = 0;
  mc_sample_options o;
  if (failed(mc_sample_options_init(&o, sizeof o), "init")) goto done;
  o.max_new_tokens = 8;
  o.stop_at_end_of_text = false;
  if (failed(mc_sample_batch(ctx, prompts, 5, prompt_offsets, 3, &o, NULL, 0, tokens, 16, offsets, 3,
                             reasons, 2, &n), "mc_sample_batch"))
    goto done;
  printf("sample_batch: %zu tokens, prompt 0 -> %zu (stop %d), prompt 1 -> %zu (stop %d)\n", n,
         offsets[1] - offsets[0], reasons[0], offsets[2] - offsets[1], reasons[1]);
  rc = n == 16 && reasons[0] == MC_STOP_MAX_TOKENS ? 0 : 1;
done:
  mc_state_free(state);
  for (int s = 0; s < N_SEQ; s++) free(hist[s]);
  mc_free(ctx);
  return rc;
}
