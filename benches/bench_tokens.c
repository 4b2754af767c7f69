/*
 * Driver of benches/bench_tokens.py: times the C API's token calls on a tokenizer-only context.
 *
 *   bench_tokens ENCODING encode FILE REPS [IDS_OUT]   mc_encode of FILE's bytes as one text
 *   bench_tokens ENCODING batch  FILE REPS [IDS_OUT]   mc_encode_batch of FILE's texts
 *   bench_tokens ENCODING decode FILE REPS             mc_decode of FILE's ids (u32 LE)
 *
 * A batch FILE is: u64 count, count x u64 lengths, then the texts back to back (little-endian).
 * Prints one JSON line: the best wall time over REPS, the bytes and the tokens. IDS_OUT gets the
 * ids (u32 LE) so the Python side can compare them with tiktoken's. Threads: MC_TOKENIZER_THREADS.
 */
#include "bench_common.h"


static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    perror(path);
    exit(1);
  }
  fseek(f, 0, SEEK_END);
  *len = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc(*len ? *len : 1);
  if (fread(buf, 1, *len, f) != *len) {
    perror(path);
    exit(1);
  }
  fclose(f);
  return buf;
}

static void write_ids(const char *path, const uint32_t *ids, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(ids, sizeof *ids, n, f) != n) {
    perror(path);
    exit(1);
  }
  fclose(f);
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: %s ENCODING encode|batch|decode FILE REPS [IDS_OUT]\n", argv[0]);
    return 2;
  }
  char model[64];
  snprintf(model, sizeof model, "tiktoken:%s", argv[1]);
  const char *mode = argv[2];
  int reps = atoi(argv[4]);
  const char *ids_out = argc > 5 ? argv[5] : NULL;
  mc_context *ctx = NULL;
  check(mc_open(model, "cpu", &ctx), "mc_open");
  size_t len;
  char *data = read_file(argv[3], &len);
  /* Build the tokenizer before timing. */
  size_t n = 0;
  check(mc_encode(ctx, "warm up", 7, NULL, 0, &n), "warm up");

  double best = 1e30;
  size_t n_tokens = 0, n_bytes = len;
  if (strcmp(mode, "encode") == 0) {
    uint32_t *ids = malloc((len ? len : 1) * sizeof *ids); /* text_len ids always suffice */
    for (int r = 0; r < reps; r++) {
      double t = now();
      check(mc_encode(ctx, data, len, ids, len, &n_tokens), "mc_encode");
      t = now() - t;
      if (t < best) best = t;
    }
    if (ids_out) write_ids(ids_out, ids, n_tokens);
    free(ids);
  } else if (strcmp(mode, "batch") == 0) {
    uint64_t count;
    memcpy(&count, data, 8);
    const char **texts = malloc(count * sizeof *texts);
    size_t *lens = malloc(count * sizeof *lens);
    size_t at = 8 + 8 * count, total = 0;
    for (uint64_t i = 0; i < count; i++) {
      uint64_t l;
      memcpy(&l, data + 8 + 8 * i, 8);
      texts[i] = data + at;
      lens[i] = (size_t)l;
      at += l;
      total += l;
    }
    n_bytes = total;
    uint32_t *ids = malloc((total ? total : 1) * sizeof *ids);
    size_t *offsets = malloc((count + 1) * sizeof *offsets);
    for (int r = 0; r < reps; r++) {
      double t = now();
      check(mc_encode_batch(ctx, texts, lens, count, ids, total, offsets, count + 1, &n_tokens),
            "mc_encode_batch");
      t = now() - t;
      if (t < best) best = t;
    }
    if (ids_out) write_ids(ids_out, ids, n_tokens);
    free(ids);
    free(offsets);
    free(texts);
    free(lens);
  } else if (strcmp(mode, "decode") == 0) {
    const uint32_t *ids = (const uint32_t *)data;
    n_tokens = len / 4;
    check(mc_decode(ctx, ids, n_tokens, NULL, 0, &n_bytes), "mc_decode probe");
    char *out = malloc(n_bytes ? n_bytes : 1);
    for (int r = 0; r < reps; r++) {
      double t = now();
      check(mc_decode(ctx, ids, n_tokens, out, n_bytes, &n_bytes), "mc_decode");
      t = now() - t;
      if (t < best) best = t;
    }
    free(out);
  } else {
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
  }
  printf("{\"mode\": \"%s\", \"seconds\": %.6f, \"bytes\": %zu, \"tokens\": %zu}\n", mode, best,
         n_bytes, n_tokens);
  free(data);
  mc_free(ctx);
  return 0;
}
