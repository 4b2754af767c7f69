/*
 * Tokens from C: encode a text with the size probe (a NULL buffer gives the count), decode it
 * back to its exact bytes, split the bytes per token, encode a batch of texts, and encode a
 * text long enough (over 128 KiB) to be cut into parts encoded on all cores. Every buffer is
 * the caller's; nothing here is freed but the context.
 *
 *   cc tokens.c $(pkg-config --cflags --libs model_context) -o tokens
 *   ./tokens MODEL_DIR     (or "tiktoken:cl100k_base" for a tokenizer alone)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model_context.h"

static int failed(mc_status s, const char *what) {
  if (s == MC_OK) return 0;
  fprintf(stderr, "%s failed: %s: %s\n", what, mc_status_name(s), mc_last_error());
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
    return 2;
  }
  mc_context *ctx = NULL;
  if (failed(mc_open(argv[1], "cpu", &ctx), "mc_open")) return 1;
  int rc = 1;
  uint32_t *ids = NULL, *long_ids = NULL;
  char *bytes = NULL, *long_text = NULL;
  size_t *offsets = NULL;
  const char *text = "Hello, world! Tokens round-trip: caf\xc3\xa9 <|endoftext|>";
  size_t len = strlen(text), n = 0, n_bytes = 0;

  /* The size probe: NULL with capacity 0 gives the count; then encode into a buffer of it. */
  if (failed(mc_encode(ctx, text, len, NULL, 0, &n), "mc_encode (probe)")) goto done;
  if (!(ids = malloc(n * sizeof *ids))) goto done;
  if (failed(mc_encode(ctx, text, len, ids, n, &n), "mc_encode")) goto done;
  printf("encode: %zu bytes -> %zu ids:", len, n);
  for (size_t i = 0; i < n; i++) printf(" %u", ids[i]);
  printf("\n");

  /* Decode to the exact bytes (no NUL terminator: the length comes back). */
  if (failed(mc_decode(ctx, ids, n, NULL, 0, &n_bytes), "mc_decode (probe)")) goto done;
  if (!(bytes = malloc(n_bytes))) goto done;
  if (failed(mc_decode(ctx, ids, n, bytes, n_bytes, &n_bytes), "mc_decode")) goto done;
  printf("decode: %zu bytes, %s\n", n_bytes,
         n_bytes == len && memcmp(bytes, text, len) == 0 ? "equal to the text" : "DIFFERENT");

  /* The bytes of each token, delimited by n + 1 offsets. */
  if (!(offsets = malloc((n + 1) * sizeof *offsets))) goto done;
  if (failed(mc_decode_token_list(ctx, ids, n, bytes, n_bytes, offsets, n + 1, &n_bytes),
             "mc_decode_token_list"))
    goto done;
  printf("tokens:");
  for (size_t i = 0; i < n; i++) printf(" [%.*s]", (int)(offsets[i + 1] - offsets[i]), bytes + offsets[i]);
  printf("\n");

  /* A batch on all cores: each text's ids are what mc_encode gives it alone. */
  const char *texts[3] = {"first text", "", "the third, longer text"};
  size_t lens[3] = {10, 0, 22}, batch_offsets[4], total = 0;
  uint32_t batch_ids[64];
  if (failed(mc_encode_batch(ctx, texts, lens, 3, batch_ids, 64, batch_offsets, 4, &total),
             "mc_encode_batch"))
    goto done;
  printf("batch: %zu ids, per text %zu %zu %zu\n", total, batch_offsets[1] - batch_offsets[0],
         batch_offsets[2] - batch_offsets[1], batch_offsets[3] - batch_offsets[2]);

  /* One token's id, and an id outside the vocabulary, which is refused. */
  uint32_t id = 0, bad = 4000000000u;
  if (failed(mc_encode_token_str(ctx, " world", 6, &id), "mc_encode_token_str")) goto done;
  printf("token \" world\" = %u\n", id);
  mc_status s = mc_decode(ctx, &bad, 1, NULL, 0, &n_bytes);
  printf("error %s: %s\n", mc_status_name(s), mc_last_error());
  if (s != MC_ERR_TOKEN) goto done;

  /* A long text on all cores gives the ids of encoding it whole on one: here a sentence that
   * tokenizes the same wherever it stands, repeated, so the ids must be its own, repeated. */
  const char *unit = " the quick brown fox jumps over the lazy dog.";
  size_t unit_len = strlen(unit), copies = 4096, n_unit = 0, n_long = 0;
  uint32_t unit_ids[32];
  if (failed(mc_encode(ctx, unit, unit_len, unit_ids, 32, &n_unit), "mc_encode (unit)")) goto done;
  if (!(long_text = malloc(unit_len * copies))) goto done;
  for (size_t i = 0; i < copies; i++) memcpy(long_text + i * unit_len, unit, unit_len);
  if (!(long_ids = malloc(n_unit * copies * sizeof *long_ids))) goto done;
  if (failed(mc_encode(ctx, long_text, unit_len * copies, long_ids, n_unit * copies, &n_long),
             "mc_encode (long)"))
    goto done;
  int same = n_long == n_unit * copies;
  for (size_t i = 0; same && i < n_long; i++) same = long_ids[i] == unit_ids[i % n_unit];
  printf("long text: %zu bytes -> %zu ids, the sentence's %zu ids repeated: %s\n",
         unit_len * copies, n_long, n_unit, same ? "yes" : "NO");
  if (!same) goto done;
  rc = 0;
done:
  free(long_ids);
  free(long_text);
  free(ids);
  free(bytes);
  free(offsets);
  mc_free(ctx);
  return rc;
}
