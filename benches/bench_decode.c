/*
 * C half of the decoding benchmark: greedy generation with mc_sample_batch (a decoding state
 * underneath) of 1 and 8 prompts of 32 seeded tokens, 64 and 256 new tokens each, in the
 * model dtype given; and the cost of one appended token at positions 64, 256 and 1000 of a
 * 1024 window. Prints JSON (seconds, tokens/s, ms per token).
 *
 *   bench_decode CHECKPOINT_DIR f32|bf16
 */
#include "bench_common.h"

enum { PROMPT = 32 };

static unsigned seed = 12345;
static uint32_t next_id(void) { return (seed = seed * 1103515245u + 12345u) % 50257; }

static double generate(mc_context *ctx, int batch, int new_tokens) {
  static uint32_t prompts[8 * PROMPT], out[8 * 256];
  size_t starts[9], offsets[9], n = 0;
  mc_stop_reason reasons[8];
  seed = 12345;
  for (int i = 0; i < batch * PROMPT; i++) prompts[i] = next_id();
  for (int i = 0; i <= batch; i++) starts[i] = (size_t)i * PROMPT;
  mc_sample_options o;
  check(mc_sample_options_init(&o, sizeof o), "mc_sample_options_init");
  o.max_new_tokens = (uint32_t)new_tokens;
  o.stop_at_end_of_text = false;
  double t0 = now();
  check(mc_sample_batch(ctx, prompts, (size_t)(batch * PROMPT), starts, (size_t)batch + 1, &o, NULL, 0,
                        out, sizeof out / sizeof *out, offsets, 9, reasons, 8, &n), "mc_sample_batch");
  double dt = now() - t0;
  if (n != (size_t)(batch * new_tokens)) {
    fprintf(stderr, "generated %zu tokens, expected %d\n", n, batch * new_tokens);
    exit(1);
  }
  return dt;
}

/* Milliseconds for one appended token after `position` tokens (median of 8). */
static double per_token_ms(mc_context *ctx, int position) {
  mc_state *st = NULL;
  check(mc_state_new(ctx, 1, &st), "mc_state_new");
  static int64_t prefix[1024];
  for (int i = 0; i < position; i++) prefix[i] = next_id();
  int32_t seq = 0;
  size_t offsets[2] = {0, (size_t)position};
  mc_append_request r;
  check(mc_append_request_init(&r, sizeof r), "mc_append_request_init");
  r.seq_ids = &seq;
  r.n_seq_ids = 1;
  r.tokens = prefix;
  r.n_tokens = (size_t)position;
  r.offsets = offsets;
  r.n_offsets = 2;
  r.logits = MC_LOGITS_LAST;
  mc_forward_output *out = NULL;
  check(mc_state_append(st, &r, &out), "mc_state_append");
  mc_forward_output_free(out);
  double t[8];
  for (int k = 0; k < 8; k++) {
    int64_t one = next_id();
    size_t off1[2] = {0, 1};
    r.tokens = &one;
    r.n_tokens = 1;
    r.offsets = off1;
    double t0 = now();
    check(mc_state_append(st, &r, &out), "mc_state_append");
    t[k] = (now() - t0) * 1e3;
    mc_forward_output_free(out);
  }
  mc_state_free(st);
  return median(t, 8);
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  mc_context *ctx = open_model(argv[1], argv[2]);
  generate(ctx, 1, 4); /* warm-up */
  printf("{\"impl\": \"c-api\", \"dtype\": \"%s\"", argv[2]);
  int batches[2] = {1, 8}, news[2] = {64, 256};
  for (int b = 0; b < 2; b++)
    for (int k = 0; k < 2; k++) {
      double dt = generate(ctx, batches[b], news[k]);
      printf(", \"b%d_n%d\": %.3f", batches[b], news[k], batches[b] * news[k] / dt);
    }
  int positions[3] = {64, 256, 1000};
  for (int i = 0; i < 3; i++) printf(", \"ms_at_%d\": %.3f", positions[i], per_token_ms(ctx, positions[i]));
  printf("}\n");
  mc_free(ctx);
  return 0;
}
