/*
 * Deliberately faulty: leaks a tensor and a context through the library and one block of its
 * own. tests/c/run.sh runs it under exactly the valgrind command line (and the ASan build) that
 * checks the real programs, and requires the tool to report the leaks: proof that the checker
 * was active and that its suppressions do not hide leaks in model_context itself.
 *
 *   sanitizer_canary CHECKPOINT_DIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model_context.h"

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  mc_context *ctx = NULL;
  if (mc_open(argv[1], "cpu", &ctx) != MC_OK) return 1;
  DLManagedTensorVersioned *t = NULL;
  if (mc_get_weight(ctx, MC_WEIGHT_EMBEDDING, MC_LAYER_NONE, MC_DIM_NONE, NULL, &t) != MC_OK)
    return 1;
  char *own = malloc(4096);
  memset(own, 1, 4096);
  printf("canary: leaking %p, %p and %p\n", (void *)ctx, (void *)t, (void *)own);
  ctx = NULL; /* every pointer dropped: definitely lost */
  t = NULL;
  own = NULL;
  return 0;
}
