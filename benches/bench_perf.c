/*
 * C half of bench_perf.py: forward passes through the C API of 1x128, 8x128 and 1x1024 seeded
 * tokens, with logits at every position and at the last one only, and greedy generation of
 * 128 tokens after a 32-token prompt (a decoding state underneath), in the model dtype given.
 * Prints one JSON object of medians in seconds; with LOGITS_FILE, also writes the logits of
 * the 1x128 pass there as float32 (bench_perf.py compares bfloat16's and llama.cpp's with
 * float32's). With
 * MC_BENCH_ONLY=ROW (e.g. 8x128_last, generate) only that row runs (for a profiler).
 *
 *   bench_perf CHECKPOINT_DIR f32|bf16 REPS [LOGITS_FILE]
 */
#include "bench_common.h"

enum { MAX_TOKENS = 1024, PROMPT = 32, NEW_TOKENS = 128 };

static const struct { int64_t batch, seq_len; } SHAPES[] = {{1, 128}, {8, 128}, {1, 1024}};
static const struct { mc_logits_choice choice; const char *name; } LOGITS[] = {
    {MC_LOGITS_ALL, "all"}, {MC_LOGITS_LAST, "last"}};

/* The same seeded ids bench_perf.py gives the peers (a 32-bit LCG, modulo the vocabulary). */
static void seeded(int64_t *ids, int n) {
  unsigned s = 12345;
  for (int i = 0; i < n; i++) ids[i] = (s = s * 1103515245u + 12345u) % 50257;
}

static mc_forward_request request(const int64_t *ids, int64_t b, int64_t t, mc_logits_choice lc) {
  mc_forward_request r;
  check(mc_forward_request_init(&r, sizeof r), "mc_forward_request_init");
  r.tokens = ids;
  r.n_tokens = (size_t)(b * t);
  r.token_type = MC_TOKENS_INT64;
  r.batch = b;
  r.seq_len = t;
  r.logits = lc;
  return r;
}

static double generate(mc_context *ctx, const int64_t *ids) {
  uint32_t prompt[PROMPT], out[NEW_TOKENS];
  for (int i = 0; i < PROMPT; i++) prompt[i] = (uint32_t)ids[i];
  size_t starts[2] = {0, PROMPT}, offsets[2], n = 0;
  mc_stop_reason reason;
  mc_sample_options o;
  check(mc_sample_options_init(&o, sizeof o), "mc_sample_options_init");
  o.max_new_tokens = NEW_TOKENS;
  o.stop_at_end_of_text = false;
  double t0 = now();
  check(mc_sample_batch(ctx, prompt, PROMPT, starts, 2, &o, NULL, 0, out, NEW_TOKENS, offsets, 2, &reason, 1, &n),
        "mc_sample_batch");
  return now() - t0;
}

/* Writes the logits as float32 (bfloat16 widened exactly: its bits are float32's top half). */
static void write_logits(mc_forward_output *out, const char *path) {
  DLManagedTensorVersioned *t = NULL;
  check(mc_forward_output_get(out, MC_ACT_LOGITS, MC_LAYER_NONE, &t), "mc_forward_output_get");
  DLTensor *d = &t->dl_tensor;
  size_t n = 1;
  for (int i = 0; i < d->ndim; i++) n *= (size_t)d->shape[i];
  int f32 = d->dtype.code == kDLFloat && d->dtype.bits == 32, bf16 = d->dtype.code == kDLBfloat;
  float *v = malloc(n * sizeof *v);
  FILE *f = fopen(path, "wb");
  if (!v || !f || !(f32 || bf16)) {
    fprintf(stderr, "cannot write the logits to %s\n", path);
    exit(1);
  }
  for (size_t i = 0; i < n; i++) {
    uint32_t bits = bf16 ? (uint32_t)((const uint16_t *)d->data)[i] << 16 : ((const uint32_t *)d->data)[i];
    memcpy(&v[i], &bits, 4);
  }
  if (fwrite(v, 4, n, f) != n) exit(1);
  fclose(f);
  free(v);
  t->deleter(t);
}

int main(int argc, char **argv) {
  if (argc < 4) return 2;
  int reps = atoi(argv[3]);
  mc_context *ctx = open_model(argv[1], argv[2]);
  static int64_t ids[8 * 128];
  seeded(ids, 8 * 128);
  double *t = calloc((size_t)reps, sizeof *t);
  const char *only = getenv("MC_BENCH_ONLY");
  char row[32];
  printf("{\"impl\": \"c-api\", \"dtype\": \"%s\"", argv[2]);
  for (size_t s = 0; s < sizeof SHAPES / sizeof *SHAPES; s++)
    for (size_t l = 0; l < sizeof LOGITS / sizeof *LOGITS; l++) {
      int64_t b = SHAPES[s].batch, len = SHAPES[s].seq_len;
      snprintf(row, sizeof row, "%lldx%lld_%s", (long long)b, (long long)len, LOGITS[l].name);
      if (only && strcmp(only, row) != 0) continue;
      mc_forward_request req = request(ids, b, len, LOGITS[l].choice);
      forward_seconds(ctx, &req); /* warm-up */
      for (int r = 0; r < reps; r++) t[r] = forward_seconds(ctx, &req);
      printf(", \"%s\": %.6f", row, median(t, reps));
    }
  if (!only || strcmp(only, "generate") == 0) {
    generate(ctx, ids); /* warm-up */
    for (int r = 0; r < reps; r++) t[r] = generate(ctx, ids);
    printf(", \"generate\": %.6f", median(t, reps));
  }
  printf("}\n");
  if (argc > 4) {
    mc_forward_output *out = NULL;
    mc_forward_request req = request(ids, 1, 128, MC_LOGITS_ALL);
    check(mc_forward(ctx, &req, &out), "mc_forward");
    write_logits(out, argv[4]);
    mc_forward_output_free(out);
  }
  free(t);
  mc_free(ctx);
  return 0;
}
