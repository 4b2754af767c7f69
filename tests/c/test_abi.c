/*
 * The struct rule of ABI 0.2 from C, built against the header (docs/abi.md): every options or
 * request struct is filled by mc_<struct>_init(&s, sizeof s); the library reads exactly
 * struct_size bytes, accepts a larger struct only when its tail past the library's size is
 * zero, and refuses a size below the 0.2 size. Also: arrays cross with their lengths.
 * Run under valgrind and ASan by tests/c/run.sh.
 *
 *   test_abi CHECKPOINT_DIR
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model_context.h"
#include "check.h"


#define TAIL 24
/* mc_forward_request's size in ABI 0.2 before the backward-pass fields were appended. */
#define FORWARD_REQUEST_0_2 offsetof(mc_forward_request, objective)
#define FILL 0xAB

static int all_bytes(const unsigned char *p, size_t n, unsigned char v) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != v) return 0;
  return 1;
}

/*
 * The init rule for one struct type whose ABI 0.2 size is `min`: a size below it writes
 * nothing, `min` itself writes exactly `min` bytes; the caller's size is recorded; a larger
 * size zeroes the tail; the defaults equal those of a plain init.
 */
#define INIT_RULE(T, init, min)                                                   \
  do {                                                                            \
    unsigned char buf[sizeof(T) + TAIL];                                          \
    memset(buf, FILL, sizeof buf);                                                \
    CHECK(init(NULL, sizeof(T)) == MC_ERR_NULL_ARGUMENT);                         \
    CHECK(init((T *)(void *)buf, 0) == MC_ERR_INVALID_ARGUMENT);                  \
    CHECK(init((T *)(void *)buf, (min) - 1) == MC_ERR_INVALID_ARGUMENT);          \
    CHECK(strstr(mc_last_error(), #T) != NULL);                                   \
    CHECK(all_bytes(buf, sizeof buf, FILL));                                      \
    CHECK(init((T *)(void *)buf, (min)) == MC_OK);                                \
    CHECK(all_bytes(buf + (min), sizeof buf - (min), FILL));                      \
    T exact;                                                                      \
    memset(&exact, FILL, sizeof exact);                                           \
    CHECK(init(&exact, sizeof exact) == MC_OK && exact.struct_size == sizeof(T)); \
    CHECK(init((T *)(void *)buf, sizeof buf) == MC_OK);                           \
    CHECK(((T *)(void *)buf)->struct_size == sizeof buf);                         \
    CHECK(all_bytes(buf + sizeof(T), TAIL, 0));                                   \
    ((T *)(void *)buf)->struct_size = sizeof(T);                                  \
    CHECK(memcmp(buf, &exact, sizeof(T)) == 0);                                   \
  } while (0)

/* A forward request with room for a newer library's fields after it. */
typedef struct {
  mc_forward_request r;
  unsigned char tail[TAIL];
} newer_request;

static float first_logit(const mc_context *ctx, const mc_forward_request *r, mc_status *status) {
  mc_forward_output *out = NULL;
  *status = mc_forward(ctx, r, &out);
  if (*status != MC_OK) return 0;
  DLManagedTensorVersioned *t = NULL;
  CHECK(mc_forward_output_get(out, MC_ACT_LOGITS, MC_LAYER_NONE, &t) == MC_OK);
  float v = t ? ((const float *)t->dl_tensor.data)[7] : 0;
  if (t) t->deleter(t);
  mc_forward_output_free(out);
  return v;
}

static void forward_rule(const mc_context *ctx) {
  uint32_t tokens[4] = {464, 2068, 7586, 21831};
  newer_request n;
  CHECK(mc_forward_request_init(&n.r, sizeof n) == MC_OK && n.r.struct_size == sizeof n);
  n.r.tokens = tokens;
  n.r.n_tokens = 4;
  n.r.token_type = MC_TOKENS_UINT32;
  n.r.batch = 2;
  n.r.seq_len = 2;
  mc_forward_request plain = n.r;
  plain.struct_size = sizeof plain;
  mc_status s1, s2;
  float a = first_logit(ctx, &plain, &s1), b = first_logit(ctx, &n.r, &s2);
  CHECK(s1 == MC_OK && s2 == MC_OK && a == b); /* a zero tail is the old behaviour */

  n.tail[5] = 1; /* a field this library does not know is set */
  char want[64];
  snprintf(want, sizeof want, "offset %zu", sizeof(mc_forward_request) + 5);
  first_logit(ctx, &n.r, &s1);
  CHECK(s1 == MC_ERR_UNSUPPORTED);
  CHECK(strstr(mc_last_error(), "mc_forward_request") && strstr(mc_last_error(), want));
  n.tail[5] = 0;

  plain.struct_size = 0;
  first_logit(ctx, &plain, &s1);
  CHECK(s1 == MC_ERR_INVALID_ARGUMENT && strstr(mc_last_error(), "struct_size"));
  plain.struct_size = FORWARD_REQUEST_0_2 - 8;
  first_logit(ctx, &plain, &s1);
  CHECK(s1 == MC_ERR_INVALID_ARGUMENT);
  plain.struct_size = FORWARD_REQUEST_0_2; /* a program built against the first 0.2 header */
  b = first_logit(ctx, &plain, &s1);
  CHECK(s1 == MC_OK && a == b);
  plain.struct_size = sizeof plain;

  /* The objective follows the same rule: a non-zero byte past the library's size refuses. */
  struct { mc_objective o; unsigned char tail[TAIL]; } obj;
  int64_t token = 13;
  CHECK(mc_objective_init(&obj.o, sizeof obj) == MC_OK && obj.o.struct_size == sizeof obj);
  obj.o.tokens = &token;
  obj.o.n_tokens = 1;
  plain.batch = 1;
  plain.seq_len = 4;
  plain.objective = &obj.o;
  first_logit(ctx, &plain, &s1);
  CHECK(s1 == MC_OK);
  obj.tail[2] = 1;
  first_logit(ctx, &plain, &s1);
  CHECK(s1 == MC_ERR_UNSUPPORTED && strstr(mc_last_error(), "mc_objective"));
  obj.tail[2] = 0;
  int64_t two[2] = {13, 11};
  obj.o.tokens = two;
  obj.o.n_tokens = 2; /* one per row: the batch has one */
  first_logit(ctx, &plain, &s1);
  CHECK(s1 == MC_ERR_INVALID_ARGUMENT && strstr(mc_last_error(), "2 tokens given for a batch of 1"));
  plain.objective = NULL;
  plain.n_grads = 1; /* gradients without an objective */
  first_logit(ctx, &plain, &s1);
  CHECK(s1 == MC_ERR_INVALID_ARGUMENT && strstr(mc_last_error(), "n_grads"));
  plain.n_grads = 0;
  plain.batch = 2;
  plain.seq_len = 2;

  /* Every array crosses with its length: mismatches are errors, never reads past the end. */
  plain.n_tokens = 3;
  first_logit(ctx, &plain, &s1);
  CHECK(s1 == MC_ERR_INVALID_ARGUMENT && strstr(mc_last_error(), "n_tokens"));
  plain.n_tokens = 4;
  plain.seq_len = 3; /* more positions than the tokens given */
  first_logit(ctx, &plain, &s1);
  CHECK(s1 == MC_ERR_INVALID_ARGUMENT && strstr(mc_last_error(), "n_tokens"));
  plain.seq_len = 2;
  plain.n_pad = 4; /* a length without its array */
  first_logit(ctx, &plain, &s1);
  CHECK(s1 == MC_ERR_NULL_ARGUMENT && strstr(mc_last_error(), "pad"));
  plain.n_pad = 0;
  first_logit(ctx, &plain, &s1);
  CHECK(s1 == MC_OK); /* the context is still usable */
}

/* The tail rule on every other struct, through the call that reads it. */
static void other_structs(const char *model, const mc_context *ctx) {
  struct { mc_open_options o; unsigned char tail[TAIL]; } open;
  CHECK(mc_open_options_init(&open.o, sizeof open) == MC_OK);
  open.o.device = "cpu";
  mc_context *c2 = NULL;
  CHECK(mc_open_ex(model, &open.o, &c2) == MC_OK && c2 != NULL);
  open.tail[TAIL - 1] = 7;
  mc_context *c3 = NULL;
  CHECK(mc_open_ex(model, &open.o, &c3) == MC_ERR_UNSUPPORTED && c3 == NULL);
  CHECK(strstr(mc_last_error(), "mc_open_options") != NULL);

  struct { mc_model_options o; unsigned char tail[TAIL]; } model_opts;
  CHECK(mc_model_options_init(&model_opts.o, sizeof model_opts) == MC_OK);
  model_opts.tail[0] = 1;
  CHECK(mc_create_model(c2, &model_opts.o) == MC_ERR_UNSUPPORTED);
  model_opts.tail[0] = 0;
  CHECK(mc_create_model(c2, &model_opts.o) == MC_OK);
  mc_free(c2);

  struct { mc_weight_request r; unsigned char tail[TAIL]; } weight;
  CHECK(mc_weight_request_init(&weight.r, sizeof weight) == MC_OK);
  weight.r.location = MC_WEIGHT_EMBEDDING;
  DLManagedTensorVersioned *t = NULL;
  CHECK(mc_get_weight_ex(ctx, &weight.r, &t) == MC_OK && t != NULL);
  if (t) t->deleter(t);
  t = NULL;
  weight.tail[3] = 9;
  CHECK(mc_get_weight_ex(ctx, &weight.r, &t) == MC_ERR_UNSUPPORTED && t == NULL);
  weight.r.struct_size = 4;
  CHECK(mc_get_weight_ex(ctx, &weight.r, &t) == MC_ERR_INVALID_ARGUMENT && t == NULL);

  struct { mc_sample_options o; unsigned char tail[TAIL]; } sample;
  CHECK(mc_sample_options_init(&sample.o, sizeof sample) == MC_OK);
  CHECK(sample.o.max_new_tokens == 16 && sample.o.stop_at_end_of_text && sample.o.top_p == 1.0);
  sample.o.max_new_tokens = 2;
  uint32_t prompt[2] = {464, 2068}, got[2];
  size_t n = 0;
  CHECK(mc_sample(ctx, prompt, 2, &sample.o, got, 2, &n) == MC_OK && n >= 1);
  sample.tail[1] = 1;
  n = 99;
  CHECK(mc_sample(ctx, prompt, 2, &sample.o, got, 2, &n) == MC_ERR_UNSUPPORTED && n == 99);
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  INIT_RULE(mc_open_options, mc_open_options_init, sizeof(mc_open_options));
  INIT_RULE(mc_weight_request, mc_weight_request_init, sizeof(mc_weight_request));
  INIT_RULE(mc_model_options, mc_model_options_init, offsetof(mc_model_options, skip_reorder));
  INIT_RULE(mc_forward_request, mc_forward_request_init, FORWARD_REQUEST_0_2);
  INIT_RULE(mc_edit, mc_edit_init, sizeof(mc_edit));
  INIT_RULE(mc_objective, mc_objective_init, sizeof(mc_objective));
  INIT_RULE(mc_sample_options, mc_sample_options_init, offsetof(mc_sample_options, top_k));
  INIT_RULE(mc_append_request, mc_append_request_init, sizeof(mc_append_request));
  mc_context *ctx = NULL;
  CHECK(mc_open(argv[1], "cpu", &ctx) == MC_OK);
  if (!ctx) return 1;
  forward_rule(ctx);
  other_structs(argv[1], ctx);
  mc_free(ctx);
  printf("test_abi: %d checks, %d failed\n", checks, failed);
  return failed ? 1 : 0;
}
